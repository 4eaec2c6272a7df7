"""Refitting the population: RFM quintiles, 80/20 tiers, the median purchase gap, and the
BG/NBD and Gamma-Gamma parameters, from every customer's facts at one instant.

Two passes over the customers, in chunks: the first gathers each customer's statistics and
fits; the second rebuilds cards under the new population and publishes a ``cause: refresh``
change only for the customers whose stage, tier, strategy, segment or membership tier moved
(the stage when the population's new rhythm judges a short history's silence anew; the
membership tier when time lowered it since the sweep last looked, or the tiers configured
changed), or whose card's figures that time moves (trailing windows, RFM scores, overdue
complaints; P(alive), the chances of an order, expected orders and the CLV by a step) moved
from the last card published for them (:meth:`~services.scoring.core.card.Moving.moved_from`),
so a reader's copy is never a refit interval behind on what a rule may read. The stored
stage history follows the cards it rewrites: every customer's when what a walk depends on
besides their facts changed since the last complete walk (the population's rhythm,
scoring's settings, its code: :func:`walk_fingerprint`, stored beside the population), else
only the customers whose stage moved since their row was written.
"""

from __future__ import annotations

import functools
import hashlib
import time
from array import array
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import core
from services.scoring.core import lifecycle, predict, rfm, tiers
from services.scoring.core.card import Population, score
from services.scoring.core.changes import Outgoing, refresh_change
from services.scoring.core.complaints import Complaint, complaints_of
from services.scoring.core.ledger import Ledger
from services.scoring.core.lifecycle import Transition
from services.scoring.core.state import CustomerState, to_micros
from services.scoring.settings import ScoringSettings
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.state_cache import forget_held_states
from services.scoring.store import complaints as complaint_store
from services.scoring.store import customers as store
from services.scoring.store.customers import CustomerRow
from shared.clock import Clock
from shared.heap import map_big_blocks_apart, release_freed
from shared.logging import get_logger

log = get_logger(__name__)

CHUNK = 2000
# The second pass holds a page's facts, cards and the statement writing them at once (~20 KB
# a customer): 500 at a time keeps that near 10 MB, in 2,000 statements over a million.
PAGE = 500
CLV_SLICE = 65_536
DEFAULT_FITTERS = predict.Fitters()


@dataclass(frozen=True)
class RefitReport:
    customers: int
    buyers: int
    population: Population
    changed: int
    fit_seconds: float
    total_seconds: float
    kept: list[str]  # models whose fit did not converge: their parameters in force stayed


@dataclass
class Figures:
    """What the fit reads of every customer: per buyer, the card's value score, the
    prediction's statistics, the RFM inputs and their own purchase rhythm.

    One machine number per buyer in flat arrays (4 or 8 bytes each), not lists of Python
    floats (32 bytes each): at a million customers the lists alone would take ~300 MB. Counts
    and whole days are C ints, and purchase intervals (medians of whole days: halves at most)
    C floats; numpy widens them to the same float64 values the fits and quantiles always used.
    """

    customers: int = 0
    composites: array[float] = field(default_factory=lambda: array("d"))
    # The composites judged on the population's median gap, not a rhythm of their own.
    borrowed: array[int] = field(default_factory=lambda: array("i"))
    xs: array[int] = field(default_factory=lambda: array("i"))  # repeat purchase days
    # t_x and T: whole days (the statistics count purchase days), so C ints.
    txs: array[int] = field(default_factory=lambda: array("i"))
    ts: array[int] = field(default_factory=lambda: array("i"))
    spends: array[float] = field(default_factory=lambda: array("d"))
    recency: array[int] = field(default_factory=lambda: array("i"))  # whole days
    frequency: array[int] = field(default_factory=lambda: array("i"))  # orders
    monetary: array[float] = field(default_factory=lambda: array("d"))
    # Exact in a C float: a whole number of days or a half, far below 2**24.
    gaps: array[float] = field(default_factory=lambda: array("f"))

    def add_buyer(
        self,
        value_score: float,
        interval: float | None,
        stats: predict.RepeatStats | None,
        recency_days: int,
        orders: int,
        lifetime_spend: float,
    ) -> None:
        """A customer with a purchase: their card's ``value_score`` and
        ``purchase_interval_days`` (``interval``), their statistics at the fit's day (None
        when no purchase day has come by then) and the RFM inputs."""
        self.composites.append(value_score)
        if interval is None:
            self.borrowed.append(len(self.composites) - 1)
        if stats is None:
            return
        self.xs.append(stats.x)
        self.txs.append(int(stats.t_x))
        self.ts.append(int(stats.T))
        self.spends.append(stats.mean_spend)
        self.recency.append(recency_days)
        self.frequency.append(orders)
        self.monetary.append(lifetime_spend)
        if interval is not None:
            self.gaps.append(interval)


async def gather_figures(
    engine: AsyncEngine, as_of: datetime, current: Population, settings: ScoringSettings
) -> Figures:
    """Every customer's :class:`Figures` at ``as_of``, read from their facts in one pass.

    The figures are the card's own (:func:`services.scoring.core.card.score` under the
    population ``current``), read from the purchases' ledger the card is built from without
    the rest of the card (the stage walk, the prediction, the profile, its JSON): most of a
    card's cost, and none of it needed here."""
    figures = Figures()
    now_us = to_micros(as_of)
    today = as_of.date().toordinal()
    median_gap = current.median_gap(settings)
    async with engine.connect() as conn:
        async for state in store.all_states(conn, CHUNK):
            figures.customers += 1
            ledger = Ledger.of(state, now_us)
            if not ledger.orders:
                continue  # a prospect has no tier: it does not move the cut points either
            interval = _purchase_interval(ledger)
            # Each purchase day's total, summed in purchase order as daily_stats sums them.
            days = zip(ledger.days, ledger.day_totals, strict=True)
            figures.add_buyer(
                _value_score(ledger, interval, median_gap, settings),
                interval,
                predict.daily_stats_of_days(days, today),
                today - ledger.days[-1],
                ledger.orders,
                float(ledger.lifetime),
            )
    return figures


async def fit_population(
    engine: AsyncEngine,
    as_of: datetime,
    current: Population,
    settings: ScoringSettings,
    fitters: predict.Fitters = DEFAULT_FITTERS,
) -> tuple[Population, int, int, float, list[str]]:
    """The population at ``as_of``: returns (population, customers, buyers, fit seconds, the
    models whose fit did not converge and whose parameters in force were kept)."""
    figures = await gather_figures(engine, as_of, current, settings)
    release_freed()  # the walk's garbage, before the fit's arrays come on top
    buyers = len(figures.xs)
    population, fit_seconds, kept = fit_figures(figures, as_of, current, settings, fitters)
    return population, figures.customers, buyers, fit_seconds, kept


def fit_figures(
    figures: Figures,
    as_of: datetime,
    current: Population,
    settings: ScoringSettings,
    fitters: predict.Fitters = DEFAULT_FITTERS,
) -> tuple[Population, float, list[str]]:
    """The population fitted on ``figures``: returns (population, fit seconds, the models
    whose fit did not converge and whose parameters in force were kept).

    It takes the figures' arrays over and lets each go as soon as it is used: what needs no
    model (the RFM cut points, the median gap, the composites' tier cuts) is computed first,
    so the model fits (their own arrays ~28 bytes per repeat buyer in the Gamma-Gamma fit and
    ~20 per histogram row in BG/NBD's, their work buffers a slice of rows) have beside them
    only the four numbers per buyer that the CLVs read."""
    recency, frequency, monetary = figures.recency, figures.frequency, figures.monetary
    figures.recency, figures.frequency, figures.monetary = array("i"), array("i"), array("d")
    rfm_bp = rfm.breakpoints_from(recency, frequency, monetary) if recency else None
    del recency, frequency, monetary

    gaps, figures.gaps = figures.gaps, array("f")
    # np.median's middle pair is averaged as statistics.median averages it: (a + b) / 2.
    median_gap_days = float(np.median(np.asarray(gaps, dtype=np.float64))) if gaps else None
    del gaps
    # The cut points must rank the composites the cards will show once this population is in
    # force: a customer without a rhythm of their own is judged on the new median gap.
    composites, figures.composites = figures.composites, array("d")
    was = current.median_gap(settings)
    will = median_gap_days or settings.default_median_gap_days
    for i in figures.borrowed:
        composites[i] = tiers.with_rhythm(composites[i], was, will, settings)
    figures.borrowed = array("i")
    # The composites' cut points now; the CLVs' median once the models are fitted.
    tier_cuts = tiers.breakpoints_from(composites, [], settings) if composites else None
    del composites

    xs, txs, ts, spends = figures.xs, figures.txs, figures.ts, figures.spends
    figures.xs, figures.txs = array("i"), array("i")
    figures.ts, figures.spends = array("i"), array("d")
    release_freed()  # what the cut points let go of, before the fits' arrays come
    started = time.perf_counter()
    x = np.asarray(xs)  # a view of the C ints, not a copy
    bg = gg = None
    kept: list[str] = []
    if len(xs) >= 10 and int(x.sum()) > 0:
        try:
            # Whole days as the C ints they are: compress packs them without float copies.
            bg = fitters.bg_nbd(predict.compress(x, np.asarray(txs), np.asarray(ts)))
        except predict.FitError as exc:
            # A population whose maximum lies at a boundary (purchase rates with no spread at
            # all, say) has no finite fit: the parameters in force stay, and so does the rest
            # of the refit.
            log.warning("population_fit_kept", model="bg_nbd", reason=str(exc)[:200])
            bg = current.bg
            kept.append("bg_nbd")
        repeat = (x > 0) & (np.asarray(spends) > 0)
        if int(repeat.sum()) >= 10:
            try:
                gg = fitters.gamma_gamma(x[repeat], np.asarray(spends)[repeat])
            except predict.FitError as exc:
                log.warning("population_fit_kept", model="gamma_gamma", reason=str(exc)[:200])
                gg = current.gg
                kept.append("gamma_gamma")
        del repeat
    fit_seconds = time.perf_counter() - started

    tier_bp = None
    if tier_cuts is not None:
        clvs = (
            _clvs(bg, gg, x, txs, ts, np.asarray(spends))
            if bg is not None and gg is not None
            else np.zeros(len(xs))
        )
        del x, xs, txs, ts, spends
        # The median tiers.breakpoints_from takes of the CLVs, as it takes it.
        clv_median = float(np.median(clvs)) if len(clvs) else None
        tier_bp = replace(tier_cuts, clv_median=clv_median)
    population = Population(
        rfm=rfm_bp,
        tiers=tier_bp,
        bg=bg,
        gg=gg,
        median_gap_days=median_gap_days,
        fitted_at=as_of,
    )
    return population, fit_seconds, kept


def _clvs(
    bg: predict.BgNbdParams,
    gg: predict.GammaGammaParams,
    x: npt.NDArray[np.int64],
    t_x: array[int],
    T: array[int],
    spends: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """:func:`predict.clv_many` a slice of buyers at a time: its temporaries of one number
    per buyer would otherwise stand at ~60 MB together at 900,000 buyers (~10 MB sliced).
    Each CLV is a buyer's own (no sum across buyers), and the slices start at multiples of
    64K, so vector units see the same elements together as in one call."""
    out = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), CLV_SLICE):
        end = start + CLV_SLICE
        out[start:end] = predict.clv_many(
            bg, gg, x[start:end], _days(t_x[start:end]), _days(T[start:end]), spends[start:end]
        )
    return out


def _days(values: array[int]) -> npt.NDArray[np.float64]:
    """Whole days as the float64 numbers the fits read (exact: a C int fits a double)."""
    return np.asarray(values, dtype=np.float64)


def _purchase_interval(ledger: Ledger) -> float | None:
    """The card's ``value.purchase_interval_days``: the median gap between purchase days."""
    return lifecycle.median(ledger.gaps) if ledger.gaps else None


def _value_score(
    ledger: Ledger, interval: float | None, median_gap: float, settings: ScoringSettings
) -> float:
    """The card's ``value_score``, as :mod:`services.scoring.core.card` composes it: spend and
    orders over the window that ends at the last purchase, the customer's own rhythm (the
    population's median gap without one) and the outstanding balance."""
    window_spend, window_orders = ledger.before_last(settings.tier_window_days)
    return tiers.composite(
        window_spend, window_orders, interval or median_gap, ledger.outstanding, settings
    )


async def refit(
    engine: AsyncEngine,
    clock: Clock,
    cache: PopulationCache,
    settings: ScoringSettings,
    as_of: datetime | None = None,
    fitters: predict.Fitters = DEFAULT_FITTERS,
) -> RefitReport:
    """Fit at ``as_of`` (default now), store the population, refresh the cards it moves."""
    started = time.perf_counter()
    when = as_of or clock.now()
    # The second pass rewrites every customer's row: what the consumer holds of them goes
    # stale, and its memory (tens of MB) is the walk's from now.
    forget_held_states()
    release_freed()  # with what the consumer's batches freed, before the walk's arrays grow
    map_big_blocks_apart()  # the walk's arrays grow in place, not by copies leaving holes
    before = cache.current
    population, customers, buyers, fit_seconds, kept = await fit_population(
        engine, when, before, settings, fitters
    )
    # Stored stage moves were walked with the rhythm, the lifecycle settings and the code in
    # force then (the cards beside them too): only a change of one of them dates them anew.
    fingerprint = walk_fingerprint(settings, population.median_gap(settings))
    async with engine.begin() as conn:
        rewalk = await store.walked_with(conn) != fingerprint
        await store.save_population(conn, population)
    cache.current = population
    release_freed()  # the fit's, before the second pass makes its own
    changed = await _refresh_cards(engine, clock, population, settings, rewalk=rewalk)
    if rewalk:  # every history walked: the next refit need not, unless something changes
        async with engine.begin() as conn:
            await store.set_walked_with(conn, fingerprint)
    release_freed()
    report = RefitReport(
        customers, buyers, population, changed, fit_seconds, time.perf_counter() - started, kept
    )
    log.info(
        "population_refit",
        customers=customers,
        buyers=buyers,
        changed=changed,
        fit_seconds=round(fit_seconds, 3),
    )
    return report


def walk_fingerprint(settings: ScoringSettings, median_gap_days: float) -> str:
    """What a customer's stage walk depends on besides their own facts, as one digest: the
    population's rhythm, scoring's settings (all of them: a knob that does not move the walk
    costs only a walk more) and the source of scoring's core (a release may walk anew)."""
    digest = hashlib.sha256(_core_source().encode())
    digest.update(settings.model_dump_json().encode())
    digest.update(repr(float(median_gap_days)).encode())
    return digest.hexdigest()


@functools.cache
def _core_source() -> str:
    """A digest of the source of scoring's core modules: the code that walks a history."""
    digest = hashlib.sha256()
    for path in sorted(Path(core.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


async def _refresh_cards(
    engine: AsyncEngine,
    clock: Clock,
    population: Population,
    settings: ScoringSettings,
    *,
    rewalk: bool,
) -> int:
    changed = 0
    after = ""
    while True:
        async with engine.begin() as conn:
            rows = await store.lock_page(conn, after, PAGE)
            if not rows:
                return changed
            after = rows[-1].customer_id
            now = clock.now()
            saved: list[CustomerRow] = []
            outbox: list[Outgoing] = []
            held: list[tuple[str, Complaint]] = []
            # The stored stage moves follow the cards, so the timeline and the card tell one
            # story: every customer's when a new rhythm dates short histories' silences anew,
            # else those whose stage moved since they were last written (time, before the
            # sweep came to them).
            walked: dict[str, list[Transition]] = {}
            for row in rows:
                card = score(row.state, now, population, settings)
                held += _hold_complaints(row.state, card.tier, population, settings)
                if rewalk or card.stage != row.stage:
                    walked[row.customer_id] = card.history
                # Sent again when it moved the customer, or when time moved what a rule may
                # read of them since the last card published (Moving.moved_from).
                if (card.stage, card.tier, card.strategy, card.segment, card.member_tier) != (
                    row.stage,
                    row.tier,
                    row.strategy,
                    row.segment,
                    row.member_tier,
                ) or card.moving.moved_from(row.published):
                    outbox.append(refresh_change(card, row.stage, row.member_tier))
                    saved.append(CustomerRow.of(row.state, card, card.moving))
                else:
                    saved.append(CustomerRow.of(row.state, card, row.published))
            stored = await store.histories(conn, walked) if walked else {}
            await store.save(conn, saved)
            await store.sync_history(conn, [(c, stored[c], w) for c, w in walked.items()])
            await complaint_store.sync(conn, held)
            await store.add_outbox(conn, outbox)
            changed += len(outbox)


def _hold_complaints(
    state: CustomerState, tier: str | None, population: Population, settings: ScoringSettings
) -> list[tuple[str, Complaint]]:
    """The customer's complaints no card has held to a tier yet (raised before tiers were
    fitted: a history loaded into a fresh deployment), held now to the tier this fit gives
    them, as the complaints table is to record them."""
    if population.tiers is None or not state.complaints:
        return []
    unheld = [c for c in state.complaints if c not in state.complaint_tiers]
    if not unheld:
        return []
    state.hold_complaints(tier)
    return [
        (state.customer_id, complaint)
        for complaint in complaints_of(state, None, tier, settings)
        if complaint.complaint_id in unheld
    ]
