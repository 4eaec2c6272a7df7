"""Every card the recorded histories give is byte for byte the previous release's card.

The recording (``tests/golden/cards.xz``, written by ``python -m tests.support.golden_cards``)
holds the exact JSON a change carried for each event of fixed, seeded histories: in-order
purchases, late and out-of-order events, refunds, cancellations, complaints, visits, profile
writes, merges, a heavy buyer and part of the CDNOW sample. However scoring computes a card
(afresh or carried on from the previous event), outreach must receive the same bytes.
"""

from __future__ import annotations

import orjson

from tests.support.golden_cards import cards, recorded


def _first_difference(was: dict[str, object], now: dict[str, object], path: str = "") -> str:
    for key in sorted(set(was) | set(now)):
        a, b = was.get(key), now.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{path}{key}.")
            return f"{path}{key}: recorded {a!r}, now {b!r}"
    return "the same values, other bytes"


def test_cards_are_byte_identical_to_the_recorded_release() -> None:
    expected = recorded()
    built = list(cards())
    assert len(built) == len(expected), "the histories changed: regenerate only on purpose"
    for was, now in zip(expected, built, strict=True):
        if was != now:
            event_id, was_card = was.split(b"\t", 1)
            now_id, now_card = now.split(b"\t", 1)
            assert event_id == now_id, "the histories changed: regenerate only on purpose"
            where = _first_difference(orjson.loads(was_card), orjson.loads(now_card))
            raise AssertionError(f"the card after {event_id.decode()} differs: {where}")
