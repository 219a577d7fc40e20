"""Analysis core: steps to target S(B), samples E(B), McCandlish fits with bootstrap CIs.

Pure functions over the snapshot's DataFrames (runs, history; schema in devnotes/contracts.md)
and plain arrays. No I/O, no plotting.

Model (McCandlish et al. 2018, "An empirical model of large-batch training"):
    S(B) = S_min (1 + B_noise / B),    E(B) = B S(B) = E_min (1 + B / B_noise),
    E_min = S_min B_noise.
Fits are least squares in log space on (log S_min, log B_noise); runs that never reach the
target are right-censored lower bounds and enter through a censored (Tobit) likelihood.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

# ------------------------------------------------------------------------------------------
# Constants
# ------------------------------------------------------------------------------------------
FIT_STATUSES = ("ok", "extrapolated", "insufficient", "failed")
CBS_FIT_COLUMNS = [
    "threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min", "E_min", "B_crit_20pct",
    "r2_log", "n_points", "n_censored", "status", "reason",
]
SB_EB_COLUMNS = [
    "run_id", "run_name", "replicate", "n_prompts", "n_rollouts", "total_batch", "threshold",
    "S_B", "E_B", "censored", "n_eval", "n_nonfinite",
]
# B_noise is searched within [min B / 1000, max B * 1000]; a fit that runs into either end
# is not identified by the data (S flat in B, or S proportional to 1/B throughout).
_SEARCH_DECADES = 3.0
_SIGMA_FLOOR = 1e-6
_BOUND_TOL = 1e-3
# Eval-noise bootstrap: above this many (resample x eval point) draws the per-run
# re-measurement uses fewer distinct resamples and a normal approximation (see fit_phase).
_EXACT_DRAWS = 5_000_000
_DRAW_BUDGET = 40_000_000
_MIN_DISTINCT_RESAMPLES = 64
_SLOPE_WINDOW = 48


# ------------------------------------------------------------------------------------------
# Metric selection and eval series
# ------------------------------------------------------------------------------------------
def select_accuracy_metric(columns, metric: str | None = None, prefer: str | None = None) -> str:
    """The validation-accuracy key to analyse.

    metric: an exact key, or an fnmatch pattern such as 'val-core/*/reward/mean@*'
    (default: any 'val-core/*mean@*' key). prefer: a substring of the data source that picks
    one of several matches (case-insensitive, e.g. 'gsm8k', 'math'). Ambiguity is an error
    rather than a silent pick, because analysing the wrong task looks plausible.
    Raises ValueError listing the val-core columns present when nothing (unique) matches.
    """
    cols = [str(c) for c in (columns.columns if isinstance(columns, pd.DataFrame) else columns)]
    val_cols = sorted(c for c in cols if c.startswith("val-core/"))
    if metric is not None and metric in cols:
        return metric
    pattern = metric if metric is not None else "val-core/*mean@*"
    matches = sorted(c for c in cols if fnmatch.fnmatchcase(c, pattern))
    listing = ", ".join(val_cols) if val_cols else "(none)"
    if not matches:
        raise ValueError(f"no column matches {pattern!r}; val-core columns present: {listing}")
    if prefer:
        preferred = [c for c in matches if prefer.lower() in c.lower()]
        if not preferred:
            raise ValueError(
                f"no column matching {pattern!r} contains {prefer!r}; matches: "
                f"{', '.join(matches)}; val-core columns present: {listing}")
        matches = preferred
    if len(matches) > 1:
        raise ValueError(
            f"{len(matches)} columns match {pattern!r}"
            + (f" and {prefer!r}" if prefer else "")
            + f": {', '.join(matches)}; pass an exact key or a `prefer` substring")
    return matches[0]


def _clean_series(steps, acc) -> tuple[np.ndarray, np.ndarray, int]:
    """Finite (step, acc) pairs sorted by step, and how many pairs were non-finite."""
    s = np.asarray(steps, dtype=float).ravel()
    a = np.asarray(acc, dtype=float).ravel()
    if s.shape != a.shape:
        raise ValueError(f"steps and acc differ in length ({s.size} vs {a.size})")
    ok = np.isfinite(s) & np.isfinite(a)
    n_bad = int((~ok).sum())
    s, a = s[ok], a[ok]
    order = np.argsort(s, kind="stable")
    return s[order], a[order], n_bad


def _eval_series(history: pd.DataFrame, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """run_id -> (eval steps, accuracies, n_nonfinite) for one metric.

    A NaN in the wide history means "not logged at this step" (or a non-finite value the data
    layer already counted in the run's flags); +-inf values are counted here and ignored.
    """
    if metric not in history.columns:
        return {}
    sub = history[["run_id", "step", metric]]
    vals = sub[metric].to_numpy(dtype=float)
    logged = ~np.isnan(vals)
    sub = sub.loc[logged]
    out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    run_ids = sub["run_id"].astype(str).to_numpy()
    steps = sub["step"].to_numpy(dtype=float)
    acc = sub[metric].to_numpy(dtype=float)
    if len(run_ids) == 0:
        return out
    order = np.argsort(run_ids, kind="stable")
    run_ids, steps, acc = run_ids[order], steps[order], acc[order]
    uniq, start = np.unique(run_ids, return_index=True)
    bounds = list(start) + [len(run_ids)]
    for k, rid in enumerate(uniq):
        sl = slice(bounds[k], bounds[k + 1])
        out[str(rid)] = _clean_series(steps[sl], acc[sl])
    return out


# ------------------------------------------------------------------------------------------
# Steps to target
# ------------------------------------------------------------------------------------------
def _crossings(steps: np.ndarray, acc: np.ndarray, thresholds, method: str):
    """(S, censored) arrays over thresholds for one clean, step-sorted eval series."""
    thr = np.atleast_1d(np.asarray(thresholds, dtype=float))
    S = np.full(thr.shape, np.nan)
    cens = np.zeros(thr.shape, dtype=bool)
    n = len(steps)
    if n == 0:
        cens[:] = True
        return S, cens
    if method == "isotonic":
        fit = optimize.isotonic_regression(acc, increasing=True).x
        idx = np.searchsorted(fit, thr, side="left")  # first eval with smoothed acc >= thr
    elif method == "first_crossing":
        fit = acc
        above = acc[None, :] >= thr[:, None]
        idx = np.where(above.any(axis=1), above.argmax(axis=1), n)
    else:
        raise ValueError(f"method must be 'isotonic' or 'first_crossing', not {method!r}")
    for j, i in enumerate(idx):
        if i >= n:
            S[j], cens[j] = steps[-1], True
        elif i == 0 or method == "first_crossing":
            S[j] = steps[i]
        else:
            y0, y1 = fit[i - 1], fit[i]
            S[j] = steps[i - 1] + (thr[j] - y0) / (y1 - y0) * (steps[i] - steps[i - 1])
    return S, cens


def steps_to_target(steps, acc, threshold: float, method: str = "isotonic") -> tuple[float, bool]:
    """Optimizer steps for the validation accuracy to reach `threshold`.

    method 'isotonic': fit a non-decreasing curve to the eval series (pool-adjacent-violators,
    scipy.optimize.isotonic_regression), take the first eval whose smoothed accuracy is
    >= threshold and interpolate linearly between it and the previous eval. This removes the
    early bias of taking the first noisy eval above the target and the quantisation to the
    eval interval. method 'first_crossing': the seed notebook's rule (first raw eval step
    with acc >= threshold), kept for comparison.
    A run that never reaches the target is right-censored: S = its last eval step,
    censored=True. NaN/inf points are ignored (sb_eb_table reports how many).
    """
    s, a, _ = _clean_series(steps, acc)
    S, cens = _crossings(s, a, [threshold], method)
    return float(S[0]), bool(cens[0])


def _run_meta(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-run columns the tables need, with defaults for optional ones."""
    meta = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy()})
    meta["run_name"] = (runs["name"] if "name" in runs else runs["run_id"]).astype(str).to_numpy()
    for col, default in (("replicate", 0), ("phase", None), ("n_gpus", None)):
        meta[col] = runs[col].to_numpy() if col in runs else default
    for col in ("n_prompts", "n_rollouts", "total_batch"):
        meta[col] = pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=float) if col in runs else np.nan
    missing = meta["total_batch"].isna()
    meta.loc[missing, "total_batch"] = meta.loc[missing, "n_prompts"] * meta.loc[missing, "n_rollouts"]
    return meta


def sb_eb_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                method: str = "isotonic") -> pd.DataFrame:
    """S(B) and E(B) = B S(B) per run and threshold; replicates stay separate rows.

    Columns: run_id, run_name, replicate, n_prompts, n_rollouts, total_batch, threshold, S_B,
    E_B, censored, n_eval, n_nonfinite, then phase, last_eval_step, method.
    Censored rows hold the last eval step (a lower bound). A run without any finite eval of
    `metric` gets S_B = NaN (the fit ignores it).
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    series = _eval_series(history, metric)
    meta = _run_meta(runs)
    rows = []
    for m in meta.itertuples(index=False):
        s, a, n_bad = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = _crossings(s, a, thr, method)
        if len(s) == 0:
            cens[:] = False
        for t, sv, cv in zip(thr, S, cens, strict=True):
            rows.append((m.run_id, m.run_name, m.replicate, m.n_prompts, m.n_rollouts,
                         m.total_batch, t, sv, sv * m.total_batch, bool(cv), len(s), n_bad,
                         m.phase, s[-1] if len(s) else np.nan, method))
    cols = SB_EB_COLUMNS + ["phase", "last_eval_step", "method"]
    out = pd.DataFrame(rows, columns=cols)
    for c in ("n_prompts", "n_rollouts", "total_batch"):
        out[c] = out[c].astype("Int64") if out[c].notna().all() else out[c]
    out["censored"] = out["censored"].astype(bool)
    return out


# ------------------------------------------------------------------------------------------
# Model curves
# ------------------------------------------------------------------------------------------
def mccandlish_steps(B, S_min: float, B_noise: float):
    """S(B) = S_min (1 + B_noise / B)."""
    return S_min * (1.0 + B_noise / np.asarray(B, dtype=float))


def mccandlish_samples(B, E_min: float, B_noise: float):
    """E(B) = E_min (1 + B / B_noise)."""
    return E_min * (1.0 + np.asarray(B, dtype=float) / B_noise)


# ------------------------------------------------------------------------------------------
# Vectorised fitting engine
#   log S_i = a + log(1 + exp(b) u_i(rho)),  u_i = 1/B_i (McCandlish) or
#   (1 + (n_r - 1) rho) / (n_p n_r) (two axes). For fixed (b, rho) the intercept a has a
#   closed form, so the fit profiles over (b, rho): a coarse grid, then a shrinking local
#   stencil, for K bootstrap tables at once. Censored rows: EM for the Tobit likelihood.
# ------------------------------------------------------------------------------------------
class _Model:
    """u_i(rho) for a set of rows; rho is ignored when `two_axis` is False."""

    def __init__(self, B=None, n_prompts=None, n_rollouts=None):
        self.two_axis = n_prompts is not None
        if self.two_axis:
            self.np_ = np.asarray(n_prompts, dtype=float)
            self.nr = np.asarray(n_rollouts, dtype=float)
            self.B = self.np_ * self.nr
        else:
            self.B = np.asarray(B, dtype=float)

    def g(self, b, rho):
        """log(1 + e^b u(rho)); b, rho broadcast as (..., 1) against rows (n,)."""
        if self.two_axis:
            u = (1.0 + (self.nr - 1.0) * rho) / self.B
        else:
            u = 1.0 / self.B
        return np.log1p(np.exp(b) * u)

    def subset(self, mask):
        if self.two_axis:
            return _Model(n_prompts=self.np_[mask], n_rollouts=self.nr[mask])
        return _Model(B=self.B[mask])


def _ls_profile(y, w, G):
    """Weighted LS of y - G on an intercept: (a, rss), each (K, M).

    y, w: (K, n); G: (M, n) shared or (K, M, n) per table.
    """
    sw = w.sum(axis=1)
    safe = np.where(sw > 0, sw, 1.0)
    ybar = (w * y).sum(axis=1) / safe
    yc = np.where(w > 0, y - ybar[:, None], 0.0)
    wy = w * yc
    if G.ndim == 2:
        swg = w @ G.T
        swgg = w @ (G * G).T
        swyg = wy @ G.T
    else:
        swg = np.einsum("kn,kmn->km", w, G)
        swgg = np.einsum("kn,kmn->km", w, G * G)
        swyg = np.einsum("kn,kmn->km", wy, G)
    swyy = (wy * yc).sum(axis=1)
    gbar = swg / safe[:, None]
    a = ybar[:, None] - gbar
    rss = swyy[:, None] - 2.0 * swyg + swgg - safe[:, None] * gbar * gbar
    return a, np.maximum(rss, 0.0)


def _ls_fit(model: _Model, y, w, b_bounds, rho_bounds, start=None, rounds: int = 34):
    """Profile LS over (b, rho) for K tables: returns a, b, rho, rss (each (K,))."""
    K = y.shape[0]
    two = model.two_axis
    b_lo, b_hi = b_bounds
    r_lo, r_hi = rho_bounds
    if start is None:
        nb = 161
        bg = np.linspace(b_lo, b_hi, nb)
        rg = np.linspace(r_lo, r_hi, 21) if two else np.array([0.0])
        BB, RR = np.meshgrid(bg, rg, indexing="ij")
        BB, RR = BB.ravel(), RR.ravel()
        G = model.g(BB[:, None], RR[:, None])
        a_all, rss = _ls_profile(y, w, G)
        best = rss.argmin(axis=1)
        b, rho = BB[best], RR[best]
        hb = (bg[1] - bg[0])
        hr = (rg[1] - rg[0]) if two else 0.0
    else:
        b, rho, hb, hr = start
        b = np.broadcast_to(np.asarray(b, float), (K,)).copy()
        rho = np.broadcast_to(np.asarray(rho, float), (K,)).copy()
    offs = np.arange(-2, 3, dtype=float)
    if two:
        ob, orr = np.meshgrid(offs, offs, indexing="ij")
        ob, orr = ob.ravel(), orr.ravel()
    else:
        ob, orr = offs, np.zeros_like(offs)
    for _ in range(rounds):
        cb = np.clip(b[:, None] + hb * ob[None, :], b_lo, b_hi)
        cr = np.clip(rho[:, None] + hr * orr[None, :], r_lo, r_hi)
        G = model.g(cb[:, :, None], cr[:, :, None])
        a_c, rss_c = _ls_profile(y, w, G)
        best = rss_c.argmin(axis=1)
        idx = np.arange(K)
        b, rho = cb[idx, best], cr[idx, best]
        hb *= 0.5
        hr *= 0.5
    G = model.g(b[:, None], rho[:, None])
    a, rss = _ls_profile(y, w, G[:, None, :])
    return a[:, 0], b, rho, rss[:, 0]


def _tobit_em(model: _Model, y, w, cens, b_bounds, rho_bounds, n_iter: int = 60, tol: float = 1e-7):
    """Censored (Tobit) MLE in log space by EM, vectorised over K tables.

    Rows with cens=True are lower bounds: log S >= y. Starts from LS on the uncensored rows.
    Returns a, b, rho, sigma (each (K,)).
    """
    wu = np.where(cens, 0.0, w)
    a, b, rho, rss = _ls_fit(model, y, wu, b_bounds, rho_bounds)
    sigma = np.sqrt(np.maximum(rss / np.maximum(wu.sum(axis=1), 1e-300), _SIGMA_FLOOR**2))
    has_c = ((w > 0) & cens).any(axis=1)
    if not has_c.any():
        return a, b, rho, sigma
    sel = np.flatnonzero(has_c)
    ys, ws, cs = y[sel], w[sel], cens[sel]
    a_s, b_s, r_s, s_s = a[sel], b[sel], rho[sel], sigma[sel]
    hb = 0.05
    hr = 0.02 if model.two_axis else 0.0
    for _ in range(n_iter):
        f = a_s[:, None] + model.g(b_s[:, None], r_s[:, None])
        alpha = (ys - f) / s_s[:, None]
        lam = np.exp(stats.norm.logpdf(alpha) - special.log_ndtr(-alpha))
        ytil = np.where(cs, f + s_s[:, None] * lam, ys)
        var_c = np.where(cs, s_s[:, None] ** 2 * np.clip(1.0 + alpha * lam - lam * lam, 0.0, 1.0), 0.0)
        a_n, b_n, r_n, _ = _ls_fit(model, ytil, ws, b_bounds, rho_bounds,
                                   start=(b_s, r_s, hb, hr), rounds=14)
        f_n = a_n[:, None] + model.g(b_n[:, None], r_n[:, None])
        s2 = (ws * ((ytil - f_n) ** 2 + var_c)).sum(axis=1) / ws.sum(axis=1)
        s_n = np.sqrt(np.maximum(s2, _SIGMA_FLOOR**2))
        delta = np.max(np.abs(np.stack([b_n - b_s, r_n - r_s, a_n - a_s])), axis=0)
        a_s, b_s, r_s, s_s = a_n, b_n, r_n, s_n
        if np.all(delta < tol):
            break
    a[sel], b[sel], rho[sel], sigma[sel] = a_s, b_s, r_s, s_s
    return a, b, rho, sigma


def _tobit_nll(params, model: _Model, y, w, cens, two: bool):
    a, b = params[0], params[1]
    rho = params[2] if two else 0.0
    log_s = params[-1]
    s = math.exp(log_s)
    f = a + model.g(b, rho)
    z = (y - f) / s
    ll = np.where(cens, special.log_ndtr(-z), stats.norm.logpdf(z) - log_s)
    return -float((w * ll).sum())


def _fit_point(model: _Model, y, w, cens, b_bounds, rho_bounds=(0.0, 0.0)):
    """Precise fit of one table: vectorised start, then scipy polish. Returns dict."""
    two = model.two_axis
    Y, W, C = y[None, :], w[None, :], cens[None, :]
    a, b, rho, sigma = (v[0] for v in _tobit_em(model, Y, W, C, b_bounds, rho_bounds, n_iter=300))
    has_c = bool(((w > 0) & cens).any())
    if not has_c:
        # plain weighted least squares in log space; polish to machine precision
        m = w > 0
        sw = np.sqrt(w[m])

        def resid(p):
            return sw * (y[m] - p[0] - model.subset(m).g(p[1], p[2] if two else 0.0))

        x0 = [a, b, rho] if two else [a, b]
        lo = [-np.inf, b_bounds[0]] + ([rho_bounds[0]] if two else [])
        hi = [np.inf, b_bounds[1]] + ([rho_bounds[1]] if two else [])
        x0 = np.clip(x0, np.array(lo) + 1e-12, np.array(hi) - 1e-12)
        try:
            res = optimize.least_squares(resid, x0, bounds=(lo, hi), method="trf",
                                         xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
            if np.sum(res.fun**2) <= np.sum(resid([a, b, rho] if two else [a, b]) ** 2):
                a, b = res.x[0], res.x[1]
                rho = res.x[2] if two else rho
        except (ValueError, np.linalg.LinAlgError):
            pass
        r = resid([a, b, rho] if two else [a, b])
        sigma = math.sqrt(max(float(np.sum(r**2) / w[m].sum()), _SIGMA_FLOOR**2))
    else:
        x0 = [a, b] + ([rho] if two else []) + [math.log(max(sigma, 1e-4))]
        bnds = [(None, None), b_bounds] + ([rho_bounds] if two else []) + [(math.log(_SIGMA_FLOOR), 3.0)]
        x0 = [float(np.clip(v, lo if lo is not None else -np.inf, hi if hi is not None else np.inf))
              for v, (lo, hi) in zip(x0, bnds, strict=True)]
        f0 = _tobit_nll(x0, model, y, w, cens, two)
        try:
            res = optimize.minimize(_tobit_nll, x0, args=(model, y, w, cens, two), method="L-BFGS-B",
                                    bounds=bnds, options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 2000})
            if np.isfinite(res.fun) and res.fun <= f0:
                a, b = res.x[0], res.x[1]
                rho = res.x[2] if two else rho
                sigma = math.exp(res.x[-1])
        except (ValueError, np.linalg.LinAlgError):
            pass
    return {"a": float(a), "b": float(b), "rho": float(rho), "sigma": float(sigma)}


def _at_bound(b, b_bounds):
    span = b_bounds[1] - b_bounds[0]
    return (b - b_bounds[0] < _BOUND_TOL * span), (b_bounds[1] - b < _BOUND_TOL * span)


def _b_bounds(B) -> tuple[float, float]:
    lb = np.log(np.asarray(B, dtype=float))
    d = _SEARCH_DECADES * math.log(10.0)
    return float(lb.min() - d), float(lb.max() + d)


def _fit_batch(model: _Model, y, w, cens, b_bounds, rho_bounds=(0.0, 0.0)):
    """Fit K bootstrap tables at once. Returns (b, a, rho) with b = +-inf at the search bounds
    and NaN where a table has fewer than 3 distinct batch sizes reaching the target."""
    y = np.where(w > 0, y, 0.0)
    a, b, rho, _ = _tobit_em(model, y, w, cens, b_bounds, rho_bounds)
    lo, hi = _at_bound(b, b_bounds)
    b = np.where(lo, -np.inf, np.where(hi, np.inf, b))
    reached = (w > 0) & ~cens
    n_distinct = np.array([len(np.unique(model.B[r])) for r in reached])
    bad = n_distinct < 3
    return np.where(bad, np.nan, b), np.where(bad, np.nan, a), np.where(bad, np.nan, rho)


def _quantiles(x, q=(0.025, 0.975)):
    """Percentile interval of a bootstrap sample that may hold +-inf; NaN when too few."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 20:
        return np.nan, np.nan
    return tuple(float(v) for v in np.quantile(x, q, method="inverted_cdf"))


# ------------------------------------------------------------------------------------------
# fit_mccandlish
# ------------------------------------------------------------------------------------------
def _empty_fit(n_points=0, n_censored=0, status="failed", reason="") -> dict:
    return {"B_noise": np.nan, "B_noise_lo": np.nan, "B_noise_hi": np.nan, "S_min": np.nan,
            "E_min": np.nan, "B_crit_20pct": np.nan, "r2_log": np.nan, "n_points": int(n_points),
            "n_censored": int(n_censored), "status": status, "reason": reason,
            "S_min_lo": np.nan, "S_min_hi": np.nan, "sigma_log": np.nan,
            "n_batch_sizes": 0, "n_reached": 0, "ci_method": "", "n_bootstrap_ok": 0}


def _prepare(B, S, censored):
    """Arrays, validity mask and a note on what was dropped."""
    B = np.asarray(B, dtype=float).ravel()
    S = np.asarray(S, dtype=float).ravel()
    if B.shape != S.shape:
        raise ValueError("batch_sizes and steps differ in length")
    c = np.zeros(B.shape, bool) if censored is None else np.asarray(censored, dtype=bool).ravel()
    if c.shape != B.shape:
        raise ValueError("censored differs in length from batch_sizes")
    finite = np.isfinite(B) & np.isfinite(S)
    pos = finite & (B > 0) & (S > 0)
    notes = []
    if (~finite).sum():
        notes.append(f"{int((~finite).sum())} non-finite point(s) ignored")
    if (finite & ~pos).sum():
        notes.append(f"{int((finite & ~pos).sum())} point(s) with B <= 0 or S <= 0 ignored")
    return B, S, c, pos, notes


def _group_weights(keys) -> np.ndarray:
    """1 / (rows in the row's group): every batch size (config) counts once in the fit."""
    keys = pd.Series(list(keys))
    return 1.0 / keys.map(keys.value_counts()).to_numpy(dtype=float)


def _bootstrap_tables(groups, y, w, cens, f_hat, K, rng):
    """Replicate/residual bootstrap tables (K, n) for a fit on plain rows.

    Groups (batch sizes) with several rows: resample rows within the group (weights).
    Single-row groups: y* = f_hat + e*, e* drawn from the centred uncensored residuals,
    inflated by sqrt(n/(n - 2)) for the two fitted parameters; a censored row stays censored
    when y* exceeds its bound (re-censoring), else becomes the observed y*.
    """
    n = len(y)
    Y = np.repeat(y[None, :], K, axis=0)
    Wt = np.repeat(w[None, :], K, axis=0)
    C = np.repeat(cens[None, :], K, axis=0)
    g = pd.Series(list(groups))
    counts = g.map(g.value_counts()).to_numpy()
    multi = counts > 1
    for key in pd.unique(g[multi]):
        idx = np.flatnonzero((g == key).to_numpy())
        draws = rng.integers(0, len(idx), size=(K, len(idx)))
        cnt = np.zeros((K, len(idx)))
        np.add.at(cnt, (np.arange(K)[:, None], draws), 1.0)
        Wt[:, idx] = cnt / len(idx)
    single = np.flatnonzero(~multi)
    methods = []
    if multi.any():
        methods.append("replicates")
    if single.size:
        res = (y - f_hat)[~cens]
        n_u = res.size
        if n_u >= 3:
            pool = (res - res.mean()) * math.sqrt(n_u / max(n_u - 2, 1))
            e = pool[rng.integers(0, n_u, size=(K, single.size))]
            ystar = f_hat[single][None, :] + e
            bound = y[single][None, :]
            was_c = cens[single][None, :]
            Y[:, single] = np.where(was_c, np.maximum(ystar, bound), ystar)
            C[:, single] = was_c & (ystar >= bound)
            methods.append("residual")
    return Y, Wt, C, "+".join(methods) if methods else "none"


def _summarise_fit(model: _Model, y, w, cens, pt, b_bounds, B_all) -> tuple[dict, str, str]:
    """Status and core numbers of a point fit."""
    b, a = pt["b"], pt["a"]
    out = {}
    lo_hit, hi_hit = _at_bound(np.array([b]), b_bounds)
    if not (np.isfinite(a) and np.isfinite(b)):
        return out, "failed", "the optimiser returned a non-finite solution"
    if lo_hit[0]:
        return out, "failed", ("S does not decrease with B over the sampled range: B_noise runs to "
                               f"the lower search bound (< min B / {10**_SEARCH_DECADES:g}); not identifiable")
    if hi_hit[0]:
        return out, "failed", ("S falls like 1/B over the whole sampled range (perfect scaling): "
                               f"B_noise runs to the upper search bound (> max B x {10**_SEARCH_DECADES:g}); "
                               "not identifiable")
    f = a + model.g(b, pt["rho"])
    m = (w > 0) & ~cens
    ybar = np.average(y[m], weights=w[m])
    tss = float((w[m] * (y[m] - ybar) ** 2).sum())
    rss = float((w[m] * (y[m] - f[m]) ** 2).sum())
    out["r2_log"] = 1.0 - rss / tss if tss > 0 else np.nan
    B_noise = math.exp(b)
    out.update({"B_noise": B_noise, "S_min": math.exp(a), "E_min": math.exp(a) * B_noise,
                "B_crit_20pct": 0.2 * B_noise, "sigma_log": pt["sigma"]})
    if B_noise < B_all.min() or B_noise > B_all.max():
        return out, "extrapolated", (f"B_noise = {B_noise:.4g} lies outside the sampled batch sizes "
                                     f"[{B_all.min():g}, {B_all.max():g}]")
    return out, "ok", ""


def fit_mccandlish(batch_sizes, steps, censored=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Fit S(B) = S_min (1 + B_noise / B) to a plain table of (B, S) points.

    Least squares in log space on (log S_min, log B_noise):
        log S = log S_min + log(1 + B_noise / B) + eps,  eps ~ N(0, sigma^2).
    Censored points (runs that never reached the target; S = their last step) are lower
    bounds and enter a censored (Tobit) likelihood in log space with the residual sigma
    estimated jointly; without censoring that is exactly plain log-space least squares.
    Repeated B values are replicates: each batch size carries total weight 1 in the fit.

    95% CI by bootstrap (n_bootstrap tables, percentile interval of B_noise): rows of a batch
    size with several replicates are resampled within it; single points get a residual
    bootstrap in log space (fitted value + resampled residual, re-censored at the bound).
    fit_phase offers the eval-noise bootstrap, which needs the raw eval series.

    E_min = S_min B_noise. B_crit_20pct = 0.2 B_noise: Zhang et al. 2024 ("How does critical
    batch size scale in pre-training?") define the critical batch size as the B at which the
    samples to target exceed E_min by 20%: E/E_min = 1 + B/B_noise = 1.2 -> B = 0.2 B_noise.

    Returns a dict with B_noise, B_noise_lo, B_noise_hi, S_min, E_min, B_crit_20pct, r2_log
    (weighted R^2 of log S over the uncensored points), n_points, n_censored, status
    ('ok' | 'extrapolated' (B_noise outside the sampled B range) | 'insufficient' (< 3 batch
    sizes reach the target) | 'failed'), reason; extras S_min_lo/hi, sigma_log,
    n_batch_sizes, n_reached, ci_method, n_bootstrap_ok. Never raises on bad data.
    """
    try:
        B, S, c, ok, notes = _prepare(batch_sizes, steps, censored)
    except (ValueError, TypeError) as exc:
        return _empty_fit(status="failed", reason=f"bad input: {exc}")
    B, S, c = B[ok], S[ok], c[ok]
    return _fit_table(B, S, c, n_bootstrap, seed, notes, groups=B)


def _fit_table(B, S, c, n_bootstrap, seed, notes, groups, tables=None, ci_note=None) -> dict:
    """Shared body of fit_mccandlish / fit_phase: point fit, status, bootstrap CI.

    tables: optional callable (f_hat, K, rng) -> (Y, W, C, method) supplying bootstrap tables.
    """
    n_points, n_cens = len(B), int(c.sum())
    out = _empty_fit(n_points, n_cens)
    out["n_batch_sizes"] = int(len(np.unique(B)))
    n_reached = int(len(np.unique(B[~c])))
    out["n_reached"] = n_reached
    note = "; ".join(notes)
    if n_reached < 3:
        out["status"] = "insufficient"
        out["reason"] = "; ".join(filter(None, [
            f"{n_reached} batch size(s) reach the target, 3 needed", note]))
        return out
    model = _Model(B=B)
    y = np.log(S)
    w = _group_weights(groups)
    bb = _b_bounds(B)
    try:
        with np.errstate(all="ignore"):
            pt = _fit_point(model, y, w, c, bb)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        out["reason"] = f"fit failed: {exc}"
        return out
    core, status, reason = _summarise_fit(model, y, w, c, pt, bb, B)
    out.update(core)
    out["status"] = status
    out["reason"] = "; ".join(filter(None, [reason, note]))
    if status == "failed":
        return out
    if n_bootstrap and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        f_hat = pt["a"] + model.g(pt["b"], 0.0)
        with np.errstate(all="ignore"):
            if tables is None:
                Y, Wt, C, method = _bootstrap_tables(groups, y, w, c, f_hat, int(n_bootstrap), rng)
            else:
                Y, Wt, C, method = tables(f_hat, int(n_bootstrap), rng)
            bs, as_, _ = _fit_batch(model, Y, Wt, C, bb)
        lo, hi = _quantiles(bs)
        out["B_noise_lo"], out["B_noise_hi"] = math.exp(lo), math.exp(hi)
        slo, shi = _quantiles(as_)
        out["S_min_lo"], out["S_min_hi"] = math.exp(slo), math.exp(shi)
        out["ci_method"] = method
        out["n_bootstrap_ok"] = int(np.isfinite(bs).sum() + np.isinf(bs).sum())
        if ci_note:
            out["reason"] = "; ".join(filter(None, [out["reason"], ci_note]))
    return out
