"""Webhook signatures per Standard Webhooks, checked by the spec's reference package, and
the classification of an endpoint's answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.outreach.core.channels import OutboundAction, Verdict
from services.outreach.shell.channels.webhook import (
    classify,
    generate_secret,
    payload,
    secret_key,
    sign,
    signed_headers,
)

ACTION = OutboundAction(
    id="4b3c4f1e-2f0a-4d7e-9a59-0f6f2c1d9e11",
    rule_id="winback-churned",
    customer_id="c-17",
    occurrence="2025-06-02",
    kind="winback",
    subject="We miss you",
    body="Hello Ada — 15% off, just for you.",
    offer={"code": "BACK15", "description": "15% off"},
    decided_at=datetime(2025, 6, 2, 9, 30, tzinfo=UTC),
)


def test_signature_verifies_with_the_reference_package() -> None:
    secret = generate_secret()
    body = payload(ACTION)
    headers = signed_headers(secret, ACTION.id, datetime.now(UTC), body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_signature_matches_the_reference_signer() -> None:
    secret = generate_secret()
    at = datetime.now(UTC).replace(microsecond=0)
    body = payload(ACTION)
    expected = Webhook(secret).sign(ACTION.id, at, body.decode())
    assert sign(secret, ACTION.id, int(at.timestamp()), body) == expected


def test_tampered_body_or_other_id_fails() -> None:
    secret = generate_secret()
    body = payload(ACTION)
    headers = signed_headers(secret, ACTION.id, datetime.now(UTC), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"BACK15", b"BACK99"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "another"})
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_timestamp_is_the_attempt_time() -> None:
    secret = generate_secret()
    body = payload(ACTION)
    stale = signed_headers(secret, ACTION.id, datetime.now(UTC) - timedelta(minutes=10), body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, stale)


def test_payload_fields() -> None:
    assert json.loads(payload(ACTION)) == {
        "type": "tend.action",
        "action_id": ACTION.id,
        "rule_id": "winback-churned",
        "customer_id": "c-17",
        "kind": "winback",
        "audience": "customer",
        "subject": "We miss you",
        "body": "Hello Ada — 15% off, just for you.",
        "offer": {"code": "BACK15", "description": "15% off"},
        "occurrence": "2025-06-02",
        "decided_at": "2025-06-02T09:30:00+00:00",
    }


def test_generated_secrets() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) == 32
    assert secret != generate_secret()


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("c2VjcmV0", "must start with"),
        ("whsec_not base64!", "base64"),
        ("whsec_c2hvcnQ=", "between 24 and 64"),
    ],
)
def test_bad_secrets(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        secret_key(secret)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SENT),
        (202, Verdict.SENT),
        (204, Verdict.SENT),
        (410, Verdict.GONE),
        (400, Verdict.FAILED),
        (401, Verdict.FAILED),
        (404, Verdict.FAILED),
        (422, Verdict.FAILED),
        (301, Verdict.FAILED),
        (308, Verdict.FAILED),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
    ],
)
def test_classify(status: int, verdict: Verdict) -> None:
    assert classify(status).verdict is verdict


def test_retry_after_is_kept() -> None:
    assert classify(429, "30").retry_after == 30
    at = datetime(2015, 10, 21, 7, 27, 58, tzinfo=UTC)
    assert classify(503, "Wed, 21 Oct 2015 07:28:00 GMT", at=at).retry_after == 2
    assert classify(503, "Wed, 21 Oct 2015 07:20:00 GMT", at=at).retry_after == 0  # past
    assert classify(503, "soon", at=at).retry_after is None
    assert classify(429, "2").throttled and classify(503, "2").throttled
    assert not classify(429).throttled  # no Retry-After: an ordinary failure
    assert not classify(500, "2").throttled
