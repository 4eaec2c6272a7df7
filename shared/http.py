"""The HTTP application every service is built from.

It brings the parts a service shares: API-key auth (:mod:`shared.auth`) with a request budget
per key (:mod:`shared.ratelimit`), the audit log's ``/v1/audit`` (:mod:`shared.audit_api`),
the calling key's ``/v1/me`` (:mod:`shared.me_api`), ``/healthz``, ``/readyz``, Prometheus
``/metrics``, the reading pages ``/docs`` and ``/redoc`` (:mod:`shared.docs`), a body-size
limit, a JSON-only content type, and errors that are always JSON and never carry a stack trace.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.audit_api import router as audit_router
from shared.db import UNREACHABLE_DRIVER, database_reachable, statement_timed_out, unreachable
from shared.docs import serve_docs
from shared.errors import (
    BEYOND_SCHEMA,
    ErrorBody,
    FieldError,
    database_unavailable,
    error_response,
    field_errors,
    unavailable,
)

# Until every service imports these from their own modules (shared.errors, shared.params).
from shared.errors import ERROR_RESPONSES as ERROR_RESPONSES
from shared.kafka import broker_reachable
from shared.logging import get_logger
from shared.me_api import router as me_router
from shared.params import IsoDate as IsoDate
from shared.params import IsoDateTime as IsoDateTime
from shared.ratelimit import Limit, RateLimiter
from shared.settings import CommonSettings, common_settings

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]

REQUESTS = Counter(
    "tend_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "tend_http_request_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class GuardMiddleware:
    """Rejects oversized bodies (413) and non-JSON bodies (415) before any parsing, tags the
    request with an id, and records metrics. Plain ASGI: it sits on every request's path."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        max_body: int,
        form_paths: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.form_paths = form_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        rejection = self._reject(scope["method"], scope["path"], headers)
        if rejection is not None:
            await rejection(scope, receive, send_wrapper)
        else:
            await self.app(scope, self._limited(receive), send_wrapper)
        route = scope.get("route")
        template = getattr(route, "path", "unmatched")
        REQUESTS.labels(self.service, scope["method"], template, str(status_holder[0])).inc()
        LATENCY.labels(self.service, template).observe(time.perf_counter() - started)

    def _reject(self, method: str, path: str, headers: dict[str, str]) -> ASGIApp | None:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return error_response(413, f"request body exceeds {self.max_body} bytes")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        if method in ("POST", "PUT", "PATCH") and has_body:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            allowed = {"application/json"}
            if path.startswith(self.form_paths) and self.form_paths:
                # RFC 8058 lets mail providers post the one-click body either way.
                allowed |= {"application/x-www-form-urlencoded", "multipart/form-data"}
            if ctype not in allowed:
                return error_response(415, "send the body as application/json")
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        return wrapped


class BodyTooLarge(Exception):
    pass


def database_and_broker(app: FastAPI) -> Mapping[str, ReadinessCheck]:
    """The readiness of a service that keeps ``app.state.engine`` and ``app.state.producer``."""
    return {
        "database": lambda: database_reachable(app.state.engine),
        "broker": lambda: broker_reachable(app.state.producer),
    }


def create_app(
    *,
    service: str,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Callable[[FastAPI], Mapping[str, ReadinessCheck]] = database_and_broker,
    max_body: int,
    form_paths: tuple[str, ...] = (),
    version: str = "0.1.0",
    common: CommonSettings | None = None,
    describe: Callable[[dict[str, Any]], None] | None = None,
) -> FastAPI:
    """A FastAPI app with Tend's shared behaviour; the service adds its routers.

    ``describe`` edits the finished OpenAPI document in place, for what the models alone
    cannot say (a recursive expression language checked by hand, say).

    Once the service's ``lifespan`` has set ``app.state.engine``, a rate limiter on that
    database joins it (``app.state.rate_limiter``), with the default budget of ``common``
    (the environment's settings when not given)."""

    @asynccontextmanager
    async def with_rate_limiter(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            engine = getattr(app.state, "engine", None)
            settings = common or common_settings()
            default = Limit(settings.rate_limit_per_second, settings.rate_limit_burst)
            limiter = None
            if engine is not None:  # the limiter keeps its budgets in the service's database
                limiter = await RateLimiter.connect(engine.url, default)
            app.state.rate_limiter = limiter
            try:
                yield
            finally:
                if limiter is not None:
                    await limiter.close()

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=with_rate_limiter,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    serve_docs(app)
    app.add_middleware(GuardMiddleware, service=service, max_body=max_body, form_paths=form_paths)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422, "the request is invalid; see errors", errors=field_errors(exc.errors())
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; a path
            # served by several routes (GET here, PUT there) allows all that are documented.
            methods = _documented_methods(app, request.url.path)
            if methods:
                headers["Allow"] = ", ".join(methods)
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, __: BodyTooLarge) -> JSONResponse:
        return error_response(413, f"request body exceeds {max_body} bytes")

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in ("22021", "22P05"):  # a NUL or a character the database cannot store
            # Which field is not known here; the part of the request that held it is.
            where = "body" if request.method in ("POST", "PUT", "PATCH") else "query"
            return error_response(
                422,
                "the request holds characters that cannot be stored (e.g. NUL)",
                errors=[FieldError(field=where, reason=NOT_STORABLE)],
            )
        if unreachable(exc):
            return database_unavailable()
        if statement_timed_out(exc):
            # The database cancelled a statement that ran too long: a busy moment, worth a
            # retry, and never the client's fault.
            log.warning("database_statement_timeout", path=request.url.path)
            return unavailable("the database", note="a statement ran past its time limit")
        log.error("database_error", path=request.url.path, exc_info=exc)
        return error_response(500, "internal error; the operators have the details")

    # Not OSError at large: a webhook's DNS failure is not the database's.
    for unreachable_type in (*UNREACHABLE_DRIVER, ConnectionError):

        @app.exception_handler(unreachable_type)
        async def _database_down(request: Request, exc: Exception) -> JSONResponse:
            log.warning("database_unreachable", path=request.url.path, reason=type(exc).__name__)
            return database_unavailable()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, exc_info=exc)
        return error_response(500, "internal error; the operators have the details")

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """Answers 200 while the process is up; says nothing about its dependencies."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness",
        responses={
            503: {"description": "a dependency is unreachable or a background task is down"}
        },
    )
    async def readyz() -> JSONResponse:
        """200 when every dependency (database, broker) answers and every background task
        (`task:consumer`, `task:relay:<table>`, …) runs, else 503 with the failing check
        false: a task that died is started again within seconds."""
        checks = {name: await check() for name, check in readiness(app).items()}
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition of this process's counters and histograms."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(audit_router)
    app.include_router(me_router)
    _document_errors(app, describe)
    return app


def _documented_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for the path template ``path`` matches."""
    paths = app.openapi().get("paths", {})
    # A literal path (/v1/rules/preview) wins over a template that also matches it.
    for template, item in sorted(paths.items(), key=lambda kv: kv[0].count("{")):
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return sorted(m.upper() for m in item if m in _HTTP_METHODS)
    return []


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


_RATE_LIMITED = {
    "description": "the API key is over its rate limit; retry after `Retry-After` seconds",
    "headers": {
        "Retry-After": {
            "description": "whole seconds until the key's budget admits a request again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


NOT_STORABLE = "holds a character the database cannot store (NUL, U+0000)"
# A text parameter the schema leaves open reaches the database, which stores no NUL.
_NO_NUL = "^[^\\u0000]*$"

_UNAVAILABLE = {
    "description": "a dependency (the database, the broker) is unreachable; retry after "
    "`Retry-After` seconds",
    "headers": {
        "Retry-After": {
            "description": "whole seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def _no_nul_parameters(op: dict[str, Any]) -> None:
    """Open text parameters (no pattern, enum or format) say that they hold no NUL."""
    for parameter in op.get("parameters", []):
        schema = parameter.get("schema", {})
        for option in schema.get("anyOf", [schema]):
            if option.get("type") == "string" and not {"pattern", "enum", "const", "format"} & {
                *option
            }:
                option["pattern"] = _NO_NUL


def _document_errors(app: FastAPI, describe: Callable[[dict[str, Any]], None] | None) -> None:
    """Make the OpenAPI document describe the errors the app really returns (our
    :class:`ErrorBody`, not FastAPI's default validation shape), then let the service
    ``describe`` what its models cannot."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        ref = {"$ref": "#/components/schemas/ErrorBody"}
        for path, path_item in schema.get("paths", {}).items():
            for op in path_item.values():
                responses = op.get("responses", {})
                if "422" in responses:
                    said = responses["422"]
                    responses["422"] = {
                        "description": "validation error: each bad field and why",
                        "content": {"application/json": {"schema": ref}},
                    }
                    if BEYOND_SCHEMA in said:  # rules the schema cannot state
                        responses["422"]["description"] = said["description"]
                        responses["422"][BEYOND_SCHEMA] = said[BEYOND_SCHEMA]
                if "401" in responses:  # every route that takes a key spends its budget
                    responses.setdefault("429", _RATE_LIMITED)
                if path.startswith("/v1/"):  # every API route reads the database
                    responses.setdefault("503", _UNAVAILABLE)
                _no_nul_parameters(op)
                if "requestBody" in op and "422" in responses:
                    # Text anywhere in a body may reach the database: a NUL is refused there.
                    rules = responses["422"].setdefault(BEYOND_SCHEMA, {})
                    rules.setdefault("body", f"no text {NOT_STORABLE}")
                    if "Beyond the schema" not in responses["422"]["description"]:
                        responses["422"]["description"] += ". Beyond the schema: "
                    else:
                        responses["422"]["description"] += "; "
                    responses["422"]["description"] += f"`body`: no text {NOT_STORABLE}"
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = ErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.setdefault("FieldError", FieldError.model_json_schema())
        defs = components["ErrorBody"].pop("$defs", {})
        components.update(defs)
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        if describe is not None:
            describe(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
