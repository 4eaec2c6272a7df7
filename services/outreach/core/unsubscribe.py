"""Signed one-click unsubscribe links.

A token is ``<customer id, base64url>.<HMAC-SHA256 of it, base64url>``: the link alone proves
which customer it was made for, so the unsubscribe endpoint needs no login and no lookup
table, and nobody can unsubscribe someone else by editing the link. Tokens do not expire: a
customer must be able to opt out from a years-old message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

# Binds a token to its purpose: an HMAC made with the same secret for anything else never
# verifies here.
_PURPOSE = b"tend.unsubscribe.v1\x00"
UNSUBSCRIBE_PATH = "/v1/unsubscribe/"


def token_for(customer_id: str, secret: str) -> str:
    """The URL-safe token that unsubscribes ``customer_id``."""
    raw_id = customer_id.encode()
    return f"{_b64(raw_id)}.{_b64(_mac(raw_id, secret))}"


def verify(token: str, secret: str) -> str | None:
    """The customer id ``token`` was made for, or None if it was not made with ``secret``
    (tampered, truncated, or garbage). The comparison is constant-time."""
    encoded_id, sep, encoded_mac = token.partition(".")
    if not sep:
        return None
    try:
        raw_id = _unb64(encoded_id)
        given = _unb64(encoded_mac)
        customer_id = raw_id.decode()
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _mac(raw_id, secret)):
        return None
    # Only the canonical encoding is accepted, so one customer has exactly one token.
    if _b64(raw_id) != encoded_id or _b64(given) != encoded_mac:
        return None
    return customer_id


def unsubscribe_url(base_url: str, customer_id: str, secret: str) -> str:
    """The one-click link for ``customer_id`` (``{base_url}/v1/unsubscribe/{token}``)."""
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}{token_for(customer_id, secret)}"


def _mac(raw_id: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), _PURPOSE + raw_id, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
