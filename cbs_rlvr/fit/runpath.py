"""Where one run of a progress fit (allevals.py) will cross an accuracy it has not reached: the
predictive distribution of its log steps there, calibrated on the sweep's own runs.

A run's forecast is the progress curve at its batch, at its own speed, log S_r(a) = log T(B_r, a)
- u_r, with three uncertainties: the curve's (the bootstrap refits, each with its own speeds), the
run's speed given its evaluations so far, and the run's path from here on. The last is what one
speed per run does not describe (a seed that is fast early and slow later, a batch size the
curve's form misses) and it grows with the way still to go. It is measured, not assumed:
leave-batch-point-out pseudo-forecasts. The curve is refitted without a fold of batch points; each
of their runs is cut where it passed a level (at a quarter, half and three quarters of the levels
it passed), its speed refitted on what it had logged by then, and every later level it passed
forecast; the squared errors against the crossings it then made (isotonic, as the crossing fit
measures them) give the variance of a forecast as a function of the remaining log-progress h,
v(h) = c0 + c1 h (non-negative least squares, shrunk toward a weak prior where pairs are few).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._progress import EvalData, solve, speed_information
from .allevals import ProgressFit

#: the prior of the path variance (c0, c1) and its weight in pseudo-pairs
PRIOR_PATH = (0.002, 0.01)
PRIOR_PAIRS = 10
MAX_FOLDS = 8
CUT_QUANTILES = (0.25, 0.5, 0.75)


@dataclass
class PathNoise:
    """The variance of a run's forecast of log S beyond its speed and the curve: c0 + c1 h, h the
    remaining log-progress; n_pairs the pseudo-forecasts it rests on, rms their error."""
    c0: float
    c1: float
    n_pairs: int
    rms: float

    def var(self, h) -> np.ndarray:
        return self.c0 + self.c1 * np.maximum(np.asarray(h, dtype=float), 0.0)


def speeds(fit: ProgressFit, theta: np.ndarray, sub: EvalData, n_iter: int = 12):
    """(u, var u) of every run from the evaluations `sub` only, the curve theta held (Newton on the
    speeds alone, from the prior mean 0)."""
    d = fit.data
    u = np.zeros(d.R)
    for _ in range(n_iter):
        g_u, F_uu = speed_information(theta, u, sub, fit.sigma_u, fit.phi)
        step = np.clip(g_u / F_uu, -1.0, 1.0)
        u += step
        if np.max(np.abs(step), initial=0.0) < 1e-6:
            break
    F_uu = speed_information(theta, u, sub, fit.sigma_u, fit.phi)[1]
    return u, 1.0 / F_uu


def _folds(fit: ProgressFit, max_folds: int) -> list[np.ndarray]:
    codes = np.unique(fit.groups)
    order = sorted(codes, key=lambda g: float(np.mean(fit.B[fit.groups == g])))
    n = min(len(order), max_folds)
    return [np.isin(fit.groups, [g for i, g in enumerate(order) if i % n == k]) for k in range(n)]


def _fold_pairs(fit: ProgressFit, held: np.ndarray, crossed: np.ndarray, coarse: EvalData) -> list:
    """(h, error) of the pseudo-forecasts of the held-out runs `held` (a run mask)."""
    d = fit.data
    keep_fit = ~held[coarse.ri]
    free = np.ones(d.P, dtype=bool)
    if fit.form == "mccandlish":
        free[-1] = False
    theta, *_ = solve(coarse.take(keep_fit), fit.theta, np.where(held, 0.0, fit.u), free, fit.sigma_u, fit.phi,
                      n_iter=25, tol=1e-3)
    T = np.log(np.maximum(fit.level_steps_all(theta)[:, 1:], 1e-300))  # (R, K)
    pairs = []
    for q in CUT_QUANTILES:
        cut_k = np.full(d.R, -1)
        for r in np.flatnonzero(held):
            passed = np.flatnonzero(np.isfinite(crossed[r]))
            if len(passed) >= 2:
                cut_k[r] = passed[int(q * (len(passed) - 1))]
        ok = cut_k >= 0
        ok[ok] = crossed[ok, cut_k[ok]] >= 1.0  # a level passed at step 0 is no cut
        rows = np.flatnonzero(ok)
        if not rows.size:
            continue
        s_cut = np.full(d.R, -np.inf)
        s_cut[rows] = crossed[rows, cut_k[rows]]
        u, _ = speeds(fit, theta, coarse.take(coarse.s <= s_cut[coarse.ri]))
        for r in rows:
            later = np.flatnonzero((crossed[r] > s_cut[r]) & (np.arange(d.K) > cut_k[r]))
            pred = T[r, later] - u[r]
            h = pred - math.log(s_cut[r])
            pairs += list(zip(h, np.log(crossed[r, later]) - pred, strict=True))
    return pairs


def path_noise(fit: ProgressFit, max_folds: int = MAX_FOLDS, crossed: np.ndarray | None = None) -> PathNoise:
    """The calibration of a run's path variance (module docstring)."""
    from scipy import optimize

    from .allevals import thinned

    crossed = fit.crossed if crossed is None else crossed
    coarse = thinned(fit.data, fit.crossed, 100_000)
    pairs = []
    if len(np.unique(fit.groups)) >= 2:
        for held in _folds(fit, max_folds):
            pairs += _fold_pairs(fit, held, crossed, coarse)
    h = np.array([p[0] for p in pairs])
    e = np.array([p[1] for p in pairs])
    ok = np.isfinite(h) & np.isfinite(e)
    h, e = h[ok], e[ok]
    # the prior as pseudo-pairs at h = 0 and h = 1
    A = np.r_[np.column_stack([np.ones_like(h), np.maximum(h, 0.0)]),
              np.sqrt(PRIOR_PAIRS / 2) * np.array([[1.0, 0.0], [1.0, 1.0]])]
    b = np.r_[e * e, np.sqrt(PRIOR_PAIRS / 2) * np.array([PRIOR_PATH[0], sum(PRIOR_PATH)])]
    coef, _ = optimize.nnls(A, b)
    return PathNoise(float(coef[0]), float(coef[1]), int(len(e)), float(np.sqrt(np.mean(e * e))) if len(e) else np.nan)
