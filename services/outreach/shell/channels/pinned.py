"""Keep-alive HTTP/1.1 connections to one receiver (or one HTTP/2 connection, where it speaks
it), each opened to an address the network guard checked.

Delivery POSTs small signed bodies and only needs the answer's status (and ``Retry-After``).
A general client (httpx) spends about a millisecond of CPU per request on its pool, its
stream abstractions and its models, which caps a worker near a thousand sends a second; this
pool keeps plain asyncio streams, writes each request's head itself (the receiver's part of
it written once per pool, every header checked) and reads each answer with ``httptools``
(llhttp, the parser uvicorn and Node.js use, in C). ``h11``'s pure-Python state machine had
cost a third of a worker's CPU per send.

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
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

import httptools

from services.outreach.core import netguard
from services.outreach.shell.channels.pinned_h2 import H2Pinned

# The most of an answer's body read so that its connection may be reused; a longer one is
# dropped with its connection, so an endpoint cannot keep a worker busy streaming it.
ANSWER_READ_LIMIT = 64 * 1024
# Some receivers' firewalls refuse a request that does not say what sent it.
USER_AGENT = "Tend-Outreach/1"
# The most of an answer's head (status line and headers) read before it is refused.
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
    __slots__ = ("address", "reader", "writer")

    def __init__(
        self,
        address: netguard.IPAddress,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer

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
        self._head: bytes | None = None  # the request line, host and user agent

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
                connection, self._request(headers, body)
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

    def _request(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """The request's head and body, as they go on the wire (ValueError for a header that
        could not go there as it is)."""
        if self._head is None:
            t = self.target  # Target.of refused whitespace and line breaks in host and path
            self._head = (
                f"POST {t.path} HTTP/1.1\r\nhost: {t.host_header}\r\nuser-agent: {USER_AGENT}\r\n"
            ).encode("ascii")
        return b"".join((self._head, request_fields(headers, len(body)), body))


# A header's name is an RFC 9110 token; its value holds no control character but tab.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def request_fields(headers: Mapping[str, str], length: int) -> bytes:
    """``headers`` and the body's length as header lines, and the blank line that ends the
    head. A name that is not a token, or a value that holds a line break or another control
    character (a header smuggled into the request) or is not ASCII, is a ValueError."""
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if _UNSAFE_VALUE.search(value) or not value.isascii():
            raise ValueError(f"header {name!r} has a value that cannot go in a request")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"content-length: {length}\r\n\r\n")
    return "".join(lines).encode("ascii")


class _Answer:
    """What the parser read of the answer to one request (httptools' callbacks). Interim
    answers (1xx) are passed by: each ends at its head, and the final one follows."""

    __slots__ = (
        "chunked",
        "complete",
        "extra",
        "head_done",
        "keep_alive",
        "length",
        "parser",
        "read",
        "retry_after",
        "status",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.retry_after: str | None = None
        self.length: int | None = None  # its Content-Length
        self.chunked = False
        self.head_done = False  # the final answer's head
        self.read = 0  # its body's bytes
        self.complete = False
        self.keep_alive = False  # as the answer ended (llhttp forgets once it has)
        self.extra = False  # bytes after it

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True
            return
        self.retry_after, self.length, self.chunked = None, None, False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self.retry_after = value.decode("latin-1").strip()
        elif name == b"content-length":
            self.length = int(value)  # llhttp has checked it is a number
        elif name == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200 or status == 101:
            self.status, self.head_done = status, True

    def on_body(self, body: bytes) -> None:
        self.read += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()


async def _exchange(connection: _Connection, request: bytes) -> tuple[int, str | None, bool]:
    """Send one request and read its answer; the answer's status, its ``Retry-After``, and
    whether the connection may carry the next request. The body is read only up to
    :data:`ANSWER_READ_LIMIT`: a longer one drops the connection."""
    connection.writer.write(request)
    answer = _Answer()
    head = 0
    while True:
        data = await connection.reader.read(READ_SIZE)
        if not data:
            return _at_close(answer)
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ProtocolError("the receiver switched protocols") from None
        except httptools.HttpParserError as exc:
            if answer.complete:  # bytes after the answer: it stands, the connection goes
                return answer.status, answer.retry_after, False
            raise ProtocolError(
                f"the receiver's answer is not HTTP/1.1 as llhttp reads it: {exc}"
            ) from None
        if not answer.head_done:
            head += len(data)
            if head > HEAD_LIMIT:
                raise ProtocolError(f"the receiver's answer has a head over {HEAD_LIMIT} bytes")
            continue
        if (answer.length or 0) > ANSWER_READ_LIMIT or answer.read > ANSWER_READ_LIMIT:
            return answer.status, answer.retry_after, False  # not worth reading on
        if answer.complete:
            return answer.status, answer.retry_after, answer.keep_alive and not answer.extra


def _at_close(answer: _Answer) -> tuple[int, str | None, bool]:
    """The receiver closed the connection: an answer delimited by the close ends there; one
    that said its length, or came in chunks, and had not ended is cut short."""
    if not answer.head_done:
        raise ConnectionResetError("the receiver closed the connection without an answer")
    if not answer.complete and (answer.length is not None or answer.chunked):
        raise ProtocolError("the receiver closed the connection in the middle of its answer")
    return answer.status, answer.retry_after, False
