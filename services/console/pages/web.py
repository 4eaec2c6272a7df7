"""What every page shares: who is signed in, the CSRF check of every post, the API caller and
rendering with the layout's context."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import Response

from services.console.clients.api import ApiError, Apis, Caller
from services.console.session import COOKIE, Session, Sessions, same_token

T = TypeVar("T")


class SignInRequired(Exception):
    """No live session: a page sends the browser to the sign-in form."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Refused(Exception):
    """The console refuses the request itself (a missing scope, a bad CSRF token)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


def templates(request: Request) -> Jinja2Templates:
    found: Jinja2Templates = request.app.state.templates
    return found


def apis(request: Request) -> Apis:
    found: Apis = request.app.state.apis
    return found


def _signed_in(request: Request) -> Session:
    session = sessions(request).open(request.cookies.get(COOKIE))
    if session is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return session


SignedIn = Annotated[Session, Depends(_signed_in)]


@dataclass(frozen=True)
class Posted:
    """A form posted by a signed-in user, its CSRF token checked."""

    session: Session
    form: FormData

    def text(self, name: str) -> str:
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else ""

    def texts(self, name: str) -> list[str]:
        """Every value posted under ``name`` (checkboxes, a multiple select), non-empty."""
        return [v.strip() for v in self.form.getlist(name) if isinstance(v, str) and v.strip()]


async def _posted(request: Request) -> Posted:
    session = sessions(request).open(request.cookies.get(COOKIE))
    if session is None:
        raise Refused(403, "You are not signed in (or your session has ended): sign in again.")
    form = await request.form()
    if not same_token(session.csrf, form.get("csrf")):
        raise Refused(
            403,
            "This form did not come from your console session (its security token is "
            "missing or wrong): nothing was done. Reload the page and try again.",
        )
    return Posted(session, form)


CheckedPost = Annotated[Posted, Depends(_posted)]


def need(session: Session, scope: str, doing: str) -> None:
    """Refuse (403) unless the session's key holds ``scope``."""
    if not session.can(scope):
        raise Refused(403, f"Your API key may not {doing}: it needs the {scope} scope.")


def caller(request: Request, session: Session) -> Caller:
    return apis(request).as_key(session.api_key)


def render(
    request: Request,
    name: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    context.setdefault("title", "Tend")
    return templates(request).TemplateResponse(
        request,
        name,
        {"session": session, "csrf": session.csrf if session else "", **context},
        status_code=status_code,
    )


@dataclass
class Fetched(Generic[T]):
    """One API read of a page: its value, or why there is none."""

    value: T | None = None
    error: ApiError | None = None

    @property
    def unavailable(self) -> bool:
        return self.error is not None and self.error.missing


async def fetch(call: Awaitable[T]) -> Fetched[T]:
    try:
        return Fetched(value=await call)
    except ApiError as e:
        return Fetched(error=e)


async def fetch_all(*calls: Awaitable[Any]) -> list[Fetched[Any]]:
    """Every read at once; each one's failure stays its own."""
    return list(await asyncio.gather(*(fetch(c) for c in calls)))


def signin_url(next_path: str) -> str:
    return "/signin?next=" + quote(next_path, safe="/")
