"""The one shape of every error answer, and the ways a route builds one.

A 4xx or 5xx always carries :class:`ErrorBody`: a slug, a message a person can act on, and for
a bad request each field and why. Routes raise :func:`invalid` for a field their models cannot
check themselves, so it reads like any other validation error; a database that cannot be
reached is :func:`database_unavailable` (503 with ``Retry-After``) wherever it is noticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

# Seconds a client is told to wait when the database cannot be reached.
RETRY_AFTER_SECONDS = 5


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    error: str
    message: str
    errors: list[FieldError] = []


SLUGS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": SLUGS[code].replace("_", " ")}
    for code in (400, 401, 403, 413, 415, 422)
}

# Where the OpenAPI document lists, for a route's 422, the rules it checks beyond its schema.
BEYOND_SCHEMA = "x-beyond-schema"


def beyond_schema(rules: Mapping[str, str]) -> dict[int | str, dict[str, Any]]:
    """The 422 of a route that checks, besides its schema, rules JSON Schema cannot state — a
    time relative to now, a cursor this endpoint wrote, an id that must exist, two fields
    that must differ: ``{"query.cursor": "a cursor this endpoint returned"}``. Each field and
    its rule are in the answer's description and under ``x-beyond-schema``, so a client
    knows which schema-valid requests can still be refused, and why; every other 422 means
    the request broke the schema."""
    said = "; ".join(f"`{field}`: {rule}" for field, rule in rules.items())
    return {
        422: {
            "model": ErrorBody,
            "description": f"validation error: each bad field and why. Beyond the schema: {said}",
            BEYOND_SCHEMA: dict(rules),
        }
    }


def responses(
    *extra: Mapping[int | str, dict[str, Any]],
) -> dict[int | str, dict[str, Any]]:
    """:data:`ERROR_RESPONSES` with a route's own answers (a 404, a :func:`beyond_schema`);
    the 422s' rules are merged."""
    out: dict[int | str, dict[str, Any]] = dict(ERROR_RESPONSES)
    rules: dict[str, str] = {}
    for more in extra:
        for status, answer in more.items():
            rules.update(answer.get(BEYOND_SCHEMA, {}))
            out[status] = answer
    if rules:
        out.update(beyond_schema(rules))
    return out


def error_response(
    status: int,
    message: str,
    *,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=SLUGS.get(status, "error"), message=message, errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


def field_errors(errors: Any) -> list[FieldError]:
    """pydantic error dicts → ``[{field: "body.amount", reason: "..."}]``."""
    out = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        reason = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(FieldError(field=loc or "body", reason=reason))
    return out


def invalid(field: str, reason: str) -> RequestValidationError:
    """A 422 naming ``field`` (``body.id``, ``query.cursor``), in the shape of every other
    validation error."""
    loc = tuple(field.split("."))
    return RequestValidationError([{"loc": loc, "msg": reason, "type": "value_error"}])


def _unavailable(what: str, retry_after: int, note: str | None) -> tuple[str, dict[str, str]]:
    said = f"{note}, " if note else ""
    return (
        f"{what} is unavailable; {said}retry after {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


def unavailable(
    what: str, *, retry_after: int = RETRY_AFTER_SECONDS, note: str | None = None
) -> JSONResponse:
    """503 because ``what`` (the database, the broker) cannot be reached: the one answer
    every service gives, with ``Retry-After``; ``note`` says what that means for the request
    ("nothing was accepted")."""
    message, headers = _unavailable(what, retry_after, note)
    return error_response(503, message, headers=headers)


def unavailable_error(
    what: str, *, retry_after: int = RETRY_AFTER_SECONDS, note: str | None = None
) -> HTTPException:
    """:func:`unavailable` for code that raises (a dependency, say)."""
    message, headers = _unavailable(what, retry_after, note)
    return HTTPException(503, message, headers=headers)


def database_unavailable() -> JSONResponse:
    return unavailable("the database")
