"""Delivery alone: how fast the delivery worker empties a backlog of due webhook actions.

    python -m bench.bench_delivery [--actions 5000] [--latency-ms 20] [--receivers 2]

Fills a fresh database with ``actions`` pending webhook actions (each customer with a card,
so the contact policy is re-checked for real), spread over ``receivers`` webhook channels,
each a receiver in this process that answers 204 after ``latency-ms`` (keep-alive
included), and times one delivery worker (the service's own, with the service's re-check)
until every action is sent. Prints the rate, the TCP connections the receivers accepted and
the SQL statements the worker ran.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from services.outreach.core.policy import Decision, Policy
from services.outreach.settings import OutreachSettings
from services.outreach.shell.decide import recheck
from services.outreach.shell.delivery import DeliveryWorker
from shared.clock import SystemClock
from shared.db import create_database, drop_database, make_engine
from shared.migrate import upgrade_all
from shared.settings import CommonSettings


class _Receiver:
    """Answers every POST with 204 after ``latency`` seconds; counts connections."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if self.latency:
                    await asyncio.sleep(self.latency)
                self.requests += 1
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def run(actions: int, latency_ms: float, receivers: int) -> dict[str, Any]:
    base = CommonSettings()
    name = f"tend_bench_{uuid.uuid4().hex[:8]}"
    settings = await create_database(base, name)
    hooks = [_Receiver(latency_ms / 1000) for _ in range(receivers)]
    for hook in hooks:
        await hook.start()
    engine = make_engine(settings)
    try:
        await asyncio.to_thread(upgrade_all, settings)
        now = datetime.now(UTC)
        dsn = make_url(settings.database_url).set(drivername="postgresql")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            for i, hook in enumerate(hooks):
                await conn.execute(
                    "INSERT INTO outreach.channels (id, kind, config, secret, enabled, "
                    "created_at, updated_at) VALUES ($1, 'webhook', $2::jsonb, $3, true, "
                    "$4, $4)",
                    f"hook-{i}",
                    f'{{"url": "http://127.0.0.1:{hook.port}/hooks"}}',
                    "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    now,
                )
            await conn.copy_records_to_table(
                "cards",
                schema_name="outreach",
                columns=["customer_id", "card", "complaint_open", "change_at"],
                records=(
                    (f"c{i}", f'{{"customer_id": "c{i}"}}', False, now) for i in range(actions)
                ),
            )
            await conn.copy_records_to_table(
                "actions",
                schema_name="outreach",
                columns=[
                    "id",
                    "rule_id",
                    "customer_id",
                    "occurrence",
                    "kind",
                    "channel",
                    "channel_id",
                    "priority",
                    "status",
                    "decided_at",
                    "next_attempt_at",
                    "attempts",
                    "subject",
                    "body",
                ],
                records=(
                    (
                        str(uuid.uuid4()),
                        "bench",
                        f"c{i}",
                        "1",
                        "care",
                        "webhook",
                        f"hook-{i % receivers}",
                        50,
                        "pending",
                        now,
                        now,
                        0,
                        "Hi",
                        "Hello",
                    )
                    for i in range(actions)
                ),
            )
        finally:
            await conn.close()

        clock = SystemClock()
        policy = Policy(quiet_hours=None)

        async def still_allowed(c: Any, rows: Any) -> list[Decision | None]:
            return await recheck(c, rows, policy=policy, now=clock.now())

        outreach = OutreachSettings(allow_private_webhooks=True, webhook_timeout_seconds=5.0)
        worker = DeliveryWorker(engine, outreach, still_allowed, clock, overlap=True)
        statements = 0

        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        started, cpu = time.perf_counter(), time.process_time()
        while sum(h.requests for h in hooks) < actions:
            await worker.run_once()
        seconds = time.perf_counter() - started
        # The receivers run in this process too (a few percent of it).
        cpu_ms = (time.process_time() - cpu) * 1000 / actions
        event.remove(engine.sync_engine, "before_cursor_execute", count)
        worker.stop()
        await worker.aclose()
        return {
            "actions": actions,
            "receivers": receivers,
            "latency_ms": latency_ms,
            "seconds": round(seconds, 2),
            "per_second": round(actions / seconds),
            "cpu_ms_per_action": round(cpu_ms, 3),
            "connections": sum(h.connections for h in hooks),
            "statements": statements,
        }
    finally:
        for hook in hooks:
            await hook.stop()
        await engine.dispose()
        await drop_database(base, name)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--actions", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--receivers", type=int, default=2)
    args = parser.parse_args()
    figures = await run(args.actions, args.latency_ms, args.receivers)
    print("## delivery (one worker; webhook receivers in this process)\n")
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    asyncio.run(main())
