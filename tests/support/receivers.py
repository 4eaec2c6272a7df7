"""Real receivers for delivery tests: a webhook endpoint and an SMTP server, each listening on
127.0.0.1 on an ephemeral port in the test's own event loop.

:class:`WebhookReceiver` is a small HTTP/1.1 server on raw asyncio streams (keep-alive
included). It checks every request's signature with the ``standardwebhooks`` package (the
reference implementation, independent of ours), records it, and answers from a script: a
status code, ``"hang"`` (read the request, never answer: the sender times out), ``"drop"``
(read the request, close the connection without an answer) or ``"late"`` (take the request,
then answer 200 only after ``late_seconds``: accepted, but the sender has timed out). A
``chooser`` picks the answer of every request the script does not cover (chaos tests).

:class:`SmtpReceiver` runs aiosmtpd's SMTP protocol and records every message with its
headers. It can refuse recipients, or sit on the DATA (answering only after ``data_delay``
seconds, as a slow or dying server would) to make an outcome ambiguous.

Both are async context managers::

    async with WebhookReceiver(script=[500, 200]) as hook, SmtpReceiver() as smtp:
        ...
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

Step = int | Literal["hang", "drop", "late"]


def new_secret() -> str:
    """A Standard Webhooks secret made without Tend's code."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None
    answer: Step

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    @property
    def timestamp(self) -> int | None:
        raw = self.headers.get("webhook-timestamp")
        return int(raw) if raw and raw.isdigit() else None

    @property
    def payload(self) -> Any:
        return json.loads(self.body) if self.body else None


class WebhookReceiver:
    """An HTTP endpoint that verifies, records and answers webhooks as scripted."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        script: Iterable[Step] = (),
        default: Step = 200,
        chooser: Callable[[], Step] | None = None,
        late_seconds: float = 5.0,
        retry_after: str | Callable[[], str] | None = None,
    ) -> None:
        self.secret = secret or new_secret()
        self.received: list[ReceivedWebhook] = []
        self._script: deque[Step] = deque(script)
        self._default = default
        self._chooser = chooser
        self._late_seconds = late_seconds
        self._retry_after = retry_after
        # TCP connections accepted (requests over kept-alive connections share one), and when
        # each request arrived (time.monotonic()).
        self.connections = 0
        self.arrivals: list[float] = []
        self.release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/tend"

    def then(self, *steps: Step) -> None:
        """Answer the next requests with ``steps`` (after what is already scripted)."""
        self._script.extend(steps)

    async def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedWebhook]:
        """Until ``count`` requests have arrived."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            while not self._closing.is_set():
                request = await _read_request(reader)
                if request is None:
                    return
                path, headers, body = request
                step = self._next_step()
                await self._record(path, headers, body, step)
                if step == "hang":
                    # Until the receiver closes, or the test lets the sender go.
                    closing = asyncio.ensure_future(self._closing.wait())
                    released = asyncio.ensure_future(self.release.wait())
                    await asyncio.wait({closing, released}, return_when=asyncio.FIRST_COMPLETED)
                    closing.cancel()
                    released.cancel()
                    return
                if step == "drop":
                    return
                if step == "late":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), self._late_seconds)
                    step = 200
                retry_after = self._retry_after
                if callable(retry_after):  # made at answer time (an HTTP date)
                    retry_after = retry_after()
                extra = (
                    f"retry-after: {retry_after}\r\n"
                    if retry_after is not None and step in (429, 503)
                    else ""
                )
                writer.write(
                    f"HTTP/1.1 {step} {_phrase(step)}\r\n{extra}content-length: 0\r\n\r\n".encode(
                        "latin-1"
                    )
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _next_step(self) -> Step:
        if self._script:
            return self._script.popleft()
        return self._chooser() if self._chooser is not None else self._default

    async def _record(self, path: str, headers: dict[str, str], body: bytes, step: Step) -> None:
        """Verify and keep the request (a subclass may keep something else: a timestamp)."""
        try:
            Webhook(self.secret).verify(body, headers)
            verified, error = True, None
        except (WebhookVerificationError, ValueError) as exc:
            verified, error = False, str(exc)
        async with self._arrived:
            self.arrivals.append(time.monotonic())
            self.received.append(ReceivedWebhook(path, headers, body, verified, error, step))
            self._arrived.notify_all()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Scripted"


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    _, path, _ = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return path, headers, body


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    envelope_from: str | None
    recipients: list[str]
    raw: bytes
    message: EmailMessage = field(repr=False)


class SmtpReceiver:
    """An SMTP server that records what it accepts.

    ``rcpt_reply`` (e.g. ``"550 5.1.1 no such user"``) refuses every recipient;
    ``data_delay`` seconds pass before the server answers the message's DATA."""

    def __init__(self, *, rcpt_reply: str | None = None, data_delay: float = 0) -> None:
        self.messages: list[ReceivedMail] = []
        self.rcpt_reply = rcpt_reply
        self.data_delay = data_delay
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []
        self.port = 0
        self.host = "127.0.0.1"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), raw, message)
        )
        return "250 2.0.0 accepted"

    def _protocol(self) -> SMTP:
        protocol = SMTP(self, hostname="smtp.test", loop=asyncio.get_running_loop())
        self._protocols.append(protocol)
        return protocol

    async def __aenter__(self) -> SmtpReceiver:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in self._protocols:
            if protocol.transport is not None:
                with contextlib.suppress(Exception):
                    protocol.transport.close()
        await self._server.wait_closed()
