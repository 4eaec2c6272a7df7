"""Signed links a customer uses on their own: one-click unsubscribe, and re-subscribe.

A token is ``<customer id, base64url>.<issued, Unix seconds>.<HMAC-SHA256 of both, base64url>``:
the link alone proves which customer it was made for and when, so the endpoints need no login
and no lookup table, nobody can unsubscribe someone else by editing the link, and nobody can
move its date. Each kind of link is signed for its own purpose, so an unsubscribe token never
verifies as a re-subscribe token.

Links expire (after ``unsubscribe_link_days``, 60 at the least): an old message forwarded or
leaked does not act for the customer forever. They are minted when a message is sent, not
when it is decided, so a message held for weeks still carries a fresh link: the template
renders :data:`LINK_PLACEHOLDER` and delivery puts the minted link in its place
(:func:`with_link`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

UNSUBSCRIBE_PATH = "/v1/unsubscribe/"
RESUBSCRIBE_PATH = "/v1/resubscribe/"
# Where a rendered message's link goes until delivery mints the real one: a URL, so that
# nothing a template does to text (escaping, quoting) mangles it, on a domain that never
# resolves (RFC 2606), so that a placeholder that escaped anyway leads nowhere.
LINK_PLACEHOLDER = "https://unsubscribe-link.invalid/minted-at-sending"
# Links made before they carried a date (``<id>.<mac>``) count as made on the day dated links
# came in, so they expire like the others rather than never.
UNDATED_ISSUED = datetime(2026, 12, 5, tzinfo=UTC)
_UNDATED_PURPOSE = b"tend.unsubscribe.v1\x00"
_MAX_SECONDS_DIGITS = 12


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    RESUBSCRIBE = "resubscribe"


@dataclass(frozen=True, slots=True)
class Link:
    """What a verified token says: for whom, and when it was made."""

    customer_id: str
    issued: datetime

    def expired(self, now: datetime, days: int) -> bool:
        return now - self.issued > timedelta(days=days)

    def expires(self, days: int) -> datetime:
        return self.issued + timedelta(days=days)


def token_for(
    customer_id: str, secret: str, issued: datetime, purpose: Purpose = Purpose.UNSUBSCRIBE
) -> str:
    """The URL-safe token of a ``purpose`` link for ``customer_id``, made at ``issued``."""
    raw_id = customer_id.encode()
    seconds = str(int(issued.timestamp()))
    return f"{_b64(raw_id)}.{seconds}.{_b64(_mac(purpose, raw_id, seconds, secret))}"


def verify(token: str, secret: str, purpose: Purpose = Purpose.UNSUBSCRIBE) -> Link | None:
    """What ``token`` says, or None if it was not made with ``secret`` for ``purpose``
    (tampered, truncated, or garbage). The comparison is constant-time; expiry is the
    caller's to judge (:meth:`Link.expired`), so that it can say so."""
    parts = token.split(".")
    if len(parts) == 2 and purpose is Purpose.UNSUBSCRIBE:
        return _verify_undated(parts[0], parts[1], secret)
    if len(parts) != 3:
        return None
    encoded_id, seconds, encoded_mac = parts
    # Only the canonical form is accepted, so one link has exactly one spelling.
    if not (seconds.isascii() and seconds.isdigit()) or len(seconds) > _MAX_SECONDS_DIGITS:
        return None
    if seconds != str(int(seconds)):
        return None
    try:
        raw_id = _unb64(encoded_id)
        given = _unb64(encoded_mac)
        customer_id = raw_id.decode()
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _mac(purpose, raw_id, seconds, secret)):
        return None
    if _b64(raw_id) != encoded_id or _b64(given) != encoded_mac:
        return None
    return Link(customer_id, datetime.fromtimestamp(int(seconds), UTC))


def unsubscribe_url(base_url: str, customer_id: str, secret: str, issued: datetime) -> str:
    """The one-click link for ``customer_id`` (``{base_url}/v1/unsubscribe/{token}``)."""
    token = token_for(customer_id, secret, issued, Purpose.UNSUBSCRIBE)
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}{token}"


def resubscribe_url(base_url: str, customer_id: str, secret: str, issued: datetime) -> str:
    """The link that lifts ``customer_id``'s own unsubscribe
    (``{base_url}/v1/resubscribe/{token}``)."""
    token = token_for(customer_id, secret, issued, Purpose.RESUBSCRIBE)
    return f"{base_url.rstrip('/')}{RESUBSCRIBE_PATH}{token}"


def with_link(text: str | None, link: str) -> str | None:
    """A rendered text with :data:`LINK_PLACEHOLDER` replaced by the minted ``link``."""
    return text.replace(LINK_PLACEHOLDER, link) if text else text


def _verify_undated(encoded_id: str, encoded_mac: str, secret: str) -> Link | None:
    try:
        raw_id = _unb64(encoded_id)
        given = _unb64(encoded_mac)
        customer_id = raw_id.decode()
    except (binascii.Error, ValueError):
        return None
    expected = hmac.new(secret.encode(), _UNDATED_PURPOSE + raw_id, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return None
    if _b64(raw_id) != encoded_id or _b64(given) != encoded_mac:
        return None
    return Link(customer_id, UNDATED_ISSUED)


def _mac(purpose: Purpose, raw_id: bytes, seconds: str, secret: str) -> bytes:
    # The purpose binds a token to its use: an HMAC made with the same secret for anything
    # else never verifies here.
    signed = b"tend." + purpose.value.encode() + b".v2\x00" + raw_id + b"\x00" + seconds.encode()
    return hmac.new(secret.encode(), signed, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
