"""How a person's identifiers are compared: one spelling per email and per phone.

Ingest keys its identity map by these spellings and scoring searches by them, so a phone
written ``06 12 34 56 78``, ``+33 6 12 34 56 78`` or ``0033612345678`` is one identifier.
"""

from __future__ import annotations

import phonenumbers


def normalise_email(raw: str) -> str:
    """An email as compared: trimmed and lower-cased (mailbox names are case-insensitive in
    practice, and every shop treats them so)."""
    return raw.strip().lower()


def normalise_phone(raw: str, default_region: str) -> str | None:
    """A phone number in E.164 (``+33612345678``), read in ``default_region`` (ISO 3166
    alpha-2) when it has no country code; ``None`` when it is not a possible number there."""
    try:
        number = phonenumbers.parse(raw, default_region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
