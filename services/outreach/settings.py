"""Outreach's own settings (``TEND_OUTREACH_*``); infrastructure comes from CommonSettings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The unsubscribe secret when none is set: fine on a laptop, refused in production.
DEV_UNSUBSCRIBE_SECRET = "dev-unsubscribe-secret-change-me"
# Shorter secrets are refused in production: 32 random characters resist guessing.
MIN_SECRET_CHARS = 32

# The law asks an unsubscribe link to work for 30 days after a message is sent; twice that
# leaves room for a slow reader. A lower ``unsubscribe_link_days`` is refused at start-up.
MIN_LINK_DAYS = 60


class OutreachSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEND_OUTREACH_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8003
    consumer_group: str = "tend-outreach"
    batch_max_records: int = Field(1000, ge=1)
    # Where links in messages point (one-click unsubscribe).
    public_base_url: str = "http://127.0.0.1:8003"
    # Signs unsubscribe links; set a long random value in production.
    unsubscribe_secret: SecretStr = SecretStr(DEV_UNSUBSCRIBE_SECRET)
    # How long an unsubscribe (or re-subscribe) link works after it was minted.
    unsubscribe_link_days: int = MIN_LINK_DAYS
    # Webhook endpoints and SMTP servers named by a channel on loopback or private networks
    # are refused unless this is set (local development and tests set it).
    allow_private_webhooks: bool = False
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=60)
    delivery_max_attempts: int = Field(8, ge=1, le=50)
    retry_base_seconds: float = Field(1.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    delivery_batch: int = Field(200, ge=1)
    delivery_idle_seconds: float = Field(0.2, gt=0)
    # The most sends per second to any one channel whose config names no `rate_per_second`
    # of its own; unset: no limit but the adaptive concurrency (services.outreach.core.pacing).
    delivery_rate_per_second: float | None = Field(None, gt=0, le=100_000)
    # The most sends in flight at once to one receiver (its adaptive concurrency's ceiling,
    # services.outreach.core.pacing), and its kept-alive connections.
    delivery_max_in_flight: int = Field(128, ge=1, le=256)
    # Offer HTTP/2 to https receivers (TLS's ALPN): one that speaks it gets every send over
    # one connection; the others, and plain http, stay on HTTP/1.1 keep-alive.
    delivery_http2: bool = True
    # The longest a receiver's Retry-After (on a 429 or 503) keeps its channel quiet and its
    # action waiting; such an answer is not counted towards delivery_max_attempts.
    delivery_retry_after_max_seconds: float = Field(600.0, gt=0, le=86_400)
    # A receiver that has answered an action busy (429 or 503 with Retry-After) for this many
    # hours, every time it was asked, has that action failed (reason `throttled`) at its next
    # busy answer: throttling waits, but not for ever.
    delivery_throttled_give_up_hours: float = Field(24.0, gt=0, le=720)
    # The scheduler: how often it looks for schedule rules that are due, and how many at once.
    scheduler_interval_seconds: float = Field(30.0, gt=0)
    scheduler_batch: int = Field(2000, ge=1)
    # Heavy reads (rule previews over the card replica, backtests over the change stream)
    # stop after this many seconds or rows (customers, changes), whichever comes first, but
    # never before the last 30 days or 200,000 rows (whichever is fewer).
    read_time_budget_seconds: float = Field(10.0, gt=0, le=600)
    read_row_budget: int = Field(500_000, ge=1)
    # The most touches (messages sent and control rows) one `GET /v1/outcomes` attributes;
    # a longer period is refused (422 naming `since`). About 3 s of work for 200,000.
    outcomes_touch_limit: int = Field(200_000, ge=1, le=5_000_000)
    # Backtests running at once (others wait their turn): each holds some state per customer
    # of its window (~90 MB for 200,000 changes of 26,000 customers).
    backtests_at_once: int = Field(1, ge=1, le=16)
    # A rule that raises while matching or scheduling is skipped for that change; after this
    # many failures since it was last saved, outreach disables it.
    rule_failure_limit: int = Field(5, ge=1)
    # A `days_after` instant that passed at most this many days before a customer's card
    # arrived still fires, once (dated schedules catch up within the customer's local day).
    days_after_grace_days: int = Field(2, ge=0, le=30)
    # The share of all customers (a stable hash of the customer id) in the global control
    # group: they receive none of the policy's `global_control_kinds` (greetings, recalls,
    # win-backs, announcements), recorded with status `control`, so the whole program can be
    # measured against them. Transactional messages, follow-ups and team alerts still go.
    global_control_percent: float = Field(0, ge=0, le=20)
    # A promotion held for an open complaint is dropped after this many days (hold_expired).
    hold_max_days: int = Field(30, ge=1, le=365)
    # The longest one template may take to render (at save, on the sample card, and when an
    # action is decided); the other limits are fixed (services.outreach.core.template_limits).
    template_render_ms: float = Field(50.0, gt=0, le=10_000)
    # Default SMTP server for email channels that do not name one (make run starts one here).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    email_from: str = "Tend <hello@tend.localhost>"
    # The only ports an email channel may name (its server, or the settings' port beside a
    # host it names): SMTP's own, so that a channel cannot probe other services.
    smtp_ports: frozenset[int] = frozenset({25, 465, 587, 2525})

    def insecure_defaults(self) -> list[str]:
        """What production refuses in these settings (see :mod:`shared.production`)."""
        found = []
        secret = self.unsubscribe_secret.get_secret_value()
        if secret == DEV_UNSUBSCRIBE_SECRET:
            found.append(
                "TEND_OUTREACH_UNSUBSCRIBE_SECRET is the development default, which anyone can "
                "read in Tend's source and use to forge links that unsubscribe every customer: "
                "set a long random value (e.g. `openssl rand -hex 32`)"
            )
        elif len(secret) < MIN_SECRET_CHARS:
            found.append(
                f"TEND_OUTREACH_UNSUBSCRIBE_SECRET has {len(secret)} characters, fewer than "
                f"{MIN_SECRET_CHARS}: a short secret can be guessed and unsubscribe links "
                "forged; set a long random value (e.g. `openssl rand -hex 32`)"
            )
        if not self.public_base_url.lower().startswith("https://"):
            found.append(
                f"TEND_OUTREACH_PUBLIC_BASE_URL={self.public_base_url} is not https: the "
                "unsubscribe links in every message would travel in clear text (and a local "
                "address works for nobody); set the https address customers reach outreach at"
            )
        return found

    @field_validator("unsubscribe_link_days")
    @classmethod
    def _link_days(cls, days: int) -> int:
        if days < MIN_LINK_DAYS:
            raise ValueError(
                f"must be at least {MIN_LINK_DAYS}: a customer must be able to unsubscribe "
                "from a message for weeks after it was sent"
            )
        return days


@lru_cache(maxsize=1)
def outreach_settings() -> OutreachSettings:
    return OutreachSettings()
