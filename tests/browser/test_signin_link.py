"""The one-time sign-in link `make run` prints, in real Chromium: it signs in once."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from services.console.session import SignInLinks
from tests.browser.conftest import Tend
from tests.browser.test_console import wait

pytestmark = pytest.mark.integration


def test_a_sign_in_link_signs_in_once(browser: WebDriver, tend: Tend) -> None:
    token = SignInLinks(tend.console_secret).mint(tend.keys["marketing"])
    link = f"{tend.console}/signin/link?token={token}"

    browser.get(link)
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))
    assert browser.current_url == tend.console + "/"  # the overview
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert browser.execute_script("return document.cookie") == ""  # http-only

    # Signed out, the same link again is refused, saying why; nothing is signed in.
    browser.find_element(By.CSS_SELECTOR, "form.signout button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "api_key")))
    browser.get(link)
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "signin-error")))
    assert "used already" in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "form.signout")
    browser.get(tend.console + "/customers")
    wait(browser).until(ec.presence_of_element_located((By.ID, "api_key")))
