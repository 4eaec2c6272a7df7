"""The console in real headless Chromium against the real stack: sign-in, finding a
customer, writing a rule with the form until it fires, the ledger, scopes, CSRF and no CDN."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import Tend, eventually
from tests.support.pipeline import outreach_has_seen

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def wait(browser: WebDriver, timeout: float = 15) -> WebDriverWait[WebDriver]:
    # htmx swaps parts of a page: an element found a moment before may be replaced.
    return WebDriverWait(browser, timeout, ignored_exceptions=[StaleElementReferenceException])


def sign_in(
    browser: WebDriver, tend: Tend, role: str, path: str = "/", timeout: float = 15
) -> None:
    """Sign in on ``path``'s page and wait up to ``timeout`` seconds for it, signed in."""
    browser.get(tend.console + path)
    wait(browser).until(ec.presence_of_element_located((By.ID, "api_key")))
    browser.find_element(By.ID, "api_key").send_keys(tend.keys[role])
    browser.find_element(By.CSS_SELECTOR, "form[action='/signin'] button[type=submit]").click()
    wait(browser, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))


def post_events(tend: Tend, events: list[dict[str, Any]]) -> None:
    """Post through ingest's API, then wait until outreach has applied every event's change
    (so scoring holds the customer, and outreach's replica has their card)."""
    with tend.api("ingest", "ingest") as api:
        resp = api.post("/v1/events", json={"events": events})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["rejected"] == 0, resp.text
    tend.run(outreach_has_seen(tend.stack, [r["event_id"] for r in body["results"]]))


def profile(cid: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": name,
        "email": f"{cid}@example.com",
        "timezone": "Europe/Paris",
        "occurred_at": (NOW - timedelta(days=40)).isoformat(),
        **fields,
    }


def order(cid: str, oid: str, at: datetime, amount: str) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": oid,
        "customer_id": cid,
        "status": "paid",
        "amount": amount,
        "currency": "USD",
        "occurred_at": at.isoformat(),
    }


def _rows(browser: WebDriver, selector: str) -> list[str]:
    texts: list[str] = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(r => r.innerText)",
        selector,
    )
    return texts


def session_cookie(browser: WebDriver) -> dict[str, str]:
    return {c["name"]: c["value"] for c in browser.get_cookies()}


def page_csrf(browser: WebDriver) -> str:
    value = browser.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    assert value
    return value


def test_the_overview_leads_to_the_overdue_complaints_and_their_customers(
    browser: WebDriver, tend: Tend
) -> None:
    cid = f"ada-{uuid.uuid4().hex[:6]}"
    raised = NOW - timedelta(days=5)
    complaint = f"{cid}-k1"
    post_events(
        tend,
        [
            profile(cid, "Ada Lovelace"),
            order(cid, f"{cid}-o1", NOW - timedelta(days=20), "49.00"),
            {
                "type": "complaint",
                "customer_id": cid,
                "complaint_id": complaint,
                "status": "opened",
                "severity": "high",
                "category": "delivery",
                "occurred_at": raised.isoformat(),
            },
        ],
    )
    sign_in(browser, tend, "ops_read", "/")
    browser.find_element(By.ID, "overdue-complaints").click()
    row = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-complaint='{complaint}']"))
    )
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:4] == [cid, complaint, "high", "delivery"]
    # Five days after it was raised, less the tier's response-time target: days, not hours.
    assert re.fullmatch(r"[45] days", row.find_element(By.CLASS_NAME, "overdue-by").text)
    tiers = browser.find_element(By.ID, "complaint-tiers").text
    assert "Target" in tiers and "Overdue" in tiers
    row.find_element(By.LINK_TEXT, cid).click()
    wait(browser).until(ec.title_contains("Ada Lovelace"))


def test_sign_in_then_find_a_customer_by_name_and_open_their_page(
    browser: WebDriver, tend: Tend
) -> None:
    cid = f"grace-{uuid.uuid4().hex[:6]}"
    post_events(
        tend,
        [
            profile(cid, "Grace Hopper", consent={"email": True, "sms": False, "marketing": True}),
            order(cid, f"{cid}-o1", NOW - timedelta(days=20), "1234.50"),
        ],
    )

    # A page asked for before sign-in sends the browser to the form, then back.
    sign_in(browser, tend, "marketing", "/customers")
    assert browser.current_url == tend.console + "/customers"
    # The session cookie is out of the page's scripts' reach.
    assert browser.execute_script("return document.cookie") == ""

    # The list follows the search as it is typed (htmx), and the address keeps it.
    browser.find_element(By.ID, "q").send_keys("hopper")
    wait(browser).until(ec.url_contains("q=hopper"))
    rows = wait(browser).until(lambda b: _rows(b, "#results tbody tr"))
    assert all("Grace Hopper" in row for row in rows), rows
    assert "$1,234.50" in rows[0]  # money in the base currency, thousands separated
    wait(browser, 15).until(ec.element_to_be_clickable((By.LINK_TEXT, "Grace Hopper"))).click()

    wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Grace Hopper"))
    card = browser.find_element(By.CSS_SELECTOR, "dl.card").text
    assert "Stage\nnew" in card
    assert "$1,234.50 over 1 orders" in card
    assert browser.find_element(By.ID, "touch-h").is_displayed()

    # The overview counts them, and draws the flow with its figures beside it.
    browser.get(tend.console + "/?period=month")
    assert browser.find_element(By.ID, "top20").text.endswith("%")
    assert browser.execute_script(
        "return Chart.getChart('flow-chart') !== undefined && Chart.getChart('money-chart') "
        "!== undefined"
    )
    months: list[list[str]] = browser.execute_script(
        "return Array.from(document.querySelectorAll('#flow-table tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    assert len(months) == 12
    assert sum(int(m[2].replace(",", "")) for m in months) >= 1  # Grace's first order: new
    assert all(m[7].startswith("$") for m in months)  # revenue from new customers
    # This month is under way: its row says its figures are so far.
    assert [m[0].endswith("(under way: so far)") for m in months] == [False] * 11 + [True]

    # Searching by the customer's id finds them too.
    browser.get(f"{tend.console}/customers?q={cid}")
    assert browser.find_element(By.LINK_TEXT, "Grace Hopper")


def test_customers_are_filtered_by_tag_sorted_and_paged_with_their_choices_kept(
    browser: WebDriver, tend: Tend
) -> None:
    tag = uuid.uuid4().hex[:6]
    events: list[dict[str, Any]] = []
    # 27 customers with the tag, named in reverse of their ids, and two without it.
    for n in range(29):
        cid = f"pager-{tag}-{n:02d}"
        tags = [f"vip-{tag}", "newsletter"] if n < 27 else ["newsletter"]
        events += [
            profile(cid, f"Pager{tag} {'Zz' if n >= 27 else ''}{99 - n:02d}", tags=tags),
            order(cid, f"{cid}-o1", NOW - timedelta(days=2), f"{10 + n}.00"),
        ]
    post_events(tend, events)
    sign_in(browser, tend, "ops_read", f"/customers?q=pager{tag}")
    browser.find_element(By.ID, "tag").send_keys(f"vip-{tag}")
    Select(browser.find_element(By.ID, "sort")).select_by_value("name")
    Select(browser.find_element(By.ID, "order")).select_by_value("asc")
    Select(browser.find_element(By.ID, "f-stage")).select_by_value("new")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait(browser).until(
        lambda b: all(
            p in b.current_url for p in (f"tag=vip-{tag}", "sort=name", "order=asc", "stage=new")
        )
    )
    first = wait(browser).until(
        lambda b: (
            (rows := _rows(b, "#results tbody tr"))
            and rows[0].startswith(f"Pager{tag} 73")
            and rows
        )
    )
    # Alphabetical: the last-made customer's name comes first.
    assert [r.split("\t")[0] for r in first] == [
        f"Pager{tag} {99 - n:02d}" for n in range(26, 1, -1)
    ]

    # The results may still be swapped in by a control's own request: click the link shown.
    def click_next(b: WebDriver) -> bool:
        b.find_element(By.LINK_TEXT, "Next page").click()
        return True

    wait(browser).until(click_next)
    wait(browser).until(ec.presence_of_element_located((By.LINK_TEXT, "First page")))
    second = _rows(browser, "#results tbody tr")
    assert [r.split("\t")[0] for r in second] == [f"Pager{tag} 98", f"Pager{tag} 99"]
    assert not browser.find_elements(By.LINK_TEXT, "Next page")
    # The next page kept every choice, and the controls still show them.
    for kept in (f"tag=vip-{tag}", "sort=name", "order=asc", "stage=new", f"q=pager{tag}"):
        assert kept in browser.current_url, kept
    assert browser.find_element(By.ID, "tag").get_attribute("value") == f"vip-{tag}"
    assert Select(browser.find_element(By.ID, "sort")).first_selected_option.text == "name"
    assert Select(browser.find_element(By.ID, "f-stage")).first_selected_option.text == "new"


def test_a_rule_written_with_the_form_is_checked_previewed_saved_and_fires_on_an_order(
    browser: WebDriver, tend: Tend
) -> None:
    cid = f"ada-{uuid.uuid4().hex[:6]}"
    rule_id = f"thanks-{uuid.uuid4().hex[:6]}"
    # No email consent: outreach decides the action and suppresses it, with the reason.
    post_events(
        tend,
        [
            profile(
                cid, "Ada Lovelace", consent={"email": False, "sms": False, "marketing": False}
            ),
            order(cid, f"{cid}-o1", NOW - timedelta(days=10), "80.00"),
        ],
    )
    sign_in(browser, tend, "marketing", "/rules/new")

    browser.find_element(By.ID, "rule_id").send_keys(rule_id)
    browser.find_element(By.ID, "name").send_keys("Thank paying customers")
    Select(browser.find_element(By.ID, "trigger_event")).select_by_value("order.paid")
    browser.find_element(By.ID, "cond_field").send_keys("value.ordrs")  # a typo
    Select(browser.find_element(By.ID, "cond_op")).select_by_value("gte")
    browser.find_element(By.ID, "cond_value").send_keys("1")
    Select(browser.find_element(By.ID, "action_channel")).select_by_value("email")
    body = browser.find_element(By.ID, "body")
    body.clear()
    body.send_keys("Thank you, {{ customer.name }}!")
    browser.find_element(By.ID, "preview-button").click()

    # Outreach's 422 is shown next to the field it names.
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "condition-error")))
    assert "unknown card field 'value.ordrs'" in error.text
    assert "value.orders" in error.text  # outreach's suggestion
    subject_error = browser.find_element(By.ID, "subject-error")
    assert "an email needs a subject" in subject_error.text
    assert browser.find_element(By.ID, "subject").get_attribute("aria-invalid") == "true"
    # What was typed is kept.
    assert browser.find_element(By.ID, "rule_id").get_attribute("value") == rule_id

    cond = browser.find_element(By.ID, "cond_field")
    cond.clear()
    cond.send_keys("value.orders")
    browser.find_element(By.ID, "subject").send_keys("Thank you")
    browser.find_element(By.ID, "preview-button").click()
    matched = wait(browser).until(ec.presence_of_element_located((By.ID, "preview-matched")))
    assert int(matched.text.replace(",", "")) >= 1
    assert not browser.find_elements(By.CLASS_NAME, "field-error")
    with tend.api("outreach", "marketing") as api:
        assert api.get(f"/v1/rules/{rule_id}").status_code == 404  # a preview saves nothing

    # A backtest over the recorded changes: the API's limit on its days is shown at the field.
    days = browser.find_element(By.ID, "backtest_days")
    days.clear()
    days.send_keys("4000")
    browser.find_element(By.ID, "backtest-button").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "backtest_days-error")))
    assert "less than or equal to" in error.text
    days = browser.find_element(By.ID, "backtest_days")
    days.clear()
    days.send_keys("30")
    browser.find_element(By.ID, "backtest-button").click()
    would = wait(browser, 60).until(ec.presence_of_element_located((By.ID, "backtest-decided")))
    # Ada's first order (and any other paying customer's) would have fired it.
    assert int(would.text.replace(",", "")) >= 1

    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains("/rules?saved="))
    row = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-rule='{rule_id}']"))
    )
    assert "enabled" in row.find_element(By.CLASS_NAME, "rule-status").text
    with tend.api("outreach", "marketing") as api:
        saved = api.get(f"/v1/rules/{rule_id}").json()["rule"]
    assert saved["trigger"] == {
        "type": "event",
        "event": "order.paid",
        "filters": None,
        "recorded_within_days": None,
    }
    assert saved["conditions"] == {"gte": ["value.orders", 1]}

    # It fires on a posted order.
    post_events(tend, [order(cid, f"{cid}-o2", NOW - timedelta(minutes=5), "35.00")])

    def decided() -> dict[str, Any] | None:
        with tend.api("outreach", "ops") as api:
            items = api.get("/v1/actions", params={"rule_id": rule_id}).json()["items"]
        return items[0] if items and items[0]["status"] != "pending" else None

    action = eventually(decided, what="the rule's action")
    assert action["customer_id"] == cid
    assert action["status"] == "suppressed"
    assert action["reason"]

    # The ledger page finds it by rule, with its status and reason.
    browser.get(tend.console + "/actions")
    browser.find_element(By.ID, "a-rule").send_keys(rule_id)
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    # The unfiltered page shows the row too: wait for the filtered one.
    wait(browser).until(ec.url_contains(f"rule_id={rule_id}"))
    row = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-action='{action['id']}']"))
    )
    assert row.find_element(By.CLASS_NAME, "status-cell").text == "suppressed"
    assert action["reason"].replace("_", " ") in row.find_element(By.CLASS_NAME, "reason-cell").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#actions tbody tr")) == 1
    # Its own page, where outreach serves an action's detail (a suppressed action has no
    # message nor delivery).
    row.find_element(By.CSS_SELECTOR, f"a[href='/actions/{action['id']}']").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), action["id"]))
    shown = browser.find_element(By.TAG_NAME, "main").text
    assert "suppressed" in shown or "not available from this version" in shown

    # Disabled from the list, which says when it last fired.
    browser.get(tend.console + "/rules")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule_id}']")
    fired_at = row.find_element(By.CSS_SELECTOR, ".last-fired time").get_attribute("datetime")
    assert fired_at is not None
    assert datetime.fromisoformat(fired_at) == datetime.fromisoformat(action["decided_at"])
    browser.find_element(By.CSS_SELECTOR, f"button[aria-label='Disable {rule_id}']").click()
    wait(browser).until(ec.url_contains("/rules?saved="))
    with tend.api("outreach", "marketing") as api:
        assert api.get(f"/v1/rules/{rule_id}").json()["rule"]["enabled"] is False

    # Opened again, the form holds the stored rule; a change is saved as a new version.
    browser.find_element(By.LINK_TEXT, "Thank paying customers").click()
    cond = wait(browser).until(ec.presence_of_element_located((By.ID, "cond_field")))
    assert cond.get_attribute("value") == "value.orders"
    assert browser.find_element(By.ID, "rule_id").get_attribute("readonly") is not None
    subject = browser.find_element(By.ID, "subject")
    subject.clear()
    subject.send_keys("Thanks again")
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains("/rules?saved="))
    with tend.api("outreach", "marketing") as api:
        stored = api.get(f"/v1/rules/{rule_id}").json()
    assert stored["version"] == 3
    assert stored["rule"]["action"]["template"]["subject"] == "Thanks again"
    assert stored["rule"]["enabled"] is False


def test_a_rule_of_another_trigger_is_edited_as_json(browser: WebDriver, tend: Tend) -> None:
    rule_id = f"winback-{uuid.uuid4().hex[:6]}"
    rule = {
        "id": rule_id,
        "name": "Win back",
        "trigger": {"type": "stage", "from": [], "to": ["churned"]},
        "action": {
            "kind": "winback",
            "channel": "webhook",
            "template": {"subject": "We miss you", "body": "Hello {{ customer.name }}"},
        },
    }
    with tend.api("outreach", "marketing") as api:
        assert api.post("/v1/rules", json=rule).status_code == 201
    # Every rule opens in the form; the JSON stays at hand as the advanced view.
    sign_in(browser, tend, "marketing", f"/rules/{rule_id}")
    assert browser.find_element(By.ID, "trigger_type").get_attribute("value") == "stage"
    browser.find_element(By.LINK_TEXT, "Edit as JSON").click()
    area = wait(browser).until(ec.presence_of_element_located((By.ID, "rule_json")))
    shown = json.loads(area.get_attribute("value") or "")
    assert shown["trigger"]["to"] == ["churned"]

    # A mistake is refused with outreach's reason under the JSON, and nothing is saved.
    area.clear()
    area.send_keys(json.dumps({**shown, "priority": 5000}))
    browser.find_element(By.ID, "save-button").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "rule_json-error")))
    assert "priority" in error.text
    area = browser.find_element(By.ID, "rule_json")
    area.clear()
    area.send_keys(json.dumps({**shown, "priority": 50}))
    browser.find_element(By.ID, "preview-button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "preview-matched")))
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains("/rules?saved="))
    with tend.api("outreach", "marketing") as api:
        stored = api.get(f"/v1/rules/{rule_id}").json()
    assert (stored["version"], stored["rule"]["priority"]) == (2, 50)


def test_an_event_rules_filters_and_its_goals_are_edited_in_the_form_and_listed_in_words(
    browser: WebDriver, tend: Tend
) -> None:
    rule_id = f"apology-{uuid.uuid4().hex[:6]}"
    rule = {
        "id": rule_id,
        "name": "Apologise for serious complaints",
        "enabled": False,
        "trigger": {
            "type": "event",
            "event": "complaint.opened",
            "filters": {"eq": ["severity", "high"]},
        },
        "action": {
            "kind": "apology",
            "channel": "webhook",
            "template": {"subject": "Sorry", "body": "We are sorry, {{ customer.name }}"},
        },
    }
    with tend.api("outreach", "marketing") as api:
        assert api.post("/v1/rules", json=rule).status_code == 201
    # The list says which complaints the rule waits for.
    sign_in(browser, tend, "marketing", "/rules")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule_id}']")
    trigger = row.find_element(By.CLASS_NAME, "rule-trigger").text
    assert trigger == "event: complaint.opened where severity equals high"

    # The form shows the filter as a test of the event's data.
    browser.get(f"{tend.console}/rules/{rule_id}")
    assert browser.find_element(By.ID, "filter_field").get_attribute("value") == "severity"
    assert browser.find_element(By.ID, "filter_op").get_attribute("value") == "eq"
    assert browser.find_element(By.ID, "filter_value").get_attribute("value") == "high"

    # A field the event has not is outreach's error, shown at the filter.
    _replace(browser, "filter_field", "sevrity")
    browser.find_element(By.ID, "save-button").click()
    assert "did you mean 'severity'" in _error_at(browser, "filter_field")

    _replace(browser, "filter_field", "severity")
    Select(browser.find_element(By.ID, "filter_op")).select_by_value("in")
    _replace(browser, "filter_value", "high, medium")
    # The goal: an order of at least 50 within 14 days counts as won back.
    Select(browser.find_element(By.ID, "goal_event")).select_by_value("order.paid")
    _replace(browser, "goal_within_days", "14")
    _replace(browser, "goal_filter_field", "amount")
    Select(browser.find_element(By.ID, "goal_filter_op")).select_by_value("gte")
    _replace(browser, "goal_filter_value", "50")
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains("/rules?saved="))
    with tend.api("outreach", "marketing") as api:
        stored = api.get(f"/v1/rules/{rule_id}").json()["rule"]
    assert stored["trigger"]["filters"] == {"in": ["severity", ["high", "medium"]]}
    assert stored["goal"] == {
        "event": "order.paid",
        "filters": {"gte": ["amount", 50]},
        "within_days": 14,
        "count": "first",
    }
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule_id}']")
    trigger = row.find_element(By.CLASS_NAME, "rule-trigger").text
    assert trigger == "event: complaint.opened where severity is one of high, medium"


def _error_at(browser: WebDriver, control: str) -> str:
    error = wait(browser).until(ec.presence_of_element_located((By.ID, f"{control}-error")))
    assert browser.find_element(By.ID, control).get_attribute("aria-invalid") == "true"
    return error.text


def _replace(browser: WebDriver, control: str, text: str) -> None:
    field = browser.find_element(By.ID, control)
    field.clear()
    field.send_keys(text)


def _start_rule(browser: WebDriver, tend: Tend, rule_id: str, trigger: str, only: str) -> None:
    """A new rule, disabled, reaching only customers with the tag ``only``."""
    browser.get(tend.console + "/rules/new")
    browser.find_element(By.ID, "rule_id").send_keys(rule_id)
    browser.find_element(By.ID, "name").send_keys(rule_id)
    browser.find_element(By.ID, "enabled").click()
    Select(browser.find_element(By.ID, "trigger_type")).select_by_value(trigger)
    Select(browser.find_element(By.ID, "cond_op")).select_by_value("has_tag")
    browser.find_element(By.ID, "cond_value").send_keys(only)
    Select(browser.find_element(By.ID, "action_channel")).select_by_value("webhook")


def test_stage_and_schedule_rules_are_built_with_the_form(browser: WebDriver, tend: Tend) -> None:
    run = uuid.uuid4().hex[:6]
    sign_in(browser, tend, "marketing", "/rules/new")
    axe = AXE.read_text()

    # A stage rule: the controls of the stage trigger only, outreach's error at its field.
    stage_id = f"lapsed-{run}"
    _start_rule(browser, tend, stage_id, "stage", f"only-{run}")
    assert not browser.find_element(By.ID, "trigger_event").is_displayed()
    assert not browser.find_element(By.ID, "cron_expression").is_displayed()
    browser.find_element(By.ID, "stage_from-mature").click()
    browser.find_element(By.ID, "stage_to-declining").click()
    browser.find_element(By.ID, "stage_to-churned").click()
    browser.find_element(By.ID, "entered_within_days").send_keys("0")
    browser.find_element(By.ID, "save-button").click()
    assert "greater than or equal to 1" in _error_at(browser, "entered_within_days")
    assert _axe(browser, axe) == []
    # What was chosen is kept, and only the chosen trigger's controls are shown.
    assert browser.find_element(By.ID, "stage_to-churned").is_selected()
    assert not browser.find_element(By.ID, "stage_to-new").is_selected()
    assert not browser.find_element(By.ID, "trigger_event").is_displayed()
    _replace(browser, "entered_within_days", "90")
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains(f"/rules?saved={stage_id}"))
    with tend.api("outreach", "marketing") as api:
        saved = api.get(f"/v1/rules/{stage_id}").json()["rule"]
    assert saved["trigger"] == {
        "type": "stage",
        "from": ["mature"],
        "to": ["declining", "churned"],
        "entered_within_days": 90,
    }
    assert saved["enabled"] is False

    # A schedule: a cron that would fire more than once a day is refused at its field.
    cron_id = f"monday-{run}"
    _start_rule(browser, tend, cron_id, "cron", f"only-{run}")
    assert browser.find_element(By.ID, "cron_expression").is_displayed()
    assert not browser.find_element(By.ID, "stage_to-churned").is_displayed()
    browser.find_element(By.ID, "cron_expression").send_keys("*/30 10 * * 1")
    browser.find_element(By.ID, "save-button").click()
    assert "at most once a day" in _error_at(browser, "cron_expression")
    _replace(browser, "cron_expression", "0 10 * * 1")
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains(f"/rules?saved={cron_id}"))
    with tend.api("outreach", "marketing") as api:
        saved = api.get(f"/v1/rules/{cron_id}").json()["rule"]
    assert saved["trigger"] == {"type": "schedule", "kind": "cron", "expression": "0 10 * * 1"}

    # Opened again, the form holds the stored schedule.
    browser.get(f"{tend.console}/rules/{cron_id}")
    assert browser.find_element(By.ID, "cron_expression").get_attribute("value") == "0 10 * * 1"


def test_a_membership_rule_that_tags_is_built_with_the_form_and_edited_without_loss(
    browser: WebDriver, tend: Tend
) -> None:
    run = uuid.uuid4().hex[:6]
    rule_id = f"gold-{run}"
    sign_in(browser, tend, "marketing", "/rules/new")
    _start_rule(browser, tend, rule_id, "membership", f"only-{run}")
    # The membership trigger's controls, and a tag action's in place of a message's.
    assert browser.find_element(By.ID, "entered_within_days").is_displayed()
    assert not browser.find_element(By.ID, "stage_to-churned").is_displayed()
    Select(browser.find_element(By.ID, "action_kind")).select_by_value("tag")
    assert not browser.find_element(By.ID, "body").is_displayed()
    assert not browser.find_element(By.ID, "cooldown_days").is_displayed()
    browser.find_element(By.ID, "member_to").send_keys("gold, Gold Plus")
    Select(browser.find_element(By.ID, "member_direction")).select_by_value("upgrade")
    browser.find_element(By.ID, "entered_within_days").send_keys("30")
    browser.find_element(By.ID, "tags_add").send_keys("gold-welcomed vip")
    browser.find_element(By.ID, "tags_remove").send_keys("vip")
    browser.find_element(By.ID, "save-button").click()
    # Outreach's reason is placed at the tags; what was chosen is kept.
    assert "not both: vip" in _error_at(browser, "tags_add")
    assert _axe(browser, AXE.read_text()) == []
    assert browser.find_element(By.ID, "member_to").get_attribute("value") == "gold, Gold Plus"
    assert browser.find_element(By.ID, "tags_remove").is_displayed()
    assert not browser.find_element(By.ID, "subject").is_displayed()
    _replace(browser, "tags_remove", "silver-offer")
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains(f"/rules?saved={rule_id}"))
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule_id}']")
    assert "tag +gold-welcomed +vip −silver-offer" in row.text
    with tend.api("outreach", "marketing") as api:
        stored = api.get(f"/v1/rules/{rule_id}").json()
    assert stored["rule"]["trigger"] == {
        "type": "membership",
        "from": [],
        "to": ["gold", "Gold Plus"],
        "direction": "upgrade",
        "entered_within_days": 30,
    }
    assert stored["rule"]["action"] == {
        "kind": "tag",
        "tags": {"add": ["gold-welcomed", "vip"], "remove": ["silver-offer"]},
    }
    assert stored["rule"]["conditions"] == {"has_tag": f"only-{run}"}
    assert stored["rule"]["enabled"] is False

    # Opened again and saved untouched, the rule is a new version of the same rule.
    browser.get(f"{tend.console}/rules/{rule_id}")
    assert browser.find_element(By.ID, "trigger_type").get_attribute("value") == "membership"
    assert browser.find_element(By.ID, "member_direction").get_attribute("value") == "upgrade"
    assert browser.find_element(By.ID, "tags_add").get_attribute("value") == "gold-welcomed vip"
    browser.find_element(By.ID, "save-button").click()
    wait(browser).until(ec.url_contains(f"/rules?saved={rule_id}"))
    with tend.api("outreach", "marketing") as api:
        again = api.get(f"/v1/rules/{rule_id}").json()
    assert (again["version"], again["rule"]) == (stored["version"] + 1, stored["rule"])


def test_the_message_is_rendered_as_a_real_customer_would_get_it(
    browser: WebDriver, tend: Tend
) -> None:
    cid = f"emmy-{uuid.uuid4().hex[:6]}"
    post_events(tend, [profile(cid, "Emmy Noether"), order(cid, f"{cid}-o1", NOW, "42.00")])
    sign_in(browser, tend, "ops_read", "/rules/new")
    browser.find_element(By.ID, "subject").send_keys("For {{ customer.name }}")
    _replace(browser, "body", "Hello {{ customer.name }}, {{ card.no_such_thing.x }}")
    browser.find_element(By.ID, "render_customer").send_keys(cid)
    browser.find_element(By.ID, "render-button").click()
    # The template's error on this customer's card is shown at the template's field.
    assert "no_such_thing" in _error_at(browser, "body")
    _replace(browser, "body", "Hello {{ customer.name }}, you are {{ card.stage }}.")
    _replace(browser, "render_customer", f"{cid}-nobody")
    browser.find_element(By.ID, "render-button").click()
    assert f"{cid}-nobody" in _error_at(browser, "render_customer")
    _replace(browser, "render_customer", cid)
    browser.find_element(By.ID, "render-button").click()
    subject = wait(browser).until(ec.presence_of_element_located((By.ID, "rendered-subject")))
    assert subject.text == "For Emmy Noether"
    assert browser.find_element(By.ID, "rendered-body").text == "Hello Emmy Noether, you are new."
    assert not browser.find_elements(By.CLASS_NAME, "field-error")
    assert _axe(browser, AXE.read_text()) == []


def test_an_ops_read_key_sees_no_save_button_and_a_forged_save_is_refused(
    browser: WebDriver, tend: Tend
) -> None:
    sign_in(browser, tend, "ops_read", "/rules/new")
    assert browser.find_elements(By.ID, "preview-button")
    assert not browser.find_elements(By.ID, "save-button")
    assert "may preview rules but not change them" in browser.page_source

    rule_id = f"forged-{uuid.uuid4().hex[:6]}"
    form = {
        "csrf": page_csrf(browser),
        "is_new": "1",
        "rule_id": rule_id,
        "name": "forged",
        "trigger_event": "order.paid",
        "action_kind": "follow_up",
        "action_channel": "webhook",
        "body": "hi",
        "priority": "0",
        "enabled": "on",
        "intent": "save",
    }
    with httpx.Client(base_url=tend.console, cookies=session_cookie(browser)) as console:
        refused = console.post("/rules/edit", data=form)
        assert refused.status_code == 403
        assert "needs the marketing:write scope" in refused.text
        switched = console.post("/rules/anything/disable", data={"csrf": form["csrf"]})
        assert switched.status_code == 403
    with tend.api("outreach", "ops") as api:
        assert api.get(f"/v1/rules/{rule_id}").status_code == 404


def test_a_key_that_cannot_read_is_not_let_in(browser: WebDriver, tend: Tend) -> None:
    for key, said in (
        ("tend_not-a-key-at-all", "do not accept this key"),
        (tend.keys["ingest"], "needs ops:read"),  # events:write only
    ):
        browser.get(tend.console + "/signin")
        browser.find_element(By.ID, "api_key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "form[action='/signin'] button").click()
        error = wait(browser).until(ec.presence_of_element_located((By.ID, "signin-error")))
        assert said in error.text
        assert browser.find_element(By.ID, "api_key").get_attribute("aria-invalid") == "true"
        assert "tend_console" not in session_cookie(browser)


def test_a_post_without_the_csrf_token_is_refused(browser: WebDriver, tend: Tend) -> None:
    sign_in(browser, tend, "marketing", "/rules/new")
    cookies = session_cookie(browser)
    rule_id = f"nocsrf-{uuid.uuid4().hex[:6]}"
    form = {
        "is_new": "1",
        "rule_id": rule_id,
        "name": "no token",
        "trigger_event": "order.paid",
        "action_kind": "follow_up",
        "action_channel": "webhook",
        "body": "hi",
        "priority": "0",
        "intent": "save",
    }
    with httpx.Client(base_url=tend.console, cookies=cookies) as console:
        for token in (None, "", "not-the-token"):
            data = form if token is None else {**form, "csrf": token}
            refused = console.post("/rules/edit", data=data)
            assert refused.status_code == 403, token
            assert "security token" in refused.text
        assert console.post("/signout", data={}).status_code == 403
        # The sign-in form has a token of its own.
        assert console.post("/signin", data={"api_key": tend.keys["marketing"]}).status_code == 403
    with tend.api("outreach", "marketing") as api:
        assert api.get(f"/v1/rules/{rule_id}").status_code == 404

    # Signing out (with the token) ends the browser's session.
    browser.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "api_key")))
    assert "tend_console" not in session_cookie(browser)
    browser.get(tend.console + "/rules")
    assert "/signin?next=/rules" in browser.current_url
    # A copy of the old cookie is no longer let in either.
    with httpx.Client(base_url=tend.console, cookies=cookies) as console:
        replayed = console.get("/rules", follow_redirects=False)
        assert replayed.status_code == 303
        assert replayed.headers["location"].startswith("/signin")


EXTERNAL = re.compile(r"""(?i)(?:https?:)?//[a-z0-9\[]|url\(\s*['"]?(?:https?:)?//""")


def test_no_page_refers_to_anything_outside_the_console(browser: WebDriver, tend: Tend) -> None:
    """No CDN: every page's HTML names nothing outside the console, and every script, style,
    image and link the browser loads is the console's own."""
    cid = f"linus-{uuid.uuid4().hex[:6]}"
    post_events(tend, [profile(cid, "Linus Pauling"), order(cid, f"{cid}-o1", NOW, "9.99")])
    browser.get(tend.console + "/signin")
    pages = {"/signin": browser.page_source}
    sign_in(browser, tend, "marketing")
    with tend.api("outreach", "marketing") as api:
        rules = api.get("/v1/rules").json()["items"]
    paths = [
        "/",
        "/?period=month",
        "/?period=quarter&tier=key",
        "/customers",
        f"/customers/{cid}",
        "/actions",
        "/rules",
        "/rules/new",
        "/outcomes",
        "/outcomes?by=tier&days=30",
        "/policy",
        "/channels",
        "/suppressions",
        "/audit",
        "/complaints",
    ]
    paths += [f"/rules/{r['rule']['id']}" for r in rules[:2]]
    paths += [f"/rules/{r['rule']['id']}/versions" for r in rules[:1]]
    for path in paths:
        browser.get(tend.console + path)
        pages[path] = browser.page_source
        assert "Not done" not in browser.title, path
        loaded = browser.execute_script(
            "return Array.from(document.querySelectorAll('[src],[href],[action]'))"
            ".map(e => e.src || e.href || e.action)"
            ".concat(performance.getEntriesByType('resource').map(r => r.name))"
        )
        outside = [u for u in loaded if not (u.startswith(tend.console) or u.startswith("data:"))]
        assert outside == [], (path, outside)
    with httpx.Client(base_url=tend.console, cookies=session_cookie(browser)) as console:
        for path in paths:
            served = console.get(path).text
            assert not EXTERNAL.search(served), (path, EXTERNAL.search(served))
    for path, html in pages.items():
        assert not EXTERNAL.search(html), (path, EXTERNAL.search(html))


AXE = Path(__file__).resolve().parents[2] / "services/console/node_modules/axe-core/axe.min.js"


def test_every_page_passes_axe_without_serious_violations(browser: WebDriver, tend: Tend) -> None:
    """axe-core (pinned from npm) run in the page on every page: no serious or critical
    accessibility violation (labels, contrast, landmarks, names)."""
    cid = f"marie-{uuid.uuid4().hex[:6]}"
    post_events(tend, [profile(cid, "Marie Curie"), order(cid, f"{cid}-o1", NOW, "19.99")])
    axe = AXE.read_text()
    browser.get(tend.console + "/signin")
    found = {"/signin": _axe(browser, axe)}
    sign_in(browser, tend, "marketing")
    with tend.api("outreach", "marketing") as api:
        assert api.post("/v1/suppressions", json={"customer_id": cid, "reason": "axe"}).is_success
        rules = api.get("/v1/rules").json()["items"]
    pages = ["/", "/customers", f"/customers/{cid}", "/actions", "/rules", "/rules/new"]
    pages += ["/outcomes", "/policy", "/channels", "/suppressions", "/audit", "/complaints"]
    pages += [f"/rules/{r['rule']['id']}/versions" for r in rules[:1]]
    for path in pages:
        browser.get(tend.console + path)
        found[path] = _axe(browser, axe)
    # A form with errors, as the editor shows them.
    browser.get(tend.console + "/rules/new")
    browser.find_element(By.ID, "preview-button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "form-errors")))
    found["/rules/new (errors)"] = _axe(browser, axe)
    browser.get(tend.console + "/policy")
    browser.find_element(By.ID, "cap_count").clear()
    browser.find_element(By.ID, "save-policy").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "form-errors")))
    found["/policy (errors)"] = _axe(browser, axe)
    serious = {path: v for path, v in found.items() if v}
    assert serious == {}, serious


def _axe(browser: WebDriver, source: str) -> list[str]:
    browser.execute_script(source)
    violations: list[dict[str, Any]] = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations), e => done([{id: 'axe-error', "
        "impact: 'critical', help: String(e), nodes: []}]));"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(n["target"][0] if n.get("target") else "?" for n in v["nodes"][:3])
        for v in violations
        if v.get("impact") in ("serious", "critical")
    ]
