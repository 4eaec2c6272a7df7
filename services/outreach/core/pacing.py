"""How fast the delivery worker sends to one receiver (a channel): its pace.

Three things bound it, each kept per receiver so that one slow or failing receiver never
slows the others:

- **concurrency** that adapts (additive increase, multiplicative decrease): it starts at
  :data:`START_LIMIT` sends in flight and grows by one per success while the receiver answers
  about as fast as it ever has (doubling per round until the first sign of trouble, then by
  one per round); an answer that took much longer than the best seen trims it by a tenth, an
  error (timeout, lost connection, 408, 429, 5xx) halves it; never below one. A trim counts
  once per round: the slow answers to sends that had already started when it was made do not
  trim it again. One stall seen by every send in flight (the receiver's, or this process's
  own event loop busy for a moment) is one sign, not one per send: trimmed per answer, a
  100 ms pause of the sender with 50 sends open cut a limit of 100 to 1.
- a **rate limit** (``rate_per_second``, the receiver's documented limit): sends start at
  least ``1 / rate`` seconds apart, so no second ever sees more than ``rate`` of them.
- a **pause** when the receiver answers ``Retry-After``: no send to it starts before then.

Its **window** (:attr:`Pace.window`, a few rounds of its in-flight limit) is how many of its
actions the delivery worker holds at once: a pick takes no more for it (the rest stay due,
in their place), so a slow receiver's backlog never fills the worker and the other
receivers' actions go out beside it.

Times are plain seconds on a monotonic clock, given by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

START_LIMIT = 4.0
# The ceiling a receiver's concurrency may grow to (``TEND_OUTREACH_DELIVERY_MAX_IN_FLIGHT``).
# It is reached only by a receiver that keeps answering as fast as it ever has with that many
# sends open: one that queues them is trimmed long before. 32 held a nearby receiver answering
# in 15 ms on a busy machine to ~2,000 sends a second.
MAX_LIMIT = 128
# A receiver's window: this many rounds of its in-flight limit, and never less than
# MIN_WINDOW (a receiver not yet timed gets a pick's worth of a small batch at once).
WINDOW_ROUNDS = 4
MIN_WINDOW = 16
# An answer slower than this many times the best one seen (plus a little for jitter) reads as
# the receiver queueing our sends.
SLOW_FACTOR = 2.0
SLOW_SLACK_SECONDS = 0.05


@dataclass(slots=True)
class Pace:
    """One receiver's pace; see the module docstring."""

    rate_per_second: float | None = None
    max_limit: int = MAX_LIMIT
    limit: float = START_LIMIT
    slow_start: bool = True
    best_seconds: float | None = None
    paused_until: float = 0.0
    next_start: float = 0.0
    # When the limit was last trimmed for a slow answer (monotonic seconds).
    trimmed_at: float = float("-inf")

    @property
    def in_flight_limit(self) -> int:
        """How many sends may be in flight at once now."""
        return max(1, min(self.max_limit, int(self.limit)))

    @property
    def window(self) -> int:
        """How many of its actions the worker may hold at once (sending or waiting to)."""
        return max(MIN_WINDOW, self.in_flight_limit * WINDOW_ROUNDS)

    def paused(self, now: float) -> float:
        """Seconds until the receiver's Retry-After runs out (0 when it is not paused)."""
        return max(0.0, self.paused_until - now)

    def reserve(self, now: float) -> float:
        """Take the next start the rate limit allows; returns the seconds to wait for it."""
        start = max(now, self.next_start)
        if self.rate_per_second:
            self.next_start = start + 1.0 / self.rate_per_second
        return start - now

    def answered(self, seconds: float, started: float | None = None) -> None:
        """A send the receiver took (or refused for good) in ``seconds``, started at
        ``started`` (monotonic seconds; None: after any trim so far)."""
        if self.best_seconds is None or seconds < self.best_seconds:
            self.best_seconds = seconds
        if seconds > self.best_seconds * SLOW_FACTOR + SLOW_SLACK_SECONDS:
            if started is None or started >= self.trimmed_at:
                self.limit = max(1.0, self.limit * 0.9)
                self.trimmed_at = (started or 0.0) + seconds
            self.slow_start = False
        elif self.slow_start:
            self.limit = min(float(self.max_limit), self.limit + 1.0)
        else:
            self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)

    def failed(self, now: float, retry_after: float | None = None) -> None:
        """The receiver did not take a send (an error or a busy answer); ``retry_after`` is
        its Retry-After in seconds when it gave one."""
        self.limit = max(1.0, self.limit / 2.0)
        self.slow_start = False
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + retry_after)
