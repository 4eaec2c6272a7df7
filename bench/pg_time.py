"""PostgreSQL's own time, by the service whose statements spent it.

The CPU split names Kafka and PostgreSQL together ("everything else"). This reads
``pg_stat_statements`` (the local server ``make bench`` sets up preloads it) for one database
at the start and the end of a window: each statement's execution time, summed by the schema
it names first (``ingest.``, ``scoring.``, ``outreach.``; ``auth.`` for keys and request
budgets), and the transaction control apart (a ``COMMIT`` waits there for its WAL to reach the
disk). Execution time is the server's wall time for the statement: its CPU for the most part,
a lock wait or a read from disk included. A server without the extension gives None, and the
figures say so.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from shared.db import make_engine
from shared.settings import CommonSettings

SERVICES = ("ingest", "scoring", "outreach")
COMMITS = "transaction control"
# Read from the database the settings name (the extension lives there), about another one.
_READ = text(
    """
    SELECT query, total_exec_time FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = :database)
    """
)
_SCHEMA = re.compile(r"\b(ingest|scoring|outreach|auth)\.")
_TRANSACTION = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|START|SAVEPOINT|RELEASE)\b", re.I)


def group_of(query: str) -> str:
    """Whose statement this is: the first schema it names, transaction control, or other."""
    if _TRANSACTION.match(query):
        return COMMITS
    found = _SCHEMA.search(query)
    return found.group(1) if found else "other"


async def snapshot(watched: CommonSettings) -> dict[str, float] | None:
    """Seconds of execution so far in ``watched``'s database, by group; None when the server
    keeps no statement statistics (or they cannot be read)."""
    database = make_url(watched.database_url).database
    engine = make_engine(CommonSettings(), pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(_READ, {"database": database})).all()
    except DBAPIError:
        return None
    finally:
        await engine.dispose()
    totals: dict[str, float] = defaultdict(float)
    for query, ms in rows:
        totals[group_of(query)] += ms / 1000
    return dict(totals)


def spent(
    before: Mapping[str, float] | None, after: Mapping[str, float] | None
) -> dict[str, float] | None:
    """Seconds of execution between two snapshots, by group (services first)."""
    if before is None or after is None:
        return None
    order = [*SERVICES, "auth", COMMITS, "other"]
    return {
        g: after.get(g, 0.0) - before.get(g, 0.0)
        for g in sorted(after, key=lambda g: order.index(g) if g in order else len(order))
        if after.get(g, 0.0) - before.get(g, 0.0) > 0
    }


def per_unit(seconds: Mapping[str, float] | None, units: int, unit: str = "order") -> str:
    """The split as microseconds per order (or event), and their sum; a group under half a
    microsecond is left out of the list (its time still counts in the sum)."""
    if seconds is None:
        return "not measured (the server does not preload pg_stat_statements)"
    us = {g: s / units * 1e6 for g, s in seconds.items()}
    shown = [f"{g} {v:,.0f} µs" for g, v in us.items() if v >= 0.5]
    return ", ".join(shown) + f"; all {sum(us.values()):,.0f} µs per {unit}"
