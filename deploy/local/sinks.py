"""Local stand-ins for the places outreach delivers to, for `make run`.

    python deploy/local/sinks.py --dir .tend/sinks --http-port 8004 --smtp-port 8025

* a webhook receiver (``POST http://127.0.0.1:8004/webhook``) that verifies each Standard
  Webhooks signature with the secret in ``TEND_SINK_WEBHOOK_SECRET`` and keeps what it got;
* an SMS provider (``POST http://127.0.0.1:8004/sms``) that verifies the same signature and
  keeps each text message with its recipient;
* an SMTP server (127.0.0.1:8025) that keeps every message with its headers;
* ``GET http://127.0.0.1:8004/`` lists all three, newest first; ``/webhooks``, ``/sms`` and
  ``/mail`` each.

Everything received is also appended to ``webhooks.jsonl``, ``sms.jsonl`` and ``mail.jsonl``
in ``--dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class Store:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.received: dict[str, list[dict[str, Any]]] = {"webhook": [], "sms": [], "mail": []}

    @property
    def webhooks(self) -> list[dict[str, Any]]:
        return self.received["webhook"]

    @property
    def sms(self) -> list[dict[str, Any]]:
        return self.received["sms"]

    @property
    def mail(self) -> list[dict[str, Any]]:
        return self.received["mail"]

    def keep(self, kind: str, item: dict[str, Any]) -> None:
        items = self.received[kind]
        path = self.directory / ("webhooks.jsonl" if kind == "webhook" else f"{kind}.jsonl")
        items.append(item)
        del items[:-1000]
        with path.open("a") as f:
            f.write(json.dumps(item) + "\n")


class MailHandler:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default_policy)
        body = message.get_body(preferencelist=("plain", "html"))
        self.store.keep(
            "mail",
            {
                "received_at": datetime.now(UTC).isoformat(),
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": message["Subject"],
                "message_id": message["Message-ID"],
                "list_unsubscribe": message["List-Unsubscribe"],
                "list_unsubscribe_post": message["List-Unsubscribe-Post"],
                "body": body.get_content() if body is not None else "",
            },
        )
        return "250 OK"


def web(store: Store, secret: str | None) -> Starlette:
    hook = Webhook(secret) if secret else None

    async def receive(request: Request) -> Response:
        return await keep_signed(request, "webhook")

    async def receive_sms(request: Request) -> Response:
        return await keep_signed(request, "sms")

    async def keep_signed(request: Request, kind: str) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = False
        if hook is not None:
            try:
                hook.verify(raw, headers)
                verified = True
            except Exception:
                verified = False
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        store.keep(
            kind,
            {
                "received_at": datetime.now(UTC).isoformat(),
                "webhook_id": headers.get("webhook-id"),
                "verified": verified,
                "payload": payload,
            },
        )
        return Response(status_code=204 if verified or hook is None else 401)

    async def listing(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "webhooks": store.webhooks[::-1][:200],
                "sms": store.sms[::-1][:200],
                "mail": store.mail[::-1][:200],
            }
        )

    async def sms(_: Request) -> JSONResponse:
        return JSONResponse(store.sms[::-1])

    async def webhooks(_: Request) -> JSONResponse:
        return JSONResponse(store.webhooks[::-1])

    async def mail(_: Request) -> JSONResponse:
        return JSONResponse(store.mail[::-1])

    return Starlette(
        routes=[
            Route("/webhook", receive, methods=["POST"]),
            Route("/sms", receive_sms, methods=["POST"]),
            Route("/sms", sms),
            Route("/", listing),
            Route("/webhooks", webhooks),
            Route("/mail", mail),
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--dir", type=Path, default=Path(".tend/sinks"))
    parser.add_argument("--http-port", type=int, default=8004)
    parser.add_argument("--smtp-port", type=int, default=8025)
    args = parser.parse_args()
    store = Store(args.dir)
    controller = Controller(MailHandler(store), hostname="127.0.0.1", port=args.smtp_port)
    controller.start()
    try:
        server = uvicorn.Server(
            uvicorn.Config(
                web(store, os.environ.get("TEND_SINK_WEBHOOK_SECRET")),
                host="127.0.0.1",
                port=args.http_port,
                log_level="warning",
            )
        )
        await server.serve()
    finally:
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main())
