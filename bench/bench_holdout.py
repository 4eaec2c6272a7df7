"""What the lifecycle's stages are worth on a real history, beside BG/NBD's P(alive).

    python -m bench.bench_holdout

The CDNOW master log (``tests.support.cdnow``), calibration to 1997-09-30 and a 39-week
holdout: every customer is judged at the end of the calibration by the pure lifecycle (no
broker, no database), and the table shows, per stage, how many customers it holds and the
share of them who bought again in the holdout. The same is shown for bands of P(alive) from a
BG/NBD fit on the calibration period. A stage that means something ranks customers: the share
falls from ``mature`` to ``growing`` to ``declining`` to ``churned``.

The cards' value model is held to the same history: BG/NBD and Gamma-Gamma fitted on the
calibration period alone, as a refit fits them, give each customer's expected spend over the
holdout (as the card's CLV gives it over a year); the figures set it beside what they spent,
in all and per fifth of customers by the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from services.scoring.settings import ScoringSettings
from shared.card import Stage
from tests.support.cdnow import RANKED, Holdout, ValueHoldout, holdout, read_master, value_holdout

CHURNED_VS_DECLINING = 0.6


@dataclass(frozen=True)
class HoldoutFigures:
    table: Holdout
    value: ValueHoldout

    @property
    def top_fifth_share(self) -> float:
        """The share of the holdout's spend that came from the fifth of customers the value
        model expected most of."""
        v = self.value
        top = v.by_fifth[0]
        return top.actual * top.customers / v.actual_spend if v.actual_spend else 0.0

    @property
    def ranked(self) -> bool:
        """Strictly falling from mature to churned, and churned at most 0.6 x declining."""
        rates = [self.table.by_stage[s].rate for s in RANKED if s in self.table.by_stage]
        by = self.table.by_stage
        return (
            len(rates) == len(RANKED)
            and all(a > b for a, b in pairwise(rates))
            and by[Stage.CHURNED].rate <= CHURNED_VS_DECLINING * by[Stage.DECLINING].rate
        )


def measure() -> HoldoutFigures:
    orders = read_master()
    return HoldoutFigures(
        holdout(orders, ScoringSettings(), p_alive_bands=True), value_holdout(orders)
    )


def print_figures(f: HoldoutFigures) -> None:
    t = f.table
    print(
        f"\n## CDNOW holdout (judged on {t.calibration_end}, bought again by {t.holdout_end}; "
        f"population median gap {t.median_gap_days:g} days)\n"
    )
    columns = ("customers", "bought again")
    print(f"| lifecycle stage | {' | '.join(columns)} | | P(alive) band | {' | '.join(columns)} |")
    print("|---|---|---|---|---|---|---|")
    stages = sorted(t.by_stage.items(), key=lambda kv: list(Stage).index(kv[0]))
    bands = list(t.by_p_alive.items())
    for i in range(max(len(stages), len(bands))):
        left = (
            f"{stages[i][0].value} | {stages[i][1].customers:,} | {stages[i][1].rate:.1%}"
            if i < len(stages)
            else " | | "
        )
        right = (
            f"{bands[i][0]} | {bands[i][1].customers:,} | {bands[i][1].rate:.1%}"
            if i < len(bands)
            else " | | "
        )
        print(f"| {left} | | {right} |")
    v = f.value
    print(
        f"\nThe value model, fitted on the calibration alone, over the holdout: "
        f"{v.predicted_orders:,.0f} purchase days expected, {v.actual_orders:,} made; "
        f"${v.predicted_spend:,.0f} expected, ${v.actual_spend:,.0f} spent. The fifth of "
        f"customers it expected most of spent {f.top_fifth_share:.0%} of it.\n"
    )
    print("| customers by expected spend | customers | expected, each | spent, each |")
    print("|---|---|---|---|")
    for n, band in enumerate(v.by_fifth, 1):
        print(f"| fifth {n} | {band.customers:,} | ${band.predicted:,.2f} | ${band.actual:,.2f} |")


if __name__ == "__main__":
    print_figures(measure())
