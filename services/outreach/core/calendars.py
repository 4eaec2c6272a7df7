"""Holiday calendars of the customers' cultures, and which one a customer keeps.

A calendar is named by an ISO 3166-1 alpha-2 country code. Its holidays come from the
``holidays`` library (the country's public holidays, without the substitute "observed" days),
each on its first day only: a festival of several days off is greeted once. ``CN`` is
the calendar of China's festivals rather than its days off: the Spring Festival, Qingming,
the Dragon Boat Festival, the Mid-Autumn Festival and National Day from ``holidays``, and
the three lunar festivals it does not list — the Lantern Festival (1st month, 15th day),
Qixi (7/7) and the Double Ninth (9/9) — converted from the Chinese lunar calendar by
``lunardate``.

Which calendar a customer keeps (:func:`calendar_of`): the profile's ``country`` if set,
else the region of the profile's ``locale`` (``zh-TW`` is TW, ``zh-HK`` is HK; a bare ``zh``
or ``zh-Hans`` is CN); when that is none of the shop's calendars, or there is none, the
shop's default calendar (which may be none). The shop chooses its calendars and the default
in the contact policy (:class:`Calendars`).

Pure module: no I/O; the dates of a calendar year are computed once and cached.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Annotated, Any

import holidays
from lunardate import LunarDate
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Every country ``holidays`` knows, by its alpha-2 code (not its alpha-3 aliases).
SUPPORTED: frozenset[str] = frozenset(holidays.list_supported_countries(include_aliases=False))

# The lunar calendar's range in lunardate; ``holidays`` covers at least this.
_LUNAR_YEARS = range(1901, 2100)


# Words that name a day of remembrance or mourning rather than a celebration: nobody is sent
# "season's greetings" on Qingming, Good Friday or a memorial day unless a rule asks for them.
_SOLEMN = re.compile(
    r"memorial|remembrance|tomb-sweeping|qingming|good friday|mourning|martyr|ashura|"
    r"holocaust|genocide|anzac|victims|armistice|veterans",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Holiday:
    """One holiday of a calendar in one year: its first day and its English name."""

    day: date
    name: str

    @property
    def solemn(self) -> bool:
        """A day of remembrance or mourning (by its name), not one to greet people on."""
        return _SOLEMN.search(self.name) is not None


# The festivals of the CN calendar taken from ``holidays`` (by its English names), each
# under the name the CN calendar gives it.
_CN_FROM_LIBRARY = {
    "Chinese New Year (Spring Festival)": "Spring Festival",
    "Tomb-Sweeping Day": "Qingming Festival",
    "Dragon Boat Festival": "Dragon Boat Festival",
    "Mid-Autumn Festival": "Mid-Autumn Festival",
    "National Day": "National Day",
}
# The lunar festivals ``holidays`` does not list for CN: (lunar month, day).
_CN_LUNAR = {
    "Lantern Festival": (1, 15),
    "Qixi Festival": (7, 7),
    "Double Ninth Festival": (9, 9),
}
CN_FESTIVALS = (
    "Spring Festival",
    "Lantern Festival",
    "Qingming Festival",
    "Dragon Boat Festival",
    "Qixi Festival",
    "Mid-Autumn Festival",
    "Double Ninth Festival",
    "National Day",
)


def _first_days(country: str, year: int) -> list[Holiday]:
    """The library's holidays of ``country`` in ``year``, each on its first day: a day that
    continues the previous day's holiday (the 2nd day of the Spring Festival) is left out."""
    try:
        days = holidays.country_holidays(country, years=year, observed=False, language="en_US")
    except NotImplementedError:
        return []
    out: list[Holiday] = []
    for day in sorted(days):
        before = set(days.get_list(day - timedelta(days=1)))
        out += [Holiday(day, name) for name in days.get_list(day) if name not in before]
    return out


@lru_cache(maxsize=4096)  # every known country for 16 years
def holidays_in(calendar: str, year: int) -> tuple[Holiday, ...]:
    """The holidays of ``calendar`` in ``year``, by date (empty for an unknown calendar)."""
    if calendar != "CN":
        return tuple(_first_days(calendar, year))
    found = [
        Holiday(h.day, _CN_FROM_LIBRARY[h.name])
        for h in _first_days("CN", year)
        if h.name in _CN_FROM_LIBRARY
    ]
    if year in _LUNAR_YEARS:
        found += [
            Holiday(LunarDate(year, month, day).to_solar_date(), name)
            for name, (month, day) in _CN_LUNAR.items()
        ]
    return tuple(sorted(found, key=lambda h: (h.day, CN_FESTIVALS.index(h.name))))


def holiday_dates(calendar: str, years: range, *, solemn: bool = False) -> list[date]:
    """Every date of ``calendar`` on which a holiday begins in ``years``, ascending; days of
    remembrance (:attr:`Holiday.solemn`) only when ``solemn``."""
    return sorted(
        {h.day for year in years for h in holidays_in(calendar, year) if solemn or not h.solemn}
    )


def holiday_on(calendar: str, day: date, *, solemn: bool = False) -> Holiday | None:
    """The holiday of ``calendar`` that begins on ``day`` (days of remembrance only when
    ``solemn``), or None. Two that begin on one day (the Mid-Autumn Festival on National Day):
    the first in the calendar's order."""
    return next(
        (h for h in holidays_in(calendar, day.year) if h.day == day and (solemn or not h.solemn)),
        None,
    )


def _country_code(v: str) -> str:
    if v not in SUPPORTED:
        raise ValueError(f"{v!r} is not a country whose holidays Tend knows (ISO 3166 alpha-2)")
    return v


CountryCode = Annotated[
    str,
    AfterValidator(_country_code),
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(SUPPORTED),
            "description": "an ISO 3166-1 alpha-2 country code whose holidays Tend knows",
            "examples": ["CN"],
        }
    ),
]


class Calendars(BaseModel):
    """The shop's calendars (a section of the contact policy): the countries whose holidays
    it greets customers on, and the calendar of a customer whose country and locale say
    nothing (null: such customers keep a rule's own fixed dates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    countries: list[CountryCode] = Field(
        default_factory=lambda: ["CN", "HK", "TW"],
        max_length=250,
        description="the calendars customers may keep, each once",
        examples=[["CN", "HK", "TW", "US"]],
    )
    default: CountryCode | None = Field(
        None, description="the calendar of customers who name none (one of `countries`)"
    )

    @field_validator("countries")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each country at most once")
        return v

    @model_validator(mode="after")
    def _default_is_used(self) -> Calendars:
        if self.default is not None and self.default not in self.countries:
            raise ValueError(f"default {self.default!r} must be one of countries")
        return self


# A locale tag's region: a 2-letter subtag after the language (and an optional script).
_LOCALE_REGION = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z]{4})?[_-]([A-Za-z]{2})(?:[_-]|$)")
# Language tags without a region that still name one calendar.
_LANGUAGE_CALENDAR = {"zh": "CN", "zh-hans": "CN", "zh_hans": "CN"}


def region_of(locale: str) -> str | None:
    """The country a locale tag names (``zh-TW`` -> TW, ``zh_Hant_HK`` -> HK, ``zh`` -> CN),
    or None when it names none (``en``)."""
    found = _LOCALE_REGION.match(locale)
    if found is not None:
        return found.group(1).upper()
    return _LANGUAGE_CALENDAR.get(locale.lower())


def calendar_of(card: Mapping[str, Any], shop: Calendars) -> str | None:
    """The calendar this customer keeps: their country if set, else their locale's region;
    when that is none of the shop's calendars, the shop's default (None: no calendar)."""
    profile = card.get("profile") or {}
    country, locale = profile.get("country"), profile.get("locale")
    code = country if isinstance(country, str) and country else None
    if code is None and isinstance(locale, str) and locale:
        code = region_of(locale)
    return code if code in shop.countries else shop.default
