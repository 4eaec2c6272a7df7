"""What outreach's routers share: the running service and the 404 of a missing rule."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException

from services.outreach.shell.service import OutreachState
from shared.errors import ERROR_RESPONSES, ErrorBody
from shared.service_state import typed_state

Outreach = Annotated[OutreachState, typed_state(OutreachState)]

RULE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such rule (or it was deleted)"},
}


def no_such_rule(rule_id: str) -> HTTPException:
    """The 404 of a rule that does not exist (or was deleted)."""
    return HTTPException(404, f"no rule with id {rule_id!r}")
