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
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

import aiosmtplib

from services.outreach.core import netguard
from services.outreach.core.channels import Attempt, OutboundAction, Verdict
from services.outreach.shell.resolve import resolve

# Headers may run to RFC 5322's 998 characters rather than be folded at 78: a long signed
# unsubscribe link cannot be folded, and some receivers mishandle folded URLs.
POLICY = email.policy.SMTP.clone(max_line_length=998)
FALLBACK_DOMAIN = "tend.localhost"


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and as whom an email channel sends. ``guarded``: the server was named by a
    channel (through the API), so the network guard judges it before every send; the
    settings' own server is the operator's, and trusted."""

    host: str
    port: int
    sender: str
    guarded: bool = False


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
    server: SmtpServer,
    message: EmailMessage,
    recipient: str,
    *,
    timeout: float,
    allow_private: bool,
    ports: Collection[int],
) -> Attempt:
    """Send ``message`` to ``recipient`` through ``server``; the whole conversation (the
    resolution included) is bounded by ``timeout`` seconds.

    The host is resolved here and the connection made to one of its addresses, each checked
    first when the server is ``guarded`` (and its port too, against ``ports``): a name
    re-pointed after the check cannot steer the connection into our network. The name still
    goes to the SMTP client, for STARTTLS's certificate check."""
    envelope_from = email.utils.parseaddr(server.sender)[1]
    raw = message.as_bytes(policy=POLICY)
    smtp = aiosmtplib.SMTP(hostname=server.host, timeout=timeout)
    opened: socket.socket | Attempt | None = None
    data_sent = False
    try:
        async with asyncio.timeout(timeout):
            opened = await _open(server, allow_private=allow_private, ports=ports)
            if isinstance(opened, Attempt):
                return opened
            await smtp.connect(sock=opened)
            await smtp.mail(envelope_from)
            await smtp.rcpt(recipient)
            data_sent = True
            await smtp.data(raw)
        # The message is accepted; a failed goodbye changes nothing.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await smtp.quit()
        return Attempt(Verdict.SENT)
    except aiosmtplib.SMTPResponseException as exc:
        detail = f"the SMTP server answered {exc.code} {exc.message}"[:500]
        if 500 <= exc.code < 600:
            return Attempt(Verdict.FAILED, "smtp_rejected", detail)
        return Attempt(Verdict.RETRY, f"smtp_{exc.code}", detail)
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        if data_sent:
            return Attempt(
                Verdict.UNKNOWN, "ambiguous", f"lost the SMTP server after DATA ({detail})"
            )
        return Attempt(Verdict.RETRY, "smtp_unavailable", detail)
    finally:
        smtp.close()
        # Closed with the client's transport, or never handed to it (a timeout between).
        if isinstance(opened, socket.socket):
            opened.close()


async def _open(
    server: SmtpServer, *, allow_private: bool, ports: Collection[int]
) -> socket.socket | Attempt:
    """A socket connected to a (checked) address of ``server``, or the verdict that none may
    be tried; OSError when none of the addresses answers."""
    if server.guarded:
        refused = netguard.port_errors(server.port, ports)
        if refused:
            return Attempt(Verdict.FAILED, "unsafe_host", f"smtp server {'; '.join(refused)}")
    found = await resolve(server.host, server.port, allow_private=allow_private)
    if not found.resolved:
        return Attempt(Verdict.RETRY, "dns", "; ".join(found.errors))
    if server.guarded and found.errors:
        return Attempt(Verdict.FAILED, "unsafe_host", f"smtp server {'; '.join(found.errors)}")
    return await _connect_any(found.addresses, server.port)


async def _connect_any(addresses: Sequence[netguard.IPAddress], port: int) -> socket.socket:
    # The next address is tried only when a connection could not be made (a name often has
    # an IPv4 and an IPv6 address, and only one of them may listen).
    loop = asyncio.get_running_loop()
    failure: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (str(address), port))
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:  # cancelled by the timeout: the socket must not leak
            sock.close()
            raise
        return sock
    assert failure is not None  # a resolved name has at least one address
    raise failure
