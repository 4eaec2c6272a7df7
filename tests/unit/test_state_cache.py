"""The consumer's memory of the customers it wrote."""

from __future__ import annotations

from services.scoring.core.state import CustomerState
from services.scoring.shell.state_cache import Held, StateCache


def held(version: int, cid: str) -> Held:
    return Held(version, CustomerState(cid), [])


def test_taken_entries_are_gone_until_put_back() -> None:
    cache = StateCache(10)
    a, b = held(1, "a"), held(2, "b")
    cache.put([("a", a), ("b", b)])
    assert cache.take(["a", "x"]) == {"a": a}
    assert cache.take(["a"]) == {}
    assert len(cache) == 1


def test_least_recently_written_go_first() -> None:
    cache = StateCache(2)
    cache.put([("a", held(1, "a")), ("b", held(2, "b"))])
    cache.put([("a", held(3, "a"))])
    cache.put([("c", held(4, "c"))])
    assert set(cache.take(["a", "b", "c"])) == {"a", "c"}


def test_capacity_zero_keeps_nothing() -> None:
    cache = StateCache(0)
    cache.put([("a", held(1, "a"))])
    assert len(cache) == 0
