"""What a production deployment refuses to start with.

Defaults are chosen so that ``make run`` works on a laptop: a development unsubscribe secret,
an http base URL, a Kafka without TLS, one replica of every topic. Each of them is unsafe in
production, and none of them is visible once running. With ``TEND_ENVIRONMENT=production``
every service (and ``tend topics``) checks them before it starts and stops with every problem
it found, each naming the setting and how to fix it.

The checks are plain functions returning those messages; a service adds its own (outreach's
in :mod:`services.outreach.settings`) to the shared ones here.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.settings import CommonSettings

MIN_REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


class InsecureSettings(RuntimeError):
    """A production deployment would start with an insecure setting."""


def kafka_problems(common: CommonSettings) -> list[str]:
    """How the Kafka clients' settings would leave the broker open, if they would."""
    protocol = common.kafka_security_protocol
    if protocol == "SASL_PLAINTEXT" and common.kafka_sasl_mechanism == "PLAIN":
        return [
            "TEND_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with TEND_KAFKA_SASL_MECHANISM=PLAIN "
            "sends the Kafka password in clear text to anyone on the network: use SASL_SSL "
            "(set TEND_KAFKA_SSL_CAFILE to the brokers' CA)"
        ]
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and not common.kafka_allow_plaintext:
        return [
            f"TEND_KAFKA_SECURITY_PROTOCOL={protocol} is Kafka without TLS: whoever reaches "
            "the network between Tend and the brokers reads every profile and can write "
            "events; use SASL_SSL (with TEND_KAFKA_SASL_USERNAME, TEND_KAFKA_SASL_PASSWORD "
            "and TEND_KAFKA_SSL_CAFILE), or set TEND_KAFKA_ALLOW_PLAINTEXT=true if a private "
            "network alone protects the brokers"
        ]
    return []


def topic_problems(common: CommonSettings) -> list[str]:
    """How the topics ``tend topics`` would create could lose acknowledged events."""
    if common.allow_single_broker:
        return []
    found = []
    if common.topic_replication_factor < MIN_REPLICATION_FACTOR:
        found.append(
            f"TEND_TOPIC_REPLICATION_FACTOR={common.topic_replication_factor} keeps fewer than "
            f"{MIN_REPLICATION_FACTOR} copies of every event: losing a broker loses events "
            f"already acknowledged; set it to {MIN_REPLICATION_FACTOR} (or "
            "TEND_ALLOW_SINGLE_BROKER=true on a cluster of one broker)"
        )
    if common.min_insync_replicas < MIN_INSYNC_REPLICAS:
        found.append(
            f"TEND_TOPIC_MIN_INSYNC_REPLICAS={common.min_insync_replicas}: an event is "
            "acknowledged once a single broker has it, and lost with that broker; set it to "
            f"{MIN_INSYNC_REPLICAS} (or TEND_ALLOW_SINGLE_BROKER=true on a cluster of one broker)"
        )
    return found


def refuse_insecure(environment: str, problems: Iterable[str]) -> None:
    """Raise :class:`InsecureSettings` listing ``problems`` when ``environment`` is
    production and there are any."""
    found = list(problems)
    if environment == "production" and found:
        raise InsecureSettings(
            "refusing to start with insecure settings in production (TEND_ENVIRONMENT="
            "production):\n" + "\n".join(f"- {p}" for p in found)
        )
