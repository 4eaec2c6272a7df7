"""Quix Streams doing scoring's per-customer rolling aggregation, on the same kind of topic.

    python -m bench.bench_quix [--customers 5000] [--orders 10]

A Quix Streams application reads the order events from the start of the topic and keeps, per
customer (the record key), the order count, the total spend and the last order, in its
RocksDB state store (with its changelog topic, as it runs by default), until it has
processed every record. ``bench.report`` runs it on the very topic the scoring bench reads.

Quix Streams 3.28.1 (the newest) requires pydantic < 2.14 and pydantic-settings < 2.16, below
Tend's pins, so it cannot share the project's virtualenv: it runs in a virtualenv of its own,
``.tend/quix-venv`` (made with pip on first use), as a separate process that prints its
timings as one JSON line. For the same reason this module imports nothing beyond the
standard library at the top: the Quix process runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent
QUIX_PIN = "quixstreams==3.28.1"
QUIX_VENV = ROOT / ".tend" / "quix-venv"
# Scoring builds a whole card per event; Quix keeps three numbers per customer (issue #19).
TARGET_RATIO = 0.5


# -- the Quix Streams application (runs in the Quix virtualenv) ---------------------------------


def run_app(broker: str, topic_name: str, group: str, count: int, state_dir: str) -> dict[str, Any]:
    """Aggregate ``count`` order events per customer; timings in perf_counter seconds."""
    from decimal import Decimal
    from importlib.metadata import version

    from quixstreams import Application, State  # type: ignore[import-not-found]

    app = Application(
        broker_address=broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, key_deserializer="str", value_deserializer="json")
    sdf = app.dataframe(topic)
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def aggregate(event: dict[str, Any], state: State) -> dict[str, Any]:
        if not seen["n"]:
            seen["first"] = time.perf_counter()
        agg = state.get("customer") or {"orders": 0, "spend": "0", "last_at": "", "last_id": ""}
        data = event["data"]
        if event["event_type"] == "order.paid":
            agg["orders"] += 1
            agg["spend"] = str(Decimal(agg["spend"]) + Decimal(data["amount"]))
            if event["occurred_at"] > agg["last_at"]:
                agg["last_at"], agg["last_id"] = event["occurred_at"], data["order_id"]
            state.set("customer", agg)
        seen["n"] += 1
        seen["last"] = time.perf_counter()
        return agg

    sdf = sdf.apply(aggregate, stateful=True)
    started = time.perf_counter()
    app.run(count=count, collect=False)
    done = time.perf_counter()  # after the final checkpoint: state flushed, offsets committed
    return {
        "version": version("quixstreams"),
        "processed": seen["n"],
        "startup_s": seen["first"] - started,
        "processing_s": seen["last"] - seen["first"],
        "to_checkpoint_s": done - seen["first"],
    }


# -- the driver (runs in Tend's virtualenv) ----------------------------------------------------


def quix_python() -> Path:
    """The Quix virtualenv's interpreter, made on first use."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        print(f"bench_quix: creating {QUIX_VENV} with {QUIX_PIN} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", QUIX_PIN], check=True, cwd=ROOT)
    return python


@dataclass(frozen=True)
class QuixFigures:
    version: str
    events: int
    per_s: float  # first record to the final checkpoint
    processing_per_s: float  # first record to the last record processed
    startup_s: float


async def measure(settings: CommonSettings, topic: str, events: int) -> QuixFigures:
    """Run the Quix application over the ``events`` records of ``topic``; its changelog
    topic is deleted afterwards."""
    from bench.bench_e2e import delete_topics

    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    python = await asyncio.to_thread(quix_python)
    with tempfile.TemporaryDirectory(prefix="tend-quix-") as state_dir:
        proc = await asyncio.create_subprocess_exec(
            str(python),
            "-m",
            "bench.bench_quix",
            "--app",
            "--broker",
            settings.kafka_bootstrap_servers,
            "--topic",
            topic,
            "--group",
            group,
            "--count",
            str(events),
            "--state-dir",
            state_dir,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=asyncio.subprocess.PIPE,
            # Its log (and a deprecation warning from a dependency) only matters on failure.
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    await delete_topics(settings, lambda t: group in t)
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"the Quix Streams application exited with {proc.returncode}: {tail}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["processed"] != events:
        raise RuntimeError(f"Quix processed {result['processed']} of {events} records")
    return QuixFigures(
        version=result["version"],
        events=events,
        per_s=events / result["to_checkpoint_s"],
        processing_per_s=events / result["processing_s"],
        startup_s=result["startup_s"],
    )


def print_figures(f: QuixFigures, scoring_per_s: float | None = None) -> None:
    print(f"\n## Quix Streams {f.version} ({f.events:,} order events, per-customer aggregation)\n")
    print("| path | figure |")
    print("|---|---|")
    print(
        f"| Quix Streams: count, spend, last order per customer in RocksDB state | "
        f"{f.per_s:,.0f} events/s to the final checkpoint ({f.processing_per_s:,.0f}/s "
        f"processing only; {f.startup_s:.1f} s to the first record) |"
    )
    if scoring_per_s is not None:
        ratio = scoring_per_s / f.per_s
        print(
            f"| scoring / Quix Streams | {ratio:.0%} (target >= {TARGET_RATIO:.0%}: "
            f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}) |"
        )


async def main() -> None:
    from bench.bench_e2e import delete_topics
    from bench.bench_scoring import history
    from shared.kafka import Record, publish_many, start_producer
    from shared.settings import CommonSettings
    from shared.topics import Topics, ensure_topics

    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--orders", type=int, default=10)
    args = parser.parse_args()
    prefix = f"bench.quix.{uuid.uuid4().hex[:8]}."
    settings = CommonSettings().model_copy(update={"topic_prefix": prefix})
    await ensure_topics(settings)
    topic = Topics.from_settings(settings).events
    events = history(args.customers, args.orders)
    producer = await start_producer(settings)
    try:
        for i in range(0, len(events), 5000):
            await publish_many(
                producer,
                [Record(topic, e.customer_id.encode(), e.to_json()) for e in events[i : i + 5000]],
                timeout=60,
            )
    finally:
        await producer.stop()
    try:
        print_figures(await measure(settings, topic, len(events)))
    finally:
        await delete_topics(settings, lambda t: t.startswith(prefix))


def app_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--app", action="store_true")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    result = run_app(args.broker, args.topic, args.group, args.count, args.state_dir)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if "--app" in sys.argv:
        app_main()
    else:
        asyncio.run(main())
