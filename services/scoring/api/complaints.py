"""Complaints measured: the open complaints past their tier's response-time target, and how
fast complaints are resolved, per tier."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from services.scoring.api.deps import Scoring
from services.scoring.core.lifecycle import day_of
from services.scoring.settings import ScoringSettings
from services.scoring.store import complaints as store
from shared.auth import Reader
from shared.card import Tier
from shared.cursor import CURSOR_RESPONSES, NOT_A_CURSOR, decode_cursor, encode_cursor
from shared.errors import beyond_schema, invalid, responses
from shared.events import Severity
from shared.params import IsoDate, IsoDateTime

router = APIRouter(prefix="/v1", tags=["complaints"])

DEFAULT_WINDOW_DAYS = 30
MAX_WINDOW_DAYS = 3660


class OverdueComplaint(BaseModel):
    customer_id: str
    complaint_id: str
    severity: Severity | None = Field(
        description="null only for complaints recorded before severities were kept"
    )
    category: str | None
    tier: Tier | None = Field(
        description="the customer's tier when the complaint was raised, whose target it is "
        "held to; null: no tier then (held to regular's target)"
    )
    opened_at: datetime = Field(description="when the complaint was raised")
    due_at: datetime = Field(description="opened_at + the tier's response-time target")
    hours_overdue: float = Field(description="hours from due_at to as_of, two decimals")


class OverduePage(BaseModel):
    as_of: datetime
    items: list[OverdueComplaint] = Field(description="oldest first (by opened_at)")
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same `as_of`) for the next page; null on the "
        "last page"
    )


class TierComplaints(BaseModel):
    target_hours: float = Field(description="the tier's response-time target")
    open: int = Field(description="complaints open at as_of")
    overdue: int = Field(description="open complaints past their target at as_of")
    resolved: int = Field(description="complaints resolved within the window")
    median_hours: float | None = Field(
        description="median hours from raised to resolved, over those resolved in the window; "
        "null when none was"
    )
    p90_hours: float | None = Field(description="90th percentile of the same hours")


class ComplaintStats(BaseModel):
    as_of: datetime
    since: date = Field(description="first day (UTC) of the resolution window")
    until: date = Field(description="last day (UTC) of the resolution window")
    open: int
    overdue: int
    resolved: int
    by_tier: dict[Tier, TierComplaints] = Field(
        description="by the tier each complaint is held to; complaints of customers without "
        "a tier count under regular, whose target they are held to"
    )


class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    c: StrictStr = Field(min_length=1, max_length=128)
    id: StrictStr = Field(min_length=1, max_length=128)


def _utc(moment: datetime, field: str) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise invalid(field, "out of range once converted to UTC") from None


def _targets(settings: ScoringSettings) -> store.Targets:
    return store.Targets(
        key=settings.complaint_target_hours_key,
        regular=settings.complaint_target_hours_regular,
        low=settings.complaint_target_hours_low,
    )


@router.get(
    "/complaints/overdue",
    response_model=OverduePage,
    responses=responses(CURSOR_RESPONSES),
    summary="Open complaints past their response-time target",
)
async def list_overdue(
    scoring: Scoring,
    _: Reader,
    as_of: Annotated[
        IsoDateTime | None,
        Query(description="Judge open and overdue at this instant instead of now."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Complaints per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="The `next_cursor` of the previous page; omit for the first page.",
        ),
    ] = None,
) -> OverduePage:
    """Complaints open at `as_of` (raised by then, not resolved by then) whose response-time
    target has passed, oldest first. A complaint is held to the target of the tier its
    customer had when it was raised (settings `TEND_SCORING_COMPLAINT_TARGET_HOURS_KEY`,
    `_REGULAR`, `_LOW`; no tier: regular's).

    Follow `next_cursor` until it is null to walk the whole list; a page starts after the
    previous page's last complaint. Answers 422 naming `query.cursor` for a cursor this
    endpoint did not write, and 401/403 without an `ops:read` key."""
    now = _utc(as_of, "query.as_of") if as_of else scoring.clock.now()
    after = None
    if cursor is not None:
        pos = decode_cursor(cursor, _Cursor)
        if pos.at.tzinfo is None:
            raise invalid("query.cursor", NOT_A_CURSOR)
        after = store.After(_utc(pos.at, "query.cursor"), pos.c, pos.id)
    rows, last = await store.overdue(scoring.engine, now, _targets(scoring.settings), after, limit)
    return OverduePage(
        as_of=now,
        items=[
            OverdueComplaint(
                customer_id=r.customer_id,
                complaint_id=r.complaint_id,
                severity=Severity(r.severity) if r.severity else None,
                category=r.category,
                tier=Tier(r.tier) if r.tier else None,
                opened_at=r.opened_at,
                due_at=r.due_at,
                hours_overdue=round((now - r.due_at) / timedelta(hours=1), 2),
            )
            for r in rows
        ],
        next_cursor=(
            encode_cursor(_Cursor(at=last.opened_at, c=last.customer_id, id=last.complaint_id))
            if last
            else None
        ),
    )


@router.get(
    "/stats/complaints",
    response_model=ComplaintStats,
    responses=responses(
        beyond_schema(
            {
                "query.since": f"not after `until`, and at most {MAX_WINDOW_DAYS} days before "
                "it (the default window must start after year 1)",
                "query.until": "before 9999-12-31",
            }
        )
    ),
    tags=["stats"],
    summary="Complaints open, overdue, and how fast they are resolved, per tier",
)
async def get_complaint_stats(
    scoring: Scoring,
    _: Reader,
    since: Annotated[
        IsoDate | None,
        Query(
            description="First day (UTC) of the resolution window. "
            f"Default: {DEFAULT_WINDOW_DAYS - 1} days before `until`."
        ),
    ] = None,
    until: Annotated[
        IsoDate | None,
        Query(description="Last day (UTC) of the resolution window. Default: as_of's day."),
    ] = None,
    as_of: Annotated[
        IsoDateTime | None,
        Query(description="Count open and overdue at this instant instead of now."),
    ] = None,
) -> ComplaintStats:
    """Per tier: its response-time target, the complaints open and overdue at `as_of`, and of
    the complaints resolved within the window (by the day of their resolution) how many, and
    the median and 90th percentile of their hours from raised to resolved (interpolated
    between the two nearest values). A reopened complaint counts from when it was first
    raised to its final resolution.

    Answers 422 naming the field when `since` is after `until` or the window is longer than
    ten years, and 401/403 without an `ops:read` key."""
    now = _utc(as_of, "query.as_of") if as_of else scoring.clock.now()
    last = until or day_of(now)
    try:
        first = since or last - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
    except OverflowError:
        raise invalid(
            "query.since", "the default window starts before year 1; give since"
        ) from None
    if first > last:
        raise invalid("query.since", f"must not be after until ({last.isoformat()})")
    if (last - first).days >= MAX_WINDOW_DAYS:
        raise invalid("query.since", f"the window is at most {MAX_WINDOW_DAYS} days long")
    try:
        end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    except OverflowError:
        raise invalid("query.until", "must be before 9999-12-31") from None
    start = datetime.combine(first, time(), tzinfo=UTC)
    settings = scoring.settings
    found = await store.figures(scoring.engine, now, start, end, _targets(settings))
    by_tier: dict[Tier, TierComplaints] = {}
    for tier in Tier:
        f = found.get(tier.value, store.TierFigures())
        by_tier[tier] = TierComplaints(
            target_hours=settings.complaint_target_hours(tier.value),
            open=f.open,
            overdue=f.overdue,
            resolved=f.resolved,
            median_hours=f.median_hours,
            p90_hours=f.p90_hours,
        )
    return ComplaintStats(
        as_of=now,
        since=first,
        until=last,
        open=sum(t.open for t in by_tier.values()),
        overdue=sum(t.overdue for t in by_tier.values()),
        resolved=sum(t.resolved for t in by_tier.values()),
        by_tier=by_tier,
    )
