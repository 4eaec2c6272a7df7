"""Parity with the `lifetimes` package on its own CDNOW sample, replayed through the whole
pipeline: ingest's HTTP API → Kafka → scoring's consumer → PostgreSQL → scoring's API."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import lifetimes
import numpy as np
import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data
from sqlalchemy import text

from services.scoring.core.card import Population, build_card
from services.scoring.core.predict import BgNbdParams, GammaGammaParams, p_order
from services.scoring.core.state import CustomerState
from shared.settings import CommonSettings
from tests.integration.conftest import wait_applied
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

AS_OF = datetime(1997, 9, 30, 23, 59, 59, tzinfo=UTC)
SAMPLE = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"


def _transactions() -> pd.DataFrame:
    df = pd.read_csv(
        SAMPLE,
        sep=r"\s+",
        header=None,
        names=["customer_id", "customer_index", "date", "quantity", "spend"],
    )
    df["date"] = pd.to_datetime(df["date"].astype(str), format="%Y%m%d")
    return df


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


async def test_cdnow_sample_through_the_pipeline_matches_lifetimes(
    settings: CommonSettings,
) -> None:
    # Every customer is read back one request after another: a quick machine would cross an
    # API key's default request budget (200 a second), which is not what this checks.
    unthrottled = settings.model_copy(update={"rate_limit_per_second": 10_000.0})
    async with isolated_stack(unthrottled) as stack:
        await _check_parity(stack)


async def _check_parity(stack: Stack) -> None:
    df = _transactions()
    events = [
        {
            "type": "order",
            "order_id": f"o-{i}",
            "customer_id": str(row.customer_id),
            "occurred_at": f"{row.date.date().isoformat()}T12:00:00Z",
            "status": "paid",
            "amount": f"{Decimal(str(row.spend)):.2f}",
            "currency": "USD",
        }
        for i, row in enumerate(df.itertuples())
    ]
    accepted: list[str] = []
    for start in range(0, len(events), 1000):
        resp = await stack.ingest.post(
            "/v1/events",
            json={"events": events[start : start + 1000]},
            headers={"Authorization": f"Bearer {stack.keys['ingest']}"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["rejected"] == 0
        accepted += [r["event_id"] for r in resp.json()["results"]]
    await wait_applied(stack.engine, accepted, timeout=180)

    summary = summary_data_from_transaction_data(
        df,
        "customer_id",
        "date",
        monetary_value_col="spend",
        observation_period_end="1997-09-30",
        freq="D",
    )
    ops = {"Authorization": f"Bearer {stack.keys['ops']}"}

    # 1. Per-customer x, t_x, T at as_of, read back through the read API.
    for cid, row in summary.iterrows():
        resp = await stack.scoring.get(
            f"/v1/customers/{cid}", params={"as_of": AS_OF.isoformat()}, headers=ops
        )
        assert resp.status_code == 200, resp.text
        prediction = resp.json()["prediction"]
        got = (prediction["frequency"], prediction["recency_days"], prediction["age_days"])
        assert got == (row["frequency"], row["recency"], row["T"]), cid

    # 2. The service's own refit at as_of, against lifetimes' fit of the same summary.
    resp = await stack.scoring.post(
        "/v1/ops/refit", params={"as_of": AS_OF.isoformat()}, headers=ops
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["buyers"] == len(summary) == 2357
    fitted = resp.json()["population"]
    bgf = lifetimes.BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["frequency"], summary["recency"], summary["T"]
    )
    repeat = summary[summary["frequency"] > 0]
    ggf = lifetimes.GammaGammaFitter(penalizer_coef=0.0).fit(
        repeat["frequency"], repeat["monetary_value"]
    )
    for name in ("r", "alpha", "a", "b"):
        assert _rel(fitted["bg"][name], float(bgf.params_[name])) < 1e-3, name
    for name in ("p", "q", "v"):
        assert _rel(fitted["gg"][name], float(ggf.params_[name])) < 1e-3, name

    # 3. Given lifetimes' parameters, each customer's predictions within 1e-6.
    async with stack.engine.connect() as conn:
        stored = {
            r.customer_id: CustomerState.from_json(r.state)
            for r in await conn.execute(text("SELECT customer_id, state FROM scoring.customers"))
        }
    their_bg = BgNbdParams(*(float(bgf.params_[k]) for k in ("r", "alpha", "a", "b")))
    theirs = Population(
        bg=their_bg,
        gg=GammaGammaParams(*(float(ggf.params_[k]) for k in ("p", "q", "v"))),
    )
    p_alive = np.asarray(
        bgf.conditional_probability_alive(summary["frequency"], summary["recency"], summary["T"])
    )
    expected = np.asarray(
        bgf.conditional_expected_number_of_purchases_up_to_time(
            90, summary["frequency"], summary["recency"], summary["T"]
        )
    )
    value = np.asarray(
        ggf.conditional_expected_average_profit(summary["frequency"], summary["monetary_value"])
    )
    settings = stack.scoring_app.state.settings
    for i, cid in enumerate(summary.index):
        card = build_card(stored[str(cid)], AS_OF, theirs, settings)
        assert card.prediction is not None
        p = card.prediction
        assert p.expected_orders_90d is not None and p.expected_order_value is not None
        if summary["frequency"].iloc[i]:
            assert p.p_alive is not None and _rel(p.p_alive, float(p_alive[i])) < 1e-6, cid
        else:  # the model's 1 for a one-time buyer is no judgment: the card says none
            assert p.p_alive is None and p_alive[i] == 1.0, cid
        assert _rel(p.expected_orders_90d, float(expected[i])) < 1e-6, cid
        assert _rel(p.expected_order_value, float(value[i])) < 1e-6, cid
        # The order forecast is the closed form at lifetimes' own summary of the customer.
        x, t_x, T = (float(summary[k].iloc[i]) for k in ("frequency", "recency", "T"))
        assert p.p_order is not None
        for days in (7, 30, 90):
            want = p_order(their_bg, float(days), int(x), t_x, T)
            assert _rel(p.p_order[str(days)], want) < 1e-9, (cid, days)
        assert p.p_order["90"] <= float(expected[i]) * (1 + 1e-9), cid
