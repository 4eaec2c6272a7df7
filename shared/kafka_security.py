"""How every Kafka client Tend makes reaches the broker: the address, TLS and SASL.

Producers, consumers and admin clients alike take :func:`client_kwargs`, so one set of
settings (``TEND_KAFKA_SECURITY_PROTOCOL``, ``TEND_KAFKA_SASL_*``, ``TEND_KAFKA_SSL_*``)
secures them all.

aiokafka reports a refused password or an untrusted certificate only as "Unable to bootstrap",
the same words as a broker that is down, and a caller that waits for the broker would wait for
nothing. :func:`check_access` opens one connection itself to tell the cases apart, and
:class:`KafkaAccessRefused` names the setting to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from shared.settings import CommonSettings

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaAccessRefused(RuntimeError):
    """The broker answered but will not let this client in: retrying cannot help."""


def ssl_context(settings: CommonSettings) -> ssl.SSLContext:
    """The TLS context for the broker: its certificate checked against ``kafka_ssl_cafile``
    (the system's CAs when unset), and the host name against the certificate."""
    for name, path in (
        ("TEND_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
        ("TEND_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
        ("TEND_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
    ):
        if path is not None and not Path(path).is_file():
            raise KafkaAccessRefused(f"{name}={path}: no such file")
    password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=password.get_secret_value() if password is not None else None,
        )
    except ssl.SSLError as exc:
        raise KafkaAccessRefused(
            "cannot read the TLS files named by TEND_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE "
            f"(PEM expected; is TEND_KAFKA_SSL_KEY_PASSWORD right?): {exc}"
        ) from exc
    return context


def client_kwargs(settings: CommonSettings) -> dict[str, Any]:
    """The keyword arguments every AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient
    is built with: where the brokers are and how to prove who we are to them."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in TLS_PROTOCOLS:
        kwargs["ssl_context"] = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def admin_client(settings: CommonSettings, **extra: Any) -> AIOKafkaAdminClient:
    """An admin client (not started) with the deployment's address and security."""
    return AIOKafkaAdminClient(**client_kwargs(settings), **extra)


async def start_admin(settings: CommonSettings, **extra: Any) -> AIOKafkaAdminClient:
    """A started admin client; :class:`KafkaAccessRefused` when the broker refuses us."""
    admin = admin_client(settings, **extra)
    try:
        await admin.start()
    except KafkaConnectionError:
        with contextlib.suppress(Exception):
            await admin.close()
        await check_access(settings)
        raise
    return admin


def _first_server(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return (host.strip("[]") or first), int(port or 9092)


async def check_access(settings: CommonSettings, *, timeout: float = 10.0) -> None:
    """Open one connection to the first bootstrap server as every client would, and raise
    :class:`KafkaAccessRefused` with the setting to fix when the broker refuses it (a wrong
    password, a certificate we do not trust, TLS against a plain listener). A broker that does
    not answer at all is not refused: the caller may wait for it."""
    host, port = _first_server(settings.kafka_bootstrap_servers)
    kwargs = client_kwargs(settings)
    kwargs.pop("bootstrap_servers")
    where = f"Kafka at {host}:{port}"
    protocol = settings.kafka_security_protocol
    try:
        async with asyncio.timeout(timeout):
            conn = await create_conn(host, port, request_timeout_ms=int(timeout * 1000), **kwargs)
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessRefused(
            f"{where} presented a certificate this client does not trust "
            f"({exc.verify_message}): set TEND_KAFKA_SSL_CAFILE to the PEM file of the CA "
            "that signed the brokers' certificates"
        ) from exc
    except ssl.SSLError as exc:
        raise KafkaAccessRefused(
            f"{where} did not complete a TLS handshake ({exc}): is that port a "
            f"{protocol} listener? Check TEND_KAFKA_SECURITY_PROTOCOL and KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    except SaslAuthenticationFailed as exc:
        raise KafkaAccessRefused(
            f"{where} refused user {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}: {exc}): check TEND_KAFKA_SASL_USERNAME and "
            "TEND_KAFKA_SASL_PASSWORD"
        ) from exc
    except (UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
        raise KafkaAccessRefused(
            f"{where} does not take SASL {settings.kafka_sasl_mechanism} there "
            f"({type(exc).__name__}): set TEND_KAFKA_SASL_MECHANISM to one the listener "
            "enables, or TEND_KAFKA_SECURITY_PROTOCOL to what the listener speaks"
        ) from exc
    except (OSError, TimeoutError, KafkaError):
        # Down, or speaking another protocol: indistinguishable here; the caller waits.
        return
    conn.close()
