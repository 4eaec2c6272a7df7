"""``tend``: the operator's command line.

tend migrate                         bring every schema to the latest version
tend topics [--acls] [--principal SERVICE=User:NAME]
                                     create the Kafka topics that are missing, set their
                                     configs; with --acls, grant each service its ACLs
tend keys create NAME --scopes a,b   create an API key (printed once, stored hashed)
tend keys revoke KEY_ID              revoke a key
tend keys list                       list keys (never the keys themselves)
tend dev-keys FILE                   write the three development keys to FILE (once)
tend console-link [--key-env NAME]   print a one-time console sign-in link (15 minutes)
tend replay FILE                     post an order export (CSV) through ingest
tend dlq list [--source-topic T]     what is in the dead-letter topic
tend dlq replay [--source-topic T] [--since WHEN] [--dry-run]
                                     re-publish dead letters to their source topic, once
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from cli.replay import parse_mapping, replay_file
from services.console.session import LINK_MAX_MINUTES, SignInLinks
from services.outreach.settings import outreach_settings
from services.scoring.settings import scoring_settings
from shared.auth import Scope, api_keys, create_key, key_is_active, revoke_key
from shared.db import make_engine
from shared.dlq import ERROR, GROUP, REASON, read_dlq, replay_dead_letters
from shared.kafka import start_producer
from shared.kafka_acls import DEFAULT_PRINCIPALS, SERVICES, apply_acls, service_acls
from shared.kafka_security import KafkaAccessRefused
from shared.logging import scrub
from shared.migrate import upgrade_all
from shared.production import InsecureSettings, kafka_problems, refuse_insecure, topic_problems
from shared.settings import CommonSettings
from shared.topics import Topics, sync_topics

DEV_KEYS = {
    "TEND_INGEST_KEY": ("dev-ingest", [Scope.EVENTS_WRITE]),
    "TEND_OPS_KEY": ("dev-ops", [Scope.OPS_READ, Scope.OPS_WRITE]),
    "TEND_MARKETING_KEY": ("dev-marketing", [Scope.MARKETING_WRITE, Scope.OPS_READ]),
}


def _scopes(text: str) -> list[Scope]:
    try:
        return [Scope(s.strip()) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        allowed = ", ".join(s.value for s in Scope)
        raise argparse.ArgumentTypeError(f"{exc}; scopes are: {allowed}") from exc


async def _keys_create(settings: CommonSettings, name: str, scopes: list[Scope]) -> None:
    engine = make_engine(settings, pool_size=1)
    try:
        key_id, key = await create_key(engine, name, scopes)
    finally:
        await engine.dispose()
    print(f"id:     {key_id}\nscopes: {','.join(s.value for s in scopes)}\nkey:    {key}")
    print("The key is shown only now; store it safely.", file=sys.stderr)


async def _keys_revoke(settings: CommonSettings, key_id: str) -> int:
    engine = make_engine(settings, pool_size=1)
    try:
        done = await revoke_key(engine, key_id)
    finally:
        await engine.dispose()
    print("revoked" if done else f"no active key with id {key_id}")
    return 0 if done else 1


async def _keys_list(settings: CommonSettings) -> None:
    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(
                    api_keys.c.id,
                    api_keys.c.name,
                    api_keys.c.scopes,
                    api_keys.c.created_at,
                    api_keys.c.revoked_at,
                ).order_by(api_keys.c.created_at)
            )
            for r in rows:
                state = f"revoked {r.revoked_at:%Y-%m-%d}" if r.revoked_at else "active"
                print(f"{r.id}  {r.name:<20} {','.join(r.scopes):<35} {state}")
    finally:
        await engine.dispose()


async def _dev_keys(settings: CommonSettings, path: Path) -> None:
    """Keep the dev keys in ``path`` valid: reuse the file while its keys are live in this
    database, otherwise mint a new set."""
    engine = make_engine(settings, pool_size=1)
    try:
        if path.exists():
            current = dict(
                line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
            )
            if set(DEV_KEYS) <= current.keys() and all(
                [await key_is_active(engine, current[name]) for name in DEV_KEYS]
            ):
                return
        lines = []
        for var, (name, scopes) in DEV_KEYS.items():
            _, key = await create_key(engine, name, scopes)
            lines.append(f"{var}={key}")
    finally:
        await engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _console_link(args: argparse.Namespace) -> int:
    """A one-time sign-in link for the console: the key sealed with the console's session
    secret, so only that console opens it, once, before it expires."""

    def fail(why: str) -> int:
        print(f"tend console-link: {why}", file=sys.stderr)
        return 2

    secret = os.environ.get("TEND_CONSOLE_SESSION_SECRET", "").strip()
    if not secret and args.secret_file.is_file():
        secret = args.secret_file.read_text().strip()
    if not secret:
        return fail(
            "the console's session secret is needed: set TEND_CONSOLE_SESSION_SECRET as the "
            f"console has it, or give --secret-file (make run keeps it in {args.secret_file})"
        )
    key = os.environ.get(args.key_env, "").strip()
    if not key and args.keys_file.is_file():
        found = dict(
            line.split("=", 1) for line in args.keys_file.read_text().splitlines() if "=" in line
        )
        key = found.get(args.key_env, "").strip()
    if not key:
        return fail(f"no key: set {args.key_env}, or give a --keys-file that has it")
    try:
        token = SignInLinks(secret).mint(key, args.minutes)
    except ValueError as exc:
        return fail(str(exc))
    print(f"{args.url.rstrip('/')}/signin/link?token={token}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("TEND_INGEST_KEY")
    if not key:
        print(
            "tend replay: give --key or set TEND_INGEST_KEY (source .tend/dev-keys.env)",
            file=sys.stderr,
        )
        return 2
    try:
        mapping = parse_mapping(args.map)
    except ValueError as exc:
        print(f"tend replay: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(
        replay_file(
            args.file, args.url, key, mapping, shift=args.shift_to_today, currency=args.currency
        )
    )
    for bad in report.bad:
        print(f"line {bad.line}: {bad.reason}", file=sys.stderr)
    print(f"accepted {report.accepted}, duplicates {report.duplicates}, rejected {report.rejected}")
    return 0


def _principal(text: str) -> tuple[str, str]:
    service, _, principal = text.partition("=")
    if service not in SERVICES or not principal.startswith("User:"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give SERVICE=User:NAME, SERVICE one of {', '.join(SERVICES)}"
        )
    return service, principal


async def _topics(settings: CommonSettings, acls: bool, principals: dict[str, str]) -> None:
    done = await sync_topics(settings)
    print("created: " + (", ".join(done.created) if done.created else "none (all present)"))
    for name, changed in done.reconfigured.items():
        print(f"reconfigured: {name} ({', '.join(changed)})")
    if acls:
        groups = {
            "scoring": scoring_settings().consumer_group,
            "outreach": outreach_settings().consumer_group,
        }
        granted = service_acls(settings, groups, {**DEFAULT_PRINCIPALS, **principals})
        await apply_acls(settings, granted)
        for acl in granted:
            print(f"acl: {acl.describe()}")


def _since(text: str) -> datetime:
    """``90m``, ``24h``, ``7d`` back from now, or an ISO 8601 time (UTC unless it says)."""
    relative = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if relative:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[relative[2]]
        return datetime.now(UTC) - timedelta(**{unit: int(relative[1])})
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a duration such as 90m, 24h, 7d or an ISO time"
        ) from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _topic_name(topics: Topics, prefix: str, name: str | None) -> str | None:
    """A topic as the operator names it: ``events``, ``changes``, ``actions``, or in full
    (with or without this deployment's prefix)."""
    if name is None:
        return None
    short = {"events": topics.events, "changes": topics.changes, "actions": topics.actions}
    if name in short:
        return short[name]
    return name if name.startswith(prefix) else prefix + name


async def _dlq_list(settings: CommonSettings, source_topic: str | None) -> None:
    snapshot = await read_dlq(settings, Topics.from_settings(settings))
    shown = [
        d
        for d in snapshot.letters
        if d.state != "erased" and (source_topic is None or d.source_topic == source_topic)
    ]
    print(
        f"{'DLQ':<9} {'FAILED AT':<20} {'SOURCE (topic/partition/offset)':<44} {'GROUP':<20} "
        f"{'KEY':<24} {'SIZE':>7} {'STATE':<8} ERROR"
    )
    for d in shown:
        # Scrubbed when dead-lettered; again here for records from before that was done.
        error = scrub(" ".join((d.header(ERROR) or "").split()))
        if reason := d.header(REASON):
            error = f"[{reason}] {error}"
        # The DLQ key adds the source coordinates, already in the SOURCE column.
        key = "-" if d.original_key is None else d.original_key.decode(errors="replace")
        where = f"{d.partition}/{d.offset}"
        print(
            f"{where:<9} {d.timestamp:%Y-%m-%dT%H:%M:%SZ} {d.source:<44} "
            f"{d.header(GROUP) or '?':<20} "
            f"{key:<24} {len(d.value):>7} {d.state:<8} {error[:100]}"
        )
    pending = sum(d.state == "pending" for d in shown)
    erased = sum(d.state == "erased" for d in snapshot.letters)
    print(
        f"{len(shown)} records ({pending} pending, {len(shown) - pending} replayed); "
        f"{erased} erased, not shown"
    )


async def _dlq_replay(
    settings: CommonSettings, source_topic: str | None, since: datetime | None, dry_run: bool
) -> None:
    producer = await start_producer(settings, wait_seconds=10)
    try:
        report = await replay_dead_letters(
            settings,
            Topics.from_settings(settings),
            producer,
            source_topic=source_topic,
            since=since,
            dry_run=dry_run,
        )
    finally:
        await producer.stop()
    print(
        f"{'would replay' if dry_run else 'replayed'} {report.replayed}, "
        f"skipped {report.skipped} ({report.already_replayed} already replayed, "
        f"{report.erased} erased, {report.filtered} filtered out, "
        f"{report.source_missing} whose source topic is gone)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tend", description="Operate a Tend deployment.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="bring every schema to the latest version")
    topics = sub.add_parser("topics", help="create missing Kafka topics, set their configs")
    topics.add_argument(
        "--acls",
        action="store_true",
        help="also grant each service the ACLs it needs (see the README's table)",
    )
    topics.add_argument(
        "--principal",
        type=_principal,
        action="append",
        default=[],
        help="the principal a service authenticates as, e.g. scoring=User:tend-scoring "
        "(the default); repeat for each service",
    )
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key; it is printed once")
    create.add_argument("name")
    create.add_argument(
        "--scopes",
        type=_scopes,
        required=True,
        help="comma separated: " + ", ".join(s.value for s in Scope),
    )
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    keys.add_parser("list", help="list keys")
    dev = sub.add_parser("dev-keys", help="write development keys to a file")
    dev.add_argument("file", type=Path)
    link = sub.add_parser(
        "console-link", help="print a one-time sign-in link for the console (expires soon)"
    )
    link.add_argument(
        "--key-env",
        default="TEND_MARKETING_KEY",
        help="the variable holding the API key, in the environment or in --keys-file",
    )
    link.add_argument("--keys-file", type=Path, default=Path(".tend/dev-keys.env"))
    link.add_argument(
        "--secret-file",
        type=Path,
        default=Path(".tend/console-secret"),
        help="the console's session secret, when TEND_CONSOLE_SESSION_SECRET is not set",
    )
    link.add_argument(
        "--url",
        default=f"http://127.0.0.1:{os.environ.get('TEND_CONSOLE_PORT', '8000')}",
        help="the console's base URL",
    )
    link.add_argument(
        "--minutes",
        type=float,
        default=15,
        help=f"how long the link lives (at most {LINK_MAX_MINUTES})",
    )
    replay = sub.add_parser("replay", help="post an order export (CSV) through ingest")
    replay.add_argument("file", type=Path)
    replay.add_argument("--url", default="http://127.0.0.1:8001", help="ingest's base URL")
    replay.add_argument(
        "--key", default=None, help="an events:write key (default: $TEND_INGEST_KEY)"
    )
    replay.add_argument(
        "--map",
        default=None,
        help="field=column pairs, comma separated, for customer_id, order_id, occurred_at, amount",
    )
    replay.add_argument(
        "--shift-to-today", action="store_true", help="move the history so its last order is today"
    )
    replay.add_argument("--currency", default="USD")
    dlq = sub.add_parser("dlq", help="the dead-letter topic").add_subparsers(
        dest="action", required=True
    )
    dlq_list = dlq.add_parser("list", help="what is in the DLQ (erased customers left out)")
    dlq_replay = dlq.add_parser(
        "replay", help="re-publish DLQ records to their source topic; never the same one twice"
    )
    for p in (dlq_list, dlq_replay):
        p.add_argument(
            "--source-topic",
            default=None,
            help="only records from this topic: events, changes, actions or a full name",
        )
    dlq_replay.add_argument(
        "--since",
        type=_since,
        default=None,
        help="only records dead-lettered since then: 90m, 24h, 7d or an ISO time",
    )
    dlq_replay.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; publish nothing"
    )
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args)
    if args.command == "console-link":
        return _console_link(args)

    settings = CommonSettings()
    if args.command == "migrate":
        upgrade_all(settings)
        print("migrated")
    elif args.command == "topics":
        try:
            refuse_insecure(
                settings.environment, [*kafka_problems(settings), *topic_problems(settings)]
            )
        except InsecureSettings as exc:
            print(f"tend topics: {exc}", file=sys.stderr)
            return 2
        try:
            asyncio.run(_topics(settings, args.acls, dict(args.principal)))
        except KafkaAccessRefused as exc:
            print(f"tend topics: {exc}", file=sys.stderr)
            return 2
    elif args.command == "dlq":
        source = _topic_name(
            Topics.from_settings(settings), settings.topic_prefix, args.source_topic
        )
        if args.action == "list":
            asyncio.run(_dlq_list(settings, source))
        else:
            asyncio.run(_dlq_replay(settings, source, args.since, args.dry_run))
    elif args.command == "keys" and args.action == "create":
        asyncio.run(_keys_create(settings, args.name, args.scopes))
    elif args.command == "keys" and args.action == "revoke":
        return asyncio.run(_keys_revoke(settings, args.key_id))
    elif args.command == "keys":
        asyncio.run(_keys_list(settings))
    elif args.command == "dev-keys":
        asyncio.run(_dev_keys(settings, args.file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
