"""API models more than one of scoring's routers answers with."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from shared.card import Stage


# One lifecycle stage change, as the history and the export list it.
class StageChange(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_stage: Stage
    to_stage: Stage
    at: date = Field(description="the UTC day of the change")
