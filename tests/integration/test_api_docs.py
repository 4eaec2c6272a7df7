"""The reading pages (/docs, /redoc) of every service work without internet access: each
asset they load is served by the service itself, and none comes from a CDN."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urljoin

import httpx
import pytest
from fastapi import FastAPI

from services.ingest.app import create_app as create_ingest
from services.outreach.app import create_app as create_outreach
from services.scoring.app import create_app as create_scoring
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

FACTORIES: dict[str, Callable[[CommonSettings], FastAPI]] = {
    "ingest": create_ingest,
    "scoring": create_scoring,
    "outreach": create_outreach,
}

# Every URL a page names: in src/href/spec-url attributes and in its script (url: '...').
_URLS = re.compile(
    r"""(?:\bsrc|\bhref|spec-url)\s*=\s*["']([^"']+)["']"""
    r"""|\burl\s*:\s*["']([^"']+)["']"""
)


def _urls(html: str) -> list[str]:
    return [a or b for a, b in _URLS.findall(html)]


@pytest.mark.parametrize("service", FACTORIES)
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_every_asset_from_the_service(
    settings: CommonSettings, service: str, page: str
) -> None:
    # The pages and their assets need neither the database nor the broker: no lifespan.
    app = FACTORIES[service](settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tend.test") as client:
        resp = await client.get(page)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        urls = _urls(resp.text)
        assert any(u.endswith(".js") for u in urls), f"{page} loads no script: {urls}"
        assert "/openapi.json" in urls
        for url in urls:
            absolute = urljoin(f"http://tend.test{page}", url)
            assert absolute.startswith("http://tend.test/"), f"{page} loads {url} from elsewhere"
            asset = await client.get(absolute)
            assert asset.status_code == 200, f"{page}: {url} answers {asset.status_code}"
            assert asset.content, f"{page}: {url} is empty"


@pytest.mark.parametrize("service", FACTORIES)
def test_every_request_body_has_an_example(settings: CommonSettings, service: str) -> None:
    """Swagger UI's "Try it out" starts from a body that works."""
    document = FACTORIES[service](settings).openapi()
    schemas = document["components"]["schemas"]
    missing = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                ref = content.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                shown = {"example", "examples"} & {*content, *schemas.get(ref, {})}
                if media == "application/json" and not shown:
                    missing.append(f"{method.upper()} {path}")
    assert not missing, f"request bodies without an example: {missing}"
