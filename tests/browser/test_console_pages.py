"""The console's outcomes, policy, channels, suppressions, audit log and rule versions, in
real headless Chromium against the real stack."""

from __future__ import annotations

import json
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from services.outreach.core.arms import in_rule_control
from tests.browser.conftest import Tend, eventually
from tests.browser.test_console import (
    AXE,
    _axe,
    order,
    page_csrf,
    post_events,
    session_cookie,
    sign_in,
    wait,
)
from tests.support.receivers import WebhookReceiver

pytestmark = pytest.mark.integration

# Zones to pick a customer's from: one where it is day now, so quiet hours hold nothing back.
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "Pacific/Honolulu", "Asia/Kolkata")


def _daytime_zone() -> str:
    now = datetime.now(UTC)
    return next(z for z in ZONES if 9 <= now.astimezone(ZoneInfo(z)).hour < 19)


def _texts(browser: WebDriver, selector: str) -> list[str]:
    found: list[str] = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)",
        selector,
    )
    return found


def test_outcomes_show_a_control_group_rules_arms(browser: WebDriver, tend: Tend) -> None:
    tag = f"spring-{uuid.uuid4().hex[:6]}"
    rule_id = f"news-{tag}"
    # Three customers in each arm of the rule's 50% control group (the arm is a stable hash).
    arms: dict[bool, list[str]] = {True: [], False: []}
    n = 0
    while min(len(a) for a in arms.values()) < 3:
        cid = f"{tag}-{n:03d}"
        held = in_rule_control(rule_id, cid, 50)
        if len(arms[held]) < 3:
            arms[held].append(cid)
        n += 1
    treated, control = arms[False], arms[True]
    zone = _daytime_zone()
    post_events(
        tend,
        [
            {
                "type": "customer",
                "customer_id": cid,
                "name": f"Spring {cid}",
                "email": f"{cid}@example.com",
                "timezone": zone,
                "tags": [tag],
                "consent": {"email": True, "marketing": True},
                "occurred_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            }
            for cid in treated + control
        ],
    )
    receiver = WebhookReceiver()
    tend.run(receiver.__aenter__())
    try:
        with tend.api("outreach", "marketing") as api:
            made = api.post(
                "/v1/channels",
                json={
                    "id": tag,
                    "kind": "webhook",
                    "config": {"url": receiver.url},
                    "secret": receiver.secret,
                    "enabled": False,  # the rule names it; other tests' actions go elsewhere
                },
            )
            assert made.status_code == 201, made.text
            rule = {
                "id": rule_id,
                "name": "Spring news",
                "trigger": {"type": "broadcast"},
                "conditions": {"has_tag": tag},
                "action": {
                    "kind": "announcement",
                    "channel": "webhook",
                    "channel_id": tag,
                    "template": {"subject": "Spring", "body": "New in store"},
                },
                "control_percent": 50,
            }
            assert api.post("/v1/rules", json=rule).status_code == 201
            # Enabled only now: a named channel must exist, and be enabled to send.
            enabled = api.put(
                f"/v1/channels/{tag}", json={"config": {"url": receiver.url}, "enabled": True}
            )
            assert enabled.status_code == 200, enabled.text
            launched = api.post("/v1/broadcasts", json={"rule_id": rule_id, "launch_id": "one"})
            assert launched.status_code == 200, launched.text
            assert launched.json()["audience"] == 6

        def settled() -> dict[str, str] | None:
            with tend.api("outreach", "ops") as api:
                items = api.get("/v1/actions", params={"rule_id": rule_id}).json()["items"]
            statuses = {a["customer_id"]: a["status"] for a in items}
            return statuses if set(statuses.values()) <= {"sent", "control"} else None

        statuses = eventually(settled, what="the broadcast sent and held out")
        assert statuses == {**dict.fromkeys(treated, "sent"), **dict.fromkeys(control, "control")}
        # One treated customer buys.
        buyer = treated[0]
        post_events(tend, [order(buyer, f"{buyer}-o1", datetime.now(UTC), "80.00")])
    finally:
        with tend.api("outreach", "marketing") as api:
            api.put(f"/v1/channels/{tag}", json={"config": {"url": receiver.url}, "enabled": False})
        tend.run(receiver.__aexit__(None, None, None))

    # The page attributes every touch the shared suite database decided this week: late in a
    # loaded full run that took over 15 s once.
    sign_in(browser, tend, "ops_read", "/outcomes?by=rule&days=7", timeout=60)
    row = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-group='{rule_id}']"))
    )
    cells = {
        name: row.find_element(By.CLASS_NAME, name).text
        for name in (
            "treatment-customers",
            "treatment-conversions",
            "control-customers",
            "control-conversions",
            "baseline",
            "verdict",
        )
    }
    assert cells == {
        "treatment-customers": "3",
        "treatment-conversions": "1",
        "control-customers": "3",
        "control-conversions": "0",
        "baseline": "control group",
        # Three customers an arm: never shown as a win.
        "verdict": "too small to tell",
    }
    assert "$80.00" in row.text  # revenue per customer: $80 / 3 is $26.67
    assert "$26.67" in row.text
    assert browser.execute_script("return Chart.getChart('lift-chart') !== undefined")
    assert _axe(browser, AXE.read_text()) == []  # with its chart and figures
    row.find_element(By.LINK_TEXT, rule_id).click()
    wait(browser).until(ec.url_contains(f"/rules/{rule_id}"))

    # The rules list carries the same figures. Once in a loaded CI run its read of them
    # failed and the list showed "—" without a word: a failed read now says so on the page,
    # and is read again here (the outcomes page has just shown them) with the reason kept.
    failed: list[str] = []

    def listed() -> str | None:
        browser.get(tend.console + "/rules")
        shown = browser.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule_id}'] .rule-outcome")
        alerts = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "[role=alert]")]
        if shown.text == "—":
            assert alerts, "the figures are missing and the page does not say why"
            failed.extend(alerts)
            return None
        return str(shown.text)

    try:
        figures = eventually(listed, what="the rules list's outcome figures")
    except AssertionError as e:
        raise AssertionError(f"{e}; the page said: {failed[-3:]}") from None
    if failed:
        warnings.warn(f"the rules list's outcome read failed first: {failed}", stacklevel=1)
    assert "1 of 3 converted (control 0 of 3)" in figures
    assert "too small to tell" in figures


def test_the_rules_list_shows_a_rule_s_daily_limit_who_waits_and_why_it_held_back(
    browser: WebDriver, tend: Tend
) -> None:
    tag = f"news-{uuid.uuid4().hex[:6]}"
    rule_id = f"one-{tag}"
    customers = [f"{tag}-{n}" for n in range(3)]
    zone = _daytime_zone()
    post_events(
        tend,
        [
            {
                "type": "customer",
                "customer_id": cid,
                "name": f"Reader {cid}",
                "tags": [tag],
                "timezone": zone,
                # The last one never agreed to promotions.
                "consent": {"email": True, "marketing": n < 2},
                "occurred_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            }
            for n, cid in enumerate(customers)
        ],
    )
    rule = {
        "id": rule_id,
        "name": "One a day",
        "trigger": {"type": "broadcast"},
        "conditions": {"has_tag": tag},
        "action": {
            "kind": "announcement",
            "channel": "webhook",
            "template": {"subject": "News", "body": "New in store"},
        },
        "limits": {"max_per_day": 1},
    }

    def all_three() -> bool:
        with tend.api("outreach", "ops") as api:
            preview = api.post(f"/v1/rules/{rule_id}/preview").json()
        return bool(preview["matched"] == 3)

    with tend.api("outreach", "marketing") as api:
        assert api.post("/v1/rules", json=rule).status_code == 201
    eventually(all_three, what="the three customers in the replica")

    # A read-only key sees the rule's launch section without its button, and may not launch.
    sign_in(browser, tend, "ops_read", f"/rules/{rule_id}")
    assert "marketing:write" in browser.find_element(By.ID, "launch").text
    assert not browser.find_elements(By.ID, "launch-button")
    forged = {"csrf": page_csrf(browser), "launch_id": "forged"}
    with httpx.Client(base_url=tend.console, cookies=session_cookie(browser)) as console:
        assert console.post(f"/rules/{rule_id}/launch", data=forged).status_code == 403

    # Marketing launches it from its page: one goes today, one waits for tomorrow's slot,
    # one is held back for good (no consent to promotions).
    browser.delete_all_cookies()
    sign_in(browser, tend, "marketing", f"/rules/{rule_id}")
    form = {
        "csrf": page_csrf(browser),
        "launch_id": str(browser.find_element(By.NAME, "launch_id").get_attribute("value")),
    }
    browser.find_element(By.ID, "launch-button").click()
    launched = wait(browser).until(ec.presence_of_element_located((By.ID, "launched")))
    assert browser.find_element(By.ID, "launched-audience").text == "3"
    assert browser.find_element(By.ID, "launched-decided").text == "2"
    assert browser.find_element(By.ID, "launched-waiting").text == "1"
    assert "suppressed 1" in launched.text
    assert form["launch_id"] in launched.text
    assert _axe(browser, AXE.read_text()) == []
    # The same form sent again (a reload) decides nobody twice; the page offers a new launch.
    with httpx.Client(base_url=tend.console, cookies=session_cookie(browser)) as console:
        again = console.post(f"/rules/{rule_id}/launch", data=form)
    assert again.status_code == 200
    assert "nobody decided now" in again.text
    assert "Launch again (a new launch)" in again.text
    with tend.api("outreach", "ops") as api:
        actions = api.get("/v1/actions", params={"rule_id": rule_id}).json()["items"]
    assert len(actions) == 2 and {a["occurrence"] for a in actions} == {form["launch_id"]}
    # The rule's page lists the launch: when, who, what it decided, who waits.
    browser.get(tend.console + f"/rules/{rule_id}")
    listed = browser.find_element(
        By.CSS_SELECTOR, f"#launches tr[data-launch='{form['launch_id']}']"
    )
    assert "iso-marketing" in listed.text
    assert "suppressed 1" in listed.find_element(By.CLASS_NAME, "launch-statuses").text
    assert listed.find_element(By.CLASS_NAME, "launch-waiting").text == "1"
    assert _axe(browser, AXE.read_text()) == []

    browser.get(tend.console + "/rules")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule_id}']")
    assert row.find_element(By.CLASS_NAME, "daily-limit").text == "at most 1 a day"
    assert row.find_element(By.CLASS_NAME, "rule-line").text == "1 waiting for a slot"
    assert "suppressed 1 (no consent 1)" in row.find_element(By.CLASS_NAME, "rule-decided").text


def test_the_policy_is_edited_with_its_errors_next_to_the_field(
    browser: WebDriver, tend: Tend
) -> None:
    with tend.api("outreach", "ops") as api:
        before = api.get("/v1/policy").json()
    sign_in(browser, tend, "marketing", "/policy")
    count = browser.find_element(By.ID, "cap_count")
    assert count.get_attribute("value") == str(before["frequency_cap"]["count"])
    count.clear()
    count.send_keys("0")
    browser.find_element(By.ID, "save-policy").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "cap_count-error")))
    assert "greater than or equal to 1" in error.text
    count = browser.find_element(By.ID, "cap_count")
    assert count.get_attribute("aria-invalid") == "true"
    assert count.get_attribute("aria-describedby") == "cap_count-error"
    assert count.get_attribute("value") == "0"  # what was typed is kept
    with tend.api("outreach", "ops") as api:
        assert api.get("/v1/policy").json() == before  # nothing saved

    count.clear()
    count.send_keys("3")
    browser.find_element(By.ID, "save-policy").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "saved")))
    with tend.api("outreach", "ops") as api:
        after = api.get("/v1/policy").json()
    assert after["frequency_cap"] == {**before["frequency_cap"], "count": 3}
    # Everything the form did not change is as it was.
    assert {k: v for k, v in after.items() if k != "frequency_cap"} == {
        k: v for k, v in before.items() if k != "frequency_cap"
    }

    # The JSON view takes every field, with outreach's reasons under it.
    browser.find_element(By.CSS_SELECTOR, "#policy-json-view summary").click()
    area = browser.find_element(By.ID, "policy_json")
    area.clear()
    area.send_keys(json.dumps({**after, "default_timezone": "Mars/Olympus"}))
    browser.find_element(By.ID, "save-policy-json").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "policy_json-error")))
    assert "default_timezone" in error.text and "IANA" in error.text
    with tend.api("outreach", "ops") as api:
        assert api.get("/v1/policy").json() == after

    # The audit log lists the change, with what changed.
    browser.get(tend.console + "/audit?change=policy")
    first = browser.find_element(By.CSS_SELECTOR, "#audit tbody tr")
    assert first.find_element(By.CLASS_NAME, "audit-action").text == "policy.updated"
    diff = first.find_element(By.TAG_NAME, "details")
    diff.click()
    assert '"count": 3' in diff.text

    # A read-only key sees no save button, and a forged post is refused.
    browser.delete_all_cookies()
    sign_in(browser, tend, "ops_read", "/policy")
    assert not browser.find_elements(By.ID, "save-policy")
    form = {"csrf": page_csrf(browser), "view": "form", "cap_on": "on", "cap_count": "9"}
    with httpx.Client(base_url=tend.console, cookies=session_cookie(browser)) as console:
        refused = console.post("/policy", data=form)
        assert refused.status_code == 403
        assert "marketing:write" in refused.text
        # Nor may it add or switch a channel, or add or lift a suppression.
        for path, data in (
            ("/channels", {"channel_id": "forged", "kind": "webhook", "url": "http://x.example"}),
            ("/channels/forged/disable", {}),
            ("/suppressions", {"customer_id": "forged", "reason": "forged"}),
            ("/suppressions/forged/lift", {}),
        ):
            assert console.post(path, data={**data, "csrf": form["csrf"]}).status_code == 403
            assert console.post(path, data=data).status_code == 403  # no CSRF token
    with tend.api("outreach", "ops") as api:
        assert api.get("/v1/policy").json()["frequency_cap"]["count"] == 3


def test_a_webhook_channel_shows_its_secret_once(browser: WebDriver, tend: Tend) -> None:
    channel = f"hook-{uuid.uuid4().hex[:6]}"
    sign_in(browser, tend, "marketing", "/channels")
    browser.find_element(By.ID, "channel_id").send_keys(channel)
    browser.find_element(By.ID, "url").send_keys("ftp://example.com/x")
    browser.find_element(By.ID, "enabled").click()  # created disabled
    browser.find_element(By.ID, "add-channel").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "url-error")))
    assert "http" in error.text
    url = browser.find_element(By.ID, "url")
    url.clear()
    url.send_keys("http://127.0.0.1:9/hooks")
    assert not browser.find_element(By.ID, "enabled").is_selected()  # as it was posted
    browser.find_element(By.ID, "add-channel").click()
    secret = wait(browser).until(ec.presence_of_element_located((By.ID, "channel-secret"))).text
    assert secret.startswith("whsec_")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-channel='{channel}']")
    assert "disabled" in row.find_element(By.CLASS_NAME, "channel-state").text

    # Never again: not on the next visit, and the console keeps no copy.
    browser.get(tend.console + "/channels")
    assert secret not in browser.page_source
    assert not browser.find_elements(By.ID, "channel-secret")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-channel='{channel}']")
    assert "set (never shown)" in row.text

    for now, then in (("Enable", "Disable"), ("Disable", "Enable")):
        browser.find_element(By.CSS_SELECTOR, f"button[aria-label='{now} {channel}']").click()
        wait(browser).until(
            ec.presence_of_element_located(
                (By.CSS_SELECTOR, f"button[aria-label='{then} {channel}']")
            )
        )
    with tend.api("outreach", "ops") as api:
        stored = api.get(f"/v1/channels/{channel}").json()
    assert (stored["enabled"], stored["has_secret"]) == (False, True)

    browser.get(f"{tend.console}/audit?change=channel&subject={channel}")
    assert _texts(browser, "#audit .audit-action") == [
        "channel.updated",
        "channel.updated",
        "channel.created",
    ]
    assert secret not in browser.page_source


def test_a_suppression_is_added_and_lifted(browser: WebDriver, tend: Tend) -> None:
    cid = f"quiet-{uuid.uuid4().hex[:6]}"
    sign_in(browser, tend, "marketing", "/suppressions")
    browser.find_element(By.ID, "customer_id").send_keys(cid)
    browser.find_element(By.ID, "suppress-button").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "reason-error")))
    assert error.text
    assert browser.find_element(By.ID, "reason").get_attribute("aria-invalid") == "true"
    browser.find_element(By.ID, "reason").send_keys("asked by phone")
    browser.find_element(By.ID, "suppress-button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "done")))
    with tend.api("outreach", "ops") as api:
        listed = api.get("/v1/suppressions", params={"limit": 1000}).json()["items"]
    assert any(s["customer_id"] == cid for s in listed)
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-customer='{cid}']")
    assert "asked by phone" in row.text
    row.find_element(By.CSS_SELECTOR, f"button[aria-label='Lift {cid}']").click()
    # The page before had its own note: wait for the new page's.
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "done"), "lifted"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"tr[data-customer='{cid}']")

    browser.get(f"{tend.console}/audit?change=suppression&subject={cid}")
    assert _texts(browser, "#audit .audit-action") == ["suppression.deleted", "suppression.created"]


def test_a_rules_versions_show_what_changed(browser: WebDriver, tend: Tend) -> None:
    rule_id = f"versions-{uuid.uuid4().hex[:6]}"
    rule: dict[str, Any] = {
        "id": rule_id,
        "name": "Thanks",
        "trigger": {"type": "event", "event": "order.paid"},
        "action": {
            "kind": "follow_up",
            "channel": "webhook",
            "template": {"subject": "Thank you", "body": "Hello"},
        },
    }
    with tend.api("outreach", "marketing") as api:
        assert api.post("/v1/rules", json=rule).status_code == 201
        rule["action"]["template"]["subject"] = "Thanks a lot"
        assert api.put(f"/v1/rules/{rule_id}", json=rule).status_code == 200
    sign_in(browser, tend, "ops_read", f"/rules/{rule_id}")
    browser.find_element(By.LINK_TEXT, "Versions").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "version-diff")))
    assert _texts(browser, "#versions tbody tr td:first-child") == ["2", "1"]
    removed = _texts(browser, "#version-diff tr.removed")
    added = _texts(browser, "#version-diff tr.added")
    assert len(removed) == len(added) == 1
    assert '"subject": "Thank you"' in removed[0]
    assert '"subject": "Thanks a lot"' in added[0]
    assert _axe(browser, AXE.read_text()) == []
