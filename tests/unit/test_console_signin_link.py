"""The console's one-time sign-in link: it hides the key, works once, expires, and is worth
nothing changed, to another console, or as a session cookie."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from cli.main import main as tend
from services.console.session import LinkRefused, Sessions, SignInLinks
from services.console.settings import ConsoleSettings

KEY = "tend_s3cret-key-value-that-must-not-show"
SECRET = "a-session-secret-of-the-test"


def test_a_link_hides_the_key_and_gives_it_back_once() -> None:
    links = SignInLinks(SECRET)
    token = links.mint(KEY)
    assert KEY not in token
    assert links.take(token).api_key == KEY
    with pytest.raises(LinkRefused, match="used already"):
        links.take(token)
    # Another link of the same key is its own.
    assert links.take(links.mint(KEY)).api_key == KEY


def test_a_link_expires() -> None:
    links = SignInLinks(SECRET)
    minted = time.time()
    token = links.mint(KEY, minutes=15, now=minted)
    with pytest.raises(LinkRefused, match="expired"):
        links.take(token, now=minted + 15 * 60 + 1)
    # Long past the longest life any link may have: Fernet's own timestamp refuses it too.
    with pytest.raises(LinkRefused, match="not valid"):
        links.take(token, now=minted + 61 * 60)
    assert links.take(token, now=minted + 14 * 60).api_key == KEY


def test_no_link_lives_longer_than_an_hour() -> None:
    with pytest.raises(ValueError, match="0 to 60 minutes"):
        SignInLinks(SECRET).mint(KEY, minutes=24 * 60)


def test_a_changed_or_foreign_link_is_refused() -> None:
    links = SignInLinks(SECRET)
    token = links.mint(KEY)
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    for bad in (flipped, "", "not a token", token[:40]):
        with pytest.raises(LinkRefused, match="not valid"):
            links.take(bad)
    with pytest.raises(LinkRefused, match="not valid"):
        SignInLinks("another-secret-entirely").take(token)
    # The untouched link still works: the refusals did not use it up.
    assert links.take(token).api_key == KEY


def test_a_link_and_a_session_cookie_never_stand_for_each_other() -> None:
    sessions = Sessions(ConsoleSettings(session_secret=SecretStr(SECRET)))
    links = SignInLinks(SECRET)
    cookie = sessions.seal(sessions.new(KEY, "k", frozenset({"ops:read"})))
    with pytest.raises(LinkRefused):
        links.take(cookie)
    assert sessions.open(links.mint(KEY)) is None


def test_a_link_given_back_works_again() -> None:
    links = SignInLinks(SECRET)
    token = links.mint(KEY)
    links.give_back(links.take(token))
    assert links.take(token).api_key == KEY


def test_the_cli_mints_a_link_the_console_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "dev-keys.env"
    keys.write_text(f"TEND_OPS_KEY=other\nTEND_MARKETING_KEY={KEY}\n")
    (tmp_path / "console-secret").write_text(SECRET + "\n")
    monkeypatch.delenv("TEND_CONSOLE_SESSION_SECRET", raising=False)
    monkeypatch.delenv("TEND_MARKETING_KEY", raising=False)
    code = tend(
        [
            "console-link",
            "--keys-file",
            str(keys),
            "--secret-file",
            str(tmp_path / "console-secret"),
            "--url",
            "http://127.0.0.1:8000/",
        ]
    )
    assert code == 0
    url = urlsplit(capsys.readouterr().out.strip())
    assert (url.netloc, url.path) == ("127.0.0.1:8000", "/signin/link")
    assert SignInLinks(SECRET).take(parse_qs(url.query)["token"][0]).api_key == KEY


def test_the_cli_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TEND_CONSOLE_SESSION_SECRET", raising=False)
    monkeypatch.delenv("TEND_MARKETING_KEY", raising=False)
    nowhere = str(tmp_path / "absent")
    assert tend(["console-link", "--secret-file", nowhere, "--keys-file", nowhere]) == 2
    assert "TEND_CONSOLE_SESSION_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("TEND_CONSOLE_SESSION_SECRET", SECRET)
    assert tend(["console-link", "--keys-file", nowhere]) == 2
    assert "TEND_MARKETING_KEY" in capsys.readouterr().err
