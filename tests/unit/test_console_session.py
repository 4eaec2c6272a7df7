"""The console's session cookie: sealed (nobody holding it reads the key in it), tamper-proof,
and over after its lifetime."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from services.console.session import Sessions, same_token
from services.console.settings import ConsoleSettings

KEY = "tend_s3cret-key-value-that-must-not-show"


def sessions(minutes: int = 30, secret: str = "a-session-secret-of-the-test") -> Sessions:
    return Sessions(ConsoleSettings(session_secret=SecretStr(secret), session_minutes=minutes))


def test_the_cookie_hides_the_key_and_opens_to_the_same_session() -> None:
    store = sessions()
    session = store.new(KEY, "dev-marketing", frozenset({"ops:read", "marketing:write"}))
    sealed = store.seal(session)
    assert KEY not in sealed
    assert "marketing" not in sealed
    opened = store.open(sealed)
    assert opened == session
    assert opened is not None and opened.can("marketing:write")


def test_a_changed_or_foreign_cookie_opens_to_nothing() -> None:
    store = sessions()
    sealed = store.seal(store.new(KEY, "k", frozenset({"ops:read"})))
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    assert store.open(flipped) is None
    assert store.open("not a token") is None
    assert store.open("") is None
    # Sealed by a console with another secret.
    assert sessions(secret="another-secret-entirely").open(sealed) is None


def test_a_session_ends_after_its_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    store = sessions(minutes=1)
    sealed = store.seal(store.new(KEY, "k", frozenset({"ops:read"})))
    assert store.open(sealed) is not None
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert store.open(sealed) is None


@pytest.mark.parametrize("given", [None, "", "nope", 3])
def test_a_missing_or_wrong_csrf_token_does_not_match(given: object) -> None:
    assert not same_token("the-token", given)
    assert not same_token(None, "the-token")
    assert same_token("the-token", "the-token")


def test_a_signed_out_session_is_refused_even_from_a_copy_of_its_cookie() -> None:
    store = sessions()
    kept = store.new(KEY, "k", frozenset({"ops:read"}))
    other = store.new(KEY, "k", frozenset({"ops:read"}))
    sealed, other_sealed = store.seal(kept), store.seal(other)
    store.end(kept)
    assert store.open(sealed) is None
    assert store.open(other_sealed) == other  # another sign-in of the same key stays
