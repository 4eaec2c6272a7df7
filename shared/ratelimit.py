"""A request budget per API key, shared by every worker and instance of every service.

The budget is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp):
a key allowed ``rate`` requests a second with a burst of ``burst`` has an emission interval
``T = 1/rate`` and a tolerance ``tau = (burst - 1) * T``. Its row holds the *theoretical
arrival time* ``tat``; a request at ``now`` is admitted when ``max(tat, now) <= now + tau``,
and then ``tat`` moves to ``max(tat, now) + T``. A refused request changes nothing and may
retry after ``tat - tau - now``.

The whole decision is one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on
``auth.rate_limits`` (its table is declared with the other ``auth`` tables in
:mod:`shared.auth`): the row lock serialises the workers, the database's clock is the only
clock (workers on different hosts never disagree about time), and it costs one round trip on
a small asyncpg pool of the limiter's own: a prepared statement in autocommit, with none of
the service pool's pre-ping, BEGIN/ROLLBACK or checkout overhead (a third of a millisecond
against more than one), and the table is unlogged, so the commit does not wait for a disk
flush.

When the database cannot answer, the limiter admits the request and logs a warning: losing
rate limiting for a moment is better than failing requests the service could serve.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from sqlalchemy.engine import URL, make_url

from shared.logging import get_logger

log = get_logger(__name__)

# EXCLUDED carries the statement's one reading of the clock (seen_at) and the answer for a
# key seen for the first time (tat = now + T, admitted: a burst is at least 1). In the SET
# list every column reference is to the row as it was, so `allowed` and `tat` judge the same
# old `tat`. `allowed` is stored because RETURNING sees only the new row, and on a refusal
# the unchanged `tat` alone cannot tell the two answers apart.
# $1 key id, $2 the emission interval T, $3 the tolerance tau.
ADMIT_SQL = """
WITH clock AS (SELECT clock_timestamp() AS now)
INSERT INTO auth.rate_limits AS r (key_id, tat, seen_at, allowed)
SELECT $1, clock.now + $2::interval, clock.now, true FROM clock
ON CONFLICT (key_id) DO UPDATE SET
    allowed = greatest(r.tat, EXCLUDED.seen_at) <= EXCLUDED.seen_at + $3::interval,
    tat = CASE
        WHEN greatest(r.tat, EXCLUDED.seen_at) <= EXCLUDED.seen_at + $3::interval
        THEN greatest(r.tat, EXCLUDED.seen_at) + $2::interval
        ELSE r.tat
    END,
    seen_at = EXCLUDED.seen_at
RETURNING allowed, extract(epoch FROM tat - seen_at)::float8 AS ahead
"""

# Short waits: a database that does not answer within them admits the request (and warns).
_TIMEOUT_SECONDS = 2.0

# How often, at most, the limiter says it could not reach the database.
_WARN_EVERY_SECONDS = 10.0


async def _keep_session(_: asyncpg.Connection) -> None:
    """Instead of asyncpg's reset on release (a second round trip: RESET ALL, UNLISTEN...):
    the limiter's one statement leaves no session state behind."""


@dataclass(frozen=True, slots=True)
class Limit:
    """``per_second`` sustained, up to ``burst`` at once; ``per_second == 0`` is no limit."""

    per_second: float
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=1 / self.per_second)

    @property
    def tolerance(self) -> timedelta:
        return self.interval * (max(self.burst, 1) - 1)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    # Whole seconds until a retry can be admitted: at least 1 when refused, 0 when admitted.
    retry_after: int = 0


ADMITTED = Verdict(True)


class RateLimiter:
    """Admits or refuses one request of a key against that key's shared budget."""

    def __init__(self, pool: asyncpg.Pool, default: Limit) -> None:
        self._pool = pool
        self.default = default
        self._warned_at = -math.inf
        self._unwarned = 0

    @classmethod
    async def connect(
        cls, database_url: str | URL, default: Limit, *, max_size: int = 8
    ) -> RateLimiter:
        """A limiter on the database at ``database_url`` (a SQLAlchemy URL, as the service's
        engine has it). It connects only when first asked, so a database that is down at
        start delays nothing."""
        url = make_url(database_url).set(drivername="postgresql")
        pool = await asyncpg.create_pool(
            url.render_as_string(hide_password=False),
            min_size=0,
            max_size=max_size,
            timeout=_TIMEOUT_SECONDS,
            command_timeout=_TIMEOUT_SECONDS,
            max_inactive_connection_lifetime=300,
            reset=_keep_session,
        )
        return cls(pool, default)

    async def admit(self, key_id: str, limit: Limit | None = None) -> Verdict:
        """The verdict on one more request of ``key_id`` under ``limit`` (the default when
        None). Never raises for a database that cannot answer: that admits."""
        limit = limit or self.default
        if limit.unlimited:
            return ADMITTED
        tolerance = limit.tolerance
        try:
            async with self._pool.acquire(timeout=_TIMEOUT_SECONDS) as conn:
                row = await conn.fetchrow(ADMIT_SQL, key_id, limit.interval, tolerance)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self._warn(exc)
            return ADMITTED
        if row["allowed"]:
            return ADMITTED
        wait = row["ahead"] - tolerance.total_seconds()
        return Verdict(False, max(1, math.ceil(wait)))

    async def close(self) -> None:
        await self._pool.close()

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_SECONDS:
            self._unwarned += 1
            return
        log.warning(
            "rate_limit_unavailable",
            reason=type(exc).__name__,
            admitted_unchecked_since_last_warning=self._unwarned,
            detail="the rate-limit budget could not be read; requests are admitted unchecked",
        )
        self._warned_at, self._unwarned = now, 0
