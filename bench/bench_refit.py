"""Time a full model refit on 1,000,000 synthetic customers.

    python bench/bench_refit.py [--customers N] [--seed S] [--repeat K]

Customers are drawn from the BG/NBD and Gamma-Gamma processes themselves, so the fit should
recover the true parameters up to sampling noise (about 1% at this size). Acquisition dates are
spread over two years (T = 1..730 whole days) and purchase times are rounded to whole days, as
the daily pipeline sees them; that rounding is what lets :func:`compress` collapse a million
customers into a few hundred thousand histogram rows.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from services.scoring.core.predict import (
    BgNbdParams,
    GammaGammaParams,
    compress,
    fit_bgnbd,
    fit_gamma_gamma,
)

TRUE_BG = BgNbdParams(r=0.25, alpha=30.0, a=0.8, b=2.5)  # CDNOW-like, daily units
TRUE_GG = GammaGammaParams(p=6.0, q=3.8, v=15.0)
TARGET_S = 3.0
MAX_T_DAYS = 730

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
R = TypeVar("R")


def simulate(
    n: int, seed: int, bg: BgNbdParams, gg: GammaGammaParams
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Per-customer (x, t_x, T, mean_spend) from the generative models, fully vectorised."""
    rng = np.random.default_rng(seed)
    T = rng.integers(1, MAX_T_DAYS + 1, size=n).astype(np.float64)
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, size=n)
    p_drop = rng.beta(bg.a, bg.b, size=n)
    # Arrivals while "alive forever" in (0, T]; the customer dies right after repeat purchase
    # number J ~ Geometric(p), so the observed count is min(N, J).
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, rng.geometric(p_drop)).astype(np.int64)
    buyer = x > 0
    # Given N arrivals on (0, T], the x-th is T times the x-th of N uniform order statistics,
    # i.e. T * Beta(x, N - x + 1).
    k = np.where(buyer, x, 1)
    t_cont = T * rng.beta(k, np.maximum(arrivals, k) - k + 1)
    t_x = np.where(buyer, np.clip(np.rint(t_cont), 1.0, T), 0.0)
    # Order values ~ Gamma(p, rate nu), nu ~ Gamma(q, rate v): the mean of x orders is
    # Gamma(p*x, rate nu*x).
    nu = rng.gamma(gg.q, 1.0 / gg.v, size=n)
    mean_spend = np.where(buyer, rng.gamma(gg.p * k, 1.0 / (nu * k)), 0.0)
    return x, t_x, T, mean_spend


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@dataclass(frozen=True)
class RefitFigures:
    customers: int
    seed: int
    generate_s: float
    histogram_rows: int
    buyers: int
    steps: dict[str, list[float]]
    totals: list[float]
    bg: BgNbdParams
    gg: GammaGammaParams
    fit_peak_mb: float  # the fits' own arrays at their peak, beside the refit's figures

    @property
    def median_s(self) -> float:
        return statistics.median(self.totals)


def measure(customers: int, seed: int, repeat: int) -> RefitFigures:
    """Simulate ``customers``, then time ``repeat`` full refits (compress and both fits)."""
    (x, t_x, T, m), gen_s = timed(lambda: simulate(customers, seed, TRUE_BG, TRUE_GG))
    steps: dict[str, list[float]] = {"compress": [], "fit_bgnbd": [], "fit_gamma_gamma": []}
    totals: list[float] = []
    for _ in range(repeat):
        hist, t_c = timed(lambda: compress(x, t_x, T))
        bg, t_b = timed(lambda: fit_bgnbd(hist))  # noqa: B023 - called immediately
        gg, t_g = timed(lambda: fit_gamma_gamma(x, m))
        for name, secs in zip(steps, (t_c, t_b, t_g), strict=True):
            steps[name].append(secs)
        totals.append(t_c + t_b + t_g)
    buyers = int(np.count_nonzero(x))
    peak = fits_peak_mb(x, t_x, T, m)
    return RefitFigures(customers, seed, gen_s, hist.x.size, buyers, steps, totals, bg, gg, peak)


def fits_peak_mb(x: IntArray, t_x: FloatArray, T: FloatArray, mean_spend: FloatArray) -> float:
    """The most memory the fits hold at once (numpy reports its arrays to tracemalloc), given
    what scoring's refit gives them: whole days as C ints, and the repeat buyers alone for
    Gamma-Gamma. The refit's own figures (one number each per buyer) are not counted."""
    days_x, days_T = t_x.astype(np.int32), T.astype(np.int32)
    repeat = x > 0
    x_rep, m_rep = x[repeat], mean_spend[repeat]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fit_bgnbd(compress(x, days_x, days_T))
        fit_gamma_gamma(x_rep, m_rep)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - before) / 1e6


def print_figures(f: RefitFigures) -> None:
    print(f"generated {f.customers:,} customers in {f.generate_s:.2f} s (seed {f.seed})")
    print(
        f"histogram: {f.histogram_rows:,} unique (x, t_x, T) rows; "
        f"{f.buyers:,} repeat buyers for Gamma-Gamma"
    )
    print()
    print(f"{'step':<18}{'median s':>10}{'min s':>10}   (over {len(f.totals)} runs)")
    for name, runs in f.steps.items():
        print(f"{name:<18}{statistics.median(runs):>10.3f}{min(runs):>10.3f}")
    total = f.median_s
    print(f"{'total refit':<18}{total:>10.3f}{min(f.totals):>10.3f}")
    verdict = "MET" if total < TARGET_S else "NOT MET"
    print(f"target: refit < {TARGET_S:.0f} s -> {verdict} (median {total:.3f} s)")
    print(
        f"the fits' arrays at their peak: {f.fit_peak_mb:.1f} MB "
        f"({f.fit_peak_mb * 1e6 / f.customers:.0f} bytes a customer)"
    )

    print()
    print(f"{'param':<8}{'true':>10}{'fitted':>12}{'rel err':>10}")
    pairs = [(n, getattr(TRUE_BG, n), getattr(f.bg, n)) for n in ("r", "alpha", "a", "b")]
    pairs += [(n, getattr(TRUE_GG, n), getattr(f.gg, n)) for n in ("p", "q", "v")]
    for name, true, fitted in pairs:
        print(f"{name:<8}{true:>10.4f}{fitted:>12.4f}{(fitted - true) / true:>+10.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print_figures(measure(args.customers, args.seed, args.repeat))


if __name__ == "__main__":
    main()
