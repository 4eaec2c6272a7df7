"""``POST /v1/templates/render``: a template rendered on one real customer's card, as that
customer would get the message. Read-only: nothing is decided, sent or recorded."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from services.outreach.api.deps import Outreach
from services.outreach.core.calendars import CountryCode, holiday_on
from services.outreach.core.rules import Offer
from services.outreach.core.templates import Template
from services.outreach.core.unsubscribe import LINK_PLACEHOLDER
from services.outreach.shell.template_check import NotRendered, render_on_card
from services.outreach.store.replica import card_of
from shared.auth import Principal, RequireScope, Scope
from shared.errors import ErrorBody, beyond_schema, invalid, responses

router = APIRouter(prefix="/v1", tags=["rules"])

# Rendering changes nothing: operations read it, and marketing runs it on the rules it writes.
Renderer = Annotated[Principal, RequireScope(Scope.OPS_READ, Scope.MARKETING_WRITE)]


class HolidayIn(BaseModel):
    """The holiday a calendar rule's greeting would name: the one of ``calendar`` that begins
    on ``date``."""

    model_config = ConfigDict(extra="forbid")

    calendar: CountryCode
    date: dt.date = Field(description="the day the holiday begins, YYYY-MM-DD")


class RenderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "c-42",
                    "template": {
                        "subject": "Thank you, {{ customer.name }}",
                        "body": "Use {{ offer.code }} before it expires. {{ unsubscribe_url }}",
                    },
                    "offer": {"code": "THANKS10", "description": "10% off your next order"},
                },
                {
                    "customer_id": "c-42",
                    "template": {
                        "subject": "{% if holiday %}Happy {{ holiday.name }}{% endif %}",
                        "body": "Dear {{ customer.name }}, warm wishes. {{ unsubscribe_url }}",
                    },
                    "holiday": {"calendar": "CN", "date": "2027-09-15"},
                },
            ]
        },
    )

    customer_id: str = Field(min_length=1, max_length=128, description="whose card to render on")
    template: Template = Field(description="a rule action's template (subject and body)")
    offer: Offer | None = Field(None, description="the rule action's offer, if it has one")
    holiday: HolidayIn | None = Field(
        None,
        description="render as a calendar rule's greeting on that holiday (`holiday.name`, "
        "`holiday.date`, `holiday.calendar`); without it `holiday` is null, as for every "
        "other trigger",
    )


class RenderOut(BaseModel):
    customer_id: str
    subject: str = Field(description="the subject line, folded onto one line")
    body: str = Field(
        description="the message body. The customer's one-click unsubscribe link is minted "
        f"when a message is sent: `unsubscribe_url` renders as `{LINK_PLACEHOLDER}`"
    )


@router.post(
    "/templates/render",
    response_model=RenderOut,
    responses=responses(
        {
            404: {"model": ErrorBody, "description": "outreach has no card of the customer"},
        },
        beyond_schema(
            {
                "body.template": "renders on this customer's card (`body.template.subject` "
                "or `body.template.body`, with why: a missing field, a syntax error, "
                "`template_limit: ...`)",
                "body.holiday.date": "a day on which a holiday of `body.holiday.calendar` begins",
            }
        ),
    ),
    summary="Render a template on one customer",
)
async def render_template(outreach: Outreach, request: RenderIn, _: Renderer) -> RenderOut:
    """The subject and body of `template` (with `offer`) rendered on the customer's card as
    outreach holds it now (the latest card scoring published), exactly as a rule's decision
    would render them: the same sandbox, the same hard template limits
    (`TEND_OUTREACH_TEMPLATE_RENDER_MS` and the size limits), the same names (`customer`,
    `card`, `offer`, `unsubscribe_url`, and `holiday`: the one named by `holiday`, as a
    calendar rule greets on it, else null). Nothing is decided, sent or recorded; `ops:read`
    or `marketing:write` may call it."""
    holiday: dict[str, str] | None = None
    if request.holiday is not None:
        named = request.holiday
        found = holiday_on(named.calendar, named.date, solemn=True)
        if found is None:
            raise invalid(
                "body.holiday.date",
                f"no holiday of calendar {named.calendar} begins on {named.date.isoformat()}",
            )
        holiday = {"name": found.name, "date": found.day.isoformat(), "calendar": named.calendar}
    async with outreach.engine.connect() as conn:
        card = await card_of(conn, request.customer_id)
    if card is None:
        raise HTTPException(404, f"no card of customer {request.customer_id!r}")
    try:
        subject, body = await render_on_card(
            request.template, card, request.offer, outreach.settings, holiday
        )
    except NotRendered as exc:
        raise invalid(f"body.template.{exc.part}", exc.why) from None
    return RenderOut(customer_id=request.customer_id, subject=subject, body=body)
