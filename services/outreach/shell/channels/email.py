"""Email delivery over SMTP.

Each message carries a one-click unsubscribe (RFC 8058: ``List-Unsubscribe`` with the signed
link, ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``) and a ``Message-ID`` made from
the action id, so every copy of one action has the same id.

SMTP has no idempotency key, so the moment the message's DATA is on its way decides how a
failure is read: before it (connect, greeting, MAIL, RCPT) nothing was handed over and the
attempt can be retried; after it, a timeout or a dropped connection leaves us not knowing
whether the server accepted the message, and the attempt is ``unknown``: never re-sent
automatically, since that could deliver it twice. An explicit refusal is never ambiguous: 4xx
retries, 5xx fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

import aiosmtplib

from services.outreach.core.channels import Attempt, OutboundAction, Verdict

# Headers may run to RFC 5322's 998 characters rather than be folded at 78: a long signed
# unsubscribe link cannot be folded, and some receivers mishandle folded URLs.
POLICY = email.policy.SMTP.clone(max_line_length=998)
FALLBACK_DOMAIN = "tend.localhost"


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and as whom an email channel sends."""

    host: str
    port: int
    sender: str


def valid_address(address: str) -> bool:
    """Whether ``address`` is a plain ``local@domain`` we can put in an envelope (ASCII, no
    spaces, brackets or line breaks: nothing that could inject a header or a command)."""
    if not address.isascii() or any(c.isspace() or c in '<>,;"\\' for c in address):
        return False
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and "@" not in local and "." in domain.strip("."))


def message_id(action_id: str, sender: str) -> str:
    """``<{action id}@{sender's domain}>``: the same for every attempt of one action."""
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or FALLBACK_DOMAIN
    return f"<{action_id}@{domain}>"


def build_message(
    action: OutboundAction,
    *,
    recipient: str,
    sender: str,
    unsubscribe_link: str,
    at: datetime,
) -> EmailMessage:
    """The message for ``action``; ValueError when a header value is unusable."""
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = action.subject or ""
    message["Date"] = email.utils.format_datetime(at)
    message["Message-ID"] = message_id(action.id, sender)
    message["List-Unsubscribe"] = f"<{unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # Quoted-printable keeps the message 7-bit, so any relay takes it without 8BITMIME.
    message.set_content(action.body or "", cte="quoted-printable")
    return message


async def deliver(
    server: SmtpServer, message: EmailMessage, recipient: str, *, timeout: float
) -> Attempt:
    """Send ``message`` to ``recipient`` through ``server``; the whole conversation is
    bounded by ``timeout`` seconds."""
    envelope_from = email.utils.parseaddr(server.sender)[1]
    raw = message.as_bytes(policy=POLICY)
    smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=timeout)
    data_sent = False
    try:
        async with asyncio.timeout(timeout):
            await smtp.connect()
            await smtp.mail(envelope_from)
            await smtp.rcpt(recipient)
            data_sent = True
            await smtp.data(raw)
    except aiosmtplib.SMTPResponseException as exc:
        smtp.close()
        detail = f"the SMTP server answered {exc.code} {exc.message}"[:500]
        if 500 <= exc.code < 600:
            return Attempt(Verdict.FAILED, "smtp_rejected", detail)
        return Attempt(Verdict.RETRY, f"smtp_{exc.code}", detail)
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        detail = f"{type(exc).__name__}: {exc}"[:500]
        if data_sent:
            return Attempt(
                Verdict.UNKNOWN, "ambiguous", f"lost the SMTP server after DATA ({detail})"
            )
        return Attempt(Verdict.RETRY, "smtp_unavailable", detail)
    # The message is accepted; a failed goodbye changes nothing.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await smtp.quit()
    smtp.close()
    return Attempt(Verdict.SENT)
