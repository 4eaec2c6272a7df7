"""Numbers, money, shares and instants written for people (the pages' Jinja2 filters)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import Environment
from markupsafe import Markup, escape

from services.console.settings import ConsoleSettings

DASH = "—"


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


# An outcome's verdict in words. A lift or harm against the model's forecast (a rule with no
# control group) is weaker evidence than one against a control group, and says so.
VERDICTS = {
    "lift": "lift",
    "harm": "harm",
    "lift_vs_forecast": "lift over the forecast",
    "harm_vs_forecast": "harm against the forecast",
    "no_difference": "no difference",
    "too_small": "too small to tell",
    "no_baseline": "no baseline",
}


def verdict_of(group: dict[str, Any]) -> str:
    """An outcome group's verdict as the console shows it: ``too_small`` whenever the sample
    is small (never a win); a lift or harm measured against the model's forecast rather than
    a control group is ``lift_vs_forecast`` or ``harm_vs_forecast``."""
    if group.get("small_sample"):
        return "too_small"
    found = str(group.get("verdict") or "no_baseline")
    if found in ("lift", "harm") and group.get("baseline") == "model_forecast":
        return f"{found}_vs_forecast"
    return found


def install(env: Environment, settings: ConsoleSettings) -> None:
    locale = settings.locale
    currency = settings.currency

    def number(value: Any, digits: int = 0) -> str:
        d = _decimal(value)
        if d is None:
            return DASH
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(d, format=pattern, locale=locale)

    def money(value: Any) -> str:
        d = _decimal(value)
        return DASH if d is None else format_currency(d, currency, locale=locale)

    def share(value: Any, digits: int = 1) -> str:
        d = _decimal(value)
        if d is None:
            return DASH
        return format_percent(d, format="#,##0." + "0" * digits + "%", locale=locale)

    def instant(value: Any) -> Markup | str:
        """An ISO instant as ``<time datetime="…">2026-12-05 14:03 UTC</time>``: the
        console's script rewrites it in the viewer's own time zone."""
        if not value:
            return DASH
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        utc = moment.astimezone(UTC)
        return Markup('<time datetime="{}">{}</time>').format(
            utc.isoformat(), escape(utc.strftime("%Y-%m-%d %H:%M UTC"))
        )

    def day(value: Any) -> str:
        if not value:
            return DASH
        try:
            return date.fromisoformat(str(value)[:10]).strftime("%d %b %Y")
        except ValueError:
            return str(value)

    def label(value: Any) -> str:
        """An API slug (``frequency_cap``, ``at_risk``) as words."""
        return DASH if value in (None, "") else str(value).replace("_", " ")

    env.filters.update(
        number=number, money=money, share=share, instant=instant, day=day, label=label
    )
    env.globals["currency"] = currency
    env.globals["verdict_of"] = verdict_of
    env.globals["verdicts"] = VERDICTS
