"""The console's application: pages, assets, sessions and the answers to what goes wrong.

Run it as ``uvicorn services.console.app:create_app --factory --port 8000``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.console import formatting
from services.console.clients.api import ApiError, Apis
from services.console.pages import (
    actions,
    audit,
    auth,
    channels,
    complaints,
    customers,
    outcomes,
    overview,
    policy,
    rule_versions,
    rules,
    suppressions,
)
from services.console.pages.web import Refused, SignInRequired, render, sessions, signin_url
from services.console.session import COOKIE, Sessions, SignInLinks
from services.console.settings import ConsoleSettings
from shared.production import refuse_insecure
from shared.settings import CommonSettings

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
# The browser assets installed from npm (package-lock.json pins them), served from here.
VENDOR = {
    "htmx.min.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "chart.umd.min.js": NODE_MODULES / "chart.js" / "dist" / "chart.umd.min.js",
    "axe.min.js": NODE_MODULES / "axe-core" / "axe.min.js",
}

# Only this console's own origin: no script, style, image or connection anywhere else.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def missing_assets() -> list[str]:
    return [name for name, path in VENDOR.items() if not path.is_file()]


def create_app(
    settings: ConsoleSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = settings or ConsoleSettings()
    refuse_insecure(CommonSettings().environment, settings.insecure_defaults())
    missing = missing_assets()
    if missing:
        raise RuntimeError(
            f"the console's browser assets are not installed ({', '.join(missing)}): run "
            f"`npm ci` in {HERE} (make run and make test do it)"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.apis.aclose()

    app = FastAPI(
        title="Tend console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.sessions = Sessions(settings)
    app.state.links = SignInLinks(settings.session_secret.get_secret_value())
    app.state.apis = Apis(settings, transport)
    templates = Jinja2Templates(directory=HERE / "templates")
    formatting.install(templates.env, settings)
    app.state.templates = templates

    app.mount("/static/own", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/static/vendor/{name}", include_in_schema=False)
    async def vendor(name: str) -> Response:
        path = VENDOR.get(name)
        if path is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type="text/javascript")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    for router in (auth.router, overview.router, customers.router, actions.router, rules.router):
        app.include_router(router)
    for router in (
        rule_versions.router,
        outcomes.router,
        policy.router,
        channels.router,
        suppressions.router,
        audit.router,
        complaints.router,
    ):
        app.include_router(router)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignInRequired)
    async def to_signin(request: Request, exc: SignInRequired) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": signin_url(exc.next_path)})
        return RedirectResponse(signin_url(exc.next_path), status_code=303)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        session = sessions(request).open(request.cookies.get(COOKIE))
        return render(
            request, "error.html", session, exc.status, title="Not done · Tend", message=exc.message
        )

    @app.exception_handler(ApiError)
    async def api_failed(request: Request, exc: ApiError) -> Response:
        store = sessions(request)
        session = store.open(request.cookies.get(COOKIE))
        if exc.status == 401:
            # The key was revoked meanwhile: the session is over.
            response = RedirectResponse(signin_url(request.url.path), status_code=303)
            store.clear(response)
            return response
        status = exc.status if exc.status in (403, 404, 409, 422, 429) else 502
        if exc.status == 503:
            status = 503
        return render(
            request, "error.html", session, status, title="Not done · Tend", message=exc.message
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        session = sessions(request).open(request.cookies.get(COOKIE))
        said = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return render(
            request,
            "error.html",
            session,
            422,
            title="Not done · Tend",
            message=f"This page cannot take that request ({said}).",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        session = sessions(request).open(request.cookies.get(COOKIE))
        message = (
            "There is no such page in the console."
            if exc.status_code == 404
            else f"The console cannot do that ({exc.status_code}: {exc.detail})."
        )
        return render(
            request,
            "error.html",
            session,
            exc.status_code,
            title="Not found · Tend" if exc.status_code == 404 else "Not done · Tend",
            message=message,
        )

    return app
