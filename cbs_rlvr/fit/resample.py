"""The bootstrap tables of a phase: a parametric bootstrap with the scatter pooled over the whole
phase, so that a sweep of two seeds per batch size gets an honest spread.

A run's log S at a target deviates from the fitted curve by a part its batch point shares with
every run there (the form does not describe that point exactly: lack of fit) and a part of its
own (seed and eval noise). Both are estimated from every run of the phase at once:

- sigma_j: the residual sd of a run's log S at target j (the censored likelihood's, so runs that
  stopped early count), corrected for the parameters fitted (n / (n - p)), and never below the
  eval noise alone (the sd of a run's log S over re-drawn eval accuracies);
- run_share: the share of sigma^2 that differs between the runs of one batch point (from the
  replicates' spread, pooled over every batch point and target; with no replicates it does not
  matter which part is which);
- rho: how a run's (and a batch point's) deviations at neighbouring targets go together, as
  corr = rho^|j - j'| (a lucky seed is lucky at every target).

Table k: log S*_rj = f_rj + v_gj + u_rj (v shared by the runs of batch point g, u a run's own,
both Gaussian with that correlation across targets), then censored where it passes the run's last
evaluated step, as the run itself would have been. Every form is refitted on the same tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Scatter:
    """The phase's scatter of log S about its fit (see the module docstring)."""
    sigma: np.ndarray  # (T,) a run's sd of log S about the curve
    run_share: float
    rho: float
    eval_sd: np.ndarray  # (T,) eval noise alone (NaN where unknown)
    dof_factor: float

    @property
    def sigma_point(self) -> np.ndarray:
        return self.sigma * math.sqrt(max(1.0 - self.run_share, 0.0))

    @property
    def sigma_run(self) -> np.ndarray:
        return self.sigma * math.sqrt(max(self.run_share, 0.0))

    def design_effect(self) -> float:
        """The effective share of a run's T cells: T / (1 + (T - 1) mean correlation) over T. The
        likelihood sums a run's targets as if independent; evidence weighed across forms counts
        this share of it."""
        T = len(self.sigma)
        if T < 2:
            return 1.0
        C = self.correlation()
        mean_off = (C.sum() - T) / (T * (T - 1))
        return float(1.0 / (1.0 + (T - 1) * mean_off))

    def correlation(self) -> np.ndarray:
        T = len(self.sigma)
        idx = np.arange(T)
        return self.rho ** np.abs(idx[:, None] - idx[None, :])


def estimate_scatter(Y, C, W, f_hat, sigma_fit, groups, n_free: int, eval_sd_rows=None) -> Scatter:
    """The Scatter of one phase. Y, C, W, f_hat: (R, T) log S, censored, weight, fitted log S;
    sigma_fit (T,): the fit's sigma_j; groups (R,): batch-point codes; n_free: parameters fitted;
    eval_sd_rows (R, T): each run's eval-noise sd of log S (optional)."""
    R, T = Y.shape
    used = (W > 0) & ~C
    n = float(W[used].sum())
    dof = n / (n - n_free) if n > n_free + 1 else 2.0
    dof = min(dof, 2.0)
    sigma = np.asarray(sigma_fit, dtype=float) * math.sqrt(dof)
    eval_sd = np.full(T, np.nan)
    if eval_sd_rows is not None:
        with np.errstate(all="ignore"):
            for j in range(T):
                v = eval_sd_rows[used[:, j], j]
                v = v[np.isfinite(v)]
                if v.size:
                    eval_sd[j] = float(np.median(v))
    sigma = np.where(np.isfinite(eval_sd), np.maximum(sigma, eval_sd), sigma)
    E = np.where(used, Y - f_hat, np.nan)
    # replicates: the spread between runs of one batch point, pooled
    within, total = 0.0, 0.0
    for g in np.unique(groups):
        rows = groups == g
        if rows.sum() < 2:
            continue
        for j in range(T):
            e = E[rows, j]
            e = e[np.isfinite(e)]
            if e.size >= 2:
                within += float(np.var(e, ddof=1)) * (e.size - 1)
                total += sigma[j] ** 2 * (e.size - 1)
    run_share = float(np.clip(within / total, 0.0, 1.0)) if total > 0 else 0.5
    # neighbouring targets: lag-one correlation of the standardised deviations of one run
    Z = E / sigma[None, :]
    a, b = Z[:, :-1], Z[:, 1:]
    pair = np.isfinite(a) & np.isfinite(b)
    rho = 0.0
    if pair.sum() >= 3:
        num = float((a[pair] * b[pair]).sum())
        den = float(np.sqrt((a[pair] ** 2).sum() * (b[pair] ** 2).sum()))
        rho = float(np.clip(num / den, 0.0, 0.98)) if den > 0 else 0.0
    return Scatter(sigma=sigma, run_share=run_share, rho=rho, eval_sd=eval_sd, dof_factor=dof)


def parametric_tables(f_hat, W, bounds, groups, scatter: Scatter, K: int, rng):
    """K tables (K, R, T) of log S, weights and censored flags drawn about f_hat (R, T), censored
    at each run's bound (R,) (log of its last evaluated step; +inf where none)."""
    R, T = f_hat.shape
    codes, inv = np.unique(groups, return_inverse=True)
    L = np.linalg.cholesky(scatter.correlation() + 1e-12 * np.eye(T))
    v = (rng.standard_normal((K, len(codes), T)) @ L.T) * scatter.sigma_point[None, None, :]
    u = (rng.standard_normal((K, R, T)) @ L.T) * scatter.sigma_run[None, None, :]
    Y = f_hat[None] + v[:, inv, :] + u
    bound = np.asarray(bounds, dtype=float)[None, :, None]
    C = Y >= bound
    Y = np.where(C, np.broadcast_to(bound, Y.shape), Y)
    Wt = np.broadcast_to(W[None], Y.shape).copy()
    Y = np.where(Wt > 0, Y, 0.0)
    return Y, Wt, C & (Wt > 0)
