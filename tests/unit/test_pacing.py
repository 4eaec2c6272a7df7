"""A receiver's pace: adaptive concurrency, the rate limit and the Retry-After pause."""

from __future__ import annotations

from services.outreach.core.pacing import MAX_LIMIT, MIN_WINDOW, START_LIMIT, WINDOW_ROUNDS, Pace


def test_concurrency_grows_while_the_receiver_stays_fast_and_halves_on_an_error() -> None:
    pace = Pace()
    assert pace.in_flight_limit == int(START_LIMIT)
    for _ in range(2 * MAX_LIMIT):
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


def test_the_ceiling_is_the_setting_and_a_429_halves_the_limit() -> None:
    pace = Pace(max_limit=8)
    for _ in range(50):
        pace.answered(0.01)
    assert pace.in_flight_limit == 8
    pace.failed(now=0.0, retry_after=2.0)  # a 429 with Retry-After: halved and paused
    assert pace.in_flight_limit == 4
    assert pace.paused(1.0) == 1.0
    for _ in range(3):
        pace.answered(0.01)  # after the first sign of trouble it grows by one a round
    assert pace.in_flight_limit == 4


def test_a_receivers_window_follows_its_limit_with_a_floor() -> None:
    pace = Pace()
    assert pace.window == MIN_WINDOW  # not yet timed: a small batch's worth
    for _ in range(2 * MAX_LIMIT):
        pace.answered(0.01)
    assert pace.window == MAX_LIMIT * WINDOW_ROUNDS
    for _ in range(10):
        pace.failed(now=0.0)
    assert pace.window == MIN_WINDOW


def test_one_stall_seen_by_every_send_in_flight_trims_the_limit_once() -> None:
    pace = Pace()
    for _ in range(2 * MAX_LIMIT):
        pace.answered(0.01)
    assert pace.in_flight_limit == MAX_LIMIT
    # 50 sends started together, all answered late by one 200 ms stall (the receiver's, or
    # the sender's own event loop busy): one sign of trouble, one trim.
    for i in range(50):
        pace.answered(0.2 + i / 1000, started=100.0)
    assert pace.in_flight_limit == int(MAX_LIMIT * 0.9)
    # A send started after that trim and still slow trims again: the receiver is queueing.
    pace.answered(0.2, started=100.5)
    assert pace.in_flight_limit == int(MAX_LIMIT * 0.9 * 0.9)
