"""What outreach's routes share: the scopes they require, the shape of a 422 they raise
themselves, and the 404 of a missing rule."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from shared.auth import Principal, RequireScope, Scope
from shared.errors import ERROR_RESPONSES, ErrorBody

Reader = Annotated[Principal, RequireScope(Scope.OPS_READ)]
Writer = Annotated[Principal, RequireScope(Scope.MARKETING_WRITE)]
Operator = Annotated[Principal, RequireScope(Scope.OPS_WRITE)]


def invalid(field: str, reason: str) -> RequestValidationError:
    """A 422 naming ``field`` (``body.id``, ``query.cursor``), in the shape of every other
    validation error."""
    loc = tuple(field.split("."))
    return RequestValidationError([{"loc": loc, "msg": reason, "type": "value_error"}])


RULE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such rule (or it was deleted)"},
}


def no_such_rule(rule_id: str) -> HTTPException:
    """The 404 of a rule that does not exist (or was deleted)."""
    return HTTPException(404, f"no rule with id {rule_id!r}")
