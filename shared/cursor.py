"""Cursors for keyset pagination: the position after a page's last row, opaque to clients.

A cursor is base64url (unpadded) of the position: a small model as JSON, or a plain text key.
Whatever a client sends back that this did not write is a 422 naming ``query.cursor``, never
a 500 and never a silently empty page.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

from pydantic import BaseModel

from shared.errors import invalid

NOT_A_CURSOR = "not a cursor returned by this endpoint; start without one"

M = TypeVar("M", bound=BaseModel)


def _pack(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        raise invalid("query.cursor", NOT_A_CURSOR) from None


def encode_cursor(position: BaseModel) -> str:
    return _pack(position.model_dump_json().encode())


def decode_cursor(token: str, shape: type[M]) -> M:
    """The position ``token`` holds, as ``shape``; bad base64, JSON or shape alike are a 422."""
    try:
        return shape.model_validate_json(_unpack(token))
    except ValueError:
        raise invalid("query.cursor", NOT_A_CURSOR) from None


def encode_text_cursor(key: str) -> str:
    return _pack(key.encode())


def decode_text_cursor(token: str) -> str:
    try:
        key = _unpack(token).decode()
    except UnicodeDecodeError:
        key = ""
    if not key:
        raise invalid("query.cursor", NOT_A_CURSOR)
    return key
