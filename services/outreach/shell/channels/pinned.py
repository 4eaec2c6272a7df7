"""Keep-alive HTTP/1.1 connections to one receiver (or one HTTP/2 connection, where it speaks
it), each opened to an address the network guard checked.

Delivery POSTs small signed bodies and only needs the answer's status (and ``Retry-After``).
A general client (httpx) spends about a millisecond of CPU per request on its pool, its
stream abstractions and its models, which caps a worker near a thousand sends a second; this
pool keeps plain asyncio streams and lets ``h11`` (the HTTP/1.1 state machine httpx itself
stands on) frame each request and read each answer: tens of microseconds a send.

The guard's promise is kept per connection: :meth:`PinnedPool.post` is given the address the
caller resolved and checked for this send, and only a connection opened to that very address
carries it (a new one otherwise). The receiver's name still goes in ``Host`` and, over TLS,
in SNI and the certificate check (the default context: the system's CAs, hostname checked).
Redirects are never followed (the status is the answer). A connection goes back to the pool
only when its answer was read to the end and the receiver did not ask to close it.

With ``http2``, an https receiver is offered HTTP/2 in TLS's ALPN; one that picks it gets
every send to that address over one connection
(:mod:`services.outreach.shell.channels.pinned_h2`), pinned the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

import h11

from services.outreach.core import netguard
from services.outreach.shell.channels.pinned_h2 import H2Pinned

# The most of an answer's body read so that its connection may be reused; a longer one is
# dropped with its connection, so an endpoint cannot keep a worker busy streaming it.
ANSWER_READ_LIMIT = 64 * 1024
# Some receivers' firewalls refuse a request that does not say what sent it.
USER_AGENT = "Tend-Outreach/1"
# The most of an answer's head (status line and headers) h11 takes before it refuses it.
HEAD_LIMIT = 64 * 1024
# What one read from the socket asks for.
READ_SIZE = 64 * 1024


class ProtocolError(ConnectionError):
    """The receiver's answer was not HTTP/1.1 as delivery reads it."""


class ConnectFailed(ConnectionError):
    """No connection could be made to the address (refused, unreachable, a failed TLS
    handshake): nothing was sent."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a receiver's URL sends: what the request line, ``Host`` and TLS need."""

    scheme: str
    host: str  # the name (or literal address) as written, without brackets
    port: int
    host_header: str
    path: str

    @classmethod
    def of(cls, url: str) -> Target:
        """``url`` taken apart (ValueError when it cannot be)."""
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"url {url!r} has no host")
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname
        if not host.isascii():  # an internationalised name goes on the wire as IDNA
            host = host.encode("idna").decode("ascii")
        shown = f"[{host}]" if ":" in host else host
        host_header = f"{shown}:{parts.port}" if parts.port is not None else shown
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not path.isascii() or any(c in path or c in host for c in "\r\n \t"):
            raise ValueError(f"url {url!r} holds whitespace or characters to percent-encode")
        return cls(scheme, host, port, host_header, path)


@cache
def _tls(http2: bool) -> ssl.SSLContext:
    # Made once (loading the CA store takes milliseconds); verification and hostname checks on.
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


class _Connection:
    __slots__ = ("address", "http", "reader", "writer")

    def __init__(
        self,
        address: netguard.IPAddress,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)

    @property
    def usable(self) -> bool:
        # A receiver that closed an idle connection (its keep-alive ran out) has sent its FIN,
        # which the loop has read by now.
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class PinnedPool:
    """Keep-alive connections to one receiver URL; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        keepalive: int,
        http2: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``http2``: offer HTTP/2 to an https receiver (TLS's ALPN); ``tls``: the context
        for an https URL (the default one when None)."""
        self.url = url
        self._http2 = http2
        self._tls = tls
        self._target: Target | None = None
        self._keepalive = keepalive
        self._idle: list[_Connection] = []
        self._verdicts: dict[tuple[bool, bool], list[str]] = {}
        # HTTP/2: the connection per address, and the first connection being made to an
        # address whose protocol is not known yet (the others wait to see whether it is h2).
        self._h2: dict[netguard.IPAddress, H2Pinned] = {}
        self._speaks: dict[netguard.IPAddress, str] = {}
        self._opening: dict[netguard.IPAddress, asyncio.Future[H2Pinned | None]] = {}
        self.opened = 0  # connections made, for the bench and tests

    @property
    def target(self) -> Target:
        """The URL taken apart (ValueError when it cannot be)."""
        if self._target is None:
            self._target = Target.of(self.url)
        return self._target

    def url_errors(self, *, allow_private: bool, require_https: bool) -> list[str]:
        """:func:`netguard.check_url` of the URL (a pure function of it: kept)."""
        key = (allow_private, require_https)
        errors = self._verdicts.get(key)
        if errors is None:
            errors = self._verdicts[key] = netguard.check_url(
                self.url, allow_private=allow_private, require_https=require_https
            )
        return errors

    async def post(
        self, address: netguard.IPAddress, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str | None]:
        """POST ``body`` over a connection to ``address``; the answer's status and
        ``Retry-After``. Raises :class:`ConnectFailed` when no connection could be made
        (nothing was sent), another ``OSError`` (:class:`ProtocolError` among them) when the
        exchange failed; the caller bounds the time."""
        h2 = await self._h2_to(address)
        if h2 is not None:
            return await self._post_h2(h2, headers, body)
        connection = self._take(address)
        if connection is None:
            opened = await self._connect(address)
            if isinstance(opened, H2Pinned):
                return await self._post_h2(opened, headers, body)
            connection = opened
        reusable = False
        try:
            status, retry_after, reusable = await _exchange(
                connection, self._request(headers, body), body
            )
            return status, retry_after
        finally:
            # Cancelled (the caller's timeout) or failed mid-answer: the connection's state is
            # unknown, so it is never reused.
            if reusable and len(self._idle) < self._keepalive:
                self._idle.append(connection)
            else:
                connection.close()

    async def _h2_to(self, address: netguard.IPAddress) -> H2Pinned | None:
        """The live HTTP/2 connection to ``address``, if the receiver speaks it there."""
        h2 = self._h2.get(address)
        if h2 is not None and not h2.usable:
            del self._h2[address]
            await h2.aclose()
            h2 = None
        if h2 is None and (opening := self._opening.get(address)) is not None:
            h2 = await asyncio.shield(opening)  # None: it chose HTTP/1.1 or failed
        return h2

    async def _post_h2(
        self, h2: H2Pinned, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str | None]:
        t = self.target
        headers = {"user-agent": USER_AGENT, **headers}
        return await h2.post(authority=t.host_header, path=t.path, headers=headers, body=body)

    async def _connect(self, address: netguard.IPAddress) -> _Connection | H2Pinned:
        first = self._may_speak_h2 and address not in self._speaks
        opening: asyncio.Future[H2Pinned | None] | None = None
        if first and address not in self._opening:
            opening = self._opening[address] = asyncio.get_running_loop().create_future()
        opened: _Connection | H2Pinned | None = None
        try:
            opened = await self._open(address)
        except OSError as exc:  # ssl.SSLError is one too
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if opening is not None:
                del self._opening[address]
                opening.set_result(opened if isinstance(opened, H2Pinned) else None)
        if isinstance(opened, H2Pinned):
            self._speaks[address] = "h2"
            previous, self._h2[address] = self._h2.get(address), opened
            if previous is not None:
                await previous.aclose()
        elif self._may_speak_h2:
            self._speaks[address] = "http/1.1"
        return opened

    @property
    def _may_speak_h2(self) -> bool:
        return self._http2 and self.target.scheme == "https"

    async def aclose(self) -> None:
        h2s, self._h2 = list(self._h2.values()), {}
        for h2 in h2s:
            await h2.aclose()
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()

    def _take(self, address: netguard.IPAddress) -> _Connection | None:
        for i in range(len(self._idle) - 1, -1, -1):
            connection = self._idle[i]
            if connection.address != address:
                continue
            del self._idle[i]
            if connection.usable:
                return connection
            connection.close()
        return None

    async def _open(self, address: netguard.IPAddress) -> _Connection | H2Pinned:
        t = self.target
        tls = None
        if t.scheme == "https":
            tls = self._tls or _tls(self._http2)
            if self._tls is not None and self._http2:
                tls.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            str(address),
            t.port,
            ssl=tls,
            server_hostname=t.host if tls is not None else None,
            limit=HEAD_LIMIT,
        )
        self.opened += 1
        session = writer.get_extra_info("ssl_object")
        if session is not None and session.selected_alpn_protocol() == "h2":
            return H2Pinned(address, reader, writer, read_limit=ANSWER_READ_LIMIT)
        return _Connection(address, reader, writer)

    def _request(self, headers: Mapping[str, str], body: bytes) -> h11.Request:
        target = self.target
        fields = [("host", target.host_header), ("user-agent", USER_AGENT)]
        fields += [(name, value) for name, value in headers.items()]
        fields.append(("content-length", str(len(body))))
        # h11 refuses a header value holding a line break (LocalProtocolError, a ValueError).
        return h11.Request(method="POST", target=target.path, headers=fields)


async def _exchange(
    connection: _Connection, request: h11.Request, body: bytes
) -> tuple[int, str | None, bool]:
    """Send one request and read its answer (h11 frames both); the answer's status, its
    ``Retry-After``, and whether the connection may carry the next request."""
    http = connection.http
    try:
        connection.writer.write(
            http.send(request) + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
        )
    except h11.LocalProtocolError as exc:
        raise ValueError(str(exc)) from None
    status: int | None = None
    retry_after: str | None = None
    read = 0
    try:
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                chunk = await connection.reader.read(READ_SIZE)
                if not chunk and status is None:
                    raise ConnectionResetError(
                        "the receiver closed the connection without an answer"
                    )
                http.receive_data(chunk)
            elif isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise ProtocolError("the receiver switched protocols")
            elif isinstance(event, h11.Response):
                status = event.status_code
                length = 0
                for name, value in event.headers:
                    if name == b"retry-after":
                        retry_after = value.decode("latin-1")
                    elif name == b"content-length":
                        length = int(value)  # h11 has checked it is a number
                if length > ANSWER_READ_LIMIT:  # not worth reading: the connection is dropped
                    return status, retry_after, False
            elif isinstance(event, h11.Data):
                read += len(event.data)
                if read > ANSWER_READ_LIMIT:  # read no further: the connection is dropped
                    assert status is not None
                    return status, retry_after, False
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    except h11.RemoteProtocolError as exc:
        raise ProtocolError(
            f"the receiver's answer is not HTTP/1.1 as h11 reads it: {exc}"
        ) from None
    if status is None:
        raise ConnectionResetError("the receiver closed the connection without an answer")
    reusable = http.our_state is h11.DONE and http.their_state is h11.DONE
    if reusable:
        http.start_next_cycle()
    return status, retry_after, reusable
