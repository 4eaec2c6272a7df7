"""Settings shared by every service, read once from the environment.

:class:`CommonSettings` holds what every process needs (``TEND_`` prefix); each service keeps
its own knobs in a settings class of its own beside it, with its own prefix
(``TEND_SCORING_``, ``TEND_OUTREACH_``, ``TEND_INGEST_``). The infrastructure addresses
(``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``) are unprefixed so one export serves the whole
stack.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The default of ``TEND_EVENT_ID_RETENTION_DAYS``.
EVENT_ID_RETENTION_DAYS = 400


def inbox_retention(event_id_retention_days: int = EVENT_ID_RETENTION_DAYS) -> timedelta:
    """How long a consumer's inbox remembers an event id: a day less than ingest remembers
    its idempotency key, so that an id ingest takes for new (and publishes) is new to every
    consumer too, whatever the prune schedules and clocks."""
    return timedelta(days=event_id_retention_days - 1)


class CommonSettings(BaseSettings):
    """What every Tend process needs to reach its infrastructure."""

    model_config = SettingsConfigDict(env_prefix="TEND_", extra="ignore", frozen=True)

    environment: Literal["development", "production", "test"] = "development"
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "TEND_KAFKA_BOOTSTRAP_SERVERS"),
    )
    database_url: str = Field(
        "postgresql+asyncpg://tend:tend@127.0.0.1:5432/tend",
        validation_alias=AliasChoices("DATABASE_URL", "TEND_DATABASE_URL"),
    )
    # How every Kafka client (producers, consumers, admin) reaches the broker: PLAINTEXT,
    # SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS and a user name and password). See the
    # README's "Running on a real cluster" and shared.kafka_security.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    # The CA that signed the brokers' certificates (PEM); unset: the system's CAs. A client
    # certificate and key (PEM) only for a broker that asks clients for one (mutual TLS).
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # Production refuses a Kafka without TLS; this lets it start on one that a private
    # network alone protects (credentials in clear text, SASL_PLAINTEXT with PLAIN, are
    # refused whatever this says).
    kafka_allow_plaintext: bool = False
    # Prepended to every topic name; lets tests and side-by-side deployments share a broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(12, ge=1)
    topic_replication_factor: int = Field(1, ge=1)
    # `min.insync.replicas` of every topic `tend topics` manages: how many replicas must have
    # a record before acks=all acknowledges it. Unset: 2, or 1 when the replication factor is 1.
    topic_min_insync_replicas: int | None = Field(None, ge=1)
    # Production refuses topics with fewer than 3 replicas or min.insync.replicas below 2;
    # this lets `tend topics` run against a one-broker cluster all the same.
    allow_single_broker: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    db_pool_size: int = Field(10, ge=1)
    # How long a verified API key is trusted before the database is asked again; a revoked
    # key stops working within this many seconds.
    api_key_cache_seconds: float = Field(5.0, ge=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # The request budget of every API key (its own, set at creation, wins), shared by all
    # workers and instances: a sustained rate and the burst above it. 0 turns the limit off.
    # A batch POST of up to 500 events is one request.
    rate_limit_per_second: float = Field(200.0, ge=0)
    rate_limit_burst: int = Field(400, ge=1)
    # How long event ids are remembered: ingest's idempotency keys (a reused id answers 200
    # or 409) and the consumers' inboxes (:func:`inbox_retention`), all pruned hourly.
    event_id_retention_days: int = Field(EVENT_ID_RETENTION_DAYS, ge=30)
    # The country a phone number without a country code is read in (ISO 3166 alpha-2), by
    # ingest's identity map and scoring's search alike.
    phone_region: str = Field("US", pattern="^[A-Za-z]{2}$")
    # A background task (consumer, relay, delivery, periodic job) that dies starts again after
    # this many seconds, doubling at each death in a row up to 60 (shared.supervisor).
    task_restart_seconds: float = Field(1.0, gt=0)
    # How often the gauges of consumer lag and of the outbox and delivery backlogs are read.
    signals_interval_seconds: float = Field(15.0, gt=0)

    @property
    def inbox_retention(self) -> timedelta:
        return inbox_retention(self.event_id_retention_days)

    @property
    def min_insync_replicas(self) -> int:
        """What `tend topics` sets as every topic's ``min.insync.replicas``."""
        if self.topic_min_insync_replicas is not None:
            return self.topic_min_insync_replicas
        return 1 if self.topic_replication_factor == 1 else 2

    @model_validator(mode="after")
    def _kafka_security(self) -> CommonSettings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"TEND_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "TEND_KAFKA_SASL_USERNAME and TEND_KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                "TEND_KAFKA_SSL_CERTFILE and TEND_KAFKA_SSL_KEYFILE go together (a client "
                "certificate and its key): set both or neither"
            )
        if self.min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"TEND_TOPIC_MIN_INSYNC_REPLICAS={self.min_insync_replicas} is more than "
                f"TEND_TOPIC_REPLICATION_FACTOR={self.topic_replication_factor}: no write "
                "could ever be acknowledged"
            )
        return self


@lru_cache(maxsize=1)
def common_settings() -> CommonSettings:
    return CommonSettings()
