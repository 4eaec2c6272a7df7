"""Sign-in with an API key (typed, or from a one-time link), and sign-out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from services.console.clients.api import ApiError
from services.console.clients.identity import BadKey, identify
from services.console.pages.web import CheckedPost, Refused, apis, render, sessions
from services.console.session import (
    COOKIE,
    OPS_READ,
    PRE_COOKIE,
    LinkRefused,
    SignInLinks,
    same_token,
)

router = APIRouter()


def _safe_next(path: str | None) -> str:
    # Only a path of this console: never another site (an open redirect).
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _form(request: Request, next_path: str, error: str | None, status_code: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        None,
        status_code=status_code,
        title="Sign in · Tend",
        signin_csrf=token,
        next_path=_safe_next(next_path),
        error=error,
    )
    sessions(request).set_signin_token(response, token)
    return response


@router.get("/signin", include_in_schema=False)
async def signin_form(request: Request, next: str = "/") -> Response:
    if sessions(request).open(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _form(request, next, None, 200)


@router.post("/signin", include_in_schema=False)
async def signin(
    request: Request,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    if not same_token(request.cookies.get(PRE_COOKIE), csrf):
        raise Refused(403, "The sign-in form expired or did not come from this console.")
    key = api_key.strip()
    if not key:
        return _form(request, next, "Enter your API key.", 422)
    try:
        who = await identify(apis(request).as_key(key))
    except BadKey as e:
        return _form(request, next, str(e), 401)
    except ApiError as e:
        return _form(request, next, f"Tend could not check the key: {e.message}", 503)
    if OPS_READ not in who.scopes:
        return _form(request, next, "This key may not read Tend: the console needs ops:read.", 403)
    store = sessions(request)
    session = store.new(key, who.name, who.scopes, who.key_id)
    response = RedirectResponse(_safe_next(next), status_code=303)
    store.set_cookie(response, session)
    response.delete_cookie(PRE_COOKIE, path="/signin")
    return response


def _links(request: Request) -> SignInLinks:
    found: SignInLinks = request.app.state.links
    return found


@router.get("/signin/link", include_in_schema=False)
async def signin_link(
    request: Request, token: Annotated[str, Query(max_length=2000)] = ""
) -> Response:
    """A one-time sign-in link (``tend console-link``): its key signs in and the browser goes
    to the overview; a link changed, expired or used already gets the sign-in form (401)
    saying which."""
    links = _links(request)
    again = " Sign in with your key, or ask for a new link (tend console-link)."
    try:
        link = links.take(token)
    except LinkRefused as e:
        return _form(request, "/", f"{e}{again}", 401)
    try:
        who = await identify(apis(request).as_key(link.api_key))
    except BadKey as e:
        return _form(request, "/", f"{e}{again}", 401)
    except ApiError as e:
        links.give_back(link)
        return _form(request, "/", f"Tend could not check the link's key: {e.message}", 503)
    if OPS_READ not in who.scopes:
        return _form(
            request, "/", "This link's key may not read Tend: the console needs ops:read.", 403
        )
    store = sessions(request)
    response = RedirectResponse("/", status_code=303)
    store.set_cookie(response, store.new(link.api_key, who.name, who.scopes, who.key_id))
    return response


@router.post("/signout", include_in_schema=False)
async def signout(request: Request, posted: CheckedPost) -> Response:
    response = RedirectResponse("/signin", status_code=303)
    store = sessions(request)
    store.end(posted.session)
    store.clear(response)
    return response
