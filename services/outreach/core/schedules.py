"""Schedule triggers and when they fire: pure functions of a rule, a card and an instant.

A schedule fires at a local wall time (``at``, default 09:00) in the customer's own zone
(``profile.timezone``, else a settings default), on dates that depend on its ``kind``:

- ``birthday``: ``profile.birthday`` each year; Feb 29 falls on Feb 28 in other years;
- ``anniversary``: each anniversary of a date field (``since``, default
  ``value.first_order_at``; its local date);
- ``days_after``: ``days`` days, or ``rhythm_multiple`` × ``value.purchase_interval_days``
  (rounded up to whole days), after the local date of a card date field (``since``);
- ``calendar``: each holiday of a named calendar (``calendar``: a country code, or
  ``customer`` for the calendar each customer keeps, see
  :mod:`services.outreach.core.calendars`), and/or each listed date, ``MM-DD`` every year or
  ``YYYY-MM-DD`` once (with ``calendar: customer``, the dates of customers who keep none);
- ``cron``: a five-field cron expression read in local wall time, at most once a day.

The date field of ``anniversary`` and ``days_after`` may be a card date (``profile.birthday``,
``value.last_order_at``...) or a profile attribute the shop declares a date in the policy's
``attribute_types`` (``profile.attributes.wedding``; ``attributes.wedding`` is the same): a
customer whose attribute is missing or not a date (``YYYY-MM-DD`` or an ISO datetime) has no
such schedule.

Wall times are mapped to UTC with the zone's rules of that day: a time inside a DST gap
moves forward to the first minute that exists, and an ambiguous one (the repeated hour when
clocks go back) takes its first occurrence. A schedule's occurrence key is the local date,
so one rule reaches one customer at most once per local day.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from services.outreach.core import conditions
from services.outreach.core.calendars import (
    SUPPORTED,
    Calendars,
    calendar_of,
    holiday_dates,
    holiday_on,
)
from services.outreach.core.trust import trusted


class Scheduled(Protocol):
    """What the schedule maths reads of a rule: its trigger (a rule whose trigger is not a
    schedule never fires here). :class:`services.outreach.core.rules.Rule` is one; this module
    does not import it, since rules import the schedule kinds from here."""

    @property
    def trigger(self) -> object: ...


def _text_time(value: object) -> object:
    # pydantic would read a number as seconds since midnight; the API speaks HH:MM.
    if not isinstance(value, (str, time)):
        raise ValueError("a local time as HH:MM")
    return value


LocalTime = Annotated[
    time,
    BeforeValidator(_text_time),
    Field(description="local wall time, HH:MM"),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:00)?$",
            "description": "local wall time, HH:MM",
            "examples": ["09:00"],
        }
    ),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Schedule(_Strict):
    type: Literal["schedule"]

    @field_validator("at", check_fields=False)
    @classmethod
    def _whole_minute(cls, v: time) -> time:
        if v.tzinfo is not None or v.second or v.microsecond:
            raise ValueError("a local time as HH:MM, without seconds or a zone")
        return v


class BirthdaySchedule(_Schedule):
    """On the customer's birthday (Feb 29 falls on Feb 28 in other years)."""

    kind: Literal["birthday"]
    at: LocalTime = time(9)


ATTRIBUTES = "profile.attributes."


def _date_field(v: str) -> str:
    """``v`` if it names a card date or datetime field, or a profile attribute (whether the
    shop declared that attribute a date is the policy's to say: checked when a rule is saved,
    and a customer's value is read as a date only if it is declared one)."""
    if v.startswith("attributes."):
        v = "profile." + v
    if v.startswith(ATTRIBUTES) and len(v) > len(ATTRIBUTES):
        return v
    spec = conditions.CARD.lookup(v)
    if spec is None or spec.kind not in ("datetime", "date"):
        raise ValueError(
            f"{v!r} is not a date or datetime field of the card, nor profile.attributes.<name>"
        )
    return v


class AnniversarySchedule(_Schedule):
    """On each anniversary of a date: the customer's first order unless ``since`` names
    another date field (``profile.attributes.wedding``)."""

    kind: Literal["anniversary"]
    since: str = "value.first_order_at"
    at: LocalTime = time(9)

    @field_validator("since")
    @classmethod
    def _since(cls, v: str) -> str:
        return _date_field(v)


class DaysAfterSchedule(_Schedule):
    """``days`` days, or ``rhythm_multiple`` × the customer's purchase interval, after a date."""

    kind: Literal["days_after"]
    since: str = "value.last_order_at"
    days: int | None = Field(None, ge=0, le=3650)
    rhythm_multiple: float | None = Field(None, gt=0, le=50)
    at: LocalTime = time(9)
    # When the rule is saved, customers whose instant passed at most this many days ago are
    # still reached, once (a recall created today reaches those already overdue).
    catch_up_days: int = Field(30, ge=0, le=365)

    @field_validator("since")
    @classmethod
    def _since(cls, v: str) -> str:
        return _date_field(v)

    @model_validator(mode="after")
    def _one_offset(self) -> DaysAfterSchedule:
        if (self.days is None) == (self.rhythm_multiple is None):
            raise ValueError("give exactly one of days or rhythm_multiple")
        return self


CUSTOMER_CALENDAR = "customer"


class CalendarSchedule(_Schedule):
    """On each holiday of a calendar (``calendar``: a country code, or ``customer`` for each
    customer's own), and on each date of a list: ``MM-DD`` recurs every year, ``YYYY-MM-DD``
    happens once. With ``calendar: customer``, the dates are for the customers who keep no
    calendar of the shop's."""

    kind: Literal["calendar"]
    name: Text
    calendar: (
        Annotated[
            str,
            WithJsonSchema(
                {
                    "type": "string",
                    "enum": [CUSTOMER_CALENDAR, *sorted(SUPPORTED)],
                    "description": "`customer` (each customer's own) or a country code",
                    "examples": ["customer", "CN"],
                }
            ),
        ]
        | None
    ) = None
    dates: list[str] = Field(default_factory=list, max_length=400)
    at: LocalTime = time(9)
    # Days of remembrance (Qingming, Good Friday, memorial days) are left out of a calendar
    # unless asked for: a greeting on them would offend.
    solemn_days: StrictBool = False

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, v: str | None) -> str | None:
        if v is not None and v != CUSTOMER_CALENDAR and v not in SUPPORTED:
            raise ValueError(
                f"{v!r} is neither {CUSTOMER_CALENDAR!r} nor a country code (ISO 3166 alpha-2) "
                "whose holidays Tend knows"
            )
        return v

    @model_validator(mode="after")
    def _dates_or_calendar(self) -> CalendarSchedule:
        if self.calendar is None and not self.dates:
            raise ValueError("give a calendar, dates, or both")
        if self.calendar not in (None, CUSTOMER_CALENDAR) and self.dates:
            raise ValueError("dates go with no calendar or with calendar 'customer' only")
        return self

    @field_validator("dates")
    @classmethod
    def _dates(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if parse_calendar_date(d) is None]
        if bad:
            raise ValueError(f"not MM-DD or YYYY-MM-DD dates: {', '.join(map(repr, bad))}")
        return v

    def entries(self) -> list[tuple[int | None, int, int]]:
        """The dates as ``(year or None, month, day)``."""
        return [e for e in map(parse_calendar_date, self.dates) if e is not None]


_CALENDAR_DATE = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})$")


def parse_calendar_date(text: str) -> tuple[int | None, int, int] | None:
    """``(year or None, month, day)`` of a calendar entry, or None when it is not a date."""
    found = _CALENDAR_DATE.match(text)
    if found is None:
        return None
    year_text, month_text, day_text = found.groups()
    year, month, day = int(year_text) if year_text else None, int(month_text), int(day_text)
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: 02-29 recurs in leap years
    except ValueError:
        return None
    return year, month, day


# A cron must fire within this many years of any instant (Feb 29 recurs within 8).
CRON_YEARS = 8
CRON_CHECK_FROM = datetime(2000, 1, 1)


class CronSchedule(_Schedule):
    """A five-field cron expression in the customer's local time, at most once a day."""

    kind: Literal["cron"]
    expression: str = Field(examples=["0 10 * * *"])

    @field_validator("expression")
    @classmethod
    def _cron(cls, v: str, info: ValidationInfo) -> str:
        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError("not a five-field cron expression (minute hour day month weekday)")
        minutes, hours = croniter(v).expanded[:2]
        # The occurrence key of a schedule is the local date: more than one firing a day
        # would be collapsed into one, so say so at save time instead.
        if len(minutes) != 1 or len(hours) != 1 or "*" in (minutes[0], hours[0]):
            raise ValueError("must fire at one minute of one hour (at most once a day)")
        if trusted(info):
            return v
        # A date that never exists (0 9 31 2 *) passes is_valid and raises when iterated.
        try:
            croniter(v, CRON_CHECK_FROM, max_years_between_matches=CRON_YEARS).get_next(datetime)
        except (ValueError, OverflowError):
            raise ValueError(f"never fires: no date matches within {CRON_YEARS} years") from None
        return v


ScheduleSpec = (
    BirthdaySchedule | AnniversarySchedule | DaysAfterSchedule | CalendarSchedule | CronSchedule
)


@dataclass(frozen=True, slots=True)
class ScheduleContext:
    """What a schedule reads of the shop's policy: the zone of customers who name none, the
    shop's calendars, and the profile attributes it declared dates."""

    default_timezone: str = "UTC"
    calendars: Calendars = field(default_factory=Calendars)
    date_attributes: frozenset[str] = frozenset()


DEFAULT_CONTEXT = ScheduleContext()


def zone_of(card: Mapping[str, Any], default: str = "UTC") -> ZoneInfo:
    """The customer's zone: ``profile.timezone`` if it names one, else ``default``."""
    name = (card.get("profile") or {}).get("timezone")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ValueError, KeyError):  # not a zone: fall back rather than never fire
            pass
    return ZoneInfo(default)


def _exists(naive: datetime, zone: ZoneInfo) -> datetime | None:
    utc = naive.replace(tzinfo=zone).astimezone(UTC)
    return utc if utc.astimezone(zone).replace(tzinfo=None) == naive else None


# Memoised: the consumer reschedules every customer of a batch, and customers share zones,
# days and times of day (the table is small: a few thousand recent (day, time, zone) keys).
@lru_cache(maxsize=8192)
def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall time ``at`` on ``day`` in ``zone``.

    fold=0 picks the first of an ambiguous pair. A wall time inside a gap does not exist:
    walk forward to the first minute that does (gaps are an hour or so, rarely two).
    """
    naive = datetime.combine(day, at.replace(tzinfo=None, fold=0))
    probe = naive
    while (utc := _exists(probe, zone)) is None:
        probe = probe.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return utc


def day_start(now: datetime, zone_name: str) -> datetime:
    """The UTC instant the day of ``now`` began in the zone named (a name that is not a zone:
    UTC's day), for what a rule may do per day."""
    try:
        zone = ZoneInfo(zone_name)
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    return local_instant(now.astimezone(zone).date(), time(0), zone)


def day_of(now: datetime, zone_name: str) -> tuple[datetime, datetime]:
    """The UTC instants the day of ``now`` in the zone named begins and ends (a day of a
    clock change is 23 or 25 hours long)."""
    start = day_start(now, zone_name)
    return start, day_start(start + timedelta(hours=26), zone_name)


def _yearly(month: int, day: int, years: Iterable[int], leap_fallback: bool) -> Iterator[date]:
    for year in years:
        if month == 2 and day == 29 and not calendar.isleap(year):
            if leap_fallback:
                yield date(year, 2, 28)
        else:
            yield date(year, month, day)


def _field(card: Mapping[str, Any], path: str) -> Any:
    value: Any = card
    for part in path.split("."):
        # A card is plain dicts (JSON): checked first, as the abstract Mapping check is slow.
        value = value.get(part) if type(value) is dict or isinstance(value, Mapping) else None
    return value


def _local_date(value: Any, zone: ZoneInfo) -> date | None:
    if isinstance(value, str) and len(value) == 10:
        return conditions.to_date(value)
    moment = conditions.to_datetime(value)
    return None if moment is None else moment.astimezone(zone).date()


def _since(
    card: Mapping[str, Any], path: str, zone: ZoneInfo, context: ScheduleContext
) -> date | None:
    """The local date of a schedule's date field, or None: missing, not a date, or an
    attribute the shop has not declared a date."""
    if not path.startswith(ATTRIBUTES):
        return _local_date(_field(card, path), zone)
    name = path.removeprefix(ATTRIBUTES)
    if name not in context.date_attributes:
        return None
    value = ((card.get("profile") or {}).get("attributes") or {}).get(name)
    if not isinstance(value, str):
        return None
    try:  # the whole text must be a date (a client's free text is not trusted to be one)
        return (
            date.fromisoformat(value)
            if len(value) == 10
            else _local_date(datetime.fromisoformat(value), zone)
        )
    except ValueError:
        return None


def _first_after(
    days: Iterable[date], at: time, zone: ZoneInfo, after: datetime
) -> datetime | None:
    for day in days:
        due = local_instant(day, at, zone)
        if due > after:
            return due
    return None


def _days(
    spec: ScheduleSpec,
    card: Mapping[str, Any],
    zone: ZoneInfo,
    today: date,
    context: ScheduleContext,
) -> Iterable[date]:
    """Candidate local dates, ascending, from around ``today`` (the local date of ``after``)."""
    years = range(today.year, today.year + 5)
    if isinstance(spec, BirthdaySchedule):
        born = conditions.to_date(_field(card, "profile.birthday"))
        return () if born is None else _yearly(born.month, born.day, years, leap_fallback=True)
    if isinstance(spec, AnniversarySchedule):
        first = _since(card, spec.since, zone, context)
        if first is None:
            return ()
        start = max(today.year, first.year + 1)
        return _yearly(first.month, first.day, range(start, start + 5), leap_fallback=True)
    if isinstance(spec, DaysAfterSchedule):
        base = _since(card, spec.since, zone, context)
        offset = spec.days
        if spec.rhythm_multiple is not None:
            rhythm = _field(card, "value.purchase_interval_days")
            if not isinstance(rhythm, int | float) or rhythm <= 0:
                return ()
            # Rounded up: a recall is meant to land once the customer is overdue, never before.
            offset = math.ceil(spec.rhythm_multiple * rhythm - 1e-9)
        return () if base is None or offset is None else (base + timedelta(days=offset),)
    if isinstance(spec, CalendarSchedule):
        found: set[date] = set()
        named = spec.calendar
        if named == CUSTOMER_CALENDAR:
            named = calendar_of(card, context.calendars)
        if named is not None:
            found.update(holiday_dates(named, years, solemn=spec.solemn_days))
        for year, month, day in spec.entries() if named is None else ():
            if year is not None:
                found.add(date(year, month, day))
            else:
                found.update(_yearly(month, day, years, leap_fallback=False))
        return sorted(d for d in found if d >= today - timedelta(days=1))
    return ()


def inputs_of(
    rule: Scheduled, card: Mapping[str, Any], context: ScheduleContext
) -> tuple[Any, ...]:
    """Everything of ``card`` that :func:`next_due` reads for ``rule`` under ``context``, as
    it stands on the card (read the same way, so a card that makes it raise makes this raise):
    two cards with equal inputs have the same instants, so customers who share them (no
    birthday, one zone, one holiday calendar) share one computation. It follows
    :func:`zone_of` and :func:`_days`: a field read there is read here."""
    spec = rule.trigger
    zone = (card.get("profile") or {}).get("timezone")
    if isinstance(spec, BirthdaySchedule):
        return zone, _field(card, "profile.birthday")
    if isinstance(spec, AnniversarySchedule):
        return zone, _since_input(card, spec.since)
    if isinstance(spec, DaysAfterSchedule):
        rhythm = (
            _field(card, "value.purchase_interval_days")
            if spec.rhythm_multiple is not None
            else None
        )
        return zone, _since_input(card, spec.since), rhythm
    if isinstance(spec, CalendarSchedule):
        named = calendar_of(card, context.calendars) if spec.calendar == CUSTOMER_CALENDAR else None
        return zone, named
    return (zone,)


def _since_input(card: Mapping[str, Any], path: str) -> Any:
    """The value :func:`_since` reads a date from, as it stands on the card."""
    if not path.startswith(ATTRIBUTES):
        return _field(card, path)
    return ((card.get("profile") or {}).get("attributes") or {}).get(path.removeprefix(ATTRIBUTES))


@dataclass(frozen=True, slots=True)
class CatchUp:
    """How far back a schedule looks for an instant that passed without firing (the customer
    arrived, or the rule was saved, after it): dated schedules (birthday, anniversary,
    calendar, cron) back to the start of the customer's local day, ``days_after`` this many
    days, or the rule's own ``catch_up_days`` when ``rule_catch_up`` (the rule was just saved).
    An instant found so is due at once; the ledger's occurrence key (the local date of the
    instant) keeps it to one action however often it is found again, and the schedule index
    does not take it back once the scheduler handled it
    (:mod:`services.outreach.store.schedule`)."""

    days_after_days: int = 2
    rule_catch_up: bool = False


def next_due(
    rule: Scheduled,
    card: Mapping[str, Any],
    after: datetime,
    *,
    context: ScheduleContext = DEFAULT_CONTEXT,
    catch_up: CatchUp | None = None,
) -> datetime | None:
    """The first UTC instant strictly after ``after`` at which ``rule``'s schedule fires for
    this card's customer, or None (not a schedule, the date field is missing, a one-off date
    or a ``days_after`` instant already passed). With ``catch_up``, an instant that passed
    within its window (see :class:`CatchUp`) is returned although it is not after ``after``."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    spec = rule.trigger
    if not isinstance(spec, ScheduleSpec):
        return None
    zone = zone_of(card, context.default_timezone)
    local = after.astimezone(zone).replace(tzinfo=None, fold=0)
    if catch_up is not None:
        if isinstance(spec, DaysAfterSchedule):
            back = spec.catch_up_days if catch_up.rule_catch_up else catch_up.days_after_days
            after = after - timedelta(days=back)
        else:
            after = local_instant(local.date(), time(0), zone) - timedelta(microseconds=1)
        local = after.astimezone(zone).replace(tzinfo=None, fold=0)
    if isinstance(spec, CronSchedule):
        return _next_cron(spec.expression, zone, local, after)
    days = _days(spec, card, zone, local.date(), context)
    return _first_after(days, spec.at, zone, after)


# Memoised: building the cron iterator is the costly step, and within a zone every customer
# asks the same question (``after`` is the start of their local day when catching up).
@lru_cache(maxsize=1024)
def _next_cron(
    expression: str, zone: ZoneInfo, local: datetime, after: datetime
) -> datetime | None:
    # Iterate in wall time, then map each firing to UTC ourselves, so DST follows the same
    # rules as every other schedule. A firing mapped to or before ``after`` (the repeated
    # hour, or a gap moved onto an earlier firing) is skipped: at most a few in a row.
    wall_times = croniter(expression, local)
    for _ in range(8):
        wall: datetime = wall_times.get_next(datetime)
        due = local_instant(wall.date(), wall.time(), zone)
        if due > after:
            return due
    return None


def occurrence_key(
    rule: Scheduled,
    card: Mapping[str, Any],
    due: datetime,
    *,
    context: ScheduleContext = DEFAULT_CONTEXT,
) -> str:
    """The identity of a schedule's firing: the customer's local date of ``due``, YYYY-MM-DD
    (one holiday greeting per holiday: a calendar's holiday is one date, its first day)."""
    return due.astimezone(zone_of(card, context.default_timezone)).date().isoformat()


def holiday_of(
    rule: Scheduled,
    card: Mapping[str, Any],
    occurrence: str,
    *,
    context: ScheduleContext = DEFAULT_CONTEXT,
) -> dict[str, str] | None:
    """The holiday a calendar schedule's firing greets, as a template sees it
    (``{"name": "Mid-Autumn Festival", "date": "2027-09-15", "calendar": "CN"}``), for the
    firing whose occurrence key is ``occurrence`` (its local date); None when the rule is not
    a calendar schedule, the customer keeps no calendar (a rule's own dates name no holiday),
    or no holiday of theirs begins that day."""
    spec = rule.trigger
    if not isinstance(spec, CalendarSchedule) or spec.calendar is None:
        return None
    named = (
        calendar_of(card, context.calendars)
        if spec.calendar == CUSTOMER_CALENDAR
        else spec.calendar
    )
    if named is None:
        return None
    try:
        day = date.fromisoformat(occurrence)
    except ValueError:
        return None
    found = holiday_on(named, day, solemn=spec.solemn_days)
    if found is None:
        return None
    return {"name": found.name, "date": found.day.isoformat(), "calendar": named}


def holiday_cases(trigger: object) -> tuple[bool, ...]:
    """Whether the actions of ``trigger`` render with a holiday (True), without (False), or
    either, by customer: a named calendar always names one; ``customer`` names each customer's
    own, and none for the rule's own dates (for customers who keep no calendar)."""
    if not isinstance(trigger, CalendarSchedule) or trigger.calendar is None:
        return (False,)
    if trigger.calendar == CUSTOMER_CALENDAR and trigger.dates:
        return (True, False)
    return (True,)
