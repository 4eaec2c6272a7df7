"""What scoring loads to start: the per-event path's modules, not the fit's optimiser.

scipy.optimize is ~17 MB resident and only a fit (the refit, a backtest) uses it, importing
it when it runs; loaded at start it would count against every scoring process's memory, at
a million customers too.
"""

from __future__ import annotations

import subprocess
import sys


def test_scoring_starts_without_the_fits_optimiser() -> None:
    probe = (
        "import sys\n"
        "from services.scoring.app import create_app\n"
        "create_app()\n"
        "print(sorted(m for m in sys.modules if m.startswith('scipy.optimize')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert run.stdout.splitlines()[-1] == "[]"
