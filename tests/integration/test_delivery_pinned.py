"""Delivery's HTTP/1.1 client against real sockets: connections kept alive per checked address
(never one opened for another address), answers read to their end (or the connection
dropped), TLS to the receiver's name over a connection to the pinned address, HTTP/2 where
the receiver speaks it."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded

from services.outreach.shell.channels.pinned import ConnectFailed, PinnedPool, ProtocolError

pytestmark = pytest.mark.integration

LOOPBACK = ipaddress.ip_address("127.0.0.1")
OTHER_LOOPBACK = ipaddress.ip_address("127.0.0.2")
NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


class Receiver:
    """Answers each request with the next scripted raw answer (204 when the script is
    done); records each connection's local address and each request's head."""

    def __init__(self, answers: Iterable[bytes] = ()) -> None:
        self.answers = list(answers)
        self.connections: list[str] = []
        self.heads: list[bytes] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer.get_extra_info("sockname")[0])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.heads.append(head)
                answer = self.answers.pop(0) if self.answers else NO_CONTENT
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def receiving(
    receiver: Receiver, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Receiver]:
    server = await asyncio.start_server(receiver.serve, "0.0.0.0", 0, ssl=tls)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()


async def test_a_connection_is_kept_alive_and_only_ever_carries_its_own_address() -> None:
    async with receiving(Receiver()) as hook:
        pool = PinnedPool(f"http://hooks.shop.example:{hook.port}/in?x=1", keepalive=4)
        for _ in range(3):
            assert await pool.post(LOOPBACK, {"webhook-id": "a"}, b"{}") == (204, None)
        # The name now resolves elsewhere (another checked address): a new connection to
        # it, never the kept-alive one to the first.
        assert await pool.post(OTHER_LOOPBACK, {"webhook-id": "b"}, b"{}") == (204, None)
        assert await pool.post(LOOPBACK, {"webhook-id": "c"}, b"{}") == (204, None)
        await pool.aclose()
    assert hook.connections == ["127.0.0.1", "127.0.0.2"]
    assert pool.opened == 2
    first = hook.heads[0].decode()
    assert first.startswith("POST /in?x=1 HTTP/1.1\r\n")
    assert f"host: hooks.shop.example:{hook.port}\r\n" in first


async def test_answers_are_read_to_their_end_or_their_connection_dropped() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n"
        b"transfer-encoding: chunked\r\n\r\n3\r\nbus\r\n1\r\ny\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",  # closes
        b"HTTP/1.1 200 OK\r\ncontent-length: 999999\r\n\r\n",  # too long to read: dropped
    ]
    async with receiving(Receiver(answers)) as hook:
        pool = PinnedPool(f"http://127.0.0.1:{hook.port}/", keepalive=4)
        statuses = [await pool.post(LOOPBACK, {}, b"x") for _ in range(5)]
        assert await pool.post(LOOPBACK, {}, b"x") == (204, None)
        await pool.aclose()
    assert statuses == [(200, None), (429, "2"), (202, None), (200, None), (200, None)]
    assert len(hook.connections) == 3  # one to the close, one to the long answer, one after


async def test_a_garbled_answer_or_no_listener_is_an_error_not_a_status() -> None:
    async with receiving(Receiver([b"SMTP ready\r\n\r\n"])) as hook:
        pool = PinnedPool(f"http://127.0.0.1:{hook.port}/", keepalive=4)
        with pytest.raises(ProtocolError):
            await pool.post(LOOPBACK, {}, b"x")
        port = hook.port
    with pytest.raises(ConnectFailed):
        await PinnedPool(f"http://127.0.0.1:{port}/", keepalive=4).post(LOOPBACK, {}, b"x")


async def test_an_answer_ended_by_the_close_stands_and_one_cut_short_is_an_error() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nread until the close",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"8000\r\n" + b"x" * 0x8000 + b"\r\n" for _ in range(3))
        + b"0\r\n\r\n",  # 96 KiB in chunks: past the read limit, the connection dropped
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    ]
    async with receiving(Receiver(answers)) as hook:
        pool = PinnedPool(f"http://127.0.0.1:{hook.port}/", keepalive=4)
        assert await pool.post(LOOPBACK, {}, b"x") == (200, None)
        with pytest.raises(ProtocolError):
            await pool.post(LOOPBACK, {}, b"x")
        assert await pool.post(LOOPBACK, {}, b"x") == (200, None)
        with pytest.raises(ProtocolError):
            await pool.post(LOOPBACK, {}, b"x")
        await pool.aclose()
    assert len(hook.connections) == 4  # none of these answers leaves its connection usable


async def test_a_header_that_would_smuggle_another_into_the_request_is_refused() -> None:
    async with receiving(Receiver()) as hook:
        pool = PinnedPool(f"http://127.0.0.1:{hook.port}/", keepalive=4)
        for name, value in [
            ("webhook-id", "a\r\nx-admin: yes"),
            ("webhook-id", "a\nb"),
            ("bad name", "a"),
            ("webhook-id", "caf\u00e9"),
        ]:
            with pytest.raises(ValueError):
                await pool.post(LOOPBACK, {name: value}, b"x")
        assert await pool.post(LOOPBACK, {"webhook-id": "a\tb"}, b"x") == (204, None)
        await pool.aclose()
    assert len(hook.heads) == 1 and b"x-admin" not in hook.heads[0]


def _certificate(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the server's context, and a client context
    that trusts it (and checks names, as the default one does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_tls_goes_to_the_pinned_address_and_checks_the_receivers_name(
    tmp_path: Path,
) -> None:
    server, client = _certificate(tmp_path, "hooks.shop.example")
    async with receiving(Receiver(), tls=server) as hook:
        pool = PinnedPool(f"https://hooks.shop.example:{hook.port}/in", keepalive=4, tls=client)
        assert await pool.post(LOOPBACK, {}, b"{}") == (204, None)
        assert await pool.post(LOOPBACK, {}, b"{}") == (204, None)
        await pool.aclose()
        # Another name on the same address: its certificate does not cover it.
        other = PinnedPool(f"https://other.example:{hook.port}/in", keepalive=4, tls=client)
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await other.post(LOOPBACK, {}, b"{}")
    assert hook.connections == ["127.0.0.1"]
    assert pool.opened == 1


class H2Receiver:
    """An HTTP/2-only receiver (TLS, ALPN h2): answers each request with the next scripted
    status (204 when the script is done; 429 carries ``Retry-After: 2``); records each
    connection's local address and each request's headers."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.statuses = list(statuses)
        self.connections: list[str] = []
        self.requests: list[dict[bytes, bytes]] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer.get_extra_info("sockname")[0])
        conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        heads: dict[int, dict[bytes, bytes]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        heads[event.stream_id] = {bytes(k): bytes(v) for k, v in event.headers}
                    elif isinstance(event, DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, StreamEnded):
                        self.requests.append(heads.pop(event.stream_id))
                        status = self.statuses.pop(0) if self.statuses else 204
                        answer = [(b":status", str(status).encode())]
                        if status == 429:
                            answer.append((b"retry-after", b"2"))
                        conn.send_headers(event.stream_id, answer, end_stream=True)
                writer.write(conn.data_to_send())
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def test_http2_where_the_receiver_speaks_it_one_pinned_connection_many_streams(
    tmp_path: Path,
) -> None:
    server, client = _certificate(tmp_path, "hooks.shop.example")
    server.set_alpn_protocols(["h2"])
    hook = H2Receiver(statuses=[429])
    listener = await asyncio.start_server(hook.serve, "0.0.0.0", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        pool = PinnedPool(
            f"https://hooks.shop.example:{port}/in", keepalive=4, http2=True, tls=client
        )
        first = await pool.post(LOOPBACK, {"webhook-id": "a"}, b"{}")
        answers = await asyncio.gather(
            *(pool.post(LOOPBACK, {"webhook-id": str(i)}, b"x" * 100_000) for i in range(10))
        )
        # The name re-pointed to another checked address: a connection of its own.
        assert await pool.post(OTHER_LOOPBACK, {"webhook-id": "b"}, b"{}") == (204, None)
        await pool.aclose()
        # Sends that start together on a fresh pool wait for its first connection's protocol.
        fresh = PinnedPool(
            f"https://hooks.shop.example:{port}/in", keepalive=4, http2=True, tls=client
        )
        together = await asyncio.gather(*(fresh.post(LOOPBACK, {}, b"{}") for _ in range(5)))
        await fresh.aclose()
    finally:
        listener.close()
    assert together == [(204, None)] * 5 and fresh.opened == 1
    assert first == (429, "2")
    assert answers == [(204, None)] * 10
    assert hook.connections == ["127.0.0.1", "127.0.0.2", "127.0.0.1"]  # the last: fresh's
    assert pool.opened == 2
    request = hook.requests[0]
    assert request[b":authority"] == f"hooks.shop.example:{port}".encode()
    assert (request[b":method"], request[b":path"], request[b"webhook-id"]) == (
        b"POST",
        b"/in",
        b"a",
    )
