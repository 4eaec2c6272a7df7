"""Message templates: Jinja2 in its immutable sandbox, over a customer's card and nothing else.

A template has a ``subject`` and a ``body``. Both see exactly four names:

- ``card``: the whole score card (``card.value.orders``, ``card.tier``...), as on the changes
  topic: money is a decimal string, times are ISO strings;
- ``customer``: the card's profile (``customer.name``, ``customer.email``...);
- ``offer``: the rule's offer (``offer.code``, ``offer.description``...), or None;
- ``unsubscribe_url``: the link that opts the customer out.

Settings, secrets and the process are out of reach by construction: they are never in the
context, and the sandbox refuses attribute escapes such as ``''.__class__``. A name the
context lacks is an error (``StrictUndefined``), not silently empty; a None value prints as
nothing, so ``Hello {{ customer.name }}`` degrades to ``Hello`` when the name is unknown.
Output is text: no HTML autoescaping (an email channel that sends HTML escapes there).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, StringConstraints

SUBJECT_MAX = 200
BODY_MAX = 20_000


class Template(BaseModel):
    """A subject line and a body, both Jinja2 source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Annotated[str, StringConstraints(max_length=SUBJECT_MAX)] = ""
    body: Annotated[str, StringConstraints(min_length=1, max_length=BODY_MAX)]


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered; the message says which part and why."""


def _finalize(value: Any) -> Any:
    return "" if value is None else value


_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    finalize=_finalize,
    keep_trailing_newline=True,
    auto_reload=False,
)
# lipsum can burn CPU on demand and no message needs it; the remaining globals are harmless.
_ENV.globals.pop("lipsum", None)

# Errors a template author can cause; anything else is a bug of ours and should propagate.
_RENDER_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    AttributeError,
    RecursionError,
)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _render_part(part: str, source: str, context: Mapping[str, Any]) -> str:
    try:
        return _compiled(source).render(context)
    except SecurityError as exc:
        raise TemplateError(f"{part}: not allowed in a template: {exc}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{part}, line {exc.lineno}: {exc.message}") from exc
    except _RENDER_ERRORS as exc:
        raise TemplateError(f"{part}: {exc}") from exc


def build_context(
    card: Mapping[str, Any],
    offer: Mapping[str, Any] | None = None,
    unsubscribe_url: str = "",
) -> dict[str, Any]:
    """The only names a template sees; see the module docstring."""
    return {
        "card": card,
        "customer": card.get("profile") or {},
        "offer": offer,
        "unsubscribe_url": unsubscribe_url,
    }


def render(template: Template, context: Mapping[str, Any]) -> tuple[str, str]:
    """``(subject, body)`` rendered over ``context`` (from :func:`build_context`).

    Raises :class:`TemplateError`. The subject is folded onto one line: a newline in it
    would let card data (a customer's name) inject headers into an email.
    """
    subject = _render_part("subject", template.subject, context)
    body = _render_part("body", template.body, context)
    return " ".join(subject.split()), body


def check(template: Template, offer: Mapping[str, Any] | None = None) -> list[str]:
    """The errors of rendering ``template`` with ``offer`` on :data:`SAMPLE_CARD`; empty if fine.

    Rules call this at save time, so a template that names a missing field or tries to
    escape the sandbox is rejected before it can reach a customer.
    """
    errors: list[str] = []
    context = build_context(SAMPLE_CARD, offer, "https://example.com/unsubscribe/sample")
    for part, source in (("subject", template.subject), ("body", template.body)):
        try:
            _render_part(part, source, context)
        except TemplateError as exc:
            errors.append(str(exc))
    return errors


# Every field of a card filled in, as it arrives on the changes topic, so a template is
# checked against the full shape a real card can have.
SAMPLE_CARD: Mapping[str, Any] = {
    "customer_id": "sample-customer",
    "as_of": "2025-06-01T08:00:00+00:00",
    "profile": {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0000",
        "birthday": "1990-05-17",
        "timezone": "Europe/London",
        "locale": "en-GB",
        "consent": {"email": True, "sms": False, "marketing": True},
        "tags": ["vip", "newsletter"],
        "member_tier": "gold",
        "attributes": {"favourite_category": "tea", "store": "london-1"},
    },
    "value": {
        "lifetime_spend": "1234.50",
        "spend_30d": "89.90",
        "spend_90d": "240.00",
        "spend_365d": "910.40",
        "orders": 14,
        "average_order_value": "88.18",
        "first_order_at": "2022-03-04T12:30:00+00:00",
        "last_order_at": "2025-05-20T17:45:00+00:00",
        "purchase_interval_days": 21.0,
        "outstanding": "0.00",
    },
    "value_score": 1.82,
    "rfm": {"recency": 5, "frequency": 4, "monetary": 5, "segment": "champions"},
    "prediction": {
        "frequency": 12,
        "recency_days": 1173.0,
        "age_days": 1185.0,
        "p_alive": 0.93,
        "expected_orders_90d": 3.4,
        "expected_order_value": 86.2,
        "clv_365d": 1120.0,
    },
    "tier": "key",
    "strategy": "develop",
    "stage": "mature",
    "stage_since": "2023-01-10T00:00:00+00:00",
    "next_transition_at": "2025-06-30T00:00:00+00:00",
    "complaints": {"open": 0, "total": 1, "last_at": "2024-02-11T09:00:00+00:00"},
    "visits": {"last_30d": 3, "total": 41, "last_at": "2025-05-28T15:10:00+00:00"},
    "updated_at": "2025-05-28T15:10:00+00:00",
}
