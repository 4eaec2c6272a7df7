"""How far a heavy read goes: the budgets that bound a preview's scan of the card replica and a
backtest's replay of the change stream, and the floor no budget cuts below.

A heavy read stops when it has spent its row budget or its time budget, whichever comes first,
and says so in its answer (``cut_by``). It always covers at least :data:`GUARANTEED_ROWS` rows
(customers for a preview, changes for a backtest) or, for a backtest, the last
:data:`GUARANTEED_DAYS` days when those hold fewer changes: the floor is read whatever the
budgets say, so a small budget never makes an answer meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GUARANTEED_DAYS = 30
GUARANTEED_ROWS = 200_000

CutBy = Literal["time_budget", "row_budget"]


@dataclass(frozen=True)
class ReadBudget:
    """At most ``rows`` rows and ``seconds`` seconds of work, above the floor."""

    seconds: float
    rows: int

    def spent(self, rows: int, seconds: float) -> CutBy | None:
        """Which budget a scan that has examined ``rows`` rows in ``seconds`` has spent, if
        any; never one while the scan is below the floor."""
        if rows < GUARANTEED_ROWS:
            return None
        if rows >= self.rows:
            return "row_budget"
        if seconds >= self.seconds:
            return "time_budget"
        return None

    @property
    def max_rows(self) -> int:
        """The most rows a scan may examine: the row budget, or the floor when higher."""
        return max(self.rows, GUARANTEED_ROWS)
