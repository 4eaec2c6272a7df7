"""Signed links: a token names its customer and its day, and cannot be forged, edited,
re-dated or used for another purpose; it expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from services.outreach.core.unsubscribe import (
    LINK_PLACEHOLDER,
    UNDATED_ISSUED,
    Link,
    Purpose,
    token_for,
    unsubscribe_url,
    verify,
    with_link,
)

SECRET = "a-long-random-unsubscribe-secret"
AT = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize("customer_id", ["c1", "cust-42/ü", "x" * 128, "a.b.c"])
def test_round_trip(customer_id: str) -> None:
    token = token_for(customer_id, SECRET, AT)
    assert verify(token, SECRET) == Link(customer_id, AT)
    assert token == token_for(customer_id, SECRET, AT)  # deterministic


def test_token_is_url_safe() -> None:
    token = token_for("cust-42/ü?&=", SECRET, AT)
    assert all(c.isalnum() or c in "-_." for c in token)


def test_other_secret_refused() -> None:
    assert verify(token_for("c1", SECRET, AT), "another-secret") is None


def test_other_purpose_refused() -> None:
    # An unsubscribe link cannot be used to lift an unsubscribe, nor the other way round.
    assert verify(token_for("c1", SECRET, AT), SECRET, Purpose.RESUBSCRIBE) is None
    back = token_for("c1", SECRET, AT, Purpose.RESUBSCRIBE)
    assert verify(back, SECRET) is None
    assert verify(back, SECRET, Purpose.RESUBSCRIBE) == Link("c1", AT)


def test_tampered_mac_refused() -> None:
    encoded_id, seconds, mac = token_for("c1", SECRET, AT).split(".")
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    assert verify(f"{encoded_id}.{seconds}.{flipped}", SECRET) is None


def test_redated_refused() -> None:
    encoded_id, seconds, mac = token_for("c1", SECRET, AT).split(".")
    assert verify(f"{encoded_id}.{int(seconds) + 86_400}.{mac}", SECRET) is None
    assert verify(f"{encoded_id}.0{seconds}.{mac}", SECRET) is None


def test_swapped_customer_refused() -> None:
    # Someone edits the id part to unsubscribe somebody else with their own link's MAC.
    _, seconds, mac = token_for("c1", SECRET, AT).split(".")
    other = base64.urlsafe_b64encode(b"c2").rstrip(b"=").decode()
    assert verify(f"{other}.{seconds}.{mac}", SECRET) is None


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "abc", "abc.", ".abc", "YzE.not*base64", "Yzé.abc", "a.b.c.d", "YzE.-1.abc"],
)
def test_garbage_refused(token: str) -> None:
    assert verify(token, SECRET) is None


def test_non_canonical_encoding_refused() -> None:
    encoded_id, seconds, mac = token_for("c1", SECRET, AT).split(".")
    assert verify(f"{encoded_id}==.{seconds}.{mac}", SECRET) is None
    assert verify(f"{encoded_id}.{seconds}.{mac}=", SECRET) is None


def test_expiry() -> None:
    link = verify(token_for("c1", SECRET, AT), SECRET)
    assert link is not None
    assert not link.expired(AT + timedelta(days=60), 60)
    assert link.expired(AT + timedelta(days=60, seconds=1), 60)
    assert link.expires(60) == AT + timedelta(days=60)


def test_an_undated_link_counts_as_made_when_dated_links_came_in() -> None:
    raw = b"c1"
    mac = hmac.new(SECRET.encode(), b"tend.unsubscribe.v1\x00" + raw, hashlib.sha256).digest()
    b64 = base64.urlsafe_b64encode
    old = f"{b64(raw).rstrip(b'=').decode()}.{b64(mac).rstrip(b'=').decode()}"
    assert verify(old, SECRET) == Link("c1", UNDATED_ISSUED)
    assert verify(old, SECRET, Purpose.RESUBSCRIBE) is None


def test_url() -> None:
    url = unsubscribe_url("https://tend.example/", "c1", SECRET, AT)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "tend.example")
    assert parts.path.startswith("/v1/unsubscribe/")
    assert verify(parts.path.rsplit("/", 1)[1], SECRET) == Link("c1", AT)


def test_the_placeholder_becomes_the_link() -> None:
    assert with_link(f"Stop: {LINK_PLACEHOLDER}", "https://x/1") == "Stop: https://x/1"
    assert with_link(None, "https://x/1") is None
