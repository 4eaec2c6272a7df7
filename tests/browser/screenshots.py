"""``make screenshots``: the README's pictures of the console, on the demo's data.

    python -m tests.browser.screenshots [--customers 600] [--out docs/screenshots]

Brings up ingest, scoring, outreach and the console as processes on a fresh database and
topics of the real PostgreSQL and Kafka (:mod:`tests.support.console_demo`), loads the demo's
seeded CDNOW history (by default the slice of its first 600 customers: the whole sample,
2,357, takes minutes more and looks the same), signs in with a one-time link in the browser
harness's Chromium at a laptop's 1280x800, and saves the overview, a customer's page and the
rule editor as PNGs (and the overview's flow chart, scrolled to).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from shared.settings import CommonSettings
from tests.browser.conftest import start_chromium
from tests.support.broker import free_port
from tests.support.console_demo import SERVICES, ConsoleDemo, console_demo

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "screenshots"
# The editor's picture: a rule of the default pack the form edits.
RULE = "complaint-apology"
WIDTH, HEIGHT = 1280, 800


def _wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, 20, ignored_exceptions=[StaleElementReferenceException])


def _settled(driver: WebDriver) -> None:
    """Loaded, with htmx's swaps done and the charts drawn (their animation over)."""
    _wait(driver).until(lambda d: d.execute_script("return document.readyState") == "complete")
    _wait(driver).until(
        lambda d: d.execute_script(
            "return !document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping')"
        )
    )
    time.sleep(1.5)


def biggest_customer(demo: ConsoleDemo) -> str:
    """The customer with the highest predicted value: the fullest timeline to show."""
    resp = httpx.get(
        f"{demo.urls['scoring']}/v1/customers",
        params={"sort": "clv", "limit": 1},
        headers=demo.auth(),
        timeout=30,
    )
    resp.raise_for_status()
    customer_id: str = resp.json()["items"][0]["customer_id"]
    return customer_id


def shoot(demo: ConsoleDemo, out: Path) -> list[Path]:
    profile = tempfile.mkdtemp(prefix="tend-screenshots-")
    driver = start_chromium(profile, WIDTH, HEIGHT)
    try:
        # The page's own viewport at a laptop's size (the window's includes no browser chrome
        # in headless mode, but its size is not the viewport's).
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.get(demo.signin_link())
        _wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))
        out.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, path, scroll_to in (
            ("overview.png", "/?period=month", None),
            ("overview-flow.png", "/?period=month", "flow-chart"),
            ("customer.png", f"/customers/{biggest_customer(demo)}", None),
            ("rule-editor.png", f"/rules/{RULE}", None),
        ):
            driver.get(demo.console + path)
            if scroll_to:
                # The section holding it, its heading at the top of the viewport.
                driver.execute_script(
                    "document.getElementById(arguments[0]).closest('section')"
                    ".scrollIntoView({block: 'start'})",
                    scroll_to,
                )
            _settled(driver)
            target = out / name
            if not driver.save_screenshot(str(target)):
                raise RuntimeError(f"Chromium did not save {target}")
            saved.append(target)
        return saved
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def main(customers: int | None, out: Path) -> None:
    ports = {name: free_port() for name in SERVICES}
    print(f"tend: loading the demo's data ({customers or 'all'} customers) ...", flush=True)
    async with console_demo(CommonSettings(), ports, customers) as demo:
        print(f"tend: {demo.events:,} events of {demo.customers:,} customers loaded", flush=True)
        for path in await asyncio.to_thread(shoot, demo, out):
            print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--customers", type=int, default=600, help="the first N customers of the demo; 0: all"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    asyncio.run(main(args.customers or None, args.out))
