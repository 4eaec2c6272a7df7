"""Money as the card writes it: a ``Decimal`` as its exact text with at least two places
(:func:`shared.card.money_text`), fast for the amounts that need no normalising."""

from __future__ import annotations

from decimal import Decimal

from shared.card import money_text


def money_json(value: object) -> str:
    """The ``default`` of ``orjson.dumps`` for a card: money (a ``Decimal``) as its text."""
    # Money as its exact decimal string, as the Card model writes it.
    if isinstance(value, Decimal):
        return money_text_of(value)
    raise TypeError(f"{type(value).__name__} is not part of a card")


def money_text_of(amount: Decimal) -> str:
    """:func:`shared.card.money_text`, without its normalising for the amounts that need none
    (a card holds a dozen or more; this is most of their cost): plain notation with exactly two
    places, or more ending in a non-zero digit, is already what it writes; one place, or
    none, only lacks its zeros."""
    text = str(amount)
    size = len(text)
    if size > 24 or "E" in text or not text[-1].isdigit():
        # Near the context's precision (which normalising rounds to), an exponent, or not a
        # number: the general rule.
        return money_text(amount)
    point = text.find(".")
    if point < 0:
        return text + ".00"
    places = size - point - 1
    if places == 2 or (places > 2 and text[-1] != "0"):
        return text
    if places == 1:
        return text + "0"
    return money_text(amount)
