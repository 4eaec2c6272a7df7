"""Message templates: Jinja2 in its immutable sandbox, over a customer's card and nothing else.

A template has a ``subject`` and a ``body``. Both see exactly six names:

- ``card``: the whole score card (``card.value.orders``, ``card.tier``...), as on the changes
  topic: money is a decimal string, times are ISO strings;
- ``customer``: the card's profile (``customer.name``, ``customer.email``...);
- ``offer``: the rule's offer (``offer.code``, ``offer.description``...), or None;
- ``unsubscribe_url``: the link that opts the customer out;
- ``launch``: a broadcast launch's content (``launch.all_items``, ``launch.items_for_customer``:
  the new items in the categories or brands the customer buys; see
  :mod:`services.outreach.core.launch`), every list empty outside a launch;
- ``holiday``: the holiday a calendar schedule greets on (``holiday.name``: "Mid-Autumn
  Festival", ``holiday.date``: "2027-09-15", ``holiday.calendar``: "CN"; see
  :func:`services.outreach.core.schedules.holiday_of`), or None for every other action (a
  rule's own dates, another trigger): ``{% if holiday %}Happy {{ holiday.name }}{% endif %}``.

Settings, secrets and the process are out of reach by construction: they are never in the
context, and the sandbox refuses attribute escapes such as ``''.__class__``. A name the
context lacks is an error (``StrictUndefined``), not silently empty; a None value prints as
nothing, so ``Hello {{ customer.name }}`` degrades to ``Hello`` when the name is unknown.
Output is text: no HTML autoescaping (an email channel that sends HTML escapes there).

Every render runs within hard limits on loops, calls, recursion, sizes and time
(:mod:`services.outreach.core.template_limits`); crossing one raises :class:`TemplateLimit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache, partial
from typing import Annotated, Any

import jinja2
from jinja2.exceptions import SecurityError
from pydantic import BaseModel, ConfigDict, StringConstraints

from services.outreach.core.conditions import LAUNCH_KEY
from services.outreach.core.launch import template_launch
from services.outreach.core.template_limits import (
    DEFAULT_LIMITS,
    BoundedEnvironment,
    Budget,
    RenderLimits,
    TemplateLimitError,
    checked,
    run_budgeted,
)
from services.outreach.core.template_source import instrument, static_check
from shared.card import (
    Bought,
    Card,
    Complaints,
    Consent,
    LastItem,
    Membership,
    NextMembershipTier,
    Prediction,
    Preferences,
    Profile,
    Rfm,
    Segment,
    Stage,
    Strategy,
    Tier,
    Unsubscribed,
    Value,
    Visits,
)

SUBJECT_MAX = 200
BODY_MAX = 20_000


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered; the message says which part and why."""


class TemplateLimit(TemplateError):
    """A template over one of the hard limits (:mod:`.template_limits`); the message is
    ``<part>: template_limit: <the limit>``, and :attr:`limit` is the limit alone."""

    def __init__(self, part: str, limit: str) -> None:
        super().__init__(f"{part}: {TEMPLATE_LIMIT}: {limit}")
        self.part = part
        self.limit = limit


TEMPLATE_LIMIT = "template_limit"


class Template(BaseModel):
    """A subject line and a body, both Jinja2 source. Whether they compile, keep within the
    hard limits and render on a sample card is :func:`check` — work for a worker thread (a
    template may take up to the time limit), run when a rule is saved or previewed, never
    when stored rules are loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Annotated[str, StringConstraints(max_length=SUBJECT_MAX)] = ""
    body: Annotated[str, StringConstraints(min_length=1, max_length=BODY_MAX)]


def _finalize(value: Any) -> Any:
    return "" if value is None else checked(value)


_ENV = BoundedEnvironment(
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


_COMPILE_ERRORS = (TemplateLimitError, SecurityError, jinja2.TemplateSyntaxError)


@lru_cache(maxsize=1024)
def _compiled_or_error(source: str) -> jinja2.Template | Exception:
    # A source that does not compile is remembered too: a stored rule whose template fails is
    # not parsed again for every action it decides.
    try:
        tree = _ENV.parse(source)
        static_check(tree)
        code = _ENV.compile(instrument(tree))
    except (RecursionError, SyntaxError):  # nested past what Python's parser and stack take
        return TemplateLimitError("nesting too deep")
    except _COMPILE_ERRORS as exc:
        return exc.with_traceback(None)
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


def _compiled(source: str) -> jinja2.Template:
    """``source`` parsed, checked for constant bombs, instrumented and compiled (cached: the
    same few templates are rendered thousands of times)."""
    found = _compiled_or_error(source)
    if isinstance(found, Exception):
        raise found.with_traceback(None)
    return found


def _compile_part(part: str, source: str) -> jinja2.Template:
    try:
        return _compiled(source)
    except TemplateLimitError as exc:
        raise TemplateLimit(part, str(exc)) from None
    except SecurityError as exc:
        raise TemplateError(f"{part}: not allowed in a template: {exc}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{part}, line {exc.lineno}: {exc.message}") from exc


def static_errors(source: str) -> list[str]:
    """What is wrong with ``source`` before it runs: a syntax error, or a limit it crosses as
    written (``'x' * 10**10``, ``range(10**6)``, nested loops over constant ranges)."""
    try:
        _compiled(source)
    except TemplateLimitError as exc:
        return [f"{TEMPLATE_LIMIT}: {exc}"]
    except SecurityError as exc:
        return [f"not allowed in a template: {exc}"]
    except jinja2.TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    return []


def plain_text(source: str) -> bool:
    """Whether ``source`` is text alone, which renders as itself: no delimiter of Jinja's
    (they all open with ``{``) and no carriage return (Jinja's lexer rewrites newlines)."""
    return "{" not in source and "\r" not in source


def _render_part(part: str, source: str, context: Mapping[str, Any], budget: Budget) -> str:
    """One part rendered under ``budget`` (in force: see :func:`run_budgeted`)."""
    template = _compile_part(part, source)
    limit = budget.limits.size
    if plain_text(source):  # a fixed subject ("Thank you"): no context to build for it
        if len(source) > limit:
            raise TemplateLimit(part, f"output over {limit} characters")
        return source
    try:
        out: list[str] = []
        size = 0
        for piece in template.root_render_func(template.new_context(dict(context))):
            size += len(piece)
            if size > limit:
                raise TemplateLimitError(f"output over {limit} characters")
            out.append(piece)
        return "".join(out)
    except TemplateLimitError as exc:
        raise TemplateLimit(part, str(exc)) from None
    except MemoryError:
        raise TemplateLimit(part, "memory") from None
    except SecurityError as exc:
        raise TemplateError(f"{part}: not allowed in a template: {exc}") from exc
    except _RENDER_ERRORS as exc:
        raise TemplateError(f"{part}: {exc}") from exc


def build_context(
    card: Mapping[str, Any],
    offer: Mapping[str, Any] | None = None,
    unsubscribe_url: str = "",
    holiday: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The only names a template sees; see the module docstring."""
    launch = template_launch(card)
    if LAUNCH_KEY in card:  # the launch's content is the template's ``launch``, not the card's
        card = {k: v for k, v in card.items() if k != LAUNCH_KEY}
    return {
        "card": card,
        "customer": card.get("profile") or {},
        "offer": offer,
        "unsubscribe_url": unsubscribe_url,
        "launch": launch,
        "holiday": holiday,
    }


def render(
    template: Template, context: Mapping[str, Any], limits: RenderLimits = DEFAULT_LIMITS
) -> tuple[str, str]:
    """``(subject, body)`` rendered over ``context`` (from :func:`build_context`), each part
    within ``limits``.

    Raises :class:`TemplateError` (:class:`TemplateLimit` for a limit crossed). The subject is
    folded onto one line: a newline in it would let card data (a customer's name) inject
    headers into an email.
    """

    def both(budget: Budget) -> tuple[str, str]:  # one budget for the two parts
        return (
            _render_part("subject", template.subject, context, budget),
            _render_part("body", template.body, context, budget),
        )

    subject, body = run_budgeted(limits, both)
    return " ".join(subject.split()), body


def check_parts(
    template: Template,
    offer: Mapping[str, Any] | None = None,
    limits: RenderLimits = DEFAULT_LIMITS,
    holidays: Sequence[bool] = (False,),
) -> list[tuple[str, str]]:
    """``(part, why)`` for each part of ``template`` that does not render with ``offer`` on
    :data:`SAMPLE_CARD` within ``limits``; empty if both do. A limit crossed reads
    ``template_limit: <the limit>``. ``holidays``: whether the rule's actions render with a
    holiday (:data:`SAMPLE_HOLIDAY`), without (None), or either: each case is rendered.

    Rules are checked so when saved (off the event loop: a render may take up to the time
    limit), so a template that names a missing field, tries to escape the sandbox or crosses
    a limit is rejected before it can reach a customer.
    """
    errors: list[tuple[str, str]] = []
    sample = {**SAMPLE_CARD, LAUNCH_KEY: SAMPLE_LAUNCH}
    for part, source in (("subject", template.subject), ("body", template.body)):
        for with_holiday in holidays:
            context = build_context(
                sample,
                offer,
                "https://example.com/unsubscribe/sample",
                SAMPLE_HOLIDAY if with_holiday else None,
            )
            try:
                run_budgeted(limits, partial(_render_part, part, source, context))
            except TemplateError as exc:
                why = str(exc).removeprefix(f"{part}: ").removeprefix(f"{part}, ")
                errors.append((part, why))
                break  # one reason a part
    return errors


def check(
    template: Template,
    offer: Mapping[str, Any] | None = None,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> list[str]:
    """:func:`check_parts` as ``<part>: <why>`` lines."""
    return [f"{part}: {why}" for part, why in check_parts(template, offer, limits)]


# Every field of a card filled in, built by the contract scoring publishes (shared.card) and
# written as it arrives on the changes topic, so a template is checked against the full shape
# a real card can have.
SAMPLE_CARD: Mapping[str, Any] = Card(
    customer_id="sample-customer",
    as_of=datetime(2025, 6, 1, 8, tzinfo=UTC),
    profile=Profile(
        name="Ada Lovelace",
        email="ada@example.com",
        phone="+44 20 7946 0000",
        birthday=date(1990, 5, 17),
        timezone="Europe/London",
        locale="en-GB",
        consent=Consent(
            email=True,
            sms=False,
            marketing=True,
            unsubscribed=Unsubscribed(at=datetime(2025, 5, 30, 9, tzinfo=UTC), how="link"),
        ),
        tags=["vip", "newsletter"],
        member_tier="gold",
        attributes={"favourite_category": "tea", "store": "london-1"},
    ),
    tags=["vip", "newsletter", "big-spender"],
    rule_tags=["big-spender"],
    value=Value(
        lifetime_spend=Decimal("1234.50"),
        spend_30d=Decimal("89.90"),
        spend_90d=Decimal("240.00"),
        spend_365d=Decimal("910.40"),
        orders=14,
        average_order_value=Decimal("88.18"),
        first_order_at=datetime(2022, 3, 4, 12, 30, tzinfo=UTC),
        last_order_at=datetime(2025, 5, 20, 17, 45, tzinfo=UTC),
        purchase_interval_days=21.0,
        outstanding=Decimal("0.00"),
    ),
    value_score=1.82,
    rfm=Rfm(recency=5, frequency=4, monetary=5, segment=Segment.CHAMPIONS),
    prediction=Prediction(
        frequency=12,
        recency_days=1173.0,
        age_days=1185.0,
        p_alive=0.93,
        expected_orders_90d=3.4,
        expected_order_value=86.2,
        clv_365d=1120.0,
    ),
    tier=Tier.KEY,
    strategy=Strategy.DEVELOP,
    stage=Stage.MATURE,
    stage_since=datetime(2023, 1, 10, tzinfo=UTC),
    previous_stage=Stage.GROWING,
    next_transition_at=datetime(2025, 6, 30, tzinfo=UTC),
    complaints=Complaints(open=0, total=1, last_at=datetime(2024, 2, 11, 9, tzinfo=UTC)),
    visits=Visits(last_30d=3, total=41, last_at=datetime(2025, 5, 28, 15, 10, tzinfo=UTC)),
    updated_at=datetime(2025, 5, 28, 15, 10, tzinfo=UTC),
    preferences=Preferences(
        categories={
            "tea": Bought(
                spend=Decimal("420.00"), last_at=datetime(2025, 5, 20, 17, 45, tzinfo=UTC)
            )
        },
        brands={
            "zen": Bought(
                spend=Decimal("180.00"), last_at=datetime(2025, 5, 20, 17, 45, tzinfo=UTC)
            )
        },
        top_categories_by_spend=["tea"],
        top_categories_by_recency=["tea"],
        last_items=[
            LastItem(
                sku="tea-oolong-100",
                category="tea",
                brand="zen",
                quantity=2,
                unit_price=Decimal("12.50"),
                bought_at=datetime(2025, 5, 20, 17, 45, tzinfo=UTC),
            )
        ],
    ),
    membership=Membership(
        tier="gold",
        source="computed",
        since=datetime(2025, 5, 20, 17, 45, tzinfo=UTC),
        previous="silver",
        direction="upgrade",
        basis="spend_365d",
        spend_365d=Decimal("910.40"),
        orders_365d=9,
        next=NextMembershipTier(tier="platinum", missing_spend=Decimal("89.60"), missing_orders=3),
    ),
).model_dump(mode="json")

# The holiday a calendar rule's template is checked with (see core.schedules.holiday_of).
SAMPLE_HOLIDAY: Mapping[str, str] = {
    "name": "Mid-Autumn Festival",
    "date": "2027-09-15",
    "calendar": "CN",
}

# The launch content a template is checked with (see services.outreach.core.launch).
SAMPLE_LAUNCH: Mapping[str, Any] = {
    "at": "2025-06-01T08:00:00+00:00",
    "items": [
        {
            "sku": "tea-jasmine-50",
            "category": "tea",
            "brand": "zen",
            "name": "Jasmine pearls",
            "price": "18.00",
            "url": "https://shop.example/tea-jasmine-50",
        }
    ],
    "categories": ["tea"],
    "brands": ["zen"],
}
