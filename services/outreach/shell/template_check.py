"""Checking a rule's template before it is saved or previewed: rendered on the sample card
(or, asked for, on one customer's card) within the hard limits, in a worker thread, so a
template bomb costs the event loop nothing (health checks and heartbeats are answered while
it is judged)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError

from services.outreach.core import templates
from services.outreach.core.rules import Offer, Rule, template_errors
from services.outreach.core.template_limits import RenderLimits
from services.outreach.core.templates import Template
from services.outreach.core.unsubscribe import LINK_PLACEHOLDER
from services.outreach.settings import OutreachSettings
from services.outreach.shell.decide import render_limits


async def check_template(rule: Rule, settings: OutreachSettings) -> None:
    """Raise a 422 naming each part of the template that does not render on the sample card
    (``body.action.template.body``: ``template_limit: loop iterations over 10000``)."""
    errors = await asyncio.to_thread(template_errors, rule, render_limits(settings))
    if errors:
        raise RequestValidationError(
            [
                {"loc": ("body", *field.split(".")), "msg": why, "type": "invalid_template"}
                for field, why in errors
            ]
        )


class NotRendered(Exception):
    """A template that does not render on the customer's card: which part, and why."""

    def __init__(self, part: str, why: str) -> None:
        super().__init__(f"{part}: {why}")
        self.part = part
        self.why = why


def _render_on(
    template: Template,
    card: Mapping[str, Any],
    offer: Offer | None,
    limits: RenderLimits,
    holiday: Mapping[str, str] | None,
) -> tuple[str, str]:
    context = templates.build_context(
        card, offer.model_dump(mode="json") if offer else None, LINK_PLACEHOLDER, holiday
    )
    try:
        return templates.render(template, context, limits)
    except templates.TemplateLimit as exc:
        raise NotRendered(exc.part, f"{templates.TEMPLATE_LIMIT}: {exc.limit}") from None
    except templates.TemplateError as exc:
        text = str(exc)
        part = "subject" if text.startswith("subject") else "body"
        raise NotRendered(part, text.removeprefix(part).lstrip(":, ")) from None


async def render_on_card(
    template: Template,
    card: Mapping[str, Any],
    offer: Offer | None,
    settings: OutreachSettings,
    holiday: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """``(subject, body)`` of ``template`` on ``card`` exactly as a decision renders it (the
    unsubscribe link left as its placeholder; ``holiday`` as a calendar rule's firing names
    it), within the hard limits, in a worker thread. Raises :class:`NotRendered`."""
    return await asyncio.to_thread(
        _render_on, template, card, offer, render_limits(settings), holiday
    )
