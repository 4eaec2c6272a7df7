"""The three public APIs as the console calls them: one pooled HTTP client, the signed-in
user's key on every call, and every failure turned into an :class:`ApiError` a page can
show (a 422's field errors included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from services.console.settings import ConsoleSettings

Service = Literal["ingest", "scoring", "outreach"]
Params = dict[str, Any] | list[tuple[str, Any]] | None


@dataclass
class ApiError(Exception):
    """An API answered other than 2xx, or did not answer (status 503)."""

    status: int
    message: str
    errors: list[dict[str, str]] = field(default_factory=list)
    # A customer merged into another (scoring's 301): the survivor's id.
    survivor: str | None = None

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    @property
    def missing(self) -> bool:
        """The route is not there (an older service): the page says "not available"."""
        return self.status in (404, 405)


class Apis:
    """The APIs, reached with one pooled client; :meth:`as_key` binds a caller's key."""

    def __init__(self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None):
        self.base = {
            "ingest": settings.ingest_url.rstrip("/"),
            "scoring": settings.scoring_url.rstrip("/"),
            "outreach": settings.outreach_url.rstrip("/"),
        }
        self.http = httpx.AsyncClient(
            transport=transport,
            timeout=settings.api_timeout_seconds,
            headers={"user-agent": "tend-console"},
        )

    def as_key(self, api_key: str) -> Caller:
        return Caller(self, api_key)

    async def aclose(self) -> None:
        await self.http.aclose()


class Caller:
    """The APIs as one key sees them."""

    def __init__(self, apis: Apis, api_key: str) -> None:
        self._apis = apis
        self._auth = {"Authorization": f"Bearer {api_key}"}

    async def call(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
    ) -> Any:
        url = self._apis.base[service] + path
        try:
            resp = await self._apis.http.request(
                method, url, params=params, json=json, headers=self._auth
            )
        except httpx.TimeoutException:
            raise ApiError(503, f"{service} did not answer in time") from None
        except httpx.HTTPError:
            raise ApiError(503, f"{service} is not answering") from None
        if resp.status_code >= 300:
            # 3xx too: a merged customer's card answers 301 naming the survivor, and a
            # redirect is never a page's data.
            raise api_error(service, resp)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def get(self, service: Service, path: str, params: Params = None) -> Any:
        return await self.call(service, "GET", path, params=params)

    async def post(
        self, service: Service, path: str, json: Any = None, params: Params = None
    ) -> Any:
        return await self.call(service, "POST", path, json=json, params=params)

    async def put(self, service: Service, path: str, json: Any = None) -> Any:
        return await self.call(service, "PUT", path, json=json)

    async def delete(self, service: Service, path: str, json: Any = None) -> Any:
        return await self.call(service, "DELETE", path, json=json)


def api_error(service: Service, resp: httpx.Response) -> ApiError:
    """The API's answer other than 2xx as an :class:`ApiError`."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    errors = [
        {"field": str(e.get("field", "")), "reason": str(e.get("reason", ""))}
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    message = str(body.get("message") or f"{service} answered {resp.status_code}")
    survivor = body.get("survivor_id")
    return ApiError(
        resp.status_code, message, errors, survivor if isinstance(survivor, str) else None
    )
