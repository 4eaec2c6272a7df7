"""Sign-in sessions: the API key kept in an encrypted, http-only, same-site cookie, and the
CSRF token every form carries.

The cookie is a Fernet token (AES-128-CBC with HMAC-SHA256) of the session: whoever holds the
cookie's text can neither read the key in it nor change it, and the browser's scripts never
see it (``HttpOnly``). A session ends ``TEND_CONSOLE_SESSION_MINUTES`` after sign-in (the
token's own timestamp is checked, not only the cookie's expiry) or at sign-out: the browser
drops the cookie, and the console refuses that session from then on even if a copy of the
cookie is replayed (remembered by this process until the session would have expired; a
restarted console forgets, the expiry still bounds it).

Every form posts a ``csrf`` field equal to the session's token (the sign-in form: equal to a
pre-session cookie of its own); a post without it, or with another, is refused before
anything is done.

A one-time sign-in link (``tend console-link``, printed by ``make run``) carries the API key
sealed the same way, under a key derived apart from the cookie's (so neither can stand for
the other), with an expiry and a nonce: the console takes it once before it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from starlette.responses import Response

from services.console.settings import ConsoleSettings

COOKIE = "tend_console"
# The sign-in form's own CSRF token, before there is a session.
PRE_COOKIE = "tend_console_signin"

OPS_READ = "ops:read"
OPS_WRITE = "ops:write"
MARKETING_WRITE = "marketing:write"


@dataclass(frozen=True)
class Session:
    api_key: str
    name: str
    scopes: frozenset[str]
    csrf: str
    expires_at: float
    key_id: str | None = None

    def can(self, scope: str) -> bool:
        return scope in self.scopes


class Sessions:
    """Seals sessions into cookies and opens them again."""

    def __init__(self, settings: ConsoleSettings) -> None:
        digest = hashlib.sha256(settings.session_secret.get_secret_value().encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self.lifetime = settings.session_minutes * 60
        self.secure = settings.secure_cookies
        # Sessions signed out: a digest of their CSRF token (unique to each) → their expiry.
        self._ended: dict[str, float] = {}

    def new(
        self, api_key: str, name: str, scopes: frozenset[str], key_id: str | None = None
    ) -> Session:
        return Session(
            api_key=api_key,
            name=name,
            scopes=scopes,
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self.lifetime,
            key_id=key_id,
        )

    def seal(self, session: Session) -> str:
        doc = {
            "k": session.api_key,
            "n": session.name,
            "s": sorted(session.scopes),
            "c": session.csrf,
            "e": session.expires_at,
            "i": session.key_id,
        }
        return self._fernet.encrypt(json.dumps(doc).encode()).decode()

    def open(self, token: str | None) -> Session | None:
        """The session in ``token``; None when there is none, it was tampered with, or it
        has expired."""
        if not token:
            return None
        try:
            doc = json.loads(self._fernet.decrypt(token.encode(), ttl=self.lifetime))
            session = Session(
                api_key=str(doc["k"]),
                name=str(doc["n"]),
                scopes=frozenset(str(s) for s in doc["s"]),
                csrf=str(doc["c"]),
                expires_at=float(doc["e"]),
                key_id=doc.get("i"),
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= time.time() or _digest(session.csrf) in self._ended:
            return None
        return session

    def end(self, session: Session) -> None:
        """Sign-out: the session is refused from now on, whoever replays its cookie."""
        now = time.time()
        self._ended = {k: until for k, until in self._ended.items() if until > now}
        self._ended[_digest(session.csrf)] = session.expires_at

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.seal(session),
            max_age=max(1, int(session.expires_at - time.time())),
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    def set_signin_token(self, response: Response, token: str) -> None:
        response.set_cookie(
            PRE_COOKIE,
            token,
            max_age=3600,
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/signin",
        )


# A sign-in link lives at most this long, whatever its minter asked for.
LINK_MAX_MINUTES = 60


class LinkRefused(Exception):
    """A sign-in link the console does not take; the message says why, for the person."""


@dataclass(frozen=True)
class SignInLink:
    api_key: str
    nonce: str
    expires_at: float


class SignInLinks:
    """Mints one-time sign-in links and takes each once.

    The links used are remembered by this process until they would have expired: a replay is
    refused by the console that took the link; a restarted console (or another worker)
    forgets, and the link's short life bounds that."""

    def __init__(self, secret: str) -> None:
        digest = hashlib.sha256(b"tend-console-signin-link\x00" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        # Nonce of each link taken → when it would have expired.
        self._used: dict[str, float] = {}

    def mint(self, api_key: str, minutes: float = 15, now: float | None = None) -> str:
        if not 0 < minutes <= LINK_MAX_MINUTES:
            raise ValueError(f"a sign-in link lives 0 to {LINK_MAX_MINUTES} minutes")
        now = time.time() if now is None else now
        doc = {"k": api_key, "x": now + minutes * 60, "n": secrets.token_urlsafe(16)}
        return self._fernet.encrypt_at_time(json.dumps(doc).encode(), int(now)).decode()

    def take(self, token: str, now: float | None = None) -> SignInLink:
        """The link in ``token``, from now on used; :class:`LinkRefused` when it was changed
        or minted for another console, has expired, or was taken already."""
        now = time.time() if now is None else now
        try:
            doc = json.loads(
                self._fernet.decrypt_at_time(
                    token.encode(), ttl=LINK_MAX_MINUTES * 60, current_time=int(now)
                )
            )
            link = SignInLink(str(doc["k"]), str(doc["n"]), float(doc["x"]))
        except InvalidToken:
            # Fernet says the same for a changed token and for one older than the cap.
            raise LinkRefused(
                "This sign-in link is not valid here: it was changed, minted for another "
                "console, or is long expired."
            ) from None
        except (ValueError, KeyError, TypeError):
            raise LinkRefused("This sign-in link is not valid here.") from None
        if link.expires_at <= now:
            raise LinkRefused("This sign-in link has expired.")
        self._used = {n: until for n, until in self._used.items() if until > now}
        if link.nonce in self._used:
            raise LinkRefused("This sign-in link has been used already: each works once.")
        self._used[link.nonce] = link.expires_at
        return link

    def give_back(self, link: SignInLink) -> None:
        """The sign-in could not finish for a passing reason (the APIs did not answer): the
        link may be used again while it lives."""
        self._used.pop(link.nonce, None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str | None, given: object) -> bool:
    """A posted CSRF token equals the expected one (compared in constant time)."""
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
