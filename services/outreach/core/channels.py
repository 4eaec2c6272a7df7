"""Outreach's delivery channels: what a channel is configured with, the message it carries,
and the verdict of one attempt to send it.

Each sender (:mod:`services.outreach.shell.channels`: webhook, email, sms) turns one attempt into an
:class:`Attempt`; the delivery worker (:mod:`services.outreach.shell.delivery`) turns verdicts
into ledger states. A sender never raises for a delivery problem: a refusal, a timeout or a
dropped connection is a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.outreach.core.unsubscribe import with_link

ChannelKind = Literal["webhook", "email", "sms"]
# A receiver that answers one of these with a Retry-After is busy, not broken: it is asked
# again only when it said, and the answer is not counted as a failed attempt.
THROTTLE_STATUSES = frozenset({429, 503})
# The kinds whose receiver is an HTTP endpoint: a URL guarded like a webhook's, a signing secret.
HTTP_KINDS = frozenset({"webhook", "sms"})


class Verdict(StrEnum):
    """How one attempt ended."""

    SENT = "sent"
    # Worth trying again later: a timeout before anything was handed over, a 5xx, a 429.
    RETRY = "retry"
    # Never going to work as configured: a 4xx, a refused URL, a rejected address.
    FAILED = "failed"
    # The endpoint says it is gone for good (HTTP 410): fail the action, disable the channel.
    GONE = "gone"
    # The receiver may or may not have the message (a connection lost after the email's
    # DATA was sent): never re-sent automatically, since that could send it twice.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Attempt:
    """The verdict of one attempt. ``reason`` is a short code for the ledger's ``reason``
    column; ``error`` is the detail an operator reads in ``last_error``."""

    verdict: Verdict
    reason: str | None = None
    error: str | None = None
    # A receiver's Retry-After, in seconds, when it gave one with a retryable answer.
    retry_after: float | None = None
    # The receiver's HTTP status, when it answered one (webhooks).
    http_status: int | None = None
    # When the attempt began and how long it took: the delivery worker's, not the sender's.
    at: datetime | None = None
    duration_ms: int | None = None

    @property
    def throttled(self) -> bool:
        """The receiver asked to be called again later (a 429 or 503 with Retry-After)."""
        return (
            self.verdict is Verdict.RETRY
            and self.retry_after is not None
            and self.http_status in THROTTLE_STATUSES
        )


@dataclass(frozen=True, slots=True)
class OutboundAction:
    """The decided, rendered action a channel carries."""

    id: str
    rule_id: str
    customer_id: str
    occurrence: str
    kind: str
    subject: str | None
    body: str | None
    offer: dict[str, Any] | None
    decided_at: datetime
    audience: str = "customer"  # or "team": an alert to the shop's people

    @classmethod
    def from_row(cls, row: Any, link: str | None = None) -> OutboundAction:
        """From a row of ``outreach.actions`` (anything with its column attributes); with
        ``link``, the minted unsubscribe link in place of its placeholder."""
        subject, body = row.subject, row.body
        if link is not None:
            subject, body = with_link(subject, link), with_link(body, link)
        return cls(
            id=row.id,
            rule_id=row.rule_id,
            customer_id=row.customer_id,
            occurrence=row.occurrence,
            kind=row.kind,
            subject=subject,
            body=body,
            offer=row.offer,
            decided_at=row.decided_at,
            audience=getattr(row, "audience", "customer"),
        )


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WebhookConfig(_Config):
    """``config`` of a webhook channel."""

    url: str = Field(min_length=1, max_length=2000, description="where actions are POSTed")
    rate_per_second: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="the most sends per second the receiver takes (its documented limit); "
        "unset: the setting TEND_OUTREACH_DELIVERY_RATE_PER_SECOND, if any",
    )


class EmailConfig(_Config):
    """``config`` of an email channel; anything left out comes from outreach's settings
    (``TEND_OUTREACH_SMTP_HOST``, ``_SMTP_PORT``, ``_EMAIL_FROM``)."""

    smtp_host: str | None = Field(None, min_length=1, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    sender: str | None = Field(
        None,
        alias="from",
        min_length=3,
        max_length=320,
        description='the From header, e.g. "Shop <hello@shop.example>"',
    )


_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class SmsConfig(_Config):
    """``config`` of an SMS channel: a provider's HTTP API (or the shop's relay to it). Each
    message is a JSON POST to ``url``, signed like a webhook (Standard Webhooks headers with
    the channel's secret; ``webhook-id`` is the action id, so a provider that deduplicates
    by it never sends twice), whose body holds the recipient in E.164, the sender and the
    text under the field names the provider expects, and ``action_id`` and ``customer_id``."""

    url: str = Field(min_length=1, max_length=2000, description="the provider's send endpoint")
    rate_per_second: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="the most messages per second the provider takes (its documented "
        "limit); unset: the setting TEND_OUTREACH_DELIVERY_RATE_PER_SECOND, if any",
    )
    sender: str | None = Field(
        None,
        alias="from",
        min_length=1,
        max_length=20,
        description="the sender number or name, as the provider knows it",
    )
    to_field: str = Field("to", pattern=_FIELD_NAME, description="the recipient's field name")
    text_field: str = Field("text", pattern=_FIELD_NAME, description="the message's field name")
    from_field: str = Field("from", pattern=_FIELD_NAME, description="the sender's field name")
