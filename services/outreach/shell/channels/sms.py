"""SMS delivery through a provider's HTTP API.

A message is a JSON POST to the channel's URL, through the same guarded, pinned connection
and Standard Webhooks signature as a webhook (:func:`webhook.post_signed`); ``webhook-id`` is
the action id on every retry, so the provider (or the shop's relay) drops a repeat. The body
names the recipient, the sender and the text under the field names the channel's config
gives, so most providers' JSON send APIs take it as it is.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from services.outreach.core.channels import Attempt, OutboundAction, SmsConfig, Verdict
from services.outreach.shell.channels.pinned import PinnedPool
from services.outreach.shell.channels.webhook import post_signed

# Ten concatenated parts of a GSM-7 message: longer is a template mistake, not an SMS.
MAX_TEXT = 1530


def text_of(action: OutboundAction) -> str:
    """The SMS text: the rendered body (the subject is an email's), trimmed."""
    return (action.body or action.subject or "").strip()


def payload(action: OutboundAction, config: SmsConfig, recipient: str) -> bytes:
    body: dict[str, str] = {
        config.to_field: recipient,
        config.text_field: text_of(action),
        "action_id": action.id,
        "customer_id": action.customer_id,
    }
    if config.sender is not None:
        body[config.from_field] = config.sender
    return orjson.dumps(body)


async def deliver(
    pool: PinnedPool,
    config: SmsConfig,
    secret: str,
    action: OutboundAction,
    recipient: str,
    *,
    at: datetime,
    allow_private: bool,
    require_https: bool,
    timeout: float,
) -> Attempt:
    """Send ``action`` as an SMS to ``recipient`` (E.164) through the provider at the
    channel's URL (the pool's); a verdict, never an exception."""
    text = text_of(action)
    if not text:
        return Attempt(Verdict.FAILED, "bad_message", "the rendered message is empty")
    if len(text) > MAX_TEXT:
        return Attempt(
            Verdict.FAILED,
            "bad_message",
            f"the message has {len(text)} characters (at most {MAX_TEXT})",
        )
    return await post_signed(
        pool,
        secret,
        action.id,
        payload(action, config, recipient),
        at=at,
        allow_private=allow_private,
        require_https=require_https,
        timeout=timeout,
    )
