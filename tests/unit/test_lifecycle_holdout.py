"""The lifecycle means something on a real history: on the CDNOW master log, judged at the end
of a calibration period, the customers of each stage buy again in the 39 weeks that follow
less and less often from ``mature`` to ``growing`` to ``declining`` to ``churned``, and
``churned`` means clearly less than ``declining``. The pure core on a fixed file: no broker.
"""

from __future__ import annotations

from services.scoring.settings import ScoringSettings
from shared.card import Stage
from tests.support.cdnow import RANKED, holdout, read_master


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
