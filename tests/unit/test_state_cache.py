"""The consumer's memory of the facts it wrote."""

from __future__ import annotations

from services.scoring.state import CustomerState
from services.scoring.state_cache import StateCache


def test_taken_entries_are_gone_until_put_back() -> None:
    cache = StateCache(10)
    a, b = CustomerState("a"), CustomerState("b")
    cache.put([("a", 1, a), ("b", 2, b)])
    assert cache.take(["a", "x"]) == {"a": (1, a)}
    assert cache.take(["a"]) == {}
    assert len(cache) == 1


def test_least_recently_written_go_first() -> None:
    cache = StateCache(2)
    cache.put([("a", 1, CustomerState("a")), ("b", 2, CustomerState("b"))])
    cache.put([("a", 3, CustomerState("a"))])
    cache.put([("c", 4, CustomerState("c"))])
    assert set(cache.take(["a", "b", "c"])) == {"a", "c"}


def test_capacity_zero_keeps_nothing() -> None:
    cache = StateCache(0)
    cache.put([("a", 1, CustomerState("a"))])
    assert len(cache) == 0
