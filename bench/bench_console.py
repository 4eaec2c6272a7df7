"""The console's pages, timed server-side on the demo's data.

    python -m bench.bench_console [--customers 0] [--requests 20]

Brings up ingest, scoring, outreach and the console as processes on a fresh database and
topics with the demo's seeded CDNOW history loaded as ``make run`` loads it
(:mod:`tests.support.console_demo`; all 2,357 customers, or the slice of the first N), signs
in with a one-time link, and asks each page of the console in turn, one request at a time:
one warm-up, then ``requests`` timed from the request's start to the last byte of its body
(httpx on loopback: the console's time and the API calls it makes, not the browser's). Pages
the console does not serve (404) are listed as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from shared.settings import CommonSettings
from tests.support.broker import free_port
from tests.support.console_demo import SERVICES, ConsoleDemo, console_demo

TARGET_MS = 300.0
RULE = "complaint-apology"
# Pages other work adds: timed where the console serves them.
OPTIONAL = {
    "outcomes": "/outcomes",
    "policy": "/policy",
    "channels": "/channels",
    "suppressions": "/suppressions",
    "audit log": "/audit",
}


@dataclass(frozen=True)
class PageTiming:
    page: str
    path: str
    median_ms: float
    p95_ms: float
    bytes: int

    @property
    def met(self) -> bool:
        return self.p95_ms <= TARGET_MS


@dataclass
class ConsoleFigures:
    customers: int
    events: int
    requests: int
    pages: list[PageTiming] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def _pages(demo: ConsoleDemo) -> dict[str, str]:
    """Each page to time, with a real customer, action and rule of the demo in its path."""
    async with httpx.AsyncClient(headers=demo.auth(), timeout=30) as api:
        customers = await api.get(
            f"{demo.urls['scoring']}/v1/customers", params={"sort": "clv", "limit": 1}
        )
        customers.raise_for_status()
        actions = await api.get(f"{demo.urls['outreach']}/v1/actions", params={"limit": 1})
        actions.raise_for_status()
    customer = customers.json()["items"][0]
    pages = {
        "overview": "/",
        "customers": "/customers",
        "customers, searched by name": "/customers?q=" + quote(customer["name"].split()[-1]),
        "a customer": f"/customers/{quote(customer['customer_id'])}",
        "actions (the ledger)": "/actions",
        "rules": "/rules",
        "the rule editor, a stored rule": f"/rules/{RULE}",
        "the rule editor, a new rule": "/rules/new",
    }
    items = actions.json()["items"]
    if items:
        pages["an action"] = f"/actions/{quote(items[0]['id'])}"
    return pages


async def time_pages(demo: ConsoleDemo, requests: int) -> ConsoleFigures:
    figures = ConsoleFigures(demo.customers, demo.events, requests)
    pages = await _pages(demo)
    async with httpx.AsyncClient(base_url=demo.console, timeout=60) as console:
        signed = await console.get(demo.signin_link())
        if signed.status_code != 303 or signed.headers.get("location") != "/":
            raise RuntimeError(f"the sign-in link did not sign in ({signed.status_code})")
        for name, path in OPTIONAL.items():
            if (await console.get(path)).status_code == 404:
                figures.skipped.append(f"{name} ({path})")
            else:
                pages[name] = path
        for name, path in pages.items():
            warm = await console.get(path)
            if warm.status_code != 200:
                raise RuntimeError(f"{path} answered {warm.status_code}: {warm.text[:300]}")
            took = []
            for _ in range(requests):
                started = time.perf_counter()
                resp = await console.get(path)
                took.append((time.perf_counter() - started) * 1000)
                if resp.status_code != 200:
                    raise RuntimeError(f"{path} answered {resp.status_code}")
            figures.pages.append(
                PageTiming(name, path, statistics.median(took), p95(took), len(warm.content))
            )
    return figures


async def measure(customers: int | None = None, requests: int = 20) -> ConsoleFigures:
    ports = {name: free_port() for name in SERVICES}
    async with console_demo(CommonSettings(), ports, customers) as demo:
        return await time_pages(demo, requests)


def print_figures(f: ConsoleFigures) -> None:
    print(
        f"console pages on the demo's data ({f.customers:,} customers, {f.events:,} events), "
        f"{f.requests} requests each after a warm-up, one at a time:"
    )
    for p in f.pages:
        verdict = "met" if p.met else "MISSED"
        print(
            f"  {p.page:<34} median {p.median_ms:6.0f} ms, p95 {p.p95_ms:6.0f} ms "
            f"({p.bytes / 1000:,.0f} kB)  target p95 <= {TARGET_MS:.0f} ms: {verdict}"
        )
    for s in f.skipped:
        print(f"  {s}: not served by this console, skipped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=0, help="the first N; 0: all")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print_figures(asyncio.run(measure(args.customers or None, args.requests)))
