"""What time alone moves on a card (:class:`Moving`), and when a reader holding the last card
published would find it moved. A refit sends a card again only then, so what it counts
decides how often a silent customer's card goes out."""

from __future__ import annotations

from typing import Any

from services.scoring.core.card import Moving, moving_of

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


def moving(**changes: Any) -> Moving:
    sections: dict[str, Any] = {
        "value": VALUE,
        "rfm_doc": RFM,
        "prediction": prediction(),
        "visits": {"last_30d": 0, "total": 3, "last_at": None},
        "complaint_section": {"open": 1, "overdue": 0},
        "membership": None,
        **changes,
    }
    return moving_of(**sections)


PUBLISHED = moving()


def test_what_moves_with_time_alone_moves_the_card() -> None:
    for now in (
        moving(value={**VALUE, "spend_90d": "0.00"}),  # an order left the window
        moving(rfm_doc={**RFM, "recency": 2}),
        moving(visits={"last_30d": 1, "total": 3, "last_at": None}),
        moving(complaint_section={"open": 1, "overdue": 1}),  # gone overdue
        moving(membership={"spend_365d": "80.00", "orders_365d": 1}),
        moving(prediction=prediction(p_alive=0.57)),  # 0.05 below the card published
        moving(prediction=prediction(expected_orders_90d=0.70)),
        moving(prediction=prediction(p_order={"7": 0.04, "30": 0.16, "90": 0.36})),
        moving(prediction=prediction(clv_365d=185.0)),  # 12% less
        moving(prediction=prediction(p_alive=None)),  # no longer judged
        moving(rfm_doc=None, prediction=None),  # before the first fit
    ):
        assert now.moved_from(PUBLISHED), now
    assert PUBLISHED.moved_from(None)  # nothing known published: it goes out


def test_what_a_reader_would_not_notice_leaves_it_alone() -> None:
    # A day older: the figures that count days by their nature are not compared.
    assert not moving(prediction=prediction(age_days=121.0)).moved_from(PUBLISHED)
    # P(alive) and the chances of an order by less than 0.05, the CLV by less than ~10%.
    small = prediction(p_alive=0.585, clv_365d=195.0, p_order={"7": 0.041, "30": 0.17, "90": 0.44})
    assert not moving(prediction=small).moved_from(PUBLISHED)


def test_a_figure_hovering_at_a_line_does_not_send_the_card_at_every_refit() -> None:
    # P(alive) 0.601, 0.599, 0.601...: each refit's parameters nudge it across 0.60. Measured
    # from the card published, it has not moved; on a fixed grid of 0.05 it would go out
    # at every refit.
    published = moving(prediction=prediction(p_alive=0.601))
    for p in (0.599, 0.601, 0.598, 0.602):
        assert not moving(prediction=prediction(p_alive=p)).moved_from(published)
    # Sliding down a step since the card published sends it, once; the next card published
    # is measured from then.
    slid = moving(prediction=prediction(p_alive=0.551))
    assert slid.moved_from(published)
    assert not moving(prediction=prediction(p_alive=0.549)).moved_from(slid)
