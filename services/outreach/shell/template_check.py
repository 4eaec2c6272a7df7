"""Checking a rule's template before it is saved or previewed: rendered on the sample card
within the hard limits, in a worker thread, so a template bomb costs the event loop nothing
(health checks and heartbeats are answered while it is judged)."""

from __future__ import annotations

import asyncio

from fastapi.exceptions import RequestValidationError

from services.outreach.core.rules import Rule, template_errors
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
