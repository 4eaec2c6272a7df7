"""The lifecycle and the value model mean something on a real history: on the CDNOW master
log, judged at the end of a calibration period, the customers of each stage buy again in the
39 weeks that follow less and less often from ``mature`` to ``growing`` to ``declining`` to
``churned``, and ``churned`` means clearly less than ``declining``; the value model fitted on
the calibration alone expects the holdout's spend of the right size, and of the right
customers. The pure core on a fixed file: no broker.
"""

from __future__ import annotations

from services.scoring.settings import ScoringSettings
from shared.card import Stage
from tests.support.cdnow import RANKED, holdout, read_master, value_holdout


def test_stages_rank_customers_by_whether_they_buy_again() -> None:
    table = holdout(read_master(), ScoringSettings())
    shares = [table.by_stage[stage] for stage in RANKED]
    report = {
        stage.value: (s.customers, round(s.rate, 3))
        for stage, s in zip(RANKED, shares, strict=True)
    }
    assert all(s.customers >= 200 for s in shares), report
    rates = [s.rate for s in shares]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates), report
    churned, declining = table.by_stage[Stage.CHURNED], table.by_stage[Stage.DECLINING]
    assert churned.rate <= 0.6 * declining.rate, report


def test_the_value_model_fitted_on_the_past_finds_who_spends_in_the_holdout() -> None:
    # The cards' CLV model (BG/NBD and Gamma-Gamma) fitted on the calibration period alone:
    # its expected spend over the 39 weeks after picks out the customers who spend then, and
    # its totals are of the right size (on this history it expects about 15% too little).
    v = value_holdout(read_master())
    report = (v.predicted_orders, v.actual_orders, v.predicted_spend, v.actual_spend)
    assert 0.75 <= v.predicted_orders / v.actual_orders <= 1.25, report
    assert 0.75 <= v.predicted_spend / v.actual_spend <= 1.25, report
    top, *rest = v.by_fifth
    assert top.actual * top.customers >= 0.6 * v.actual_spend, v.by_fifth
    assert all(top.actual > 4 * band.actual for band in rest), v.by_fifth
