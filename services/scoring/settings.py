"""Scoring's own knobs, read once from ``TEND_SCORING_*`` environment variables.

Only thresholds of the scoring model live here; infrastructure addresses are in
:mod:`shared.settings`. Windows that are part of a field's name on the card (``spend_30d``,
``visits.last_30d``, ``expected_orders_90d``, ``clv_365d``) are deliberately not knobs: changing
them would make the field lie about what it holds.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MembershipTier(BaseModel):
    """One membership tier the shop configures: reached by a customer whose net spend over
    the last 365 days reaches ``min_spend_365d``, or whose live orders over them reach
    ``min_orders_365d`` (either suffices; at least one is set)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
    min_spend_365d: Decimal | None = Field(None, ge=0)
    min_orders_365d: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _a_threshold(self) -> MembershipTier:
        if self.min_spend_365d is None and self.min_orders_365d is None:
            raise ValueError(f"tier {self.name!r}: set min_spend_365d, min_orders_365d or both")
        return self


class ScoringSettings(BaseSettings):
    """Thresholds of the lifecycle, tier and visit rules (defaults follow the product issue)."""

    model_config = SettingsConfigDict(env_prefix="TEND_SCORING_", extra="ignore", frozen=True)

    # The service process.
    host: str = "127.0.0.1"
    port: int = 8002
    consumer_group: str = "tend-scoring"
    batch_max_records: int = Field(2000, ge=1)
    # Hand the next batch's customers that the batch before it does not touch to the handler
    # while that batch is still being written (shared.consumer): the process computes while
    # the database writes. Off, each batch waits for the one before it to be durable.
    batch_overlap: bool = True
    # Customers whose facts the consumer keeps in memory after writing them, so the next
    # batch reads only a version number back for them (~7 KB each for three orders, ~15 KB
    # for ten, the purchase ledger included; 0 turns it off), and the memory they may take in
    # MiB, estimated from the facts each holds (the least recently written go first). The
    # default holds the e2e bench's 10,000 customers of a few orders each (~65 MiB).
    state_cache_customers: int = Field(25_000, ge=0)
    state_cache_mb: int = Field(96, ge=0)
    # How often the sweep looks for customers whose stage is due to move with time, and how
    # many it takes per round.
    sweep_interval_seconds: float = Field(30.0, gt=0)
    sweep_batch: int = Field(1000, ge=1)
    # How often the population (RFM breakpoints, tiers, BG/NBD and Gamma-Gamma) is refit.
    refit_interval_seconds: float = Field(3600.0, gt=0)
    outbox_batch: int = Field(2000, ge=1)
    outbox_idle_seconds: float = Field(0.05, gt=0)

    # Lifecycle. "Rhythm" is the customer's median gap between purchase days, or the
    # population median gap while they have fewer than ``own_rhythm_min_purchases`` purchase days.
    new_days: int = Field(30, ge=1, description="a first-time buyer stays `new` at least this long")
    decline_rhythm_multiple: float = Field(2.0, gt=0)
    decline_min_days: int = Field(
        30,
        ge=1,
        description="nobody is declining before this many silent days, whatever the rhythm",
    )
    churn_rhythm_multiple: float = Field(4.0, gt=0)
    churn_min_days: int = Field(
        90, ge=1, description="nobody is churned before this many silent days, whatever the rhythm"
    )
    churn_max_days: int = Field(365, ge=1, description="silent longer than this is churned")
    # A declining spell is what the win-back and check-in rules act on: churn never follows
    # it sooner than this, and a spell that ``churn_max_days`` would cut shorter is skipped
    # (straight to churned).
    churn_after_decline_min_days: int = Field(
        30, ge=1, description="a customer is declining at least this long before churned"
    )
    reactivated_days: int = Field(30, ge=1)
    mature_min_purchases: int = Field(4, ge=2)
    # "Buying on rhythm": the latest gap is at most this many rhythms long.
    mature_gap_multiple: float = Field(1.5, gt=0)
    own_rhythm_min_purchases: int = Field(3, ge=2)
    default_median_gap_days: float = Field(
        30.0, gt=0, description="population median gap until one is fitted"
    )

    # Visits: ids and times are kept this long behind the latest visit, so late visits within
    # it are de-duplicated by the state itself; older ones are only counted (and de-duplicated
    # by the inbox's unique event_id). Must cover the 30-day window.
    visit_retention_days: int = Field(37, ge=30)

    # Value tiers (80/20) and the composite they rank on.
    tier_key_share: float = Field(0.2, gt=0, lt=1)
    tier_low_share: float = Field(0.2, gt=0, lt=1)
    tier_window_days: int = Field(
        365, ge=1, description="spend and volume window of the composite, up to the last purchase"
    )
    composite_spend_weight: float = Field(1.0, ge=0)
    composite_orders_weight: float = Field(1.0, ge=0)
    composite_rhythm_weight: float = Field(0.5, ge=0)
    composite_outstanding_weight: float = Field(0.5, ge=0)
    # Below this P(alive) a customer's potential is low whatever their predicted CLV.
    potential_min_p_alive: float = Field(0.05, ge=0, le=1)

    # Complaints: how long a complaint may stay open before it is overdue, by the tier the
    # customer had when it was raised (a customer without a tier is held to regular's).
    complaint_target_hours_key: float = Field(4.0, gt=0)
    complaint_target_hours_regular: float = Field(24.0, gt=0)
    complaint_target_hours_low: float = Field(72.0, gt=0)

    # Membership tiers, lowest first, as JSON: ``[{"name": "silver", "min_spend_365d": "500"},
    # {"name": "gold", "min_spend_365d": "2000", "min_orders_365d": 12}]``. Empty: scoring
    # computes no membership and ``member_tier`` is only what the backend sets.
    membership_tiers: tuple[MembershipTier, ...] = ()

    def complaint_target_hours(self, tier: str | None) -> float:
        """The response-time target of a complaint held to ``tier`` (None: regular's)."""
        if tier == "key":
            return self.complaint_target_hours_key
        if tier == "low":
            return self.complaint_target_hours_low
        return self.complaint_target_hours_regular

    @model_validator(mode="after")
    def _coherent(self) -> ScoringSettings:
        names = [t.name for t in self.membership_tiers]
        if len(set(names)) != len(names):
            raise ValueError("membership_tiers: each tier needs a name of its own")
        if self.tier_key_share + self.tier_low_share >= 1:
            raise ValueError("tier_key_share + tier_low_share must be below 1")
        if self.churn_min_days > self.churn_max_days:
            raise ValueError("churn_min_days must be at most churn_max_days")
        if self.churn_rhythm_multiple < self.decline_rhythm_multiple:
            raise ValueError("churn_rhythm_multiple must be at least decline_rhythm_multiple")
        if self.decline_min_days + self.churn_after_decline_min_days > self.churn_max_days:
            raise ValueError(
                "decline_min_days + churn_after_decline_min_days must be at most churn_max_days "
                "(or nobody would ever be declining)"
            )
        return self


@lru_cache(maxsize=1)
def scoring_settings() -> ScoringSettings:
    """The process-wide settings, built on first use (never at import time)."""
    return ScoringSettings()
