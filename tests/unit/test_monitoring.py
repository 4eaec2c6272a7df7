"""The alert rules and the dashboard in ``deploy/monitoring/`` watch what the services really
serve: every metric they query is one ``/metrics`` exposes, and every rule has what an
operator needs (a severity, a summary). With ``promtool`` on the PATH (Debian's
``prometheus`` package, which ``make test`` installs), the rules also pass
``promtool check rules``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.ingest.app import create_app as create_ingest
from services.outreach.app import create_app as create_outreach
from services.scoring.app import create_app as create_scoring

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
# Metrics Prometheus makes itself, not the services.
PROMETHEUS_OWN = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}
_METRIC = re.compile(r"\b(tend_[a-z0-9_]+|up)\b")


async def _served() -> set[str]:
    """Every series name the three services' ``/metrics`` can serve (a labelled metric that
    has not moved yet is still declared there)."""
    names: set[str] = set()
    for app in (create_ingest(), create_scoring(), create_outreach()):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            served = await client.get("/metrics")
        assert served.status_code == 200
        for family in text_string_to_metric_families(served.text):
            names.add(family.name)
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
            names.update(sample.name for sample in family.samples)
    return names


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_every_rule_says_what_fires_how_badly_and_why() -> None:
    rules = _rules()
    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_rules_cover_the_signals_an_operator_watches() -> None:
    watched = {m for rule in _rules() for m in _METRIC.findall(rule["expr"])}
    assert {
        "tend_consumer_lag",
        "tend_dead_letters_total",
        "tend_outbox_oldest_age_seconds",
        "tend_delivery_oldest_due_age_seconds",
        "tend_task_up",
        "tend_task_restarts_total",
        "tend_outreach_rule_failures_total",
        "tend_outreach_template_failures_total",
        "tend_api_key_misses_total",
    } <= watched


async def test_every_metric_the_rules_and_the_dashboard_query_is_served() -> None:
    served = await _served() | PROMETHEUS_OWN
    queries = [rule["expr"] for rule in _rules()] + _dashboard_queries()
    assert _dashboard_queries()
    for query in queries:
        used = set(_METRIC.findall(query))
        assert used, query
        assert used <= served, f"{query}: {sorted(used - served)} not served"


def test_the_dashboard_loads_as_grafana_json() -> None:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["type"] == "prometheus"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
