"""Every benchmark in one run, side by side, as a report.

    python -m bench.report [--quick] [--runs 3]
        [--parts ingest,scoring,refit,outreach,templates,delivery,e2e,cdnow,holdout,console,scale]

Runs each part, one after the other, on the local broker and database (``make infra`` or
``make up`` brings them), prints each part's table as it finishes and a summary at the end,
and writes ``bench/report.md`` with a chart, ``bench/report.png``. Every figure stands beside
its target, met or MISSED. A part that fails is reported as failed and the others still run.
Each part also runs alone: ``python -m bench.bench_<part>``.

The parts whose figures decide issue #19's targets (scoring beside Quix Streams, end to end,
CDNOW) run ``--runs`` times (3 by default; ``--runs 1`` for a quick look) and each deciding
figure is the median of its runs, every run's figure printed beside it. Each scoring run
measures its bare consumer and Quix Streams on its own topic in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import resource
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import (
    bench_cdnow_master,
    bench_console,
    bench_delivery,
    bench_e2e,
    bench_holdout,
    bench_ingest,
    bench_outreach,
    bench_quix,
    bench_refit,
    bench_scale,
    bench_scoring,
    bench_templates,
    pg_time,
)
from bench.bench_e2e import delete_topics, fresh_database
from shared.db import make_engine
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.cdnow import RANKED

HERE = Path(__file__).resolve().parent
PARTS = (
    "ingest",
    "scoring",
    "refit",
    "outreach",
    "templates",
    "delivery",
    "e2e",
    "cdnow",
    "holdout",
    "console",
    "scale",
)


@dataclass(frozen=True)
class Sizes:
    # How many times the parts that decide issue #19's targets run (scoring beside Quix
    # Streams, end to end, CDNOW): each deciding figure is the median of its runs.
    runs: int = 3
    ingest_events: int = 50_000
    ingest_singles: int = 1_000
    scoring_customers: int = 5_000
    scoring_orders: int = 10
    refit_customers: int = 1_000_000
    refit_repeat: int = 3
    outreach_customers: int = 1_000_000
    rule_changes: int = 20_000
    backtest_changes: int = 200_000
    e2e_rate: int = 1_000
    e2e_seconds: float = 20
    e2e_saturation: int = 15_000
    e2e_customers: int = 10_000
    # How long an end-to-end run waits, after its last POST, for its changes and webhooks.
    e2e_max_drain_s: float = 120
    cdnow_concurrency: int = 4
    # The demo's customers the console's pages are timed on (0: all 2,357).
    console_customers: int = 0
    console_requests: int = 20
    # Delivery alone: a backlog of webhook actions, receivers answering after a latency.
    delivery_actions: int = 5_000
    delivery_latency_ms: float = 20
    delivery_receivers: int = 2
    # Memory at scale: customers seeded by COPY, orders of the load, archetypes copied.
    scale_customers: int = 1_000_000
    scale_orders: int = 5_000
    scale_archetypes: int = 2_000


QUICK = Sizes(
    ingest_events=10_000,
    ingest_singles=200,
    scoring_customers=500,
    refit_customers=100_000,
    refit_repeat=1,
    outreach_customers=100_000,
    rule_changes=5_000,
    backtest_changes=50_000,
    e2e_seconds=3,
    e2e_saturation=2_000,
    e2e_max_drain_s=60,
    console_customers=600,
    console_requests=10,
    delivery_actions=1_000,
    scale_customers=100_000,
    scale_orders=1_000,
    scale_archetypes=500,
)


@dataclass(frozen=True)
class Row:
    part: str
    what: str
    figure: str
    target: str = ""
    met: bool | None = None  # None: no target


@dataclass
class Results:
    """The figures of every part that ran, for the chart."""

    ingest: bench_ingest.IngestFigures | None = None
    scoring: bench_scoring.ScoringFigures | None = None
    quix: bench_quix.QuixFigures | None = None
    refit: bench_refit.RefitFigures | None = None
    outreach: bench_outreach.OutreachFigures | None = None
    templates: bench_templates.TemplateFigures | None = None
    e2e: bench_e2e.E2EFigures | None = None
    cdnow: bench_cdnow_master.CdnowFigures | None = None
    holdout: bench_holdout.HoldoutFigures | None = None
    console: bench_console.ConsoleFigures | None = None
    delivery: dict[str, Any] | None = None
    scale: bench_scale.ScaleFigures | None = None
    # Issue #19's deciding figures, each the median of its runs, by name.
    medians: dict[str, float] = field(default_factory=dict)


@dataclass
class PartRun:
    name: str
    sizes: str
    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    busy: float = 0.0  # share of the machine's CPU in use during the part
    own: float = 0.0  # share used by this process and the processes it started
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end


def _num(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def _ms(value: float, drain_s: float) -> str:
    return f"> {drain_s:,.0f} s (not arrived)" if math.isinf(value) else _num(value, "ms")


# -- the parts ----------------------------------------------------------------------------------


async def ingest_part(sizes: Sizes, out: Results) -> list[Row]:
    prefix = f"bench.report.{uuid.uuid4().hex[:8]}."
    async with fresh_database("ingest", prefix) as settings:
        f = await bench_ingest.measure(
            settings, sizes.ingest_events, sizes.ingest_singles, 4, 18001
        )
    bench_ingest.print_figures(f)
    out.ingest = f
    return [
        Row("ingest", "bare aiokafka producer, batches of 500", _num(f.bare_per_s, "events/s")),
        Row(
            "ingest", "POST /v1/events, batches of 500, 4 clients", _num(f.batch_per_s, "events/s")
        ),
        Row("ingest", "ingest / bare producer", f"{f.ratio:.0%}"),
        Row(
            "ingest",
            "POST /v1/orders, one at a time",
            f"{f.single_per_s:,.0f} req/s; p50 {f.single_p50_ms:.1f} ms, "
            f"p99 {f.single_p99_ms:.1f} ms",
        ),
    ]


def under(prefix: str) -> Callable[[str], bool]:
    """Whether a topic's name starts with ``prefix``."""
    return lambda topic: topic.startswith(prefix)


def median(values: Sequence[float]) -> float:
    """The median of the runs' figures (a figure that never arrived is infinite)."""
    return float(statistics.median(values))


def each_run(values: Sequence[float], show: Callable[[float], str]) -> str:
    """Every run's figure, after a median made of them (nothing for a single run)."""
    if len(values) < 2:
        return ""
    return f" (median of {len(values)}: " + ", ".join(show(v) for v in values) + ")"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _pct(value: float) -> str:
    return f"{value:.0%}"


async def scoring_part(sizes: Sizes, out: Results) -> list[Row]:
    """Scoring, its bare consumer and Quix Streams on one topic, ``sizes.runs`` times (a
    fresh topic each): the ratios are taken within each run, then their median."""
    runs: list[tuple[bench_scoring.ScoringFigures, bench_quix.QuixFigures]] = []
    for _ in range(sizes.runs):
        prefix = f"bench.report.{uuid.uuid4().hex[:8]}."
        settings = CommonSettings().model_copy(update={"topic_prefix": prefix})
        try:
            f = await bench_scoring.measure(settings, sizes.scoring_customers, sizes.scoring_orders)
            bench_scoring.print_figures(f)
            topic = Topics.from_settings(settings).events
            q = await bench_quix.measure(settings, topic, f.events)
            bench_quix.print_figures(q, f.scoring_per_s)
            runs.append((f, q))
        finally:
            await delete_topics(settings, under(prefix))
    quix_ratios = [f.scoring_per_s / q.per_s for f, q in runs]
    bare_ratios = [f.ratio for f, _ in runs]
    # The run whose scoring / Quix ratio is the median stands for the others in the chart.
    middle = sorted(range(len(runs)), key=lambda i: quix_ratios[i])[len(runs) // 2]
    out.scoring, out.quix = runs[middle]
    q = runs[middle][1]
    ratio = out.medians["scoring / Quix"] = median(quix_ratios)
    return [
        Row(
            "scoring",
            "bare aiokafka consumer, read only",
            _num(median([f.bare_per_s for f, _ in runs]), "events/s")
            + each_run([f.bare_per_s for f, _ in runs], _rate),
        ),
        Row(
            "scoring",
            "scoring: apply, card, inbox + state + outbox per batch",
            _num(median([f.scoring_per_s for f, _ in runs]), "events/s")
            + each_run([f.scoring_per_s for f, _ in runs], _rate),
        ),
        Row(
            "scoring",
            "scoring / bare consumer",
            f"{median(bare_ratios):.1%}" + each_run(bare_ratios, lambda v: f"{v:.1%}"),
        ),
        Row(
            "scoring",
            f"Quix Streams {q.version}: same topic, same run, count/spend/last order per "
            "customer in RocksDB",
            _num(median([q.per_s for _, q in runs]), "events/s")
            + each_run([q.per_s for _, q in runs], _rate),
        ),
        Row(
            "scoring",
            "scoring / Quix Streams (each run's own ratio)",
            f"{ratio:.0%}" + each_run(quix_ratios, _pct),
            f">= {bench_quix.TARGET_RATIO:.0%}",
            ratio >= bench_quix.TARGET_RATIO,
        ),
        Row(
            "scoring",
            "scoring's core alone (decode, apply, card, change encoded; no Kafka, no database), "
            "CPU of one core per event",
            f"{median([f.core_us for f, _ in runs]):,.0f} µs"
            + each_run([f.core_us for f, _ in runs], lambda v: f"{v:,.0f} µs"),
        ),
        Row(
            "scoring",
            "the whole budget per event at the target (one core at "
            f"{bench_quix.TARGET_RATIO:.0%} of Quix Streams' rate, I/O included)",
            f"{median([1e6 / (bench_quix.TARGET_RATIO * q.per_s) for _, q in runs]):,.0f} µs",
        ),
        *_scoring_at_target(*runs[middle]),
    ]


def _scoring_at_target(f: bench_scoring.ScoringFigures, q: bench_quix.QuixFigures) -> list[Row]:
    """The median run's scoring work per event beside what the target rate allows: its
    core's CPU and PostgreSQL's time on its statements, summed over the target's events per
    second, in cores."""
    rows = [
        Row(
            "scoring",
            "median run: PostgreSQL statement time per event (inbox, state, order facts, "
            "stage history, outbox; the server's wall time)",
            pg_time.per_unit(f.pg_spent, f.events, "event"),
        )
    ]
    if f.pg_spent is None:
        return rows
    rate = bench_quix.TARGET_RATIO * q.per_s
    pg_us = sum(f.pg_spent.values()) / f.events * 1e6
    cores = (f.core_us + pg_us) * rate / 1e6
    rows.append(
        Row(
            "scoring",
            f"median run: scoring's core and its statements at the target "
            f"({bench_quix.TARGET_RATIO:.0%} of Quix Streams' {q.per_s:,.0f}/s = "
            f"{rate:,.0f} events/s), before Kafka and any other I/O",
            f"({f.core_us:,.0f} + {pg_us:,.0f} µs) x {rate:,.0f}/s = {cores:.1f} cores "
            f"of {os.cpu_count()}",
        )
    )
    return rows


async def refit_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await asyncio.to_thread(
        bench_refit.measure, sizes.refit_customers, 20_240_601, sizes.refit_repeat
    )
    bench_refit.print_figures(f)
    out.refit = f
    return [
        Row(
            "refit",
            f"BG/NBD + Gamma-Gamma refit, {f.customers:,} customers (median of {len(f.totals)})",
            f"{f.median_s:.2f} s",
            "< 3 s",
            f.median_s < bench_refit.TARGET_S,
        ),
        Row(
            "refit",
            f"the fits' arrays at their peak, {f.customers:,} customers in "
            f"{f.histogram_rows:,} histogram rows (numpy's allocations, traced; the figures "
            "they are fitted on not counted)",
            f"{f.fit_peak_mb:.0f} MB ({f.fit_peak_mb * 1e6 / f.customers:.0f} bytes a customer)",
        ),
    ]


async def outreach_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await bench_outreach.measure(
        sizes.outreach_customers, sizes.rule_changes, sizes.backtest_changes
    )
    bench_outreach.print_figures(f)
    out.outreach = f
    rows = [
        Row(
            "outreach",
            "rule evaluation, 100 active rules",
            _num(f.rules_per_s, "changes/s"),
            ">= 20,000/s",
            f.rules_per_s >= 20_000,
        ),
        Row(
            "outreach",
            f"scheduler due-scan over {f.customers:,} customers ({f.due:,} due)",
            _num(f.scan_s * 1000, "ms"),
            "< 2 s",
            f.scan_s < 2,
        ),
    ]
    if f.backtest is not None:
        b = f.backtest
        rows.append(
            Row(
                "memory",
                f"outreach resident (VmRSS), peak during a backtest over {b.changes:,} changes "
                f"of {b.customers:,} customers, answered in "
                f"{b.seconds:,.1f} s (before: {b.rss_before_mb:,.0f} MB)",
                _num(b.rss_peak_mb, "MB"),
                f"<= {bench_outreach.TARGET_BACKTEST_RSS_MB} MB",
                b.rss_peak_mb <= bench_outreach.TARGET_BACKTEST_RSS_MB,
            )
        )
    return rows


async def templates_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await bench_templates.measure()
    bench_templates.print_figures(f)
    out.templates = f
    rows = []
    for r in f.refusals:
        refused = r.limit.startswith("template_limit")
        rows.append(
            Row(
                "templates",
                f"refuse {r.bomb} ({r.limit})",
                _num(r.refused_s * 1000, "ms"),
                f"refused, < {bench_templates.REFUSE_TARGET_S:g} s",
                refused and r.refused_s < bench_templates.REFUSE_TARGET_S,
            )
        )
        rows.append(
            Row(
                "templates",
                f"longest /healthz while {r.bomb} is judged",
                _num(r.health_max_s * 1000, "ms"),
                f"< {bench_templates.HEALTH_TARGET_S * 1000:g} ms",
                r.health_max_s < bench_templates.HEALTH_TARGET_S,
            )
        )
    rows.append(
        Row("templates", "an ordinary template rendered, limits enforced", f"{f.render_us:.0f} us")
    )
    return rows


async def e2e_part(sizes: Sizes, out: Results) -> list[Row]:
    """The end-to-end runs, ``sizes.runs`` times (fresh stacks each): each deciding rate and
    latency is the median of the runs; the CPU split and the other figures are the median
    run's (by the sustained rate to the webhook)."""
    runs: list[bench_e2e.E2EFigures] = []
    for _ in range(sizes.runs):
        f = await bench_e2e.measure(
            rate=sizes.e2e_rate,
            seconds=sizes.e2e_seconds,
            saturation=sizes.e2e_saturation,
            customers=sizes.e2e_customers,
            max_drain_s=sizes.e2e_max_drain_s,
        )
        bench_e2e.print_figures(f)
        runs.append(f)
    to_hook = [r.saturated.to_webhook_per_s for r in runs]
    to_change = [r.saturated.to_change_per_s for r in runs]
    change_p99 = [r.fixed.change_p99_ms for r in runs]
    hook_p99 = [r.fixed.webhook_p99_ms for r in runs]
    middle = sorted(range(len(runs)), key=lambda i: to_hook[i])[len(runs) // 2]
    f = out.e2e = runs[middle]
    out.medians.update(
        {
            "to webhook": median(to_hook),
            "to change": median(to_change),
            "order→change p99": median(change_p99),
            "order→webhook p99": median(hook_p99),
        }
    )
    fx, sat = f.fixed, f.saturated
    drain = fx.max_drain_s

    def ms(value: float) -> str:
        return _ms(value, drain)

    rows = [
        Row(
            "end to end",
            f"sustained, POST to webhook delivered ({sat.events:,} orders as fast as ingest "
            "takes them)",
            _num(median(to_hook), "events/s") + each_run(to_hook, _rate),
            f">= {bench_e2e.TARGET_TO_WEBHOOK:,}/s",
            median(to_hook) >= bench_e2e.TARGET_TO_WEBHOOK,
        ),
        Row(
            "end to end",
            f"order→webhook at {fx.name} ({fx.events:,} orders posted in {fx.send_s:.1f} s), p99",
            ms(median(hook_p99)) + each_run(hook_p99, ms),
            f"p99 <= {bench_e2e.TARGET_WEBHOOK_P99_MS:,} ms",
            median(hook_p99) <= bench_e2e.TARGET_WEBHOOK_P99_MS,
        ),
        Row(
            "end to end",
            "sustained, POST to change",
            _num(median(to_change), "events/s") + each_run(to_change, _rate),
            f">= {bench_e2e.TARGET_TO_CHANGE:,}/s",
            median(to_change) >= bench_e2e.TARGET_TO_CHANGE,
        ),
        Row(
            "end to end",
            f"order→change at {fx.name}, p99",
            ms(median(change_p99)) + each_run(change_p99, ms),
            f"p99 <= {bench_e2e.TARGET_P99_MS} ms",
            median(change_p99) <= bench_e2e.TARGET_P99_MS,
        ),
        Row(
            "end to end",
            f"median run: order→change / order→webhook p50 at {fx.name}",
            f"{ms(fx.change_p50_ms)} / {ms(fx.webhook_p50_ms)}",
        ),
        Row(
            "end to end",
            "median run: order→change at saturation, p50 / p99",
            f"{_ms(sat.change_p50_ms, sat.max_drain_s)} / "
            f"{_ms(sat.change_p99_ms, sat.max_drain_s)}",
        ),
        Row(
            "end to end",
            "median run: order→webhook at saturation, p50 / p99",
            f"{_ms(sat.webhook_p50_ms, sat.max_drain_s)} / "
            f"{_ms(sat.webhook_p99_ms, sat.max_drain_s)}",
        ),
    ]
    if out.ingest is not None:
        rows.append(
            Row(
                "end to end",
                "peer in this report: the bare aiokafka producer (ingest part)",
                _num(out.ingest.bare_per_s, "events/s"),
            )
        )
    for r in (fx, sat):
        if r.missing_changes or r.missing_webhooks:
            rows.append(
                Row(
                    "end to end",
                    f"median run, {r.name}: not arrived {r.max_drain_s:,.0f} s after the last POST",
                    f"{r.missing_changes:,} changes, {r.missing_webhooks:,} webhooks "
                    f"of {r.events:,}",
                )
            )
    cores = os.cpu_count() or 1
    for window, shares in f.cpu_share.items():
        rows.append(
            Row(
                "end to end",
                f"CPU share of the {cores} cores, median run at saturation, first POST {window}",
                bench_e2e.cpu_split(shares),
            )
        )
        # The same split as CPU time per order: what the machine spends on one order, and
        # so the most its cores could carry at that cost if nothing ever waited.
        rate, target = (
            (sat.to_change_per_s, bench_e2e.TARGET_TO_CHANGE)
            if window == "to the last change"
            else (sat.to_webhook_per_s, bench_e2e.TARGET_TO_WEBHOOK)
        )
        per_order = {name: share * cores / rate * 1e6 for name, share in shares.items()}
        total = sum(per_order.values())
        rows.append(
            Row(
                "end to end",
                f"CPU per order, median run at saturation, first POST {window} (the target "
                f"{target:,}/s leaves {cores / target * 1e6:,.0f} µs per order to all "
                f"{cores} cores)",
                ", ".join(f"{name} {us:,.0f} µs" for name, us in per_order.items())
                + f"; all {total:,.0f} µs, so at most {cores / total * 1e6:,.0f}/s",
            )
        )
        rows.append(
            Row(
                "end to end",
                f"PostgreSQL statement time per order, median run at saturation, first POST "
                f"{window} (part of everything else above; the server's wall time)",
                pg_time.per_unit(f.pg_spent.get(window), sat.events),
            )
        )
    for name in bench_e2e.SERVICES:
        rows.append(
            Row(
                "memory",
                f"{name} resident (VmRSS), peak during the median saturation run "
                f"({f.customers:,} customers; before: {f.rss_before_mb[name]:,.0f} MB)",
                _num(f.rss_peak_mb[name], "MB"),
            )
        )
    return rows


async def cdnow_part(sizes: Sizes, out: Results) -> list[Row]:
    """The CDNOW master log through a fresh stack, ``sizes.runs`` times; a run that did not
    complete counts as infinitely slow in the median."""
    runs: list[bench_cdnow_master.CdnowFigures] = []
    for _ in range(sizes.runs):
        f = await bench_cdnow_master.measure(concurrency=sizes.cdnow_concurrency)
        bench_cdnow_master.print_figures(f)
        runs.append(f)
    walls = [r.wall_s if r.complete else math.inf for r in runs]
    middle = sorted(range(len(runs)), key=lambda i: walls[i])[len(runs) // 2]
    f = out.cdnow = runs[middle]
    wall = out.medians["CDNOW"] = median(walls)
    what = f"CDNOW master log, {f.orders:,} orders, first POST to the last card"
    target = f"<= {bench_cdnow_master.TARGET_S:.0f} s"

    def secs(value: float) -> str:
        return "not complete" if math.isinf(value) else f"{value:.1f} s"

    if math.isinf(wall):
        figure = (
            f"not complete after {f.wall_s:.0f} s ({f.seen_customers:,} of "
            f"{f.customers:,} customers)"
        )
    else:
        figure = (
            f"{wall:.1f} s ({f.orders / wall:,.0f} orders/s; the median run posted all in "
            f"{f.posted_s:.1f} s)"
        )
    return [
        Row(
            "CDNOW",
            what,
            figure + each_run(walls, secs),
            target,
            wall <= bench_cdnow_master.TARGET_S,
        ),
        Row(
            "CDNOW",
            f"median run: CPU share of the {os.cpu_count()} cores, first POST to the last card",
            bench_e2e.cpu_split(f.cpu_share),
        ),
        Row("CDNOW", "median run: CPU per order, same window", bench_cdnow_master.per_order(f)),
        Row(
            "CDNOW",
            "median run: PostgreSQL statement time per order, same window",
            pg_time.per_unit(f.pg_spent, f.orders),
        ),
    ]


async def holdout_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await asyncio.to_thread(bench_holdout.measure)
    bench_holdout.print_figures(f)
    out.holdout = f
    by = f.table.by_stage
    rows = [
        Row(
            "holdout",
            f"stage `{stage.value}` on 1997-09-30: bought again in 39 weeks",
            f"{by[stage].rate:.1%} of {by[stage].customers:,}",
        )
        for stage in RANKED
        if stage in by
    ]
    rows.append(
        Row(
            "holdout",
            "stages rank customers: mature > growing > declining > churned",
            " > ".join(f"{by[s].rate:.0%}" for s in RANKED if s in by),
            f"falling; churned <= {bench_holdout.CHURNED_VS_DECLINING:g} x declining",
            f.ranked,
        )
    )
    v = f.value
    rows += [
        Row(
            "holdout",
            "value model fitted on the calibration: purchase days in the 39 weeks, expected / made",
            f"{v.predicted_orders:,.0f} / {v.actual_orders:,}",
        ),
        Row(
            "holdout",
            "value model: spend in the 39 weeks, expected / spent",
            f"${v.predicted_spend:,.0f} / ${v.actual_spend:,.0f}",
        ),
        Row(
            "holdout",
            "value model: each fifth of customers by expected spend, expected / spent each",
            "; ".join(f"${b.predicted:,.2f} / ${b.actual:,.2f}" for b in v.by_fifth),
        ),
        Row(
            "holdout",
            "value model: share of the 39 weeks' spend from the fifth it expected most of",
            f"{f.top_fifth_share:.0%}",
        ),
    ]
    return rows


async def console_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await bench_console.measure(sizes.console_customers or None, sizes.console_requests)
    bench_console.print_figures(f)
    out.console = f
    rows = [
        Row(
            "console",
            f"{p.page} (`{p.path}`), median / p95",
            f"{p.median_ms:,.0f} / {p.p95_ms:,.0f} ms",
            f"p95 <= {bench_console.TARGET_MS:.0f} ms",
            p.met,
        )
        for p in f.pages
    ]
    if f.skipped:
        rows.append(Row("console", "pages not served by this console", ", ".join(f.skipped)))
    return rows


async def delivery_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await bench_delivery.run(
        sizes.delivery_actions, sizes.delivery_latency_ms, sizes.delivery_receivers
    )
    print("\n## delivery (one worker; webhook receivers in this process)\n")
    print("| figure | value |\n|---|---|")
    for key, value in f.items():
        print(f"| {key} | {value} |")
    out.delivery = f
    return [
        Row(
            "delivery",
            f"one worker empties {f['actions']:,} due webhook actions over "
            f"{f['receivers']} receivers answering after {f['latency_ms']:g} ms",
            f"{f['per_second']:,} webhooks/s ({f['seconds']:g} s; {f['connections']:,} TCP "
            f"connections, {f['statements']:,} SQL statements)",
        )
    ]


async def scale_part(sizes: Sizes, out: Results) -> list[Row]:
    f = await bench_scale.measure(sizes.scale_customers, sizes.scale_orders, sizes.scale_archetypes)
    bench_scale.print_figures(f)
    out.scale = f
    s = f.seeded
    rows = [
        Row(
            "memory",
            f"{s.customers:,} customers seeded by COPY ({s.archetypes:,} archetypes built by "
            "scoring's core; scoring, outreach and ingest rows)",
            f"{s.seconds:,.0f} s",
        )
    ]
    for p in f.phases:
        rows.append(
            Row("memory", f"{p.name} at {s.customers:,} customers: {p.note}", f"{p.seconds:,.1f} s")
        )
    for name in bench_e2e.SERVICES:
        peak = f.peak(name)
        by_phase = ", ".join(f"{p.name} {p.peak_mb[name]:,.0f}" for p in f.phases)
        rows.append(
            Row(
                "memory",
                f"{name} resident (VmRSS) with {s.customers:,} customers, peak over the "
                f"phases (started: {f.idle_mb[name]:,.0f} MB; {by_phase} MB)",
                _num(peak, "MB"),
                f"<= {bench_e2e.TARGET_RSS_MB} MB",
                peak <= bench_e2e.TARGET_RSS_MB,
            )
        )
    return rows


def describe_sizes(sizes: Sizes) -> dict[str, str]:
    return {
        "ingest": f"{sizes.ingest_events:,} events in batches of 500; "
        f"{sizes.ingest_singles:,} single orders",
        "scoring": f"{sizes.runs} x {sizes.scoring_customers:,} customers, "
        f"~{sizes.scoring_orders} orders each",
        "refit": f"{sizes.refit_customers:,} customers x {sizes.refit_repeat}",
        "outreach": f"{sizes.rule_changes:,} changes x 100 rules; "
        f"{sizes.outreach_customers:,} customers in the schedule; a backtest over "
        f"{sizes.backtest_changes:,} changes",
        "templates": f"{len(bench_templates.BOMBS)} template bombs sent to the rule preview, "
        "/healthz asked back to back meanwhile",
        "delivery": f"{sizes.delivery_actions:,} due webhook actions, "
        f"{sizes.delivery_receivers} receivers answering after {sizes.delivery_latency_ms:g} ms",
        "e2e": f"{sizes.runs} x ({sizes.e2e_rate:,}/s for {sizes.e2e_seconds:g} s, then "
        f"{sizes.e2e_saturation:,} orders at saturation, each on a fresh stack after 1,000 "
        f"warm-up orders; {sizes.e2e_customers:,} customers; waits up to "
        f"{sizes.e2e_max_drain_s:g} s after each run's last POST)",
        "cdnow": f"{sizes.runs} x the whole master log, batches of 1,000, "
        f"{sizes.cdnow_concurrency} clients",
        "holdout": "the whole master log, pure lifecycle and the value model's fits, no services",
        "console": f"the demo's data ({sizes.console_customers or 'all 2,357'} customers), "
        f"each page asked {sizes.console_requests} times after a warm-up, one at a time",
        "scale": f"{sizes.scale_customers:,} customers seeded by COPY; {sizes.scale_orders:,} "
        "orders, a refit and a due-scan, each service's VmRSS sampled every 0.2 s",
    }


RUNNERS: dict[str, Callable[[Sizes, Results], Awaitable[list[Row]]]] = {
    "ingest": ingest_part,
    "scoring": scoring_part,
    "refit": refit_part,
    "outreach": outreach_part,
    "templates": templates_part,
    "delivery": delivery_part,
    "e2e": e2e_part,
    "cdnow": cdnow_part,
    "holdout": holdout_part,
    "console": console_part,
    "scale": scale_part,
}


# -- the machine and what else it was doing -----------------------------------------------------


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it started and waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def postgres_version() -> str:
    engine = make_engine(CommonSettings(), pool_size=1)
    try:
        async with engine.connect() as conn:
            return str(await conn.scalar(text("SHOW server_version")))
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"
    finally:
        await engine.dispose()


async def unreachable() -> list[str]:
    """What the benchmarks need and cannot reach, each with how to get it."""
    from shared.kafka_security import admin_client

    settings = CommonSettings()
    problems = []
    admin = admin_client(settings, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.close()
    except Exception as exc:
        problems.append(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers} ({exc}): start it "
            "with `make infra`, or point KAFKA_BOOTSTRAP_SERVERS at a running broker"
        )
    if (await postgres_version()).startswith("unknown"):
        problems.append(
            "PostgreSQL is not reachable at DATABASE_URL: start it with `make infra`, or point "
            "DATABASE_URL at a running server"
        )
    return problems


async def run_part(name: str, sizes: Sizes, out: Results) -> PartRun:
    part = PartRun(name, describe_sizes(sizes)[name])
    print(f"\n# {name}: {part.sizes}", flush=True)
    busy0, total0 = cpu_ticks()
    own0, load0, started = own_cpu_seconds(), os.getloadavg()[0], time.perf_counter()
    try:
        part.rows = await RUNNERS[name](sizes, out)
    except Exception as exc:
        traceback.print_exc()
        part.error = f"{type(exc).__name__}: {exc}"[:500]
    part.seconds = time.perf_counter() - started
    busy1, total1 = cpu_ticks()
    part.busy = (busy1 - busy0) / max(total1 - total0, 1)
    tick = os.sysconf("SC_CLK_TCK")
    machine_seconds = (total1 - total0) / tick
    part.own = (own_cpu_seconds() - own0) / max(machine_seconds, 1e-9)
    part.load = (load0, os.getloadavg()[0])
    return part


# -- the report ---------------------------------------------------------------------------------


def verdict(row: Row) -> str:
    return "" if row.met is None else ("met" if row.met else "**MISSED**")


def summary_table(parts: list[PartRun]) -> list[str]:
    lines = ["| part | measure | figure | target | verdict |", "|---|---|---|---|---|"]
    for part in parts:
        if part.error:
            lines.append(f"| {part.name} | FAILED | {part.error} | | **FAILED** |")
        for r in part.rows:
            lines.append(f"| {r.part} | {r.what} | {r.figure} | {r.target} | {verdict(r)} |")
    return lines


def markdown(
    parts: list[PartRun], sizes: Sizes, started: datetime, took_s: float, pg: str, quick: bool
) -> str:
    rows = [r for p in parts for r in p.rows]
    met = sum(1 for r in rows if r.met is True)
    missed = [r for r in rows if r.met is False]
    failed = [p for p in parts if p.error]
    minutes, seconds = divmod(round(took_s), 60)
    lines = [
        "# Tend benchmarks",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC · {cpu_model()}, {os.cpu_count()} cores, "
        f"{memory_gib():.1f} GiB · Linux {platform.release()} · Python "
        f"{platform.python_version()} · PostgreSQL {pg} · Kafka at "
        f"{CommonSettings().kafka_bootstrap_servers}",
        "",
        "Kafka, PostgreSQL, the services and the load generator share the machine's cores; "
        f"`python -m bench.report{' --quick' if quick else ''}` ran every part one after the "
        f"other in {minutes} min {seconds} s.",
        "",
        f"**Targets: {met} met, {len(missed)} missed"
        + (f", {len(failed)} part(s) failed" if failed else "")
        + ".**",
        "",
        *summary_table(parts),
        "",
        "![figures beside their targets](report.png)",
        "",
    ]
    if missed or failed:
        lines += ["## Missed", ""]
        lines += [f"- {r.part}: {r.what} — {r.figure}, target {r.target}." for r in missed]
        lines += [f"- {p.name}: the part failed — {p.error}" for p in failed]
        lines.append("")
    lines += [
        "## Conditions of each part",
        "",
        "CPU: the machine's CPU in use during the part, and the share of it used by this "
        "benchmark's own Python processes (client and services; Kafka and PostgreSQL are "
        "not in it). A large gap between the two, or a load average well above the core "
        "count, means other work was competing for the cores.",
        "",
        f"| part | sizes | took | CPU busy (of {os.cpu_count()} cores) | this bench's processes "
        "| load average (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    for p in parts:
        lines.append(
            f"| {p.name} | {p.sizes} | {p.seconds:.0f} s | {p.busy:.0%} | {p.own:.0%} | "
            f"{p.load[0]:.1f} → {p.load[1]:.1f} |"
        )
    lines += ["", "## How the figures are taken", "", *HOW, ""]
    return "\n".join(lines)


HOW = [
    "- **ingest**: `bench.bench_ingest` — the bare producer publishes the same envelopes "
    "(acks=all, idempotent) in awaited batches of 500; ingest runs as its own uvicorn process "
    "on a fresh database. The single-order latency is client-side, sequential requests.",
    "- **scoring**: `bench.bench_scoring` — one topic, read three times from the start: a bare "
    "aiokafka consumer, scoring's `EventApplier` + `BatchConsumer` on a fresh database (rate "
    "counted from its first committed batch), and a Quix Streams application "
    "(`bench.bench_quix`, its own virtualenv and process) keeping count, spend and last order "
    "per customer in its RocksDB state, timed from its first record to the return of "
    "`Application.run` (final checkpoint: state flushed, changelog produced, offsets "
    "committed). Scoring does far more per event than that aggregation (the whole card: "
    "lifecycle stage, spend windows, RFM, prediction; inbox, state, history and outbox in "
    "PostgreSQL): the comparison is scoring as it runs against Quix Streams doing only the "
    "aggregation. Scoring's core alone is the same events decoded, applied, scored and "
    "encoded as changes in the benchmark's process with no Kafka and no database, timed in "
    "CPU seconds (best of three passes): no I/O work could take scoring below it.",
    "- **end to end**: `bench.bench_e2e` — ingest, scoring and outreach as separate uvicorn "
    "processes on a fresh database and topics; one rule sends a `care` webhook for every paid "
    "order to a receiver in the benchmark process. Each stack is first warmed up as a shop "
    "that has run a while: every customer's first order, a month before the measured ones, "
    "then `ANALYZE` (what autovacuum does in its first minute; the plans the services cached "
    "on near-empty tables would otherwise scan every row a run writes). A change counts when "
    "it reaches the "
    "benchmark's consumer of the changes topic, a webhook when the receiver reads it; "
    "latencies run from the start of the POST that carried the order. Sustained rates are "
    "orders / (last arrival − first POST) at saturation. An order whose change or webhook "
    "had not arrived when the run stopped waiting counts as infinitely late in the "
    "percentiles. The CPU per order is each process's CPU seconds over the window (from "
    "/proc; everything else = the machine's busy time less the named processes: Kafka and "
    "PostgreSQL) divided by the orders, beside what the target leaves: 2 cores / the "
    "target rate. PostgreSQL's part of it is read from `pg_stat_statements` over the same "
    "window (`bench.pg_time`; the local server preloads it): each statement's execution "
    "time, summed by the service whose schema it names first.",
    "- **memory**: VmRSS of each service process from /proc, sampled every 0.2 s; MB = 10^6 "
    "bytes. The target is `bench.bench_scale`'s: a fresh database seeded by COPY with a "
    "million customers (archetypes built by scoring's own core and scored under a population "
    "its refit fitted, copied under a million ids into scoring's facts, listing columns, stage "
    "history and order facts, outreach's card replica and a birthday rule's schedule, 1% due, "
    "and ingest's identity map), the three services as processes, sampled while a load of "
    "paid orders runs to its webhooks, while `POST /v1/ops/refit` runs and while "
    "`POST /v1/ops/tick` decides every due birthday. The end-to-end part's peaks (10,000 "
    "customers) are shown beside it.",
    "- **delivery**: `bench.bench_delivery` — one delivery worker in process, a backlog of "
    "due webhook actions, receivers in this process answering after a fixed latency.",
    "- **runs**: scoring beside Quix Streams, end to end and CDNOW run `--runs` times "
    "(3 by default); each figure that decides a target is the median of the runs, every "
    "run's figure beside it, and ratios are taken within a run. The other parts run once.",
    "- **CDNOW**: `bench.bench_cdnow_master` — the master log, dates shifted to end today, "
    "posted in time order through a fresh stack (all three services running); the clock "
    "stops when `GET /v1/stats/overview` counts every customer and the total revenue to the "
    "cent, asked once scoring's `tend_consumer_records_total` (read from its `/metrics` every "
    "0.2 s, no database) has counted every order. Its CPU per order is taken as the "
    "end-to-end part's, over the same window.",
    "- **holdout**: `bench.bench_holdout` — the CDNOW master log judged on 1997-09-30 by the "
    "pure lifecycle (the calibration's median gap as the population's), beside the share of "
    "each stage's customers who bought again in the 39 weeks after; the same for bands of "
    "BG/NBD P(alive) fitted on the calibration; and the value model (BG/NBD and Gamma-Gamma "
    "fitted on the calibration alone) giving each customer's expected spend over the holdout "
    "beside what they spent.",
    "- **refit** and **outreach**: `bench.bench_refit`, `bench.bench_outreach`, in process.",
    "- **console**: `bench.bench_console` — the four services as processes on a fresh "
    "database with the demo's seeded CDNOW history loaded as `make run` loads it; signed in "
    "with a one-time link, each page is asked one request at a time and timed with httpx from "
    "the request to the last byte (the console and the API calls it makes; not the browser's "
    "rendering).",
    "- **templates**: `bench.bench_templates` — the outreach app in process on a fresh "
    "database; each template bomb is sent to `POST /v1/rules/preview` while `/healthz` is "
    "asked back to back.",
]


# -- the chart ----------------------------------------------------------------------------------


def chart(out: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    (ax_rate, ax_lat), (ax_mem, ax_target) = axes
    green, red, grey = "#2e7d32", "#c62828", "#78909c"

    rates: list[tuple[str, float]] = []
    if out.ingest:
        rates += [
            ("bare producer", out.ingest.bare_per_s),
            ("ingest, batches", out.ingest.batch_per_s),
        ]
    if out.scoring:
        rates += [
            ("bare consumer", out.scoring.bare_per_s),
            ("scoring", out.scoring.scoring_per_s),
        ]
    if out.quix:
        rates.append(("Quix Streams", out.quix.per_s))
    if out.e2e:
        rates += [
            ("end to end → change", out.e2e.saturated.to_change_per_s),
            ("end to end → webhook", out.e2e.saturated.to_webhook_per_s),
        ]
    if out.cdnow and out.cdnow.complete:
        rates.append(("CDNOW master, orders/s", out.cdnow.orders / out.cdnow.wall_s))
    _bars(ax_rate, rates, "events/s (log)", grey, log=True)
    if out.e2e:
        for target, label, y in (
            (bench_e2e.TARGET_TO_CHANGE, " → change target", -0.75),
            (bench_e2e.TARGET_TO_WEBHOOK, " → webhook target", -0.45),
        ):
            ax_rate.axvline(target, color=red, ls="--", lw=1)
            ax_rate.text(target, y, label, color=red, fontsize=8)
    ax_rate.set_title("Throughput")

    if out.e2e:
        fx, sat = out.e2e.fixed, out.e2e.saturated
        cap = max(fx.max_drain_s, sat.max_drain_s) * 1000
        lat = [
            (f"{fx.name}\norder→change", fx.change_p50_ms, fx.change_p99_ms),
            (f"{fx.name}\norder→webhook", fx.webhook_p50_ms, fx.webhook_p99_ms),
            ("saturation\norder→change", sat.change_p50_ms, sat.change_p99_ms),
            ("saturation\norder→webhook", sat.webhook_p50_ms, sat.webhook_p99_ms),
        ]
        if out.ingest:
            lat.insert(
                0, ("ingest\nPOST /v1/orders", out.ingest.single_p50_ms, out.ingest.single_p99_ms)
            )
        ys = range(len(lat))
        p50 = [min(v[1], cap) for v in lat]
        p99 = [min(v[2], cap) for v in lat]
        ax_lat.barh([y + 0.2 for y in ys], p50, height=0.4, color="#90a4ae", label="p50")
        ax_lat.barh([y - 0.2 for y in ys], p99, height=0.4, color="#37474f", label="p99")
        ax_lat.set_yticks(list(ys), [v[0] for v in lat], fontsize=8)
        ax_lat.invert_yaxis()
        ax_lat.set_xscale("log")
        ax_lat.axvline(
            bench_e2e.TARGET_P99_MS, color=red, ls="--", lw=1, label="p99 target → change"
        )
        ax_lat.axvline(
            bench_e2e.TARGET_WEBHOOK_P99_MS, color=red, ls=":", lw=1, label="p99 target → webhook"
        )
        ax_lat.set_xlabel("ms (log; bars at the right edge never arrived)")
        ax_lat.legend(fontsize=8)
    ax_lat.set_title("Latency")

    if out.scale or out.e2e:
        names = list(bench_e2e.SERVICES)
        peaks = [
            out.scale.peak(n) if out.scale else out.e2e.rss_peak_mb[n] if out.e2e else 0.0
            for n in names
        ]
        colors = [green if p <= bench_e2e.TARGET_RSS_MB else red for p in peaks]
        ax_mem.bar(names, peaks, color=colors)
        ax_mem.axhline(bench_e2e.TARGET_RSS_MB, color=red, ls="--", lw=1)
        for i, p in enumerate(peaks):
            ax_mem.text(i, p, f"{p:,.0f} MB", ha="center", va="bottom", fontsize=9)
        ax_mem.set_ylabel(
            f"MB resident, peak with {out.scale.seeded.customers:,} customers"
            if out.scale
            else "MB resident, peak under saturation (no scale part)"
        )
    ax_mem.set_title(f"Memory per service (target ≤ {bench_e2e.TARGET_RSS_MB} MB at 1M customers)")

    attained = _attainment(out)
    _bars(
        ax_target,
        [(name, value) for name, value in attained],
        "figure as a share of its target (log; ≥ 1 is met)",
        [green if v >= 1 else red for _, v in attained],
        log=True,
    )
    ax_target.axvline(1, color="black", lw=1)
    ax_target.set_title("Targets")

    fig.suptitle(
        f"Tend benchmarks, {datetime.now(UTC):%Y-%m-%d} — {cpu_model()}, {os.cpu_count()} cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, items: list[tuple[str, float]], label: str, color: Any, log: bool) -> None:
    if not items:
        return
    ys = range(len(items))
    values = [max(v, 1e-3) for _, v in items]
    ax.barh(list(ys), values, color=color)
    ax.set_yticks(list(ys), [n for n, _ in items], fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(label)
    for y, (_, v) in zip(ys, items, strict=True):
        ax.text(max(v, 1e-3), y, f" {v:,.3g}" if v < 10 else f" {v:,.0f}", va="center", fontsize=8)
    ax.margins(x=0.15)


def _attainment(out: Results) -> list[tuple[str, float]]:
    """Each target as figure ÷ target, oriented so that 1 or more is met."""
    items: list[tuple[str, float]] = []
    m = out.medians
    if "scoring / Quix" in m:
        target = bench_quix.TARGET_RATIO
        items.append((f"scoring ≥ {target:.0%} of Quix Streams", m["scoring / Quix"] / target))
    if out.refit:
        items.append(("refit < 3 s", bench_refit.TARGET_S / out.refit.median_s))
    if out.outreach:
        items.append(("rules ≥ 20k/s", out.outreach.rules_per_s / 20_000))
        items.append(("due-scan < 2 s", 2 / max(out.outreach.scan_s, 1e-6)))
        if out.outreach.backtest is not None:
            peak = max(out.outreach.backtest.rss_peak_mb, 1e-6)
            target = bench_outreach.TARGET_BACKTEST_RSS_MB
            items.append((f"backtest: outreach ≤ {target} MB", target / peak))
    if out.templates:
        worst = max((r.health_max_s for r in out.templates.refusals), default=0.0)
        health = bench_templates.HEALTH_TARGET_S
        items.append(("/healthz under a bomb < 100 ms", health / max(worst, 1e-6)))
    if "to webhook" in m:
        drain_ms = out.e2e.fixed.max_drain_s * 1000 if out.e2e else math.inf

        def latency(value: float) -> float:
            return max(value if not math.isinf(value) else drain_ms, 1e-6)

        e2e = bench_e2e
        items += [
            (
                f"POST→webhook ≥ {e2e.TARGET_TO_WEBHOOK:,}/s",
                m["to webhook"] / e2e.TARGET_TO_WEBHOOK,
            ),
            (
                f"p99 order→webhook ≤ {e2e.TARGET_WEBHOOK_P99_MS:,} ms",
                e2e.TARGET_WEBHOOK_P99_MS / latency(m["order→webhook p99"]),
            ),
            (f"POST→change ≥ {e2e.TARGET_TO_CHANGE:,}/s", m["to change"] / e2e.TARGET_TO_CHANGE),
            (
                f"p99 order→change ≤ {e2e.TARGET_P99_MS} ms",
                e2e.TARGET_P99_MS / latency(m["order→change p99"]),
            ),
        ]
    if "CDNOW" in m:
        target_s = bench_cdnow_master.TARGET_S
        items.append((f"CDNOW master ≤ {target_s:.0f} s", target_s / m["CDNOW"]))
    if out.scale:
        for name in bench_e2e.SERVICES:
            items.append(
                (
                    f"{name} ≤ {bench_e2e.TARGET_RSS_MB} MB at 1M",
                    bench_e2e.TARGET_RSS_MB / out.scale.peak(name),
                )
            )
    if out.console and out.console.pages:
        slowest = max(p.p95_ms for p in out.console.pages)
        items.append(("slowest console page p95 ≤ 300 ms", bench_console.TARGET_MS / slowest))
    return items


# -- main ---------------------------------------------------------------------------------------


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"among {', '.join(PARTS)}")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of the parts that decide issue #19's targets (default 3); the median decides",
    )
    parser.add_argument("--out", type=Path, default=HERE / "report.md")
    args = parser.parse_args()
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    sizes = QUICK if args.quick else Sizes()
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        sizes = replace(sizes, runs=args.runs)

    started, t0 = datetime.now(UTC), time.perf_counter()
    print(
        f"# Tend benchmarks — {started:%Y-%m-%d %H:%M} UTC, {cpu_model()}, "
        f"{os.cpu_count()} cores, {memory_gib():.1f} GiB"
    )
    print("sizes: " + ", ".join(f"{f.name}={getattr(sizes, f.name):,}" for f in fields(sizes)))
    pg = await postgres_version()
    missing = await unreachable()
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 2
    out = Results()
    parts = [await run_part(name, sizes, out) for name in PARTS if name in wanted]
    took = time.perf_counter() - t0

    report = markdown(parts, sizes, started, took, pg, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    chart(out, args.out.with_suffix(".png"))
    print("\n" + "\n".join(summary_table(parts)))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')} ({took / 60:.1f} min)")
    return 1 if any(p.error for p in parts) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
