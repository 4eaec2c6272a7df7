"""The audit log: every change to rules, the policy, channels, keys and suppressions is
recorded in the transaction that makes it, and read back at ``/v1/audit`` on every service.

Outreach runs in-process on the session's database, shared with other tests: this module
makes its changes with an API key of its own, so filtering by that key (``actor``) finds this
module's entries and nobody else's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.app import create_app
from services.outreach.core.policy import Policy
from services.outreach.core.unsubscribe import token_for
from services.outreach.settings import OutreachSettings
from services.outreach.shell.channels import webhook
from shared import audit
from shared.auth import Scope, create_key, hash_key, revoke_key
from shared.clock import FixedClock
from shared.db import make_sessionmaker, unit_of_work
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)
# The database's clock and this process's are the same host's; a little slack for rounding.
SLACK = timedelta(seconds=1)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Audited:
    app: FastAPI
    client: httpx.AsyncClient
    key_id: str
    key_name: str
    writer: dict[str, str]
    reader: dict[str, str]
    tag: str

    async def log(self, **params: Any) -> list[dict[str, Any]]:
        """This module's entries (or anyone's, with ``actor=None``), newest first, all pages."""
        params = {"actor": self.key_name, "limit": 500} | params
        params = {k: v for k, v in params.items() if v is not None}
        r = await self.client.get("/v1/audit", params=params, headers=self.reader)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["next_cursor"] is None
        items: list[dict[str, Any]] = body["items"]
        return items

    def rule(self, name: str) -> dict[str, Any]:
        return {
            "id": f"a-{self.tag}-{name}",
            "name": f"audit rule {name}",
            "trigger": {"type": "broadcast"},
            # Nobody's card has this attribute: the rule never reaches anyone.
            "conditions": {"eq": ["profile.attributes.run", f"audit-{self.tag}"]},
            "action": {
                "kind": "announcement",
                "channel": "webhook",
                "template": {"subject": "Hello", "body": "Hello {{ customer.name }}"},
            },
        }


@pytest_asyncio.fixture(scope="module")
async def audited(
    settings: CommonSettings, engine: AsyncEngine, keys: dict[str, str]
) -> AsyncIterator[Audited]:
    tag = uuid.uuid4().hex[:10]
    name = f"audit-{tag}"
    key_id, key = await create_key(engine, name, [Scope.MARKETING_WRITE, Scope.OPS_READ])
    app = create_app(
        settings,
        OutreachSettings(
            consumer_group=f"{settings.topic_prefix}outreach-audit", allow_private_webhooks=True
        ),
        FixedClock(NOW),
        periodic=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
            yield Audited(app, client, key_id, name, auth(key), auth(keys["ops_read"]), tag)


def by_subject(entries: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["subject"] == subject]


def assert_who_and_when(entry: dict[str, Any], a: Audited, start: datetime) -> None:
    assert (entry["actor"], entry["actor_key_id"]) == (a.key_name, a.key_id)
    assert entry["service"] == "outreach"
    at = datetime.fromisoformat(entry["at"])
    assert start - SLACK <= at <= datetime.now(UTC) + SLACK


# -- what is recorded -----------------------------------------------------------------------------


async def test_rule_changes_are_recorded_with_before_and_after(audited: Audited) -> None:
    a, c = audited, audited.client
    start = datetime.now(UTC)
    rule = a.rule("crud")
    rid = rule["id"]
    created = await c.post("/v1/rules", json=rule, headers=a.writer)
    assert created.status_code == 201, created.text
    updated = await c.put(f"/v1/rules/{rid}", json={**rule, "name": "renamed"}, headers=a.writer)
    assert updated.status_code == 200, updated.text
    assert (await c.post(f"/v1/rules/{rid}/disable", headers=a.writer)).status_code == 200
    assert (await c.delete(f"/v1/rules/{rid}", headers=a.writer)).status_code == 204

    entries = await a.log(subject=rid)
    assert [e["action"] for e in entries] == [
        "rule.deleted",
        "rule.disabled",
        "rule.updated",
        "rule.created",
    ]
    deleted, disabled, replaced, made = entries
    for e in entries:
        assert_who_and_when(e, a, start)
    assert made["before"] is None and made["after"] == created.json()
    assert replaced["before"] == created.json() and replaced["after"] == updated.json()
    assert replaced["after"]["rule"]["name"] == "renamed"
    assert disabled["before"]["rule"]["enabled"] is True
    assert (disabled["after"]["version"], disabled["after"]["rule"]["enabled"]) == (3, False)
    assert deleted["before"] == disabled["after"] and deleted["after"] is None
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)  # newest first


async def test_a_broadcast_launch_is_recorded_once_with_its_content(audited: Audited) -> None:
    a, c = audited, audited.client
    start = datetime.now(UTC)
    rule = a.rule("launch")
    assert (await c.post("/v1/rules", json=rule, headers=a.writer)).status_code == 201
    content = {"items": [{"sku": "tea-1", "category": "tea", "name": "Sencha"}]}
    body = {"rule_id": rule["id"], "launch_id": "spring", "content": content}
    for _ in range(2):  # the second finishes the same launch: not a new one
        launched = await c.post("/v1/broadcasts", json=body, headers=a.writer)
        assert launched.status_code == 200, launched.text
    entries = [e for e in await a.log(subject=rule["id"]) if e["action"] == "broadcast.launched"]
    assert len(entries) == 1
    [entry] = entries
    assert_who_and_when(entry, a, start)
    assert entry["before"] is None
    assert entry["after"]["launch_id"] == "spring"
    assert [i["name"] for i in entry["after"]["content"]["items"]] == ["Sencha"]


async def test_policy_change_is_recorded(audited: Audited) -> None:
    a, c = audited, audited.client
    start = datetime.now(UTC)
    before = (await c.get("/v1/policy", headers=a.reader)).json()
    custom = {**before, "quiet_hours": None, "default_timezone": "Europe/Paris"}
    try:
        assert (await c.put("/v1/policy", json=custom, headers=a.writer)).status_code == 200
        [entry] = await a.log(action="policy.updated")
    finally:
        restored = await c.put("/v1/policy", json=before, headers=a.writer)
        assert restored.status_code == 200
    assert_who_and_when(entry, a, start)
    assert entry["subject"] == "policy"
    # Compared as policies: the kinds are sets, written in no particular order.
    assert Policy.model_validate(entry["before"]) == Policy.model_validate(before)
    assert Policy.model_validate(entry["after"]) == Policy.model_validate(custom)
    # Putting it back is a change too, and its `before` is the custom policy.
    newest = (await a.log(action="policy"))[0]
    assert Policy.model_validate(newest["before"]) == Policy.model_validate(custom)
    assert Policy.model_validate(newest["after"]) == Policy.model_validate(before)


async def test_channel_changes_are_recorded_without_their_secrets(
    audited: Audited, engine: AsyncEngine
) -> None:
    a, c = audited, audited.client
    start = datetime.now(UTC)
    given = webhook.generate_secret()
    rotated = webhook.generate_secret()
    url = f"http://127.0.0.1:9/hooks/{a.tag}"
    mine, gen = f"ch-{a.tag}-given", f"ch-{a.tag}-gen"
    # Disabled: other tests' actions must never go to these channels.
    made = await c.post(
        "/v1/channels",
        json={
            "id": mine,
            "kind": "webhook",
            "config": {"url": url},
            "secret": given,
            "enabled": False,
        },
        headers=a.writer,
    )
    assert made.status_code == 201, made.text
    generated = await c.post(
        "/v1/channels",
        json={"id": gen, "kind": "webhook", "config": {"url": url}, "enabled": False},
        headers=a.writer,
    )
    assert generated.status_code == 201, generated.text
    shown_once = generated.json()["secret"]
    assert shown_once
    changed = await c.put(
        f"/v1/channels/{mine}",
        json={"config": {"url": f"{url}/v2"}, "enabled": False, "secret": rotated},
        headers=a.writer,
    )
    assert changed.status_code == 200, changed.text
    for channel_id in (mine, gen):
        assert (await c.delete(f"/v1/channels/{channel_id}", headers=a.writer)).status_code == 204

    entries = await a.log(action="channel")
    mine_entries = by_subject(entries, mine)
    assert [e["action"] for e in mine_entries] == [
        "channel.deleted",
        "channel.updated",
        "channel.created",
    ]
    gone, update, create = mine_entries
    for e in mine_entries:
        assert_who_and_when(e, a, start)
    assert create["before"] is None
    assert create["after"]["config"] == {"url": url} and create["after"]["has_secret"] is True
    assert "secret" not in create["after"]
    assert update["before"] == create["after"]
    assert update["after"]["config"] == {"url": f"{url}/v2"}
    assert update["after"]["enabled"] is False and update["after"]["secret_rotated"] is True
    assert gone["before"]["config"] == {"url": f"{url}/v2"} and gone["after"] is None
    gen_gone, gen_made = by_subject(entries, gen)
    assert gen_made["after"]["has_secret"] is True and gen_gone["before"]["has_secret"] is True

    # No secret anywhere: not in the API's answer, not in what the database holds.
    shown = orjson.dumps(entries).decode()
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text(
                "SELECT string_agg(coalesce(before::text, '') || coalesce(after::text, ''), ' ') "
                "FROM auth.audit_log WHERE subject LIKE :s"
            ),
            {"s": f"ch-{a.tag}-%"},
        )
    for secret in (given, rotated, shown_once):
        assert secret not in shown and secret not in stored
        assert secret.removeprefix("whsec_") not in stored


async def test_suppressions_and_unsubscribes_are_recorded(audited: Audited) -> None:
    a, c = audited, audited.client
    start = datetime.now(UTC)
    customer, other = f"c-{a.tag}-1", f"c-{a.tag}-2"
    added = await c.post(
        "/v1/suppressions",
        json={"customer_id": customer, "reason": "asked by phone"},
        headers=a.writer,
    )
    assert added.status_code == 201
    again = await c.post(
        "/v1/suppressions", json={"customer_id": customer, "reason": "again"}, headers=a.writer
    )
    assert again.status_code == 200  # already there: nothing changed, nothing recorded
    assert (await c.delete(f"/v1/suppressions/{customer}", headers=a.writer)).status_code == 204

    entries = await a.log(subject=customer)
    assert [e["action"] for e in entries] == ["suppression.deleted", "suppression.created"]
    lifted, made = entries
    for e in entries:
        assert_who_and_when(e, a, start)
    assert made["before"] is None and made["after"] == added.json()
    assert lifted["before"] == added.json() and lifted["after"] is None

    # The customer's own link: no key, the link is the actor; a second click records nothing.
    secret = a.app.state.settings.unsubscribe_secret.get_secret_value()
    for _ in range(2):
        done = await c.post(f"/v1/unsubscribe/{token_for(other, secret, a.app.state.clock.now())}")
        assert done.status_code == 200, done.text
    [link] = await a.log(actor="unsubscribe-link", subject=other)
    assert (link["action"], link["actor_key_id"], link["service"]) == (
        "suppression.created",
        None,
        "outreach",
    )
    assert link["before"] is None
    assert link["after"]["source"] == "unsubscribe"


async def test_keys_are_recorded_without_the_key(audited: Audited, engine: AsyncEngine) -> None:
    a = audited
    start = datetime.now(UTC)
    # As the `tend keys` command calls them: no actor given, so the CLI's user.
    key_id, key = await create_key(engine, f"k-{a.tag}", [Scope.OPS_READ])
    assert await revoke_key(engine, key_id)
    assert not await revoke_key(engine, key_id)  # nothing left to revoke: nothing recorded
    # As a service would, on behalf of a key.
    other_id, other = await create_key(
        engine,
        f"k2-{a.tag}",
        [Scope.OPS_READ],
        actor=audit.Actor(a.key_name, a.key_id),
        service="outreach",
    )

    entries = await a.log(actor=None, subject=key_id)
    assert [e["action"] for e in entries] == ["key.revoked", "key.created"]
    revoked, made = entries
    cli = audit.cli_actor().name
    assert cli.startswith("cli:")
    for e in entries:
        assert (e["actor"], e["actor_key_id"], e["service"]) == (cli, None, "cli")
        assert start - SLACK <= datetime.fromisoformat(e["at"]) <= datetime.now(UTC) + SLACK
    assert made["before"] is None
    assert made["after"]["name"] == f"k-{a.tag}" and made["after"]["scopes"] == ["ops:read"]
    assert revoked["before"]["revoked_at"] is None and revoked["after"]["revoked_at"]
    [on_behalf] = await a.log(subject=other_id)
    assert (on_behalf["actor_key_id"], on_behalf["service"]) == (a.key_id, "outreach")

    shown = orjson.dumps([*entries, on_behalf]).decode()
    for secret in (key, hash_key(key), other, hash_key(other)):
        assert secret not in shown
    assert "key_hash" not in shown


async def test_every_service_serves_the_log(
    audited: Audited,
    ingest: httpx.AsyncClient,
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
) -> None:
    a = audited
    rule = a.rule("everywhere")
    assert (await a.client.post("/v1/rules", json=rule, headers=a.writer)).status_code == 201
    assert (await a.client.delete(f"/v1/rules/{rule['id']}", headers=a.writer)).status_code == 204
    expected = await a.log(subject=rule["id"])
    assert len(expected) == 2
    for client in (ingest, scoring[0]):
        got = await client.get(
            "/v1/audit", params={"subject": rule["id"]}, headers=auth(keys["ops_read"])
        )
        assert got.status_code == 200, got.text
        assert got.json()["items"] == expected
        # Reading it needs ops:read.
        refused = await client.get("/v1/audit", headers=auth(keys["ingest"]))
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert (await client.get("/v1/audit")).status_code == 401


# -- reading ----------------------------------------------------------------------------------


async def test_filters_and_cursor_pagination(audited: Audited) -> None:
    a, c = audited, audited.client
    made = []
    for n in range(5):
        rule = a.rule(f"page{n}")
        assert (await c.post("/v1/rules", json=rule, headers=a.writer)).status_code == 201
        made.append(rule["id"])
    last = made[-1]
    assert (await c.post(f"/v1/rules/{last}/disable", headers=a.writer)).status_code == 200

    newest_first = [e for e in await a.log(action="rule") if e["subject"] in made]
    assert [e["subject"] for e in newest_first] == [last, *reversed(made)]

    # Pages of two, by the key's id this time: the same entries, once each, in order.
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"actor": a.key_id, "action": "rule", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await c.get("/v1/audit", params=params, headers=a.reader)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == await a.log(action="rule")
    assert [e["id"] for e in seen if e["subject"] in made] == [e["id"] for e in newest_first]

    # Exact actions and families; several at once.
    assert [e["action"] for e in await a.log(subject=last)] == ["rule.disabled", "rule.created"]
    assert [e["action"] for e in await a.log(subject=last, action="rule.created")] == [
        "rule.created"
    ]
    both = await a.log(subject=last, action=["rule.created", "rule.disabled"])
    assert len(both) == 2
    assert await a.log(subject=last, action="channel") == []
    # A family is a whole word, and an action the log does not know is an error, not "none".
    unknown = await a.client.get("/v1/audit", params={"action": "rul"}, headers=a.reader)
    assert unknown.status_code == 422 and "action" in unknown.text

    # since (inclusive) and until (exclusive), from the entries' own instants.
    oldest, middle = newest_first[-1], newest_first[2]
    window = await a.log(action="rule.created", since=oldest["at"], until=middle["at"])
    in_window = [e["subject"] for e in window if e["subject"] in made]
    middle_at = datetime.fromisoformat(middle["at"])
    assert made[0] in in_window and middle["subject"] not in in_window
    assert all(
        datetime.fromisoformat(oldest["at"]) <= datetime.fromisoformat(e["at"]) < middle_at
        for e in window
    )
    assert await a.log(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []

    refusals: list[tuple[dict[str, Any], str]] = [
        ({"cursor": "!!"}, "query.cursor"),
        ({"since": "1718000000"}, "query.since"),
        ({"until": "yesterday"}, "query.until"),
        ({"limit": 0}, "query.limit"),
    ]
    for params, field in refusals:
        bad = await c.get("/v1/audit", params=params, headers=a.reader)
        assert bad.status_code == 422, bad.text
        assert [e["field"] for e in bad.json()["errors"]] == [field]


# -- failures leave nothing ---------------------------------------------------------------------


async def test_a_change_that_fails_or_rolls_back_leaves_no_entry(
    audited: Audited, engine: AsyncEngine
) -> None:
    a, c = audited, audited.client
    rule = a.rule("fails")
    rid = rule["id"]
    assert (await c.post("/v1/rules", json=rule, headers=a.writer)).status_code == 201
    assert (await c.post("/v1/rules", json=rule, headers=a.writer)).status_code == 409
    ghost = a.rule("ghost")
    put = await c.put(f"/v1/rules/{ghost['id']}", json=ghost, headers=a.writer)
    assert put.status_code == 404
    assert (await c.delete(f"/v1/rules/{ghost['id']}", headers=a.writer)).status_code == 404
    bad = await c.put("/v1/policy", json={"default_timezone": "Mars/Base"}, headers=a.writer)
    assert bad.status_code == 422
    assert [e["action"] for e in await a.log(subject=rid)] == ["rule.created"]
    assert await a.log(subject=ghost["id"]) == []

    # The entry shares the change's transaction, on a connection and on a session alike.
    subject = f"rolled-back-{a.tag}"
    actor = audit.Actor(a.key_name, a.key_id)
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await audit.record(
                conn, actor=actor, service="outreach", action="rule.created", subject=subject
            )
            raise RuntimeError("the change fails after its entry was written")
    with pytest.raises(RuntimeError):
        async with unit_of_work(make_sessionmaker(engine)) as session:
            await audit.record(
                session, actor=actor, service="outreach", action="rule.created", subject=subject
            )
            raise RuntimeError("the change fails after its entry was written")
    assert await a.log(subject=subject) == []
    async with unit_of_work(make_sessionmaker(engine)) as session:
        await audit.record(
            session,
            actor=actor,
            service="outreach",
            action="rule.created",
            subject=subject,
            after={"token": "abc", "nested": [{"password": "pw", "has_secret": True}]},
        )
    [kept] = await a.log(subject=subject)
    # A secret-named value is redacted even when a caller passes one by mistake.
    assert kept["after"] == {
        "token": "[redacted]",
        "nested": [{"password": "[redacted]", "has_secret": True}],
    }
