"""A receiver's pace: adaptive concurrency, the rate limit and the Retry-After pause."""

from __future__ import annotations

from services.outreach.core.pacing import MAX_LIMIT, START_LIMIT, Pace


def test_concurrency_grows_while_the_receiver_stays_fast_and_halves_on_an_error() -> None:
    pace = Pace()
    assert pace.in_flight_limit == int(START_LIMIT)
    for _ in range(100):
        pace.answered(0.01)
    assert pace.in_flight_limit == MAX_LIMIT
    pace.failed(now=0.0)
    assert pace.in_flight_limit == MAX_LIMIT // 2
    for _ in range(10):
        pace.failed(now=0.0)
    assert pace.in_flight_limit == 1


def test_a_receiver_that_slows_down_gets_fewer_sends_at_once() -> None:
    pace = Pace()
    for _ in range(20):
        pace.answered(0.01)
    before = pace.in_flight_limit
    for _ in range(5):
        pace.answered(1.0)  # a hundred times slower than its best: it is queueing our sends
    assert pace.in_flight_limit < before


def test_the_rate_limit_spaces_the_starts() -> None:
    pace = Pace(rate_per_second=4)
    waits = [pace.reserve(now=10.0) for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert Pace().reserve(now=10.0) == 0.0  # no limit: never waits


def test_retry_after_pauses_the_receiver() -> None:
    pace = Pace()
    pace.failed(now=100.0, retry_after=2.0)
    assert pace.paused(100.5) == 1.5
    assert pace.paused(102.0) == 0.0
    pace.failed(now=101.0)  # an error without Retry-After does not shorten the pause
    assert pace.paused(101.0) == 1.0
