"""Who may call what: the endpoint × key matrix of every route of every service.

The routes come from each running app's OpenAPI document, so a new route is checked the day
it appears; :data:`EXPECTED` says which scope each one needs, and a route missing from it (or
a row of it that no longer matches a route) fails the test: nobody adds an unprotected route
by accident. Every protected route is called with no key, an unknown key, a revoked key
(holding every scope), a key holding every scope but the one required (403), and a key
holding only that scope (neither 401 nor 403). Public routes answer without a key.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from services.outreach.settings import OutreachSettings
from shared.auth import Scope, create_key, revoke_key
from shared.settings import CommonSettings
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

PUBLIC = "public"
READ, WRITE = Scope.OPS_READ, Scope.OPS_WRITE
EVENTS, MARKETING = Scope.EVENTS_WRITE, Scope.MARKETING_WRITE

# Shared by every service (shared/http.py): health, metrics and the audit log.
COMMON: dict[tuple[str, str], Scope | tuple[Scope, ...] | str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/v1/audit"): READ,
    # Who the calling key is: any key with any scope.
    ("GET", "/v1/me"): tuple(Scope),
}

# A route two kinds of key may call names both scopes: either admits the key.
Needed = Scope | tuple[Scope, ...] | str
EXPECTED: dict[str, dict[tuple[str, str], Needed]] = {
    "ingest": {
        **COMMON,
        ("POST", "/v1/orders"): EVENTS,
        ("POST", "/v1/complaints"): EVENTS,
        ("POST", "/v1/visits"): EVENTS,
        ("POST", "/v1/customers"): EVENTS,
        ("POST", "/v1/events"): EVENTS,
        # Erasure starts here (an event every service applies); export gathers all three.
        ("DELETE", "/v1/customers/{customer_id}"): WRITE,
        ("GET", "/v1/customers/{customer_id}/export"): READ,
        # A merge is an event every service applies, made by an operator.
        ("POST", "/v1/customers/{customer_id}/merge"): WRITE,
    },
    "scoring": {
        **COMMON,
        ("GET", "/v1/customers"): READ,
        ("GET", "/v1/customers/{customer_id}"): READ,
        ("GET", "/v1/customers/{customer_id}/export"): READ,
        ("GET", "/v1/customers/{customer_id}/history"): READ,
        ("GET", "/v1/customers/{customer_id}/timeline"): READ,
        ("GET", "/v1/customers/{customer_id}/explanation"): READ,
        ("GET", "/v1/stats/overview"): READ,
        ("GET", "/v1/stats/flow"): READ,
        ("GET", "/v1/stats/cohorts"): READ,
        ("GET", "/v1/stats/complaints"): READ,
        ("GET", "/v1/complaints/overdue"): READ,
        ("POST", "/v1/ops/refit"): WRITE,
        ("POST", "/v1/ops/sweep"): WRITE,
        ("GET", "/v1/ops/health"): READ,
        ("GET", "/v1/dead-letters"): READ,
        ("GET", "/v1/dead-letters/summary"): READ,
        ("GET", "/v1/duplicates"): READ,
        ("POST", "/v1/duplicates/dismiss"): WRITE,
    },
    "outreach": {
        **COMMON,
        ("GET", "/v1/rules"): READ,
        ("POST", "/v1/rules"): MARKETING,
        ("GET", "/v1/rules/{rule_id}"): READ,
        ("PUT", "/v1/rules/{rule_id}"): MARKETING,
        ("DELETE", "/v1/rules/{rule_id}"): MARKETING,
        ("GET", "/v1/rules/{rule_id}/versions"): READ,
        ("POST", "/v1/rules/{rule_id}/enable"): MARKETING,
        ("POST", "/v1/rules/{rule_id}/disable"): MARKETING,
        ("POST", "/v1/rules/preview"): (READ, MARKETING),
        ("POST", "/v1/rules/{rule_id}/preview"): (READ, MARKETING),
        ("POST", "/v1/rules/{rule_id}/backtest"): (READ, MARKETING),
        ("POST", "/v1/rules/backtest"): (READ, MARKETING),
        ("POST", "/v1/templates/render"): (READ, MARKETING),
        ("POST", "/v1/rule-packs/default"): MARKETING,
        ("GET", "/v1/policy"): READ,
        ("PUT", "/v1/policy"): MARKETING,
        ("GET", "/v1/suppressions"): READ,
        ("POST", "/v1/suppressions"): MARKETING,
        # Marketing lifts what it added; a customer's own unsubscribe only ops:write lifts.
        ("DELETE", "/v1/suppressions/{customer_id}"): (MARKETING, WRITE),
        # One-click unsubscribe: the signed token in the link is the credential.
        ("GET", "/v1/unsubscribe"): PUBLIC,
        ("POST", "/v1/unsubscribe"): PUBLIC,
        ("GET", "/v1/unsubscribe/{token}"): PUBLIC,
        ("POST", "/v1/unsubscribe/{token}"): PUBLIC,
        ("GET", "/v1/resubscribe/{token}"): PUBLIC,
        ("POST", "/v1/resubscribe/{token}"): PUBLIC,
        ("GET", "/v1/actions"): READ,
        ("GET", "/v1/actions/summary"): READ,
        ("GET", "/v1/outcomes"): READ,
        ("GET", "/v1/customers/{customer_id}/touchpoints"): READ,
        ("GET", "/v1/customers/{customer_id}/schedule"): READ,
        ("GET", "/v1/actions/{action_id}"): READ,
        ("GET", "/v1/ops/health"): READ,
        ("GET", "/v1/customers/{customer_id}/export"): READ,
        ("GET", "/v1/broadcasts"): READ,
        ("POST", "/v1/broadcasts"): MARKETING,
        ("POST", "/v1/ops/tick"): WRITE,
        ("GET", "/v1/channels"): READ,
        ("POST", "/v1/channels"): MARKETING,
        ("GET", "/v1/channels/{channel_id}"): READ,
        ("PUT", "/v1/channels/{channel_id}"): MARKETING,
        ("DELETE", "/v1/channels/{channel_id}"): MARKETING,
    },
}

# The interactive documentation: served by FastAPI outside the OpenAPI document, public.
DOCS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")

NOW = datetime.now(UTC).isoformat()
# Bodies that a route accepts, so the right key is seen to get all the way through; other
# routes get ``{}`` (a 422 is fine: it proves the key passed).
BODIES: dict[tuple[str, str], Any] = {
    ("ingest", "/v1/orders"): {
        "order_id": "o-matrix",
        "customer_id": "c-matrix",
        "occurred_at": NOW,
        "status": "placed",
        "amount": "1",
        "currency": "USD",
    },
    ("ingest", "/v1/complaints"): {
        "complaint_id": "k-matrix",
        "customer_id": "c-matrix",
        "occurred_at": NOW,
        "status": "opened",
    },
    ("ingest", "/v1/visits"): {
        "visit_id": "v-matrix",
        "customer_id": "c-matrix",
        "occurred_at": NOW,
        "channel": "web",
    },
    ("ingest", "/v1/customers"): {"customer_id": "c-matrix", "timezone": "Europe/Paris"},
    ("ingest", "/v1/events"): {
        "events": [
            {
                "type": "visit",
                "visit_id": "v-matrix-b",
                "customer_id": "c-matrix",
                "occurred_at": NOW,
                "channel": "app",
            }
        ]
    },
}


@dataclass
class Keys:
    only: dict[Scope, str]  # a key holding just this scope
    all_but: dict[Scope | tuple[Scope, ...], str]  # a key holding every scope except these
    revoked: str  # every scope, revoked


@pytest_asyncio.fixture(scope="module")
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    """The three services in-process on a database and topics of their own: the matrix
    calls refit, sweep, tick and erasure for real, which must not touch other tests' data."""
    async with isolated_stack(
        settings, outreach=OutreachSettings(allow_private_webhooks=True)
    ) as s:
        yield s


@pytest_asyncio.fixture(scope="module")
async def matrix_keys(stack: Stack) -> Keys:
    run = uuid.uuid4().hex[:6]
    only: dict[Scope, str] = {}
    all_but: dict[Scope | tuple[Scope, ...], str] = {}
    for scope in Scope:
        _, only[scope] = await create_key(stack.engine, f"only-{scope}-{run}", [scope])
        rest = [s for s in Scope if s is not scope]
        _, all_but[scope] = await create_key(stack.engine, f"but-{scope}-{run}", rest)
    either = {n for table in EXPECTED.values() for n in table.values() if isinstance(n, tuple)}
    for scopes in either:
        rest = [s for s in Scope if s not in scopes]
        _, all_but[scopes] = await create_key(stack.engine, f"but-{'+'.join(scopes)}-{run}", rest)
    key_id, revoked = await create_key(stack.engine, f"revoked-{run}", list(Scope))
    assert await revoke_key(stack.engine, key_id)
    return Keys(only, all_but, revoked)


def _client(stack: Stack, service: str) -> httpx.AsyncClient:
    client = {"ingest": stack.ingest, "scoring": stack.scoring, "outreach": stack.outreach}
    found = client[service]
    assert found is not None
    return found


async def _routes(client: httpx.AsyncClient) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(METHOD, path template): operation}`` from the app's OpenAPI document."""
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    return {
        (method.upper(), path): op
        for path, item in resp.json()["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    }


SERVICES = sorted(EXPECTED)


@pytest.mark.parametrize("service", SERVICES)
async def test_the_table_lists_every_route_and_only_routes(stack: Stack, service: str) -> None:
    routes = set(await _routes(_client(stack, service)))
    table = set(EXPECTED[service])
    assert not routes - table, (
        f"{service} serves routes the scope table does not list; add each with the scope it "
        f"requires (or as public): {sorted(routes - table)}"
    )
    assert not table - routes, f"{service}: no such routes any more: {sorted(table - routes)}"


@pytest.mark.parametrize("service", SERVICES)
async def test_every_route_needs_a_live_key_with_its_scope(
    stack: Stack, matrix_keys: Keys, service: str
) -> None:
    client = _client(stack, service)
    failures: list[str] = []
    for (method, path), op in sorted((await _routes(client)).items()):
        expected = EXPECTED[service].get((method, path))
        if expected is None:
            continue  # reported by the table test
        body = BODIES.get((service, path), {}) if "requestBody" in op else None
        route = Route(client, method, path, body, documented_security="security" in op)
        if expected == PUBLIC:
            failures += await _check_public(route)
        else:
            assert isinstance(expected, Scope | tuple)
            failures += await _check_protected(route, expected, matrix_keys)
    assert not failures, f"{service}:\n" + "\n".join(failures)


@dataclass
class Route:
    client: httpx.AsyncClient
    method: str
    path: str
    body: Any
    documented_security: bool

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    async def call(self, headers: dict[str, str]) -> httpx.Response:
        url = re.sub(r"\{[^}]+\}", "scope-matrix-probe", self.path)
        return await self.client.request(self.method, url, json=self.body, headers=headers)


async def _check_public(route: Route) -> list[str]:
    failures = []
    resp = await route.call({})
    if resp.status_code in (401, 403) or resp.status_code >= 500:
        failures.append(f"{route} is public but answered {resp.status_code} without a key")
    if route.documented_security:
        failures.append(f"{route} is public but its OpenAPI asks for a key")
    return failures


async def _check_protected(
    route: Route, needed: Scope | tuple[Scope, ...], keys: Keys
) -> list[str]:
    failures = []
    scopes = needed if isinstance(needed, tuple) else (needed,)
    scope = " or ".join(scopes)
    cases: dict[str, tuple[dict[str, str], int | None]] = {
        "no key": ({}, 401),
        "an unknown key": ({"Authorization": f"Bearer tend_{uuid.uuid4().hex}"}, 401),
        "a revoked key": ({"Authorization": f"Bearer {keys.revoked}"}, 401),
        f"a key with every scope but {scope}": (
            {"Authorization": f"Bearer {keys.all_but[needed]}"},
            403,
        ),
    }
    for one in scopes:
        cases[f"a key with only {one} (bearer)"] = (
            {"Authorization": f"Bearer {keys.only[one]}"},
            None,
        )
        cases[f"a key with only {one} (X-API-Key)"] = ({"X-API-Key": keys.only[one]}, None)
    for name, (headers, status) in cases.items():
        resp = await route.call(headers)
        got = resp.status_code
        if status is None:
            if got in (401, 403) or got >= 500:
                failures.append(f"{route} with {name}: {got} {resp.text[:200]}")
        elif got != status:
            failures.append(f"{route} with {name}: {got}, expected {status}")
        elif status == 401 and (
            resp.json().get("error") != "unauthorized"
            or resp.headers.get("www-authenticate") != "Bearer"
        ):
            failures.append(f"{route} with {name}: 401 without our error body or challenge")
        elif status == 403 and not all(
            str(one) in resp.json().get("message", "") for one in scopes
        ):
            failures.append(f"{route} with {name}: the 403 does not name {scope}")
    if not route.documented_security:
        failures.append(f"{route} needs {scope} but its OpenAPI does not say so")
    return failures


@pytest.mark.parametrize("service", SERVICES)
async def test_the_documentation_is_public(stack: Stack, service: str) -> None:
    client = _client(stack, service)
    for path in DOCS:
        resp = await client.get(path)
        assert resp.status_code == 200, f"{service} {path}: {resp.status_code}"


async def test_ingest_accepts_each_event_with_only_events_write(
    stack: Stack, matrix_keys: Keys
) -> None:
    """Beyond "not 401/403": the ingest key gets its events through (202, or 200 for a
    retry)."""
    key = {"Authorization": f"Bearer {matrix_keys.only[EVENTS]}"}
    for (service, path), body in BODIES.items():
        if service == "ingest":
            resp = await stack.ingest.post(path, json=body, headers=key)
            assert resp.status_code in (200, 202), f"{path}: {resp.status_code} {resp.text}"


async def test_readiness_names_its_dependencies(stack: Stack) -> None:
    for service in SERVICES:
        ready = await _client(stack, service).get("/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        # The dependencies, then every background task the service supervises.
        assert {"database", "broker"} <= set(checks)
        assert all(name.startswith("task:") for name in set(checks) - {"database", "broker"})
        assert all(checks.values()), checks
        if service != "ingest":
            assert checks["task:consumer"] is True
