"""The delivery worker: takes due ``pending`` actions from the ledger and sends them.

Each action goes through three steps, and only the first and last hold a transaction:

1. **pick** — lock due rows (``FOR UPDATE SKIP LOCKED``, so workers share the ledger without
   meeting), re-check the contact policy for them all at once (a customer may have opted out
   since the decision; one statement reads the pick's cards and suppressions), and *lease*
   the rest: ``next_attempt_at`` moves past the longest the sends can take. Committed at
   once. A worker that dies mid-send leaves its rows due again when the lease runs out:
   delayed, never lost. Each *lane* (the channel an action names, or its kind's current one)
   holds at most its receiver's window of actions in the worker; a pick passes a full lane's
   rows by, and they stay due in their place.
2. **send** — outside any transaction; each send is bounded by the timeout. Each receiver
   (channel) has its own pace (:mod:`services.outreach.core.pacing`): concurrency that adapts
   to its latency and halves on its errors, its rate limit, and its ``Retry-After`` pause, so
   a slow receiver holds only its own slots. HTTP connections are kept alive per receiver
   (HTTP/2 where the receiver speaks it), each still opened to the address the network guard
   checked. A send its receiver's pace does not allow before its lease ends stays pending,
   due when it will be, with no attempt counted.
3. **record** — sent, retried with backoff, failed, unknown; each update only applies if the
   row still carries this worker's lease, so a worker that outlived its lease cannot
   overwrite the outcome of the one that took the row over. Each attempt whose outcome is
   written is kept in ``outreach.delivery_attempts`` in the same transaction.

A receiver that answers busy (429 or 503 with ``Retry-After``) is waited for, and such an
answer is no attempt; but the ledger remembers since when it has answered the action so
(``throttled_since``), and a busy answer once that has lasted
``delivery_throttled_give_up_hours`` fails the action (reason ``throttled``): a receiver busy
for ever never keeps an action pending for ever.

An action decided due now, for a receiver the worker already sends to, skips the pick: in
the service, the consumer's decision leases it to the worker of its own process as it writes
it (:meth:`DeliveryWorker.lease_fresh`: the row goes in due at the lease's end), and its send
starts once the decision has committed (:meth:`DeliveryWorker.adopt`). No pick, no re-check
(the policy was judged in that same transaction) and no lease update: of the three writes an
action took before it was sent, one is left. A process that dies in between leaves it due
when the lease ends, as a pick's.

In the service (``overlap``) the steps of successive passes overlap: a pass records the sends
finished since the last one while it picks the next, and the others carry on (a slow
receiver's sends never hold up a fast one's). Tests and tools run a pass to its end.

A retry keeps the action id, which is the webhook's ``webhook-id`` and the email's
``Message-ID``: a receiver that sees an action twice can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from prometheus_client import Counter as Metric
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.outreach.core.channels import (
    HTTP_KINDS,
    Attempt,
    EmailConfig,
    OutboundAction,
    SmsConfig,
    Verdict,
    WebhookConfig,
)
from services.outreach.core.pacing import MIN_WINDOW, Pace
from services.outreach.core.policy import Decision, Outcome
from services.outreach.core.unsubscribe import unsubscribe_url
from services.outreach.settings import OutreachSettings
from services.outreach.shell.channels import email as email_channel
from services.outreach.shell.channels import sms as sms_channel
from services.outreach.shell.channels import webhook as webhook_channel
from services.outreach.shell.channels.pinned import PinnedPool
from services.outreach.shell.gate import Gate
from services.outreach.store import attempts as attempts_store
from services.outreach.store import ledger as ledger_store
from shared.clock import Clock, SystemClock
from shared.identifiers import normalise_phone
from shared.logging import get_logger, scrub
from shared.worker import Worker

log = get_logger(__name__)

Recheck = Callable[[AsyncConnection, Sequence[Any]], Awaitable[Sequence[Decision | None]]]
"""``recheck(conn, action_rows) -> [decision | None, ...]``: the contact policy again, just
before the send, inside the pick transaction, for a whole pick; for each row, None sends, a
decision suppresses, holds (an open complaint) or defers (quiet hours) the action instead."""

# Added to the longest the sends of one pass can take, for the pick-to-send gap and clock skew
# between workers.
LEASE_MARGIN = timedelta(seconds=30)
# How long an action waits when there is no enabled channel to carry it.
NO_CHANNEL_DELAY = timedelta(seconds=60)
# Sends in flight at once per worker, all receivers together (each receiver's own limit is
# its pace's): enough that a few slow receivers at their limits leave room for the others.
CONCURRENCY = 256
# With ``overlap``, the longest a pass waits for its sends before recording the finished ones
# and picking again.
SETTLE_SECONDS = 0.05
# The fewest due actions a pick takes, however many the worker holds.
MIN_PICK = 16
# The most actions, in batches (``delivery_batch``), the worker holds leased as they were
# decided and in flight together: beyond, the decisions are left due for a pick.
FRESH_BATCHES = 10
# ... and at most this many of each lane's windows: rather than left for a pick, a decided
# action waits in the worker for its receiver (the lease grows by the send timeout for each
# round of its receiver's sends queued before it).
FRESH_WINDOWS = 4

DELIVERIES = Metric(
    "tend_outreach_deliveries_total", "Delivery attempts by outcome", ["channel", "outcome"]
)

_PICK = text(
    """
    SELECT a.*, c.card -> 'profile' ->> 'email' AS recipient,
        c.card -> 'profile' ->> 'phone' AS phone
    FROM outreach.actions AS a
    LEFT JOIN outreach.cards AS c ON c.customer_id = a.customer_id
    WHERE a.status = 'pending' AND a.next_attempt_at <= :now
      AND NOT (a.id = ANY(CAST(:busy AS text[])))
      AND coalesce(a.channel_id, 'kind:' || a.channel) <> ALL(CAST(:full AS text[]))
    ORDER BY a.next_attempt_at
    LIMIT :limit
    FOR UPDATE OF a SKIP LOCKED
    """
)
# Every enabled channel, newest first within its kind: the first of a kind is the kind's
# current channel, for actions whose rule named none.
_CHANNELS = text(
    """
    SELECT id, kind, config, secret
    FROM outreach.channels
    WHERE enabled
    ORDER BY kind, created_at DESC, id DESC
    """
)
# One statement for a whole batch of outcomes; ``lease`` NULL applies unconditionally (the
# pick transaction holds the row locks), otherwise only while the row is still ours.
# ``throttled`` says what becomes of ``throttled_since`` (:data:`Throttle`); ``now`` is the
# batch's.
_UPDATE = text(
    """
    UPDATE outreach.actions AS a
    SET status = v.status,
        -- Leased and sent after waiting (quiet hours, an open complaint): the reason it
        -- waited stays.
        reason = CASE WHEN v.status IN ('pending', 'sent') AND v.reason IS NULL
                           AND a.reason IN ('open_complaint', 'quiet_hours', 'frequency_cap',
                                            'balance')
                      THEN a.reason ELSE v.reason END,
        last_error = v.last_error,
        next_attempt_at = v.next_at, attempts = v.attempts, sent_at = v.sent_at,
        throttled_since = CASE v.throttled
                              WHEN 'start' THEN coalesce(a.throttled_since,
                                                         CAST(:now AS timestamptz))
                              WHEN 'clear' THEN NULL
                              ELSE a.throttled_since END
    FROM unnest(
        CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:reasons AS text[]),
        CAST(:errors AS text[]), CAST(:next_at AS timestamptz[]),
        CAST(:attempts AS smallint[]), CAST(:sent_at AS timestamptz[]),
        CAST(:leases AS timestamptz[]), CAST(:throttled AS text[])
    ) AS v(id, status, reason, last_error, next_at, attempts, sent_at, lease, throttled)
    WHERE a.id = v.id AND a.status = 'pending'
      AND (v.lease IS NULL OR a.next_attempt_at = v.lease)
    RETURNING """
    + ledger_store.A_AS_PUBLISHED
)
_DISABLE = text(
    """
    UPDATE outreach.channels SET enabled = false, disabled_reason = :reason, updated_at = :now
    WHERE id = :id AND enabled AND config ->> 'url' = :url
    """
)


Throttle = Literal["start", "keep", "clear"]
"""What an update does to the action's ``throttled_since``: a busy answer *starts* it (the
first instant stays while the receiver keeps answering busy); a wait that asked the receiver
nothing (its pace, the policy's deferral) *keeps* it; any other answer, a wait for a channel
to send by, or an end that is not for throttling, *clears* it, so an old episode never counts
against a new one."""


@dataclass(frozen=True, slots=True)
class _Update:
    id: str
    status: str
    attempts: int
    reason: str | None = None
    error: str | None = None
    next_at: datetime | None = None
    sent_at: datetime | None = None
    lease: datetime | None = None
    throttled: Throttle = "keep"


# How a due action the policy no longer lets out now is counted and kept.
_NOT_NOW = {Outcome.SUPPRESS: "suppressed", Outcome.HOLD: "held", Outcome.DEFER: "deferred"}


def _not_now(row: Any, verdict: Decision) -> _Update:
    """The row of a due action that the policy, asked again, does not let out now:
    suppressed; held until the open complaint is resolved (it is decided again then); or
    still pending, due again when the customer's quiet hours end."""
    reason = verdict.reason.value if verdict.reason is not None else None
    if verdict.outcome is Outcome.HOLD:
        # Decided again once the complaint is resolved, maybe weeks later: a busy receiver
        # then is a new episode.
        return _Update(row.id, "held", row.attempts, reason, throttled="clear")
    if verdict.outcome is Outcome.DEFER and verdict.until is not None:
        return _Update(row.id, "pending", row.attempts, reason, next_at=verdict.until)
    return _Update(
        row.id, "suppressed", row.attempts, (reason or "suppressed")[:32], throttled="clear"
    )


@dataclass(frozen=True, slots=True)
class _Later:
    """A send its receiver's pace did not allow in this pass: pending again, due in
    ``seconds``, no attempt counted."""

    seconds: float


@dataclass(frozen=True, slots=True)
class _Job:
    action: OutboundAction
    channel: str
    attempts: int
    lease: datetime
    channel_id: str | None
    # The one-click unsubscribe link, minted for this send (its date is the send's).
    link: str = ""
    # webhook: (url, secret); email: (server, recipient); sms: (config, secret, E.164 number)
    webhook: tuple[str, str] | None = None
    email: tuple[email_channel.SmtpServer, str] | None = None
    sms: tuple[SmsConfig, str, str] | None = None
    # Whom it goes to (the pace and the connection pool are kept per receiver), and the
    # receiver's rate limit.
    receiver: str = ""
    rate: float | None = None
    # Its lane: the channel it names, or its kind's current one (``kind:webhook``); each lane
    # holds at most its receiver's window of sends at once.
    lane: str = ""
    # The latest moment (time.monotonic()) its send may start: later, it could outlast
    # the lease.
    last_start: float = math.inf
    # Since when its receiver has answered it busy, every time (the ledger's).
    throttled_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Fresh:
    """Webhook actions leased as they were decided (:meth:`DeliveryWorker.lease_fresh`):
    their lease's end, the latest moment a send of theirs may start, their rows by id and how
    many each lane holds."""

    lease: datetime
    last_start: float
    rows: dict[str, dict[str, Any]]
    lanes: Counter[str]


@dataclass(frozen=True, slots=True)
class _Decided:
    """A ledger row as the decision wrote it, under the names of the columns a pick reads."""

    id: str
    rule_id: str
    customer_id: str
    occurrence: str
    kind: str
    channel: str
    channel_id: str | None
    audience: str
    subject: str | None
    body: str | None
    offer: dict[str, Any] | None
    decided_at: datetime
    attempts: int = 0
    throttled_since: datetime | None = None
    recipient: str | None = None
    phone: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Decided:
        offer = row["offer"]
        return cls(
            id=row["id"],
            rule_id=row["rule"],
            customer_id=row["customer"],
            occurrence=row["occ"],
            kind=row["kind"],
            channel=row["channel"],
            channel_id=row["channel_id"],
            audience=row["audience"],
            subject=row["subject"],
            body=row["body"],
            offer=orjson.loads(offer) if offer is not None else None,
            decided_at=row["decided"],
        )


@dataclass(frozen=True, slots=True)
class _Channels:
    """The enabled channels: by id, and each kind's current one (its newest)."""

    named: dict[str, Any]
    current: dict[str, Any]

    @classmethod
    def of(cls, enabled: Sequence[Any]) -> _Channels:
        current: dict[str, Any] = {}
        for r in enabled:
            current.setdefault(r.kind, r)
        return cls({r.id: r for r in enabled}, current)

    def of_row(self, row: Any) -> Any:
        """The channel that carries the row: the one it names, or its kind's current one;
        None when there is none (a named one disabled, or renamed to another kind)."""
        if row.channel_id is None:
            return self.current.get(row.channel)
        channel = self.named.get(row.channel_id)
        return channel if channel is not None and channel.kind == row.channel else None


class DeliveryWorker(Worker):
    """Sends due actions through their channels; many may run against one ledger. The loop
    is :class:`~shared.worker.Worker`'s: a database outage is waited out, not fatal, and when
    nothing is due it rests ``delivery_idle_seconds`` or until nudged."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: OutreachSettings,
        recheck: Recheck,
        clock: Clock,
        *,
        require_https: bool = False,
        wall_clock: Clock | None = None,
        rng: random.Random | None = None,
        phone_region: str = "US",
        overlap: bool = False,
    ) -> None:
        """``clock`` times the ledger (due, leases, backoff, sent_at). ``wall_clock`` stamps
        what leaves the process (``webhook-timestamp``, the email's ``Date``): receivers
        compare those with their own real clocks, so they stay real even when a test drives
        ``clock``. ``require_https`` is true in production; ``phone_region`` reads a profile's
        phone without a country code for SMS. ``overlap`` (the service's loop) lets a pass
        end before all its sends are done (:meth:`run_once`)."""
        super().__init__(idle_seconds=settings.delivery_idle_seconds)
        self._engine = engine
        self._settings = settings
        self._recheck = recheck
        self._clock = clock
        self._wall = wall_clock or SystemClock()
        self._require_https = require_https
        self._phone_region = phone_region
        self._rng = rng or random.Random()
        # One connection pool per receiver URL, kept across passes (keep-alive). A pool is
        # keyed by the receiver's own URL, not only by the address its connections go to: a
        # TLS connection made for one name is never reused for another on the same address.
        self._pools: dict[str, PinnedPool] = {}
        self._paces: dict[str, Pace] = {}
        self._gates: dict[str, Gate] = {}
        self._all = asyncio.Semaphore(CONCURRENCY)
        self._overlap = overlap
        # The sends started and not yet recorded, by action id.
        self._inflight: dict[str, tuple[_Job, asyncio.Future[Attempt | _Later]]] = {}
        # Each lane's receiver, as last seen.
        self._lanes: dict[str, str] = {}
        # Finished sends a failed record left, for the next pass to record.
        self._unrecorded: list[tuple[_Job, Attempt | _Later]] = []
        # Each lane's actions leased as they were decided (lease_fresh), not yet adopted.
        self._leased_fresh: Counter[str] = Counter()

    # -- the loop (Worker's) --------------------------------------------------------------

    async def failed(self, exc: Exception) -> None:
        log.warning("delivery_pass_failed", reason=type(exc).__name__, error=scrub(str(exc)))

    async def aclose(self) -> None:
        """Release the HTTP connection pools (the ones the worker made) once stopped: a run
        that died is run again by its supervisor (:mod:`shared.supervisor`), with the pools."""
        if self.stopping:
            if self._inflight or self._unrecorded:  # the sends under way finish, are recorded
                try:
                    await self._record(await self._settle(drain=True))
                except Exception as exc:
                    await self.failed(exc)
            pools, self._pools = list(self._pools.values()), {}
            for pool in pools:
                await pool.aclose()

    def _pool(self, url: str) -> PinnedPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = PinnedPool(
                url,
                keepalive=self._settings.delivery_max_in_flight,
                http2=self._settings.delivery_http2,
            )
        return pool

    def pace(self, receiver: str, rate: float | None = None) -> Pace:
        """The receiver's pace (made on first use); its rate limit follows the channel's."""
        pace = self._paces.get(receiver)
        if pace is None:
            made = Pace(rate_per_second=rate, max_limit=self._settings.delivery_max_in_flight)
            self._paces[receiver] = pace = made
            self._gates[receiver] = Gate(lambda: made.in_flight_limit)
        pace.rate_per_second = rate
        return pace

    # -- one pass -------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One pass: pick, start the picked sends, record the ones done. Without ``overlap``
        the pass waits for all its sends; with it, for at most :data:`SETTLE_SECONDS`, and
        the sends still going are recorded by a later pass (each receiver's own window
        bounds how many it holds). Returns how many due actions the pick took (with
        ``overlap``, or how many sends it recorded, when more)."""
        if not self._overlap:
            jobs, taken = await self.pick()
            self._start(jobs)
            await self._record(await self._settle(drain=True))
            return taken
        # The sends finished since the last pass are recorded while the next pick is made
        # (two connections); their rows stay out of that pick until recorded.
        done = await self._settle(drain=False)
        recording = [job.action.id for job, _ in (*self._unrecorded, *done)]
        picked, recorded = await asyncio.gather(
            self.pick(recording=recording),
            self._record(done),
            return_exceptions=True,
        )
        if isinstance(picked, BaseException):
            raise picked
        jobs, taken = picked
        self._start(jobs)
        if isinstance(recorded, BaseException):
            raise recorded
        return max(taken, len(done))

    def _start(self, jobs: Sequence[_Job]) -> None:
        for job in jobs:
            self._inflight[job.action.id] = (job, asyncio.ensure_future(self._send_paced(job)))

    async def _record(self, done: Sequence[tuple[_Job, Attempt | _Later]]) -> None:
        """Record finished sends, with those a failed record left (the database away):
        they are kept for the next pass, not forgotten."""
        done = [*self._unrecorded, *done]
        self._unrecorded = []
        if not done:
            return
        try:
            await self.record([job for job, _ in done], [outcome for _, outcome in done])
        except BaseException:
            self._unrecorded = done
            raise

    async def _settle(self, *, drain: bool) -> list[tuple[_Job, Attempt | _Later]]:
        """Wait for the sends in flight (all of them, or up to :data:`SETTLE_SECONDS`) and
        take the finished ones out of flight."""
        tasks = [task for _, task in self._inflight.values()]
        if not tasks:
            return []
        await asyncio.wait(tasks, timeout=None if drain else SETTLE_SECONDS)
        done: list[tuple[_Job, Attempt | _Later]] = []
        for action_id, (job, task) in list(self._inflight.items()):
            if task.done():
                del self._inflight[action_id]
                done.append((job, task.result()))
        return done

    async def pick(self, recording: Sequence[str] = ()) -> tuple[list[_Job], int]:
        """Lock due rows, re-check them, lease the ones to send; commit. Returns the jobs
        and how many rows were taken in all. The actions in flight, and those in
        ``recording``, are not taken."""
        now = self._clock.now()
        limit, full = self._room()
        async with self._engine.begin() as conn:
            picked = await conn.execute(
                _PICK,
                {"now": now, "limit": limit, "busy": [*self._inflight, *recording], "full": full},
            )
            # A lane's window is kept before any work is spent on a row: the rows over it are
            # left as they were, due, for a pick once there is room (no attempt counted,
            # their place kept).
            held = self._held()
            rows = []
            for row in picked:
                lane = _lane(row)
                if held[lane] < self._window(lane):
                    held[lane] += 1
                    rows.append(row)
            if not rows:
                return [], 0
            channels = _Channels.of((await conn.execute(_CHANNELS)).all())
            lease_length = self._lease_length(len(rows))
            lease = now + lease_length
            last_start = self._last_start(lease_length)
            jobs: list[_Job] = []
            updates: list[_Update] = []
            verdicts = await self._recheck(conn, rows)
            for row, verdict in zip(rows, verdicts, strict=True):
                if verdict is not None:
                    updates.append(_not_now(row, verdict))
                    DELIVERIES.labels(row.channel, _NOT_NOW[verdict.outcome]).inc()
                    continue
                job, update = self._plan(row, channels.of_row(row), lease, now, last_start)
                if job is not None:
                    jobs.append(job)
                updates.append(update)
            await _apply(conn, updates, now)
        return jobs, len(rows)

    def _held(self) -> Counter[str]:
        """Each lane's sends in flight, and those leased as decided and not yet started."""
        return Counter(job.lane for job, _ in self._inflight.values()) + self._leased_fresh

    def _window(self, lane: str) -> int:
        receiver = self._lanes.get(lane)
        return self._paces[receiver].window if receiver is not None else MIN_WINDOW

    def _room(self) -> tuple[int, list[str]]:
        """How many actions the next pick may take (the worker holds a batch at most, and
        may always take a few more), and the lanes with a full window (a pick passes them
        by)."""
        batch = self._settings.delivery_batch
        taken = len(self._inflight) + self._leased_fresh.total()
        limit = max(batch - taken, min(MIN_PICK, batch))
        held = self._held()
        return limit, [lane for lane, count in held.items() if count >= self._window(lane)]

    async def send(self, jobs: Sequence[_Job]) -> list[Attempt | _Later]:
        """Send every job at its receiver's pace; never raises. A job its receiver's pace
        does not allow before its lease must end (a ``Retry-After``, the rate limit) comes
        back as :class:`_Later`."""
        return list(await asyncio.gather(*(self._send_paced(job) for job in jobs)))

    async def _send_paced(self, job: _Job) -> Attempt | _Later:
        pace = self.pace(job.receiver, job.rate)
        if wait := pace.paused(time.monotonic()):
            return _Later(wait)
        async with self._gates[job.receiver].slot():
            now = time.monotonic()
            if wait := pace.paused(now):
                return _Later(wait)
            wait = max(0.0, pace.next_start - now)
            if now + wait > job.last_start:
                return _Later(wait)
            await asyncio.sleep(pace.reserve(now))
            async with self._all:
                # A Retry-After that came while this send waited for its turn holds it.
                if wait := pace.paused(time.monotonic()):
                    return _Later(wait)
                at, started, begun = self._clock.now(), time.perf_counter(), time.monotonic()
                try:
                    attempt = await self._send_one(job)
                except Exception as exc:  # a bug must not strand the batch: retry later
                    log.error("delivery_send_error", action_id=job.action.id, exc_info=exc)
                    attempt = Attempt(Verdict.RETRY, "internal", type(exc).__name__)
                took = time.perf_counter() - started
            if attempt.verdict in (Verdict.RETRY, Verdict.UNKNOWN):
                pace.failed(time.monotonic(), self._quiet_for(attempt))
            else:
                pace.answered(took, started=begun)
            return replace(attempt, at=at, duration_ms=round(took * 1000))

    async def record(self, jobs: Sequence[_Job], outcomes: Sequence[Attempt | _Later]) -> None:
        """Write each job's outcome (only where the row still carries our lease)."""
        now = self._clock.now()
        later = [
            _Update(
                job.action.id,
                "pending",
                job.attempts,
                next_at=now + timedelta(seconds=outcome.seconds),
                lease=job.lease,
            )
            for job, outcome in zip(jobs, outcomes, strict=True)
            if isinstance(outcome, _Later)
        ]
        sent = [
            (job, outcome)
            for job, outcome in zip(jobs, outcomes, strict=True)
            if isinstance(outcome, Attempt)
        ]
        jobs = [job for job, _ in sent]
        attempts = [attempt for _, attempt in sent]
        updates = [
            self._outcome(job, attempt, now) for job, attempt in zip(jobs, attempts, strict=True)
        ]
        async with self._engine.begin() as conn:
            applied = set(await _apply(conn, [*later, *updates], now))
            # Only the attempts whose outcome was written: a worker that outlived its lease
            # left the row to the one that took it over, attempt numbers included.
            # A throttled answer is no attempt of the action's (it is logged and counted),
            # unless it is the one that gives the action up.
            await attempts_store.record(
                conn,
                [
                    _attempt_row(job, attempt, update, now)
                    for job, attempt, update in zip(jobs, attempts, updates, strict=True)
                    if update.id in applied and update.attempts > job.attempts
                ],
            )
            for job, attempt in zip(jobs, attempts, strict=True):
                if attempt.verdict is Verdict.GONE and job.channel_id is not None:
                    await conn.execute(
                        _DISABLE,
                        {
                            "id": job.channel_id,
                            "reason": f"endpoint answered 410 Gone for action {job.action.id}",
                            "now": now,
                            # Not when an operator has pointed the channel elsewhere meanwhile.
                            "url": job.webhook[0] if job.webhook else None,
                        },
                    )
                    log.warning("channel_disabled", channel_id=job.channel_id, status=410)
        # Each send that did not go through is logged; the sent ones are counted, and each
        # is in outreach.delivery_attempts (a log line each would cost more than the send).
        counts: Counter[tuple[str, str]] = Counter()
        for job, attempt, update in zip(jobs, attempts, updates, strict=True):
            outcome = update.status if update.id in applied else "stale"
            if attempt.throttled and outcome == "pending":
                outcome = "throttled"
            counts[job.channel, outcome] += 1
            if outcome != "sent":
                log.info(
                    "delivery_attempt",
                    action_id=job.action.id,
                    channel=job.channel,
                    attempt=update.attempts,
                    outcome=outcome,
                    reason=update.reason,
                )
        for (channel, outcome), count in counts.items():
            DELIVERIES.labels(channel, outcome).inc(count)
        if counts:
            log.debug("delivery_recorded", outcomes={f"{c}:{o}": n for (c, o), n in counts.items()})

    # -- actions leased as they are decided --------------------------------------------------

    def lease_fresh(self, rows: Sequence[dict[str, Any]], now: datetime) -> Fresh | None:
        """Lease, before they are written, the webhook actions just decided due ``now`` for
        receivers this worker already sends to: their rows (the decision's, changed in place)
        go in due at the lease's end, and :meth:`adopt` starts their sends once the decision
        has committed. No pick, no re-check (the policy was judged this instant, in the
        deciding transaction) and no lease update. They take their places in their lanes'
        windows and wait their turn at their receivers' pace as a pick's would, the lease long
        enough for the sends queued there before them; a send that could not start before the
        lease ends stays pending. A process that dies first leaves them due when the lease
        ends. The worker holds at most :data:`FRESH_BATCHES` batches so. None when it takes
        none; the caller gives what it took to :meth:`adopt` or :meth:`release`."""
        if self.stopping:
            return None
        room = (
            FRESH_BATCHES * self._settings.delivery_batch
            - len(self._inflight)
            - self._leased_fresh.total()
        )
        held = self._held()
        taken: list[dict[str, Any]] = []
        lanes: Counter[str] = Counter()
        for row in rows:
            if len(taken) >= room:
                break
            if row["status"] != "pending" or row["next"] != now or row["channel"] != "webhook":
                continue
            lane = row["channel_id"] or f"kind:{row['channel']}"
            if lane not in self._lanes:
                continue  # a receiver not sent to yet: its pace is set by a pick first
            if held[lane] + lanes[lane] >= FRESH_WINDOWS * self._window(lane):
                continue
            lanes[lane] += 1
            taken.append(row)
        if not taken:
            return None
        rounds = max(
            math.ceil((held[lane] + n) / self._paces[self._lanes[lane]].in_flight_limit)
            for lane, n in lanes.items()
        )
        lease_length = (
            timedelta(seconds=self._settings.webhook_timeout_seconds * rounds) + LEASE_MARGIN
        )
        lease = now + lease_length
        for row in taken:
            row["next"] = lease
        fresh = Fresh(
            lease, self._last_start(lease_length), {row["id"]: row for row in taken}, lanes
        )
        self._leased_fresh += lanes
        return fresh

    def release(self, fresh: Fresh) -> None:
        """Give back the room of actions leased by :meth:`lease_fresh` that were not written
        (their decision rolled back)."""
        self._leased_fresh -= fresh.lanes

    async def adopt(self, fresh: Fresh, written: Collection[str]) -> None:
        """Start the sends of the leased actions the decision wrote (``written``: the ids the
        ledger took; a replay's were there already). One whose channel has gone meanwhile is
        written as a pick would write it. Never raises: what it could not start stays leased,
        due when the lease ends."""
        rows = [row for action_id, row in fresh.rows.items() if action_id in written]
        try:
            if not rows or self.stopping:
                return
            async with self._engine.connect() as conn:
                channels = _Channels.of((await conn.execute(_CHANNELS)).all())
            now = self._clock.now()
            jobs: list[_Job] = []
            updates: list[_Update] = []
            for row in rows:
                decided = _Decided.of(row)
                job, update = self._plan(
                    decided, channels.of_row(decided), fresh.lease, now, fresh.last_start
                )
                if job is not None:
                    jobs.append(job)
                else:
                    updates.append(replace(update, lease=fresh.lease))
            self._start(jobs)
            if updates:
                async with self._engine.begin() as conn:
                    await _apply(conn, updates, now)
        except Exception as exc:
            log.warning("delivery_adopt_failed", reason=type(exc).__name__, error=scrub(str(exc)))
        finally:
            self.release(fresh)  # its sends, if started, are in flight and held there
        self.nudge()  # a pass records the sends as they finish

    # -- decisions ------------------------------------------------------------------------

    def _last_start(self, lease_length: timedelta) -> float:
        """The latest moment (time.monotonic()) a send under a lease of ``lease_length``
        taken now may start: none may outlast its lease (half the margin stays for the
        lease-to-send gap and clock skew)."""
        return (
            time.monotonic()
            + (lease_length - LEASE_MARGIN / 2).total_seconds()
            - self._settings.webhook_timeout_seconds
        )

    def _lease_length(self, count: int) -> timedelta:
        # A receiver takes up to its in-flight limit at a time and each send is bounded by
        # the timeout; the lease must outlast the sends or a second worker would re-send, so
        # a send that could end after it is not started (it waits for the next pass).
        rounds = math.ceil(count / self._settings.delivery_max_in_flight)
        return timedelta(seconds=self._settings.webhook_timeout_seconds * rounds) + LEASE_MARGIN

    def _plan(
        self, row: Any, channel: Any, lease: datetime, now: datetime, last_start: float
    ) -> tuple[_Job | None, _Update]:
        def fail(reason: str, error: str) -> tuple[None, _Update]:
            return None, _Update(
                row.id, "failed", row.attempts, reason, error[:500], throttled="clear"
            )

        s = self._settings
        if channel is None and (row.channel in HTTP_KINDS or row.channel_id is not None):
            # No channel to carry it (a named one disabled or not there yet): wait for one.
            # A busy spell ends here: the channel that comes back (to the same receiver or
            # another) is asked afresh, not failed at once for a spell from before.
            named = f" {row.channel_id!r}" if row.channel_id is not None else ""
            log.warning("delivery_no_channel", action_id=row.id, channel=row.channel)
            wait = _Update(
                row.id,
                "pending",
                row.attempts,
                error=f"no enabled {row.channel} channel{named}",
                next_at=now + NO_CHANNEL_DELAY,
                throttled="clear",
            )
            return None, wait
        webhook: tuple[str, str] | None = None
        sms: tuple[SmsConfig, str, str] | None = None
        email: tuple[email_channel.SmtpServer, str] | None = None
        if row.channel == "webhook":
            assert channel is not None
            try:
                config = WebhookConfig.model_validate(channel.config)
            except ValidationError as exc:
                return fail("bad_channel", f"webhook channel {channel.id!r}: {exc}")
            if not channel.secret:
                return fail("bad_channel", f"webhook channel {channel.id!r} has no secret")
            webhook = (config.url, channel.secret)
            receiver = f"webhook {channel.id}"
            rate = config.rate_per_second or s.delivery_rate_per_second
        elif row.channel == "sms":
            assert channel is not None
            try:
                sms_config = SmsConfig.model_validate(channel.config)
            except ValidationError as exc:
                return fail("bad_channel", f"sms channel {channel.id!r}: {exc}")
            if not channel.secret:
                return fail("bad_channel", f"sms channel {channel.id!r} has no secret")
            number = normalise_phone(row.phone, self._phone_region) if row.phone else None
            if number is None:
                return fail("no_address", "the customer's profile has no usable phone number")
            sms = (sms_config, channel.secret, number)
            receiver = f"sms {channel.id}"
            rate = sms_config.rate_per_second or s.delivery_rate_per_second
        elif row.channel == "email":
            recipient = (row.recipient or "").strip()
            if not email_channel.valid_address(recipient):
                return fail("no_address", "the customer's profile has no usable email address")
            server = self._smtp_server(channel)
            email = (server, recipient)
            receiver = f"email {server.host}:{server.port}"
            rate = s.delivery_rate_per_second
        else:
            return fail("bad_channel", f"unknown channel {row.channel!r}")
        link = unsubscribe_url(
            s.public_base_url, row.customer_id, s.unsubscribe_secret.get_secret_value(), now
        )
        action = OutboundAction.from_row(row, link)
        self.pace(receiver, rate)
        self._lanes[_lane(row)] = receiver
        job = _Job(
            action,
            row.channel,
            row.attempts,
            lease,
            channel.id if channel else None,
            link,
            webhook=webhook,
            email=email,
            sms=sms,
            receiver=receiver,
            rate=rate,
            lane=_lane(row),
            last_start=last_start,
            throttled_since=row.throttled_since,
        )
        return job, _Update(row.id, "pending", row.attempts, next_at=lease)

    def _smtp_server(self, channel: Any) -> email_channel.SmtpServer:
        s = self._settings
        config = EmailConfig()
        if channel is not None:
            # A broken stored config falls back to the settings rather than stranding mail.
            with contextlib.suppress(ValidationError):
                config = EmailConfig.model_validate(channel.config)
        return email_channel.SmtpServer(
            host=config.smtp_host or s.smtp_host,
            port=config.smtp_port or s.smtp_port,
            sender=config.sender or s.email_from,
            # A channel that names where to connect is judged by the guard, both halves:
            # a host of its own with the settings' port, or the other way round, is still
            # a place an API key chose.
            guarded=config.smtp_host is not None or config.smtp_port is not None,
        )

    def _quiet_for(self, attempt: Attempt) -> float | None:
        """How long the receiver asked to be left alone (its Retry-After, capped)."""
        if attempt.retry_after is None:
            return None
        return min(attempt.retry_after, self._settings.delivery_retry_after_max_seconds)

    def _outcome(self, job: _Job, attempt: Attempt, now: datetime) -> _Update:
        if attempt.throttled:
            return self._throttled(job, attempt, now)
        # Any other answer ends a busy spell: a later one starts its own give-up age.
        return replace(self._answered(job, attempt, now), throttled="clear")

    def _answered(self, job: _Job, attempt: Attempt, now: datetime) -> _Update:
        done = job.attempts + 1
        act_id, lease = job.action.id, job.lease
        match attempt.verdict:
            case Verdict.SENT:
                return _Update(act_id, "sent", done, sent_at=now, lease=lease)
            case Verdict.UNKNOWN:
                return _Update(act_id, "unknown", done, attempt.reason, attempt.error, lease=lease)
            case Verdict.FAILED | Verdict.GONE:
                return _Update(act_id, "failed", done, attempt.reason, attempt.error, lease=lease)
        if done >= self._settings.delivery_max_attempts:
            return _Update(
                act_id,
                "failed",
                done,
                "max_attempts",
                f"gave up after {done} attempts; last: {attempt.error}",
                lease=lease,
            )
        return _Update(
            act_id,
            "pending",
            done,
            error=attempt.error,
            next_at=now + self.backoff(job.attempts, attempt.retry_after),
            lease=lease,
        )

    def _throttled(self, job: _Job, attempt: Attempt, now: datetime) -> _Update:
        """A busy answer: due again when the receiver said, and not an attempt towards the
        limit (the receiver took nothing); but once the receiver has answered the action busy
        for ``delivery_throttled_give_up_hours``, the action fails (reason ``throttled``),
        and that answer is its attempt."""
        wait = self._quiet_for(attempt) or 0.0
        since = job.throttled_since or now
        give_up = timedelta(hours=self._settings.delivery_throttled_give_up_hours)
        if now - since >= give_up:
            hours = (now - since).total_seconds() / 3600
            return _Update(
                job.action.id,
                "failed",
                job.attempts + 1,
                "throttled",
                (
                    f"the receiver has answered busy since {_utc(since)} every time it was "
                    f"asked; given up after {hours:.1f} h (the limit is "
                    f"{self._settings.delivery_throttled_give_up_hours:g} h); last: "
                    f"{attempt.error} with Retry-After {wait:g} s"
                )[:500],
                lease=job.lease,
            )
        return _Update(
            job.action.id,
            "pending",
            job.attempts,
            error=f"{attempt.error} with Retry-After {wait:g} s (not counted as an attempt; "
            f"busy since {_utc(since)})",
            next_at=now + timedelta(seconds=wait),
            lease=job.lease,
            throttled="start",
        )

    def backoff(self, attempts: int, retry_after: float | None = None) -> timedelta:
        """How long to wait after the failed attempt number ``attempts + 1``: full jitter,
        uniform in [0, min(max, base·2^attempts)]; never sooner than a receiver's
        Retry-After (itself capped at the maximum)."""
        s = self._settings
        bound = min(s.retry_max_seconds, s.retry_base_seconds * 2.0 ** min(attempts, 62))
        delay = self._rng.uniform(0, bound)
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.retry_max_seconds))
        return timedelta(seconds=delay)

    async def _send_one(self, job: _Job) -> Attempt:
        s = self._settings
        if job.webhook is not None:
            url, secret = job.webhook
            return await webhook_channel.deliver(
                self._pool(url),
                secret,
                job.action,
                at=self._wall.now(),
                allow_private=s.allow_private_webhooks,
                require_https=self._require_https,
                timeout=s.webhook_timeout_seconds,
            )
        if job.sms is not None:
            config, secret, number = job.sms
            return await sms_channel.deliver(
                self._pool(config.url),
                config,
                secret,
                job.action,
                number,
                at=self._wall.now(),
                allow_private=s.allow_private_webhooks,
                require_https=self._require_https,
                timeout=s.webhook_timeout_seconds,
            )
        assert job.email is not None
        server, recipient = job.email
        try:
            message = email_channel.build_message(
                job.action,
                recipient=recipient,
                sender=server.sender,
                unsubscribe_link=job.link,
                at=self._wall.now(),
            )
        except ValueError as exc:
            return Attempt(Verdict.FAILED, "bad_message", str(exc)[:500])
        return await email_channel.deliver(
            server,
            message,
            recipient,
            timeout=s.webhook_timeout_seconds,
            allow_private=s.allow_private_webhooks,
            ports=s.smtp_ports,
        )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _lane(row: Any) -> str:
    """The row's lane: the channel it names, or its kind's current one."""
    return row.channel_id or f"kind:{row.channel}"


def _attempt_row(
    job: _Job, attempt: Attempt, update: _Update, now: datetime
) -> attempts_store.AttemptRow:
    return attempts_store.AttemptRow(
        action_id=job.action.id,
        attempt=update.attempts,
        at=attempt.at or now,
        outcome=attempt.verdict.value,
        reason=attempt.reason,
        http_status=attempt.http_status,
        error=attempt.error,
        duration_ms=attempt.duration_ms or 0,
    )


async def _apply(conn: AsyncConnection, updates: Sequence[_Update], now: datetime) -> list[str]:
    """Apply a batch of ledger updates in one statement; returns the ids it changed. A busy
    answer's ``throttled_since`` starts at ``now``. What ends an action's wait (sent, failed,
    unknown, or the policy's suppression or hold) goes on the actions stream."""
    if not updates:
        return []
    result = await conn.execute(
        _UPDATE,
        {
            "ids": [u.id for u in updates],
            "statuses": [u.status for u in updates],
            "reasons": [u.reason for u in updates],
            "errors": [u.error for u in updates],
            "next_at": [u.next_at for u in updates],
            "attempts": [u.attempts for u in updates],
            "sent_at": [u.sent_at for u in updates],
            "leases": [u.lease for u in updates],
            "throttled": [u.throttled for u in updates],
            "now": now,
        },
    )
    rows = result.all()
    await ledger_store.publish_outcomes(conn, rows, now)
    return [r.id for r in rows]
