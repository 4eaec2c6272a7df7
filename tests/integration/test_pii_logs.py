"""No personal data in the logs: ingest, scoring and outreach run as real processes at DEBUG on
a database and topics of their own; the test plants distinctive names, emails, phones,
birthdays, attributes and complaint text everywhere they can travel — valid events, invalid
requests that quote them, a search, a 409, poison records, messages rendered and delivered —
waits until the pipeline has handled it all, then scans every line every process wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shared.auth import Scope, create_key
from shared.changes import change_id_for
from shared.db import make_engine
from shared.kafka import Record, publish_many, start_producer
from shared.logging import configure_logging
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings
from tests.support.pipeline import until
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration


class Planted:
    """Personal values no log line has any business holding, each unique to this run."""

    def __init__(self) -> None:
        tok = uuid.uuid4().hex[:8]
        digits = f"{random.randrange(10_000):04d}"
        self.tok = tok
        self.name = f"Zephyrine Quillby{tok}"
        self.email = f"zq.{tok}@pii-probe.example"
        self.phone = f"+1 (415) 555-{digits}"
        self.birthday = date(1937, 2, 11)
        self.attribute = f"allergic to hazelnuts {tok}"
        self.tag = f"vip{tok}"
        self.second_name = f"Bartholomew Nettlecombe{tok}"
        self.second_email = f"bn.{tok}@pii-probe.example"
        self.complaint = f"The courier {tok} left my parcel in the rain"
        self.bad_email = f"not-an-email-{tok}"
        self.bad_phone = f"call-me-{tok}"
        self.unknown_field_name = f"Unlisted Person{tok}"
        self.nickname = f"Nicky{tok}"
        self.conflict_name = f"Conflicting Claimant{tok}"
        self.raw_json_email = f"rawjson.{tok}@pii-probe.example"
        self.poison_name = f"Poison Pill{tok}"
        self.poison_email = f"poison.{tok}@pii-probe.example"
        self.change_poison_name = f"Changeling Poison{tok}"

    def needles(self) -> dict[str, str]:
        """Every form in which a planted value could show up in a log line."""
        out = {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, str) and k not in ("tok",) and v != ""
        }
        out["phone (digits)"] = "".join(c for c in self.phone if c.isdigit())
        out["birthday (iso)"] = self.birthday.isoformat()
        out["birthday (repr)"] = repr(self.birthday)
        out["email (json-escaped)"] = json.dumps(self.email)[1:-1]
        return out


def _service(name: str, settings: CommonSettings, logs: Path, **extra: str) -> ServiceProcess:
    return ServiceProcess(
        name,
        settings,
        logs,
        extra_env={
            "TEND_LOG_LEVEL": "DEBUG",
            "TEND_LOG_JSON": "true",
            f"TEND_{name.upper()}_CONSUMER_GROUP": f"{settings.topic_prefix}{name}",
            **extra,
        },
    )


def _profile(cid: str, p: Planted, **fields: Any) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "name": p.name,
        "email": p.email,
        "phone": p.phone,
        "birthday": p.birthday.isoformat(),
        "timezone": "Europe/London",
        "locale": "en-GB",
        "consent": {"email": True, "sms": True, "marketing": True},
        "tags": [p.tag],
        "attributes": {"note": p.attribute},
        **fields,
    }


def _rule(rule_id: str, event: str, kind: str, channel: str) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": {"type": "event", "event": event},
        "action": {
            "kind": kind,
            "channel": channel,
            "template": {
                "subject": "For {{ customer.name }}",
                "body": "Dear {{ customer.name }} ({{ customer.email }}, {{ customer.phone }}, "
                "born {{ customer.birthday }}): {{ customer.attributes.note | default('') }}",
            },
        },
    }


async def _exercise(
    p: Planted,
    own: CommonSettings,
    ingest: httpx.AsyncClient,
    scoring: httpx.AsyncClient,
    outreach: httpx.AsyncClient,
    keys: dict[str, str],
    hook: WebhookReceiver,
    smtp: SmtpReceiver,
) -> tuple[list[str], str]:
    """Send everything; returns the accepted event ids and the main customer's id."""
    as_ = {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}
    # Outreach: no quiet hours or cap, so the messages go out whatever the hour.
    policy = {"quiet_hours": None, "frequency_cap": None}
    assert (await outreach.put("/v1/policy", json=policy, headers=as_["mkt"])).status_code == 200
    for channel in (
        {"id": "pii-hook", "kind": "webhook", "config": {"url": hook.url}, "secret": hook.secret},
        {
            "id": "pii-mail",
            "kind": "email",
            "config": {"smtp_host": smtp.host, "smtp_port": smtp.port},
        },
    ):
        resp = await outreach.post("/v1/channels", json=channel, headers=as_["mkt"])
        assert resp.status_code == 201, resp.text
    for rule in (
        _rule("pii-thanks", "order.paid", "follow_up", "webhook"),
        _rule("pii-care", "complaint.opened", "care", "email"),
    ):
        resp = await outreach.post("/v1/rules", json=rule, headers=as_["mkt"])
        assert resp.status_code == 201, resp.text

    cid, other = f"pii-{p.tok}-1", f"pii-{p.tok}-2"
    now = datetime.now(UTC)
    accepted: list[str] = []

    async def post(path: str, body: Any, expect: int, **kw: Any) -> httpx.Response:
        resp = await ingest.post(path, json=body, headers=as_["ingest"], **kw)
        assert resp.status_code == expect, f"{path}: {resp.status_code} {resp.text}"
        if resp.status_code in (200, 202) and "event_id" in resp.json():
            accepted.append(resp.json()["event_id"])
        return resp

    # The profile first: every later event of this customer is applied after it.
    await post("/v1/customers", {**_profile(cid, p), "event_id": f"pii-{p.tok}-profile"}, 202)
    await post(
        "/v1/orders",
        {
            "order_id": f"o-{p.tok}",
            "customer_id": cid,
            "occurred_at": now.isoformat(),
            "status": "paid",
            "amount": "42.00",
            "currency": "USD",
            "items": [{"sku": "tea", "quantity": 2, "unit_price": "21.00"}],
        },
        202,
    )
    await post(
        "/v1/complaints",
        {
            "complaint_id": f"k-{p.tok}",
            "customer_id": cid,
            "occurred_at": now.isoformat(),
            "status": "opened",
            "severity": "high",
            "category": "delivery",
            "text": p.complaint,
        },
        202,
    )
    batch = await ingest.post(
        "/v1/events",
        headers=as_["ingest"],
        json={
            "events": [
                {
                    "type": "customer",
                    **_profile(other, p, name=p.second_name, email=p.second_email),
                },
                {"type": "customer", "customer_id": other, "phone": p.bad_phone},
                {"type": "customer", "customer_id": other, "email": p.bad_email},
                {
                    "type": "visit",
                    "visit_id": f"v-{p.tok}",
                    "customer_id": other,
                    "occurred_at": now.isoformat(),
                    "channel": "web",
                },
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "rejected",
        "accepted",
    ], body
    accepted += [r["event_id"] for r in body["results"] if r["status"] == "accepted"]

    # Invalid requests that hold personal data: each is refused and must not be quoted.
    await post("/v1/customers", {"customer_id": other, "email": p.bad_email}, 422)
    await post("/v1/customers", {"customer_id": other, "phone": p.bad_phone}, 422)
    await post(
        "/v1/customers",
        {"customer_id": other, "name": p.unknown_field_name, "nickname": p.nickname},
        422,
    )
    await post(
        "/v1/customers",
        {"customer_id": other, "name": p.name, "birthday": "1937-02-30"},
        422,
    )
    future = (now + timedelta(days=30)).isoformat()
    await post("/v1/customers", {**_profile(other, p), "occurred_at": future}, 422)
    raw = f'{{"customer_id": "{other}", "email": "{p.raw_json_email}", '
    resp = await ingest.post(
        "/v1/customers",
        content=raw.encode(),
        headers={**as_["ingest"], "content-type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    resp = await ingest.post(
        "/v1/customers",
        content=f"name={p.name}&email={p.email}".encode(),
        headers={**as_["ingest"], "content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 415, resp.text
    # A 409: the same event id, a different profile.
    conflict = {"customer_id": other, "event_id": f"pii-{p.tok}-conflict", "name": p.name}
    await post("/v1/customers", conflict, 202)
    await post("/v1/customers", {**conflict, "name": p.conflict_name}, 409)
    # A key that is not a key, next to personal data.
    resp = await ingest.post(
        "/v1/customers", json=_profile(other, p), headers={"X-API-Key": "tend_" + p.tok}
    )
    assert resp.status_code == 401

    # Poison records: one on the events topic for scoring, one on the changes topic for
    # outreach, each full of personal data.
    topics = Topics.from_settings(own)
    poison_event = {
        "event_id": f"poison-{p.tok}",
        "event_type": "customer.updated",
        "schema_version": 1,
        "customer_id": other,
        "occurred_at": now.isoformat(),
        "received_at": now.isoformat(),
        "source": "test",
        # Poison by a known field holding what it cannot (a field unknown to scoring would be
        # ignored: producers may add fields within a schema version).
        "data": {"name": p.poison_name, "email": p.poison_email, "birthday": p.phone},
    }
    poison_change = {
        "change_id": f"poison-{p.tok}",
        "customer_id": other,
        "cause": "event",
        "card": {"profile": {"name": p.change_poison_name, "email": p.poison_email}},
    }
    producer = await start_producer(own)
    try:
        await publish_many(
            producer,
            [
                Record(topics.events, other.encode(), orjson.dumps(poison_event)),
                Record(topics.changes, other.encode(), orjson.dumps(poison_change)),
            ],
            timeout=30,
        )
    finally:
        await producer.stop()
    return accepted, cid


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        yield from enumerate(f, start=1)


async def _logged(path: Path, event: str, timeout: float = 60) -> None:
    async def found() -> bool:
        return any(event in line for _, line in _lines(path))

    await until(found, timeout, f"{event!r} in {path.name}")


async def test_a_full_run_at_debug_logs_no_personal_data(
    settings: CommonSettings, tmp_path: Path
) -> None:
    p = Planted()
    logs = tmp_path / "logs"
    logs.mkdir()
    async with (
        fresh_settings(settings) as own,
        WebhookReceiver() as hook,
        SmtpReceiver() as smtp,
    ):
        engine = make_engine(own, pool_size=2)
        keys: dict[str, str] = {}
        for role, scopes in {
            "ingest": [Scope.EVENTS_WRITE],
            "ops": [Scope.OPS_READ, Scope.OPS_WRITE],
            "mkt": [Scope.MARKETING_WRITE, Scope.OPS_READ],
        }.items():
            _, keys[role] = await create_key(engine, f"pii-{role}", scopes)
        procs = {
            "scoring": _service("scoring", own, logs),
            "outreach": _service(
                "outreach",
                own,
                logs,
                TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS="true",
                TEND_OUTREACH_WEBHOOK_TIMEOUT_SECONDS="5",
                # The test's SMTP server listens on a free port: allowed for this run only.
                TEND_OUTREACH_SMTP_PORTS=f"[{smtp.port}]",
            ),
        }
        procs["ingest"] = _service(
            "ingest",
            own,
            logs,
            TEND_INGEST_SCORING_URL=procs["scoring"].url,
            TEND_INGEST_OUTREACH_URL=procs["outreach"].url,
        )
        try:
            await asyncio.gather(*(asyncio.to_thread(proc.start) for proc in procs.values()))
            async with (
                httpx.AsyncClient(base_url=procs["ingest"].url, timeout=30) as ingest,
                httpx.AsyncClient(base_url=procs["scoring"].url, timeout=30) as scoring,
                httpx.AsyncClient(base_url=procs["outreach"].url, timeout=30) as outreach,
            ):
                accepted, cid = await _exercise(p, own, ingest, scoring, outreach, keys, hook, smtp)
                await _until_handled(engine, accepted)
                # The webhook and the email went out, carrying the name: personal data did
                # flow through outreach (the scan below is not vacuous).
                await hook.wait_for(1, timeout=60)
                await until(_count_above(smtp.messages, 0), 60, "the care email")
                assert p.name in hook.received[0].body.decode()
                assert p.name in smtp.messages[0].raw.decode()
                await _until_sent(engine)
                await _logged(procs["scoring"].log_path, "record_dead_lettered")
                await _logged(procs["outreach"].log_path, "record_dead_lettered")

                ops = {"Authorization": f"Bearer {keys['ops']}"}
                for q in (p.email, p.name, p.phone):
                    found = await scoring.get("/v1/customers", params={"q": q}, headers=ops)
                    assert found.status_code == 200, found.text
                    assert cid in [c["customer_id"] for c in found.json()["items"]]
                card = await scoring.get(f"/v1/customers/{cid}", headers=ops)
                assert card.status_code == 200, card.text
                touch = await outreach.get(f"/v1/customers/{cid}/touchpoints", headers=ops)
                assert touch.status_code == 200, touch.text
                # Right of access: ingest gathers the whole record from its peers.
                export = await ingest.get(f"/v1/customers/{cid}/export", headers=ops)
                assert export.status_code == 200, export.text
                assert p.name in export.text
                # Right to erasure, carried to scoring by an event.
                erased = await ingest.delete(f"/v1/customers/pii-{p.tok}-2", headers=ops)
                assert erased.status_code == 202, erased.text
                await _until_erased(engine, erased.json()["erasure_id"])
        finally:
            for proc in procs.values():
                proc.stop()
            await engine.dispose()

    files = sorted(logs.iterdir())
    assert len(files) == 3, files
    for path in files:
        levels = {_level(line) for _, line in _lines(path)}
        assert "debug" in levels, f"{path.name} has no DEBUG line: was the level applied?"
    leaks = [
        f"{path.name}:{number}: {label} ({needle!r}) in {line.strip()[:400]}"
        for path in files
        for number, line in _lines(path)
        for label, needle in p.needles().items()
        if needle.lower() in line.lower()
    ]
    assert not leaks, "personal data in the logs:\n" + "\n".join(leaks[:40])


def _count_above(items: list[Any], n: int) -> Any:
    async def check() -> bool:
        return len(items) > n

    return check


def _level(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("level") if isinstance(record, dict) else None


async def _until_handled(engine: Any, event_ids: list[str]) -> None:
    """Until scoring has applied every accepted event and outreach every change of them."""
    changes = [change_id_for("event", e) for e in event_ids]

    async def done() -> bool:
        async with engine.connect() as conn:
            scored = await conn.scalar(
                text(
                    "SELECT count(*) FROM scoring.inbox WHERE event_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": event_ids},
            )
            seen = await conn.scalar(
                text(
                    "SELECT count(*) FROM outreach.inbox "
                    "WHERE change_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": changes},
            )
        return bool(scored == len(event_ids) and seen == len(changes))

    await until(done, 120, f"the pipeline applying {len(event_ids)} events")


async def _until_erased(engine: Any, event_id: str) -> None:
    async def erased() -> bool:
        async with engine.connect() as conn:
            n = await conn.scalar(
                text("SELECT count(*) FROM scoring.erasures WHERE event_id = :id"), {"id": event_id}
            )
        return bool(n)

    await until(erased, 60, f"scoring applying the erasure {event_id}")


async def _until_sent(engine: Any) -> None:
    async def sent() -> bool:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT status FROM outreach.actions"))).all()
        return len(rows) == 2 and all(r.status == "sent" for r in rows)

    await until(sent, 60, "both actions sent")


def test_redaction_catches_what_a_careless_call_site_would_log() -> None:
    """The safety net alone: personal keys, emails in messages, pydantic's quoted input,
    SQLAlchemy's parameters and query strings in access lines never reach the output."""
    p = Planted()
    configure_logging("DEBUG")
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    access = logging.getLogger("uvicorn.access")
    try:
        log = structlog.get_logger("pii-test")
        log.info("careless", customer_id="c-1", name=p.name, profile={"phone": p.phone})
        log.warning("careless_message", reason=f"no customer {p.email}")

        class Probe(BaseModel):
            name: int
            nickname: int

        try:
            Probe.model_validate({"name": p.name, "nickname": p.nickname})
        except ValidationError as exc:
            log.error("careless_traceback", exc_info=exc)
        duplicate = Exception(
            "duplicate key value violates unique constraint\nDETAIL:  Key (email)=("
            f"{p.second_email.replace('@', ' at ')}) already exists."
        )
        try:
            raise IntegrityError(
                "INSERT INTO t (name, phone) VALUES ($1, $2)", (p.second_name, p.phone), duplicate
            )
        except IntegrityError as exc:
            assert p.second_name in str(exc)  # what SQLAlchemy would have us log
            logging.getLogger("probe").error("database_error", exc_info=exc)
        access.setLevel(logging.INFO)
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/v1/customers?q={p.email}",
            "1.1",
            200,
        )
    finally:
        access.setLevel(logging.WARNING)
        handler.setStream(sys.stderr)
    written = out.getvalue()
    # Other tests' clients may still be running in the background and log at DEBUG too;
    # this test judges only the lines its own call sites wrote.
    ours = {"pii-test", "probe", "uvicorn.access"}
    lines = [line for line in written.splitlines() if json.loads(line).get("logger") in ours]
    assert len(lines) == 5, written
    assert all(json.loads(line)["event"] for line in lines)
    assert '"customer_id": "c-1"' in lines[0]
    assert "/v1/customers" in lines[4] and "?q=" not in lines[4]
    for label, needle in p.needles().items():
        assert needle.lower() not in written.lower(), f"{label} leaked: {written}"
    assert p.second_email.replace("@", " at ") not in written
