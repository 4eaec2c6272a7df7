"""BG/NBD purchase model and Gamma-Gamma spend model on daily periods.

References: Fader, Hardie & Lee (2005) "Counting your customers the easy way" (BG/NBD);
Hardie's notes 004 (BG/NBD likelihood), 021 (P(alive)) and 025 (Gamma-Gamma).

Pure module: no I/O. Time is measured in days, one purchase "day" per calendar day (same-day
purchases are one purchase), exactly as ``lifetimes`` does with ``freq='D'``. The scalar
functions are for the per-event hot path (``math`` only, except the one 2F1); the ``*_many``
variants are their numpy twins for batch scoring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, expit, gammaln, hyp2f1  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """BG/NBD parameters: purchase rate ~ Gamma(r, alpha) per day, dropout ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: order value ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float


@dataclass(frozen=True, slots=True)
class RepeatStats:
    """One customer's sufficient statistics; see :func:`daily_stats`."""

    x: int
    t_x: float
    T: float
    mean_spend: float


@dataclass(frozen=True, slots=True)
class Histogram:
    """Unique ``(x, t_x, T)`` rows and how many customers share each one."""

    x: IntArray
    t_x: FloatArray
    T: FloatArray
    count: IntArray


class FitError(RuntimeError):
    """The optimiser did not reach a stationary point of the likelihood."""


def daily_stats(purchases: Iterable[tuple[date, float]], as_of: date) -> RepeatStats | None:
    """Summarise a purchase history as of ``as_of`` (inclusive), one purchase per day.

    ``x`` counts repeat purchase days, ``t_x`` is the days from the first to the last purchase
    day, ``T`` the days from the first purchase day to ``as_of``, ``mean_spend`` the mean of
    the repeat days' totals (0.0 when ``x == 0``). Returns None with no purchase by ``as_of``.
    """
    if isinstance(as_of, datetime):
        as_of = as_of.date()
    # datetime is a date subclass but does not compare with one, so normalise first.
    return daily_stats_of_days(
        (
            ((when.date() if isinstance(when, datetime) else when).toordinal(), amount)
            for when, amount in purchases
        ),
        as_of.toordinal(),
    )


def daily_stats_of_days(purchases: Iterable[tuple[int, float]], as_of: int) -> RepeatStats | None:
    """:func:`daily_stats` with days as day numbers (any epoch, the same for ``as_of``)."""
    days: dict[int, float] = {}
    for day, amount in purchases:
        if day <= as_of:
            days[day] = days.get(day, 0.0) + float(amount)
    if not days:
        return None
    first, last, x = min(days), max(days), len(days) - 1
    # Sum the repeat days directly: total - first can lose digits when the first order dominates.
    mean_spend = math.fsum(v for d, v in days.items() if d != first) / x if x else 0.0
    return RepeatStats(x, float(last - first), float(as_of - first), mean_spend)


def compress(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> Histogram:
    """Collapse per-customer ``(x, t_x, T)`` into unique rows with multiplicities.

    Whole days given as integer arrays (a refit's) are packed as they are, in one key and one
    flag per customer: at a million customers, float copies of them and the temporaries of
    arithmetic on those would stand at ~55 MB beside the population's own figures."""
    xs = np.asarray(x).ravel()
    if xs.dtype.kind not in "iu":
        xs = xs.astype(np.int64)
    ts, Ts = _whole_or_float(t_x), _whole_or_float(T)
    if not xs.size == ts.size == Ts.size:
        raise ValueError("x, t_x and T must have the same length")
    if xs.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return Histogram(xs.astype(np.int64), empty, empty.copy(), np.zeros(0, dtype=np.int64))
    nt, nT = float(ts.max()) + 1.0, float(Ts.max()) + 1.0
    if (
        min(xs.min(), ts.min(), Ts.min()) >= 0
        and (float(xs.max()) + 1.0) * nt * nT < 2.0**62
        and _whole(ts)
        and _whole(Ts)
    ):
        # Whole-day stats pack into one int64 key: ~10x faster than a 3-key lexsort at 1M rows.
        nt, nT = int(nt), int(nT)
        key = np.multiply(xs, nt, dtype=np.int64)
        key += _as_int64(ts)
        key *= nT
        key += _as_int64(Ts)
        key.sort()  # in place: the sorted unique keys and their run lengths, as np.unique has
        new = np.empty(key.size, dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        del new
        uniq, counts = key[starts], np.diff(np.append(starts, key.size))
        del key, starts
        rest, T_u = np.divmod(uniq, nT)
        del uniq
        x_u, t_u = np.divmod(rest, nt)
        del rest
        return Histogram(x_u, t_u.astype(np.float64), T_u.astype(np.float64), counts)
    xs, ts, Ts = xs.astype(np.int64), ts.astype(np.float64), Ts.astype(np.float64)
    order = np.lexsort((Ts, ts, xs))
    xs, ts, Ts = xs[order], ts[order], Ts[order]
    new = np.empty(xs.size, dtype=bool)
    new[0] = True
    new[1:] = (xs[1:] != xs[:-1]) | (ts[1:] != ts[:-1]) | (Ts[1:] != Ts[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, xs.size)).astype(np.int64)
    return Histogram(xs[starts], ts[starts], Ts[starts], counts)


def _whole_or_float(a: npt.ArrayLike) -> npt.NDArray[np.int64 | np.int32 | np.float64]:
    """Integer arrays as they are (no copy), anything else as float64."""
    arr = np.asarray(a).ravel()
    return arr if arr.dtype.kind in "iu" else arr.astype(np.float64, copy=False)


def _whole(a: npt.NDArray[np.generic]) -> bool:
    return a.dtype.kind in "iu" or bool(np.all(a == np.floor(a)))


def _as_int64(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """What adds to an int64 key in place: integers as they are, whole floats converted."""
    return a if a.dtype.kind in "iu" else a.astype(np.int64)


def p_alive(bg: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """Probability that a customer with history ``(x, t_x, T)`` has not dropped out."""
    if x == 0:
        return 1.0  # dropout only ever follows a repeat purchase
    # log of a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x): no overflow for heavy buyers, and
    # log1p stays accurate when T is close to t_x.
    log_odds_dead = (
        (bg.r + x) * math.log1p((T - t_x) / (bg.alpha + t_x))
        + math.log(bg.a)
        - math.log(bg.b + x - 1)
    )
    if log_odds_dead > 0.0:
        e = math.exp(-log_odds_dead)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(log_odds_dead))


def expected_orders(bg: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """Expected repeat purchase days in the next ``t`` days given history ``(x, t_x, T)``.

    Equation (10) of Fader, Hardie & Lee (2005). Undefined at ``a == 1`` exactly.
    """
    if t <= 0.0:
        return 0.0
    r, alpha, a, b = bg.r, bg.alpha, bg.a, bg.b
    # ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z), rewritten with Euler's
    # transformation to (1-z)^(a-1) * 2F1(a+b-1-r, a-1; a+b+x-1; z): its c-a-b = r+x+1-a > 0,
    # so the series converges at z -> 1 and the terms do not blow up with x. lifetimes evaluates
    # the raw form and only falls back to this one when that overflows.
    hyp = float(hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, t / (alpha + T + t)))
    tail = hyp * math.exp((1.0 - a) * math.log1p(t / (alpha + T)))
    return (a + b + x - 1.0) / (a - 1.0) * (1.0 - tail) * p_alive(bg, x, t_x, T)


def p_order(bg: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """Probability of at least one purchase in the next ``t`` days given history ``(x, t_x, T)``.

    A customer still alive at ``T`` with purchase rate ``lambda`` buys nothing in ``t`` days
    with probability ``exp(-lambda * t)``, and cannot drop out without buying first; given
    that they are alive, ``lambda`` is ``Gamma(r + x, alpha + T)``. Averaged over it:
    ``P(alive) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x))``.
    """
    if t <= 0.0:
        return 0.0
    # -expm1 keeps digits when the chance is small (a short t against a long history).
    silent = (bg.r + x) * math.log1p(t / (bg.alpha + T))
    return -math.expm1(-silent) * p_alive(bg, x, t_x, T)


def expected_order_value(gg: GammaGammaParams, x: int, mean_spend: float) -> float:
    """Posterior mean order value: shrinks ``mean_spend`` towards the population mean.

    For ``x == 0`` this is the population mean ``p*v/(q-1)`` (needs ``q > 1``).
    """
    # Algebraically w*m + (1-w)*p*v/(q-1) with w = p*x/(p*x+q-1), with one division fewer.
    return gg.p * (gg.v + x * mean_spend) / (gg.p * x + gg.q - 1.0)


def clv(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    x: int,
    t_x: float,
    T: float,
    mean_spend: float,
    horizon_days: float = 365.0,
) -> float:
    """Undiscounted expected spend over the next ``horizon_days``."""
    return expected_orders(bg, horizon_days, x, t_x, T) * expected_order_value(gg, x, mean_spend)


def _f64(a: npt.ArrayLike) -> FloatArray:
    return np.asarray(a, dtype=np.float64)


def p_alive_many(
    bg: BgNbdParams, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """Vectorised :func:`p_alive`."""
    xf, tf, Tf = _f64(x), _f64(t_x), _f64(T)
    log_odds_dead = (
        (bg.r + xf) * np.log1p((Tf - tf) / (bg.alpha + tf))
        + math.log(bg.a)
        - np.log(bg.b + np.maximum(xf, 1.0) - 1.0)  # x == 0 masked below; keep log finite
    )
    return np.where(xf == 0, 1.0, expit(-log_odds_dead))


def expected_orders_many(
    bg: BgNbdParams, t: npt.ArrayLike, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """Vectorised :func:`expected_orders`."""
    r, alpha, a, b = bg.r, bg.alpha, bg.a, bg.b
    tf, xf, Tf = _f64(t), _f64(x), _f64(T)
    log_1mz = -np.log1p(tf / (alpha + Tf))
    hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + xf - 1.0, tf / (alpha + Tf + tf))
    tail = hyp * np.exp((a - 1.0) * log_1mz)
    out = (a + b + xf - 1.0) / (a - 1.0) * (1.0 - tail) * p_alive_many(bg, xf, t_x, Tf)
    return np.where(tf > 0.0, out, 0.0)


def expected_order_value_many(
    gg: GammaGammaParams, x: npt.ArrayLike, mean_spend: npt.ArrayLike
) -> FloatArray:
    """Vectorised :func:`expected_order_value`."""
    xf, m = _f64(x), _f64(mean_spend)
    return np.asarray(gg.p * (gg.v + xf * m) / (gg.p * xf + gg.q - 1.0), dtype=np.float64)


def clv_many(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    mean_spend: npt.ArrayLike,
    horizon_days: float = 365.0,
) -> FloatArray:
    """Vectorised :func:`clv`."""
    orders = expected_orders_many(bg, horizon_days, x, t_x, T)
    return orders * expected_order_value_many(gg, x, mean_spend)


Objective = Callable[[FloatArray], tuple[float, FloatArray]]

# Rows of a fit's objective evaluated together (see _bgnbd_objective).
FIT_SLICE = 65_536


def _slices(rows: int) -> Iterator[slice]:
    """Rows ``0..rows`` a :data:`FIT_SLICE` at a time, the last slice the shorter."""
    return (slice(lo, min(lo + FIT_SLICE, rows)) for lo in range(0, rows, FIT_SLICE))


def _dot(u: npt.NDArray[Any], v: FloatArray, buf: FloatArray | None = None) -> float:
    # Not `u @ v`: BLAS ddot wakes OpenBLAS worker threads, and on a busy 2-core box each wake-up
    # can cost milliseconds. A product plus numpy's pairwise sum stays in-thread and keeps the
    # rounding noise at ~log2(n) ulp, which BFGS's line search needs at tight tolerances.
    return float(np.multiply(u, v, out=buf).sum())


def _bgnbd_objective(hist: Histogram) -> tuple[Objective, float]:
    """Mean negative log-likelihood in log-parameters, with its analytic gradient.

    Time is rescaled so that max(T) == 1 (the scale is returned); that only shifts log(alpha)
    but gives the optimiser a well-conditioned start.
    """
    w = hist.count.astype(np.float64)
    n = float(w.sum())
    if n <= 0:
        raise ValueError("empty histogram")
    scale = 1.0 / max(float(hist.T.max()), 1e-12)
    # lnGamma/digamma terms depend on x alone: evaluate them per distinct x (a few dozen).
    ux, ix = _tabulate(hist.x)
    wx = np.bincount(ix, weights=w).astype(np.float64)
    uxf, sw = ux.astype(np.float64), float(wx.sum())
    bx1 = np.maximum(uxf, 1.0) - 1.0
    # Whole-day T and t_x take few distinct values, so log(alpha + .) and 1/(alpha + .) are
    # tabulated per distinct value and gathered: a take is ~8x cheaper than a log per row.
    # Tabulated in days, then scaled: the same distinct values, in the same order.
    uT, iT = _tabulate(hist.T)
    uT = uT * scale
    pos = hist.x > 0
    # x == 0 rows only contribute -r*log(alpha+T): total their weight per distinct T.
    w0 = np.bincount(iT[~pos], weights=w[~pos], minlength=uT.size).astype(np.float64)
    ut, it = _tabulate(hist.t_x[pos])
    ut = ut * scale
    iT, ix = iT[pos], ix[pos]
    # Counts of customers and of repeat purchases, as C ints: each widens to the same float64
    # where it meets one, and x*w is formed a slice at a time.
    wp, xp = hist.count[pos].astype(np.int32), hist.x[pos].astype(np.int32)
    del w, pos
    # Reused work buffers: fresh multi-MB temporaries are mmap'd and page-faulted on every
    # evaluation, which cost more than the arithmetic itself (27 ms vs 10 ms per call at 1M).
    # (Closure buffers are only ever written through out=, never rebound.) The rows go through
    # them a slice at a time (seven buffers as long as a million rows had taken 56 MB, at the
    # refit's peak); a population of one slice is summed exactly as it was in one piece.
    buffers = np.empty((8, min(xp.size, FIT_SLICE)))

    def f(theta: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(theta)
        log_alpha, dg_ab = math.log(alpha), digamma(a + b)
        dg_abx = digamma(a + b + uxf)
        ll = _dot(wx, gammaln(r + uxf) + gammaln(b + uxf) - gammaln(a + b + uxf))
        ll += sw * (r * log_alpha - gammaln(r) + gammaln(a + b) - gammaln(b))
        g = np.array(
            [
                _dot(wx, digamma(r + uxf)) + sw * (log_alpha - digamma(r)),
                sw * r / alpha,
                sw * dg_ab - _dot(wx, dg_abx),
                _dot(wx, digamma(b + uxf) - dg_abx) + sw * (dg_ab - digamma(b)),
            ]
        )
        log_T, inv_T = np.log(alpha + uT), 1.0 / (alpha + uT)
        ll -= r * _dot(w0, log_T)
        g[0] -= _dot(w0, log_T)
        g[1] -= r * _dot(w0, inv_T)
        log_t, inv_t = np.log(alpha + ut), 1.0 / (alpha + ut)
        log_bx, inv_bx = np.log((b + bx1) / a), 1.0 / (b + bx1)
        for rows in _slices(xp.size):
            lT, iTr, diff, rx, d, e, tmp, wpx_ = buffers[:, : rows.stop - rows.start]
            wp_ = wp[rows]
            np.multiply(wp_, xp[rows], out=wpx_)
            # x > 0: log(e^A3 + e^A4) = A3 + softplus(d), A3 = -(r+x)log(alpha+T), d = A4 - A3.
            np.take(log_T, iT[rows], out=lT)
            np.take(inv_T, iT[rows], out=iTr)
            np.subtract(lT, log_t.take(it[rows], out=diff), out=diff)
            np.add(xp[rows], r, out=rx)
            np.multiply(rx, diff, out=d)
            np.subtract(d, log_bx.take(ix[rows], out=tmp), out=d)
            # Cap so exp cannot overflow; beyond 700, softplus(d) == d in double precision.
            np.exp(np.minimum(d, 700.0, out=e), out=e)
            np.add(e, 1.0, out=tmp)
            np.divide(e, tmp, out=e)  # P(dropped out right after the last purchase)
            ll += _dot(wp_, np.log(tmp, out=tmp), tmp)
            if (over := d > 700.0).any():
                ll += _dot(wp_[over], d[over] - 700.0)
            wp_lT, wp_iT = _dot(wp_, lT, tmp), _dot(wp_, iTr, tmp)
            ll -= r * wp_lT + _dot(wpx_, lT, tmp)
            np.multiply(e, wp_, out=e)
            g[0] += _dot(e, diff, tmp) - wp_lT
            np.subtract(iTr, inv_t.take(it[rows], out=tmp), out=tmp)
            np.multiply(tmp, rx, out=tmp)
            g[1] += _dot(e, tmp, tmp) - r * wp_iT - _dot(wpx_, iTr, tmp)
            g[2] += float(e.sum()) / a
            g[3] -= _dot(e, inv_bx.take(ix[rows], out=tmp), tmp)
        return -ll / n, -g * np.array([r, alpha, a, b]) / n

    return f, scale


def _tabulate(values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], IndexArray]:
    """The distinct values, sorted, and where each row's value sits among them: what
    ``np.unique(values, return_inverse=True)`` answers, with the positions as C ints (the
    distinct values are a few thousand at most), found a slice of rows at a time (the
    inverse's own temporaries took ~40 bytes a row)."""
    distinct = np.unique(values)
    codes = np.empty(values.shape, dtype=np.int32)
    for rows in _slices(values.size):
        codes[rows] = np.searchsorted(distinct, values[rows])
    return distinct, codes


def bgnbd_log_likelihood(bg: BgNbdParams, hist: Histogram) -> float:
    """Total log-likelihood of ``hist`` under ``bg`` (comparable across fitters)."""
    f, scale = _bgnbd_objective(hist)
    theta = np.log([bg.r, bg.alpha * scale, bg.a, bg.b])
    # Rescaling time multiplies each density by scale^-x; undo it to report in days.
    jac = _dot(hist.count.astype(np.float64), hist.x.astype(np.float64)) * math.log(scale)
    return -f(theta)[0] * float(hist.count.sum()) + jac


def _gg_objective(
    x: npt.ArrayLike, mean_spend: npt.ArrayLike, count: npt.ArrayLike | None
) -> tuple[Objective, float, float]:
    """Mean negative Gamma-Gamma log-likelihood in log-parameters, with gradient.

    Money is rescaled to unit mean (returned as the scale) so that log(v) starts near 0.
    """
    # x as a float array of our own (it becomes x*w in place below); customers without a
    # count weigh 1 each, read through a view of one number, not an array of ones.
    xf, m = np.array(x, dtype=np.float64).ravel(), _f64(mean_spend).ravel()
    w = np.broadcast_to(1.0, xf.shape) if count is None else _f64(count).ravel()
    keep = (xf > 0) & (m > 0) & (w > 0)
    if not keep.all():  # a refit's buyers come filtered: no copies of them then
        xf, m, w = xf[keep], m[keep], w[keep]
    del keep
    n = float(w.sum())
    if n <= 0:
        raise ValueError("no customer with x > 0 and mean_spend > 0")
    scale = n / _dot(w, m)
    xm = xf * m
    xm *= scale
    # Everything except log(v + x*m) is linear in p and q given per-row constants, summed
    # here a slice at a time as the objective sums (see _bgnbd_objective).
    sw_xlogxm = sw_logm = 0.0
    for rows in _slices(xm.size):
        sw_xlogxm += _dot(w[rows], xf[rows] * np.log(xm[rows]))  # p*x*log(x) + p*x*log(m)
        sw_logm += _dot(w[rows], np.log(m[rows] * scale))
    del m
    # The distinct x and each one's weight (np.unique's inverse would hold ~40 bytes a row).
    ux = np.unique(xf)
    wx = np.bincount(np.searchsorted(ux, xf), weights=w).astype(np.float64)
    wxx = np.multiply(xf, w, out=xf)  # exactly xf when every weight is 1
    del xf
    buffers = np.empty((3, min(xm.size, FIT_SLICE)))  # reused: see _bgnbd_objective

    def f(theta: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(theta)
        px = p * ux
        wxx_L = w_L = wxx_inv = w_inv = 0.0
        for rows in _slices(xm.size):
            L, inv_vxm, tmp = buffers[:, : rows.stop - rows.start]
            w_, wxx_ = w[rows], wxx[rows]
            np.add(xm[rows], v, out=inv_vxm)
            np.log(inv_vxm, out=L)
            np.reciprocal(inv_vxm, out=inv_vxm)
            wxx_L += _dot(wxx_, L, tmp)
            w_L += _dot(w_, L, tmp)
            wxx_inv += _dot(wxx_, inv_vxm, tmp)
            w_inv += _dot(w_, inv_vxm, tmp)
        ll = _dot(wx, gammaln(px + q) - gammaln(px)) + n * (q * math.log(v) - gammaln(q))
        ll += p * (sw_xlogxm - wxx_L) - q * w_L - sw_logm
        dg = digamma(px + q)
        g = np.array(
            [
                _dot(wx, ux * (dg - digamma(px))) + sw_xlogxm - wxx_L,
                _dot(wx, dg) + n * (math.log(v) - digamma(q)) - w_L,
                n * q / v - p * wxx_inv - q * w_inv,
            ]
        )
        return -ll / n, -g * np.array([p, q, v]) / n

    return f, scale, n


def gamma_gamma_log_likelihood(
    gg: GammaGammaParams,
    x: npt.ArrayLike,
    mean_spend: npt.ArrayLike,
    count: npt.ArrayLike | None = None,
) -> float:
    """Total Gamma-Gamma log-likelihood (customers with ``x > 0`` and ``mean_spend > 0``)."""
    f, scale, n = _gg_objective(x, mean_spend, count)
    # The density of mean spend in rescaled money is scale^-1 times the one in real money.
    return -f(np.log([gg.p, gg.q, gg.v * scale]))[0] * n + n * math.log(scale)


# A fitted parameter (in the fit's own scaled units, where real populations give values
# between ~0.01 and ~100) beyond a million times or below a millionth of one lies on a ridge
# running to a boundary of the model, not at a maximum.
BOUNDARY_LOG = math.log(1e6)


def _minimise(f: Objective, theta0: FloatArray, what: str) -> FloatArray:
    # Imported here: scipy.optimize is ~17 MB resident, and only a fit (the refit, a
    # backtest, the bench) needs it; the per-event path never does.
    from scipy.optimize import minimize  # type: ignore[import-untyped]

    # BFGS with an exact gradient; gtol is on the *mean* log-likelihood, so 1e-9 puts the
    # parameters within ~1e-7 relative of the MLE even along the flat r/alpha ridge.
    res = minimize(f, theta0, jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": 500})
    theta = np.asarray(res.x, dtype=np.float64)
    grad = f(theta)[1]
    # BFGS reports "precision loss" once the line search cannot improve in float64; that is a
    # success whenever the gradient is already at rounding-noise level.
    if not np.all(np.isfinite(theta)) or float(np.max(np.abs(grad))) > 1e-6:
        raise FitError(f"{what} fit did not converge: {res.message} (|grad|={grad})")
    # A maximum at a boundary (Gamma-Gamma's q and v without end when spend has no spread
    # between customers) has no finite parameters: BFGS walks up the ridge until float64
    # stops it, and whether the gradient there is under the bar above is chance. Refused
    # whichever way the walk ended, so that refits of one population agree.
    if float(np.max(np.abs(theta))) > BOUNDARY_LOG:
        params = ", ".join(f"{p:.3g}" for p in np.exp(theta))
        raise FitError(f"{what} fit lies at a boundary: no finite maximum (scaled: {params})")
    return theta


def fit_bgnbd(hist: Histogram, initial: BgNbdParams | None = None) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters for a compressed history (see :func:`compress`)."""
    f, scale = _bgnbd_objective(hist)
    start = initial or BgNbdParams(1.0, 1.0 / scale, 1.0, 1.0)  # alpha = max(T) days
    theta0 = np.log([start.r, start.alpha * scale, start.a, start.b])
    r, alpha, a, b = np.exp(_minimise(f, theta0, "BG/NBD"))
    return BgNbdParams(r=float(r), alpha=float(alpha / scale), a=float(a), b=float(b))


def fit_gamma_gamma(
    x: npt.ArrayLike,
    mean_spend: npt.ArrayLike,
    count: npt.ArrayLike | None = None,
    initial: GammaGammaParams | None = None,
) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from customers with ``x > 0``, spend > 0."""
    f, scale, _ = _gg_objective(x, mean_spend, count)
    start = initial or GammaGammaParams(1.0, 1.0, 1.0 / scale)  # v = mean spend
    theta0 = np.log([start.p, start.q, start.v * scale])
    p, q, v = np.exp(_minimise(f, theta0, "Gamma-Gamma"))
    return GammaGammaParams(p=float(p), q=float(q), v=float(v / scale))


@dataclass(frozen=True, slots=True)
class Fitters:
    """The maximum-likelihood fits a population refit runs. Whether a fit has a finite
    answer depends on the population (and, at the margin, on the floating-point
    environment); a refit that gets :class:`FitError` keeps that model's parameters in force,
    and this is where a test hands it a fit that finds none."""

    bg_nbd: Callable[[Histogram], BgNbdParams] = fit_bgnbd
    gamma_gamma: Callable[[npt.ArrayLike, npt.ArrayLike], GammaGammaParams] = fit_gamma_gamma
