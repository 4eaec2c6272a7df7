"""One HTTP/2 connection to a receiver, opened to an address the network guard checked.

:class:`~services.outreach.shell.channels.pinned.PinnedPool` offers HTTP/2 in TLS's ALPN; a
receiver that picks it gets every send to that address over this one connection, as
concurrent streams (up to the receiver's own limit). The pinning is the pool's: this
connection is to one checked address, and only sends whose resolution checked that address
use it. The protocol is the ``h2`` package's state machine; this module moves its bytes and
turns its events into each stream's answer: the status and ``Retry-After``, the body read up
to the pool's limit (a longer one is cancelled, the connection kept).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error

from services.outreach.core import netguard

# Read per socket read.
_CHUNK = 64 * 1024


class H2Failed(ConnectionError):
    """The HTTP/2 connection or one of its streams failed (an ``OSError``, as a transport
    failure is to delivery)."""


@dataclass(slots=True)
class _Stream:
    answer: asyncio.Future[tuple[int, str | None]]
    status: int | None = None
    retry_after: str | None = None
    read: int = 0


@dataclass(slots=True)
class _Changed:
    """Wakes the sends waiting for a free stream or for flow-control window."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self) -> None:
        await self.event.wait()


class H2Pinned:
    """An HTTP/2 connection (already through TLS, ``h2`` chosen) to ``address``."""

    def __init__(
        self,
        address: netguard.IPAddress,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        read_limit: int,
    ) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        self._read_limit = read_limit
        self._h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self._h2.initiate_connection()
        self._streams: dict[int, _Stream] = {}
        self._changed = _Changed()
        self._failed: Exception | None = None
        self._flush()
        self._reading = asyncio.ensure_future(self._read())

    @property
    def usable(self) -> bool:
        return self._failed is None and not self._writer.is_closing()

    async def post(
        self,
        *,
        authority: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, str | None]:
        """POST over a new stream; the answer's status and ``Retry-After``. Raises
        :class:`H2Failed`; the caller bounds the time (a cancelled send resets its stream)."""
        while len(self._streams) >= self._h2.remote_settings.max_concurrent_streams:
            self._check()
            await self._changed.wait()
        self._check()
        stream_id = self._h2.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future())
        self._streams[stream_id] = stream
        request = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode("ascii")),
            (b":path", path.encode("ascii")),
            *(
                (name.lower().encode("ascii"), value.encode("latin-1"))
                for name, value in headers.items()
            ),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        try:
            try:
                self._h2.send_headers(stream_id, request, end_stream=not body)
                self._flush()
                await self._send_body(stream_id, body)
            except H2Error as exc:
                raise H2Failed(f"HTTP/2: {type(exc).__name__}: {exc}") from exc
            return await stream.answer
        finally:
            del self._streams[stream_id]
            if not stream.answer.done():  # cancelled (the caller's timeout): reset it
                stream.answer.cancel()
                with contextlib.suppress(H2Error, OSError):
                    self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
                    self._flush()
            self._changed.notify()

    async def aclose(self) -> None:
        with contextlib.suppress(H2Error, OSError):
            self._h2.close_connection()
            self._flush()
        self._reading.cancel()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            self._check()
            window = self._h2.local_flow_control_window(stream_id)
            size = min(window, self._h2.max_outbound_frame_size, len(view))
            if size <= 0:
                await self._changed.wait()
                continue
            self._h2.send_data(stream_id, bytes(view[:size]), end_stream=size == len(view))
            self._flush()
            view = view[size:]

    def _check(self) -> None:
        if self._failed is not None:
            raise H2Failed(f"the HTTP/2 connection failed: {self._failed}")

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self._reader.read(_CHUNK)
                if not data:
                    raise H2Failed("the receiver closed the connection")
                for event in self._h2.receive_data(data):
                    self._on(event)
                self._flush()
                self._changed.notify()  # window updates, settings, streams closed
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is done for: every stream fails
            self._failed = exc
            for stream in self._streams.values():
                if not stream.answer.done():
                    stream.answer.set_exception(H2Failed(f"{type(exc).__name__}: {exc}"))
            self._changed.notify()
            self._writer.close()

    def _on(self, event: object) -> None:
        if isinstance(event, ConnectionTerminated):
            raise H2Failed(f"the receiver ended the connection ({event.error_code!r})")
        stream_id = getattr(event, "stream_id", None)
        stream = self._streams.get(stream_id) if stream_id is not None else None
        if isinstance(event, DataReceived):
            # Flow control is given back whatever became of the stream.
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if stream is None or stream.answer.done():
            return
        if isinstance(event, ResponseReceived):
            fields = {bytes(k): bytes(v) for k, v in event.headers}
            status = int(fields[b":status"])
            if status >= 200:  # an informational answer precedes the real one
                stream.status = status
                after = fields.get(b"retry-after")
                stream.retry_after = after.decode("latin-1") if after is not None else None
        elif isinstance(event, DataReceived):
            stream.read += len(event.data)
            if stream.read > self._read_limit and stream.status is not None:
                stream.answer.set_result((stream.status, stream.retry_after))
                self._h2.reset_stream(event.stream_id, ErrorCodes.CANCEL)
        elif isinstance(event, StreamEnded):
            if stream.status is None:
                stream.answer.set_exception(H2Failed("a stream ended without an answer"))
            else:
                stream.answer.set_result((stream.status, stream.retry_after))
        elif isinstance(event, StreamReset):
            stream.answer.set_exception(
                H2Failed(f"the receiver reset the stream ({event.error_code!r})")
            )
