"""Cursors for keyset pagination: the position after a page's last row, opaque to clients.

A cursor is base64url (unpadded) of the position: a small model as JSON, or a plain text key.
Whatever a client sends back that this did not write is a 422 naming ``query.cursor``, never
a 500 and never a silently empty page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, Select, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.errors import beyond_schema, invalid

NOT_A_CURSOR = "not a cursor returned by this endpoint; start without one"

# What a paged route's OpenAPI document says of its cursor: opaque, so only the route knows it.
CURSOR_RESPONSES = beyond_schema(
    {"query.cursor": "must be a `next_cursor` this endpoint returned (opaque)"}
)

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


class AtId(Protocol):
    """A newest-first position: the last row's time and id."""

    at: datetime
    id: Any


async def newest_first(
    conn: AsyncConnection,
    query: Select[Any],
    at: ColumnElement[Any],
    row_id: ColumnElement[Any],
    *,
    limit: int,
    cursor: str | None,
    shape: type[M],
) -> tuple[Sequence[Row[Any]], M | None]:
    """One page of ``query``, newest first by (``at``, ``row_id``), after the position
    ``cursor`` holds; the rows and the position of the last one when more follow."""
    if cursor is not None:
        after = cast(AtId, decode_cursor(cursor, shape))
        query = query.where(tuple_(at, row_id) < tuple_(literal(after.at), literal(after.id)))
    query = query.order_by(at.desc(), row_id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]._mapping
    return rows[:limit], shape.model_validate({"at": last[at], "id": last[row_id]})
