"""Signed unsubscribe links: a token names its customer and cannot be forged or edited."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import pytest

from services.outreach.core.unsubscribe import token_for, unsubscribe_url, verify

SECRET = "a-long-random-unsubscribe-secret"


@pytest.mark.parametrize("customer_id", ["c1", "cust-42/ü", "x" * 128, "a.b.c"])
def test_round_trip(customer_id: str) -> None:
    token = token_for(customer_id, SECRET)
    assert verify(token, SECRET) == customer_id
    assert token == token_for(customer_id, SECRET)  # deterministic: one link per customer


def test_token_is_url_safe() -> None:
    token = token_for("cust-42/ü?&=", SECRET)
    assert all(c.isalnum() or c in "-_." for c in token)


def test_other_secret_refused() -> None:
    assert verify(token_for("c1", SECRET), "another-secret") is None


def test_tampered_mac_refused() -> None:
    encoded_id, mac = token_for("c1", SECRET).split(".")
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    assert verify(f"{encoded_id}.{flipped}", SECRET) is None


def test_swapped_customer_refused() -> None:
    # Someone edits the id part to unsubscribe somebody else with their own link's MAC.
    _, mac = token_for("c1", SECRET).split(".")
    other = base64.urlsafe_b64encode(b"c2").rstrip(b"=").decode()
    assert verify(f"{other}.{mac}", SECRET) is None


@pytest.mark.parametrize(
    "token", ["", ".", "abc", "abc.", ".abc", "YzE.not*base64", "Yzé.abc", "a.b.c.d"]
)
def test_garbage_refused(token: str) -> None:
    assert verify(token, SECRET) is None


def test_non_canonical_encoding_refused() -> None:
    encoded_id, mac = token_for("c1", SECRET).split(".")
    assert verify(f"{encoded_id}==.{mac}", SECRET) is None
    assert verify(f"{encoded_id}.{mac}=", SECRET) is None


def test_url() -> None:
    url = unsubscribe_url("https://tend.example/", "c1", SECRET)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "tend.example")
    assert parts.path.startswith("/v1/unsubscribe/")
    assert verify(parts.path.rsplit("/", 1)[1], SECRET) == "c1"
