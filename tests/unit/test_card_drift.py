"""A card's drift: the figures that move with time alone, at the steps a reader would notice,
as one number. A refit sends a card again when its drift differs from the last one
published, so what it counts decides how often a silent customer's card goes out."""

from __future__ import annotations

from typing import Any

from services.scoring.core.card import drift_of

VALUE = {"spend_30d": "0.00", "spend_90d": "80.00", "spend_365d": "160.00", "orders": 2}
RFM = {"recency": 3, "frequency": 2, "monetary": 4, "segment": "potential_loyalists"}


def prediction(**figures: Any) -> dict[str, Any]:
    return {
        "frequency": 1,
        "recency_days": 40.0,
        "age_days": 120.0,
        "p_alive": 0.62,
        "expected_orders_90d": 0.81,
        "expected_order_value": 80.0,
        "clv_365d": 210.0,
        "p_order": {"7": 0.04, "30": 0.16, "90": 0.41},
        **figures,
    }


def drift(**changes: Any) -> int:
    sections: dict[str, Any] = {
        "value": VALUE,
        "rfm_doc": RFM,
        "prediction": prediction(),
        "visits": {"last_30d": 0, "total": 3, "last_at": None},
        "complaint_section": {"open": 1, "overdue": 0},
        "membership": None,
        **changes,
    }
    return drift_of(**sections)


def test_what_moves_with_time_alone_moves_the_drift() -> None:
    base = drift()
    assert drift(value={**VALUE, "spend_90d": "0.00"}) != base  # an order left the window
    assert drift(rfm_doc={**RFM, "recency": 2}) != base
    assert drift(visits={"last_30d": 1, "total": 3, "last_at": None}) != base
    assert drift(complaint_section={"open": 1, "overdue": 1}) != base  # gone overdue
    assert drift(prediction=prediction(p_alive=0.58)) != base  # below 0.60
    assert drift(prediction=prediction(p_order={"7": 0.04, "30": 0.16, "90": 0.39})) != base
    assert drift(prediction=prediction(clv_365d=180.0)) != base
    assert drift(membership={"spend_365d": "80.00", "orders_365d": 1}) != base


def test_what_a_reader_would_not_notice_leaves_it_alone() -> None:
    base = drift()
    # A day older: the figures that count days by their nature are not compared.
    assert drift(prediction=prediction(age_days=121.0)) == base
    # P(alive) and the chances of an order in steps of 0.05, the CLV in steps of ~10%.
    assert drift(prediction=prediction(p_alive=0.61, clv_365d=212.0)) == base
    assert drift(prediction=prediction(p_order={"7": 0.041, "30": 0.17, "90": 0.44})) == base
    # A card with no RFM or forecast yet (before the first fit) has a drift of its own.
    assert drift(rfm_doc=None, prediction=None) != base
