"""``tend``: the operator's command line.

tend migrate                         bring every schema to the latest version
tend topics                          create the Kafka topics that are missing
tend keys create NAME --scopes a,b   create an API key (printed once, stored hashed)
tend keys revoke KEY_ID              revoke a key
tend keys list                       list keys (never the keys themselves)
tend dev-keys FILE                   write the three development keys to FILE (once)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import select

from shared.auth import Scope, api_keys, create_key, key_is_active, revoke_key
from shared.db import make_engine
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import ensure_topics

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


def _replay(args: argparse.Namespace) -> int:
    # The replay is a client of ingest's HTTP API; imported here so the other commands do
    # not load it.

    from services.ingest.replay import parse_mapping, replay_file

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tend", description="Operate a Tend deployment.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="bring every schema to the latest version")
    sub.add_parser("topics", help="create missing Kafka topics")
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
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args)

    settings = CommonSettings()
    if args.command == "migrate":
        upgrade_all(settings)
        print("migrated")
    elif args.command == "topics":
        created = asyncio.run(ensure_topics(settings))
        print("created: " + (", ".join(created) if created else "none (all present)"))
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
