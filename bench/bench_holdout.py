"""What the lifecycle's stages are worth on a real history, beside BG/NBD's P(alive).

    python -m bench.bench_holdout

The CDNOW master log (``tests.support.cdnow``), calibration to 1997-09-30 and a 39-week
holdout: every customer is judged at the end of the calibration by the pure lifecycle (no
broker, no database), and the table shows, per stage, how many customers it holds and the
share of them who bought again in the holdout. The same is shown for bands of P(alive) from a
BG/NBD fit on the calibration period. A stage that means something ranks customers: the share
falls from ``mature`` to ``growing`` to ``declining`` to ``churned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from services.scoring.settings import ScoringSettings
from shared.card import Stage
from tests.support.cdnow import RANKED, Holdout, holdout, read_master

CHURNED_VS_DECLINING = 0.6


@dataclass(frozen=True)
class HoldoutFigures:
    table: Holdout

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
    return HoldoutFigures(holdout(read_master(), ScoringSettings(), p_alive_bands=True))


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


if __name__ == "__main__":
    print_figures(measure())
