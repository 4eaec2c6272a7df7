"""The console in real headless Chromium, against a whole Tend of the tests' own.

Ingest, scoring and outreach run in-process (``isolated_stack``) on a fresh database and topic
prefix of the real PostgreSQL and Kafka, each served by uvicorn on a free loopback port, with
the console beside them: all on one event loop in a thread of their own, while the tests drive
Debian's Chromium through chromedriver and Selenium from the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from services.outreach.settings import OutreachSettings
from shared.auth import Scope, create_key
from shared.settings import CommonSettings
from tests.support.pipeline import consumers_assigned
from tests.support.stack import Stack, isolated_stack

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Tend:
    """The running stack as the tests see it: URLs, keys, and a way to run a coroutine on
    the stack's own loop."""

    loop: asyncio.AbstractEventLoop
    stack: Stack
    console: str
    urls: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    # The console's session secret: what mints its one-time sign-in links.
    console_secret: str = ""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def api(self, service: str, role: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.urls[service],
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=30,
        )


async def _serve(
    app: FastAPI, port: int, lifespan: Literal["on", "off"]
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"uvicorn on port {port} stopped at start")
        await asyncio.sleep(0.05)
    return server, task


@pytest.fixture(scope="session")
def tend(settings: CommonSettings) -> Iterator[Tend]:
    ready: dict[str, Any] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with isolated_stack(
            settings, outreach=OutreachSettings(allow_private_webhooks=True)
        ) as stack:
            await consumers_assigned(stack)
            keys = dict(stack.keys)
            _, keys["ops_read"] = await create_key(
                stack.engine, "browser-ops-read", [Scope.OPS_READ]
            )
            servers = []
            urls = {}
            assert stack.ingest_app is not None and stack.outreach_app is not None
            for name, app in (
                ("ingest", stack.ingest_app),
                ("scoring", stack.scoring_app),
                ("outreach", stack.outreach_app),
            ):
                port = _free_port()
                # The apps' lifespans already run (isolated_stack entered them).
                servers.append(await _serve(app, port, "off"))
                urls[name] = f"http://127.0.0.1:{port}"
            console_port = _free_port()
            secret = secrets.token_urlsafe(32)
            console = create_console(
                ConsoleSettings(
                    ingest_url=urls["ingest"],
                    scoring_url=urls["scoring"],
                    outreach_url=urls["outreach"],
                    session_minutes=30,
                    session_secret=SecretStr(secret),
                )
            )
            servers.append(await _serve(console, console_port, "on"))
            ready["tend"] = Tend(
                loop, stack, f"http://127.0.0.1:{console_port}", urls, keys, secret
            )
            started.set()
            try:
                await stop.wait()
            finally:
                for server, _ in servers:
                    server.should_exit = True
                for _, task in servers:
                    with contextlib.suppress(Exception):
                        await task

    def thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the waiting fixture
            ready["error"] = exc
            started.set()

    runner = threading.Thread(target=thread, name="tend-stack", daemon=True)
    runner.start()
    if not started.wait(120):
        raise RuntimeError("the stack did not start within 120 s")
    if "error" in ready:
        raise RuntimeError("the stack failed to start") from ready["error"]
    yield ready["tend"]
    loop.call_soon_threadsafe(stop.set)
    runner.join(60)


def start_chromium(profile: str, width: int = 1280, height: int = 1000) -> WebDriver:
    """Debian's Chromium, headless, with the profile directory given; never a downloaded
    build. Also what ``make screenshots`` takes its pictures with."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            raise RuntimeError(f"{path} is missing: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="tend-chromium-")
    try:
        driver = start_chromium(profile)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: WebDriver, tend: Tend) -> Iterator[WebDriver]:
    """The browser, signed out at the start of each test."""
    chromium.get(tend.console + "/healthz")
    chromium.delete_all_cookies()
    yield chromium


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed browser test reports where the browser was and what the page said."""
    report = yield
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.failed and call.when == "call" and driver is not None:
        try:
            text = driver.execute_script("return document.body ? document.body.innerText : ''")
            report.sections.append(("browser", f"at {driver.current_url}\n{text[:4000]}"))
        except Exception as exc:  # the browser itself may be what failed
            report.sections.append(("browser", f"no page: {exc!r}"))
    return report


def eventually(check: Callable[[], T | None], timeout: float = 30, what: str = "it") -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
