"""A customer's identifiers as scoring compares them, and how alike two customers look.

Emails are lower-cased and phones written in E.164 (:mod:`shared.identifiers`), so one
address or number written several ways is one identifier; external ids keep their source
(``web``, ``store``, ...) since two shops' ids may collide. The duplicates report pairs
customers who share an email or a phone; their names' likeness is added evidence, never a
reason on its own (namesakes are common).
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import NamedTuple

from shared.events import CustomerData, Envelope
from shared.identifiers import normalise_email, normalise_phone


class Ident(NamedTuple):
    kind: str  # email, phone or external
    source: str  # the external id's source; '' for emails and phones
    value: str


def ident(kind: str, value: str, source: str | None, region: str) -> Ident | None:
    """One identifier as compared; None for a phone that is not a possible number."""
    if kind == "email":
        return Ident("email", "", normalise_email(value))
    if kind == "phone":
        phone = normalise_phone(value, region)
        return Ident("phone", "", phone) if phone else None
    return Ident("external", source or "", value.strip())


def identifiers_of(event: Envelope, region: str) -> set[Ident]:
    """The identifiers an event names: those it carries, and a profile's email and phone."""
    out = {i for c in event.identifiers if (i := ident(c.kind, c.value, c.source, region))}
    data = event.data
    if isinstance(data, CustomerData):
        if data.email:
            out.add(Ident("email", "", normalise_email(data.email)))
        if data.phone and (phone := normalise_phone(data.phone, region)):
            out.add(Ident("phone", "", phone))
    return out


def search_values(query: str, region: str) -> list[str]:
    """The identifier values a search text may stand for: as typed, as an email, as a phone."""
    text = query.strip()
    values = {text, normalise_email(text)}
    phone = normalise_phone(text, region) if any(ch.isdigit() for ch in text) else None
    if phone:
        values.add(phone)
    return sorted(values)


def name_likeness(first: str | None, second: str | None) -> float | None:
    """How alike two names read, 0 to 1 (difflib's ratio over the lower-cased, space-collapsed
    names); None when either is unknown."""
    if not first or not second:
        return None
    a, b = (" ".join(n.lower().split()) for n in (first, second))
    return round(SequenceMatcher(None, a, b).ratio(), 3)
