"""Ingest's own settings (``TEND_INGEST_*``); infrastructure comes from CommonSettings."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from babel.numbers import get_currency_precision
from pydantic import AwareDatetime, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import CommonSettings

# Which verified identifiers merge two customers automatically (TEND_INGEST_AUTO_MERGE).
AutoMerge = Literal["off", "email", "phone", "both"]
_AUTO_KINDS: dict[str, tuple[str, ...]] = {
    "off": (),
    "email": ("email",),
    "phone": ("phone",),
    "both": ("email", "phone"),
}


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEND_INGEST_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8001
    base_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    # How far in the future an occurred_at may lie (client clocks drift), and the earliest
    # instant one may name (a date of 1900 is a bug upstream, not a customer's history).
    max_future_seconds: int = Field(300, ge=0, le=86_400)
    earliest_occurred_at: AwareDatetime = datetime(1970, 1, 1, tzinfo=UTC)
    # Decimals an amount may carry: the base currency's minor unit (ISO 4217, e.g. 2 for USD,
    # 0 for JPY) unless set.
    currency_decimals: int | None = Field(None, ge=0, le=4)

    def amount_decimals(self) -> int:
        """How many decimals an amount in the base currency may carry."""
        if self.currency_decimals is not None:
            return self.currency_decimals
        return min(int(get_currency_precision(self.base_currency)), 4)

    max_batch: int = Field(1000, ge=1, le=10_000)
    # The broker must acknowledge within this; past it the client gets 503 + Retry-After.
    publish_timeout_seconds: float = Field(4.0, gt=0, le=30)
    retry_after_seconds: int = Field(5, ge=1)
    source: str = "api"
    # Where the export gathers what scoring and outreach hold on a customer.
    scoring_url: str = "http://127.0.0.1:8002"
    outreach_url: str = "http://127.0.0.1:8003"
    peer_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # When an event carries a verified identifier of these kinds that already belongs to
    # another customer, the two are merged before the event is published (the customer seen
    # first survives). Off by default: a merge is only undone by hand.
    auto_merge: AutoMerge = "off"

    def auto_merge_kinds(self) -> tuple[str, ...]:
        """The identifier kinds whose verified match merges customers."""
        return _AUTO_KINDS[self.auto_merge]


@lru_cache(maxsize=1)
def ingest_settings() -> IngestSettings:
    return IngestSettings()


@lru_cache(maxsize=1)
def phone_region() -> str:
    """Where a phone number without a country code is read (``TEND_PHONE_REGION``)."""
    return CommonSettings().phone_region
