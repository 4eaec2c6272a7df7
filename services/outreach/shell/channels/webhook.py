"""Webhook delivery, signed per the Standard Webhooks specification.

Every attempt carries three headers: ``webhook-id`` (the action id: the same on every retry,
so a receiver drops repeats), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with
the base64-decoded part of the channel's ``whsec_`` secret).

The sender resolves the endpoint's host itself at every send, checks every address with
:mod:`services.outreach.core.netguard`, and sends over a connection opened to a checked address
(:mod:`services.outreach.shell.channels.pinned`; the original name still goes in ``Host`` and
in TLS's SNI and certificate check), so a name re-pointed after the check cannot steer the
request into our network. Redirects are never followed, for the same reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

import orjson

from services.outreach.core import netguard
from services.outreach.core.channels import Attempt, OutboundAction, Verdict
from services.outreach.shell.channels.pinned import ConnectFailed, PinnedPool
from services.outreach.shell.resolve import resolve

SECRET_PREFIX = "whsec_"
EVENT_TYPE = "tend.action"


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@lru_cache(maxsize=256)  # a channel's key is asked at each of its sends
def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX!r} followed by standard base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must hold between 24 and 64 bytes of key (32 is usual)")
    return key


def payload(action: OutboundAction) -> bytes:
    """The JSON body of a webhook for ``action``."""
    return orjson.dumps(
        {
            "type": EVENT_TYPE,
            "action_id": action.id,
            "rule_id": action.rule_id,
            "customer_id": action.customer_id,
            "kind": action.kind,
            "audience": action.audience,
            "subject": action.subject,
            "body": action.body,
            "offer": action.offer,
            "occurrence": action.occurrence,
            "decided_at": action.decided_at.isoformat(),
        }
    )


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers (and content type) for an attempt made at ``at``."""
    timestamp = int(at.timestamp())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def classify(status: int, retry_after: str | None = None, *, at: datetime | None = None) -> Attempt:
    """An HTTP answer as a verdict: 2xx sent; 410 gone; 408, 429 and 5xx retry; any other
    4xx (and a redirect, which is never followed) failed for good. A ``Retry-After`` (delta
    seconds, or an HTTP date read against ``at``, the attempt's wall-clock time) is kept with
    a retry."""
    return replace(_verdict(status, retry_after_seconds(retry_after, at)), http_status=status)


def _verdict(status: int, retry_after: float | None) -> Attempt:
    if 200 <= status < 300:
        return Attempt(Verdict.SENT)
    if status == 410:
        return Attempt(Verdict.GONE, "gone", "the endpoint answered 410 Gone")
    if status in (408, 429) or status >= 500:
        return Attempt(
            Verdict.RETRY,
            f"http_{status}",
            f"the endpoint answered {status}",
            retry_after=retry_after,
        )
    if 300 <= status < 400:
        detail = f"the endpoint answered {status}; redirects are not followed, use the final URL"
        return Attempt(Verdict.FAILED, "redirect", detail)
    if 400 <= status < 500:
        return Attempt(Verdict.FAILED, "rejected", f"the endpoint answered {status}")
    return Attempt(Verdict.RETRY, f"http_{status}", f"unexpected status {status}")


def retry_after_seconds(value: str | None, at: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from ``at`` (RFC 9110: delta seconds, or an HTTP
    date; a date already past is 0); None when absent or unreadable (or a date without
    ``at`` to read it against)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    if at is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - at).total_seconds())


async def deliver(
    pool: PinnedPool,
    secret: str,
    action: OutboundAction,
    *,
    at: datetime,
    allow_private: bool,
    require_https: bool,
    timeout: float,
) -> Attempt:
    """POST ``action`` to the pool's URL, signed with ``secret``; the whole attempt
    (resolution, connection, answer) is bounded by ``timeout`` seconds."""
    return await post_signed(
        pool,
        secret,
        action.id,
        payload(action),
        at=at,
        allow_private=allow_private,
        require_https=require_https,
        timeout=timeout,
    )


async def post_signed(
    pool: PinnedPool,
    secret: str,
    msg_id: str,
    body: bytes,
    *,
    at: datetime,
    allow_private: bool,
    require_https: bool,
    timeout: float,
) -> Attempt:
    """POST ``body`` to the pool's URL with the Standard Webhooks headers for ``msg_id``,
    through the network guard (every resolved address checked, the connection pinned to
    one); the whole attempt is bounded by ``timeout`` seconds. Any HTTP channel sends this
    way."""
    errors = pool.url_errors(allow_private=allow_private, require_https=require_https)
    if errors:
        return Attempt(Verdict.FAILED, "unsafe_url", f"url {'; '.join(errors)}")
    try:
        target = pool.target
        headers = signed_headers(secret, msg_id, at, body)
    except ValueError as exc:
        return Attempt(Verdict.FAILED, "bad_channel", str(exc))
    try:
        async with asyncio.timeout(timeout):
            found = await resolve(target.host, target.port, allow_private=allow_private)
            if not found.resolved:
                return Attempt(Verdict.RETRY, "dns", "; ".join(found.errors))
            if found.errors:
                return Attempt(Verdict.FAILED, "unsafe_url", "; ".join(found.errors))
            status, retry_after = await _post_to_any(pool, found.addresses, headers, body)
    except TimeoutError:
        return Attempt(Verdict.RETRY, "timeout", f"no answer within {timeout:g} s")
    except OSError as exc:  # refused, reset, TLS, a garbled answer
        return Attempt(Verdict.RETRY, "connection", f"{type(exc).__name__}: {exc}"[:500])
    return classify(status, retry_after, at=at)


async def _post_to_any(
    pool: PinnedPool,
    addresses: tuple[netguard.IPAddress, ...],
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, str | None]:
    # Every address passed the guard; the next is tried only when a connection could not be
    # made, so nothing was sent yet (a name often has an IPv4 and an IPv6 address, and only
    # one of them may listen).
    for address in addresses[:-1]:
        try:
            return await pool.post(address, headers, body)
        except ConnectFailed:
            continue
    return await pool.post(addresses[-1], headers, body)
