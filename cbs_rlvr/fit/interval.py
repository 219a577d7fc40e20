"""Bootstrap intervals that always hold their estimate, and when a bootstrap gives none."""

from __future__ import annotations

import math

import numpy as np


def bootstrap_interval(estimate: float, draws, name: str = "the estimate",
                       level: float = 0.95) -> tuple[float, float, str]:
    """A bootstrap interval [lo, hi] that always contains its point estimate, and a note.

    The percentile interval of the draws (NaN draws are failed refits and do not count; +-inf
    are fits that ran to a search bound and do). A percentile interval need not contain the
    estimate: when the bootstrap distribution is off-centre (few points, heavy censoring, a
    model that fits poorly, a parameter at the edge of its range) the estimate can fall in its
    tail. Then the interval is extended to the estimate, lo = min(q_lo, estimate) and
    hi = max(q_hi, estimate), and the note says so with the percentile interval and the share
    of resamples below the estimate: the row then carries the reason, and every plot can draw
    its error bar. Returns (NaN, NaN, note) when fewer than max(20, half) of the draws gave a
    fit, and (NaN, NaN, "") when the estimate is missing or no draws were made.
    """
    x = np.asarray(draws, dtype=float).ravel()
    if not np.isfinite(estimate) or x.size == 0:
        return np.nan, np.nan, ""
    n_all = x.size
    x = x[~np.isnan(x)]
    if x.size < max(20, 0.5 * n_all):
        return np.nan, np.nan, (f"no interval for {name}: {x.size} of {n_all} bootstrap refits gave "
                                f"a value (at least {max(20, math.ceil(0.5 * n_all))} needed)")
    alpha = round((1.0 - level) / 2.0, 12)  # 0.025, not 0.025000000000000022
    lo, hi = (float(v) for v in np.quantile(x, (alpha, 1.0 - alpha), method="inverted_cdf"))
    if lo <= estimate <= hi:
        return lo, hi, ""
    below = float(np.mean(x < estimate))
    note = (f"the {level:.0%} bootstrap percentile interval of {name} [{lo:.4g}, {hi:.4g}] does not "
            f"contain the estimate {estimate:.4g} ({below:.0%} of {x.size} resamples lie below it): "
            "the interval is extended to the estimate; an off-centre bootstrap (few points, "
            "censoring or a poor fit), read it as approximate")
    return min(lo, estimate), max(hi, estimate), note


def ci_shortfall(n_tables: int, n_ok: int) -> str:
    """Why a fit's bootstrap gives no interval ('' when it can): fewer than 20 resamples, or fewer
    than max(20, half) of them with 3 batch sizes reaching the target."""
    if n_tables < 20:
        return f"no CI: {n_tables} bootstrap resamples, at least 20 needed"
    if n_ok < max(20, 0.5 * n_tables):
        return (f"no CI: only {n_ok} of {n_tables} bootstrap tables had 3 batch sizes reaching the "
                f"target (at least {max(20, math.ceil(n_tables / 2))} needed)")
    return ""
