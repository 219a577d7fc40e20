"""Analysis core: steps to target S(B), samples E(B), McCandlish fits with bootstrap CIs.

Pure functions over the snapshot's DataFrames (runs, history; schema in outputs/README.md)
and plain arrays. No I/O, no plotting.

Model (McCandlish et al. 2018, "An empirical model of large-batch training"):
    S(B) = S_min (1 + B_noise / B),    E(B) = B S(B) = E_min (1 + B / B_noise),
    E_min = S_min B_noise.
Fits are least squares in log space on (log S_min, log B_noise); runs that never reach the
target are right-censored lower bounds and enter through a censored (Tobit) likelihood.
"""

from __future__ import annotations

import fnmatch
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import optimize, special

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
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _norm_logpdf(z):
    """log of the standard normal density (scipy.stats costs 0.3 s of import per notebook)."""
    return -0.5 * np.square(z) - _LOG_SQRT_2PI


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
    if metric not in history.columns or len(history) == 0:
        return {}
    acc = history[metric].to_numpy(dtype=float)
    logged = ~np.isnan(acc)
    codes, uniq = pd.factorize(history["run_id"])
    codes = codes[logged]
    steps = history["step"].to_numpy(dtype=float)[logged]
    acc = acc[logged]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    out = {}
    for k, rid in enumerate(uniq):
        sel = order[bounds[k]:bounds[k + 1]]
        out[str(rid)] = _clean_series(steps[sel], acc[sel])
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


def _int_columns(df: pd.DataFrame, cols) -> pd.DataFrame:
    """Cast integral float columns (batch sizes) to nullable Int64 for readable tables."""
    for c in cols:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            if len(v) and np.isfinite(v).all() and (v == np.round(v)).all():
                df[c] = df[c].astype("Int64")
    return df


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
    return _sb_eb_from_series(_run_meta(runs), _eval_series(history, metric), thr, method)


def _sb_eb_from_series(meta: pd.DataFrame, series: dict, thr: list, method: str) -> pd.DataFrame:
    """sb_eb_table from already extracted eval series (fit_phase reuses them)."""
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
    out = _int_columns(out, ("n_prompts", "n_rollouts", "total_batch"))
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
#   closed form, so the fit profiles over (b, rho): a coarse grid, then parabolic steps (one
#   axis) or a shrinking stencil (two axes), for K bootstrap tables at once. Censored rows:
#   EM for the Tobit likelihood, finished by damped Newton steps (one axis).
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
        swg = np.matmul(G, w[:, :, None])[..., 0]
        swgg = np.matmul(G * G, w[:, :, None])[..., 0]
        swyg = np.matmul(G, wy[:, :, None])[..., 0]
    swyy = (wy * yc).sum(axis=1)
    gbar = swg / safe[:, None]
    a = ybar[:, None] - gbar
    rss = swyy[:, None] - 2.0 * swyg + swgg - safe[:, None] * gbar * gbar
    return a, np.maximum(rss, 0.0)


def _ls_fit(model: _Model, y, w, b_bounds, rho_bounds, start=None, rounds: int | None = None):
    """Profile LS over (b, rho) for K tables: returns a, b, rho, rss (each (K,)).

    A shared coarse grid (one matrix product), then per-table refinement: successive
    parabolic steps in b (one axis) or a shrinking 5x5 stencil in (b, rho) (two axes).
    start=(b, rho, hb, hr) skips the grid (warm start inside EM).
    """
    K = y.shape[0]
    two = model.two_axis
    b_lo, b_hi = b_bounds
    r_lo, r_hi = rho_bounds
    idx = np.arange(K)
    if start is None:
        bg = np.linspace(b_lo, b_hi, 161)
        rg = np.linspace(r_lo, r_hi, 21) if two else np.array([0.0])
        BB, RR = np.meshgrid(bg, rg, indexing="ij")
        BB, RR = BB.ravel(), RR.ravel()
        G = model.g(BB[:, None], RR[:, None])
        _, rss = _ls_profile(y, w, G)
        best = rss.argmin(axis=1)
        b, rho = BB[best], RR[best]
        hb = bg[1] - bg[0]
        hr = (rg[1] - rg[0]) if two else 0.0
    else:
        b, rho, hb, hr = start
        b = np.broadcast_to(np.asarray(b, float), (K,)).copy()
        rho = np.broadcast_to(np.asarray(rho, float), (K,)).copy()
    if two:
        offs = np.arange(-1, 2, dtype=float)
        ob, orr = np.meshgrid(offs, offs, indexing="ij")
        ob, orr = ob.ravel(), orr.ravel()
        for _ in range(rounds or 24):
            cb = np.clip(b[:, None] + hb * ob[None, :], b_lo, b_hi)
            cr = np.clip(rho[:, None] + hr * orr[None, :], r_lo, r_hi)
            _, rss_c = _ls_profile(y, w, model.g(cb[:, :, None], cr[:, :, None]))
            best = rss_c.argmin(axis=1)
            b, rho = cb[idx, best], cr[idx, best]
            hb *= 0.5
            hr *= 0.5
    else:
        # successive parabolic interpolation: exact for a quadratic, so a few rounds reach
        # machine-level precision from a grid point; steps are capped at 2h per round
        h = hb
        for _ in range(rounds or 5):
            cb = np.clip(b[:, None] + h * np.array([-1.0, 0.0, 1.0])[None, :], b_lo, b_hi)
            _, r3 = _ls_profile(y, w, model.g(cb[:, :, None], 0.0))
            den = r3[:, 0] - 2.0 * r3[:, 1] + r3[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.where(den > 0, 0.5 * h * (r3[:, 0] - r3[:, 2]) / den, 0.0)
            best = r3.argmin(axis=1)
            fallback = cb[idx, best]
            b_new = np.where(den > 0, np.clip(b + step, b - 2 * h, b + 2 * h), fallback)
            b = np.clip(b_new, b_lo, b_hi)
            h = max(h / 8.0, 1e-9)
    G = model.g(b[:, None], rho[:, None])
    a, rss = _ls_profile(y, w, G[:, None, :])
    return a[:, 0], b, rho, rss[:, 0]


def _tobit_em(model: _Model, y, w, cens, b_bounds, rho_bounds, n_iter: int | None = None,
              tol: float = 1e-7):
    """Censored (Tobit) MLE in log space by EM, vectorised over K tables.

    Rows with cens=True are lower bounds: log S >= y. Starts from LS on the uncensored rows;
    one-axis fits finish with damped Newton steps (_tobit_newton), two-axis fits (few rows)
    run EM longer. Returns a, b, rho, sigma (each (K,)).
    """
    if n_iter is None:
        n_iter = 200 if model.two_axis else 4
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
        lam = np.exp(_norm_logpdf(alpha) - special.log_ndtr(-alpha))
        ytil = np.where(cs, f + s_s[:, None] * lam, ys)
        var_c = np.where(cs, s_s[:, None] ** 2 * np.clip(1.0 + alpha * lam - lam * lam, 0.0, 1.0), 0.0)
        a_n, b_n, r_n, _ = _ls_fit(model, ytil, ws, b_bounds, rho_bounds,
                                   start=(b_s, r_s, hb, hr), rounds=10 if model.two_axis else 3)
        f_n = a_n[:, None] + model.g(b_n[:, None], r_n[:, None])
        s2 = (ws * ((ytil - f_n) ** 2 + var_c)).sum(axis=1) / ws.sum(axis=1)
        s_n = np.sqrt(np.maximum(s2, _SIGMA_FLOOR**2))
        delta = np.max(np.abs(np.stack([b_n - b_s, r_n - r_s, a_n - a_s])), axis=0)
        a_s, b_s, r_s, s_s = a_n, b_n, r_n, s_n
        if np.all(delta < tol):
            break
    if not model.two_axis:
        a_s, b_s, s_s = _tobit_newton(model, ys, ws, cs, a_s, b_s, s_s, b_bounds)
    a[sel], b[sel], rho[sel], sigma[sel] = a_s, b_s, r_s, s_s
    return a, b, rho, sigma


def _tobit_terms(model: _Model, y, w, cens, a, b, log_s, derivatives: bool = True):
    """Weighted Tobit log-likelihood (K,) and, optionally, its gradient (K, 3) and Hessian
    (K, 3, 3) in (a, b, log sigma) for the one-axis model."""
    sig = np.exp(log_s)[:, None]
    e = np.exp(b)[:, None] / model.B[None, :]
    f = a[:, None] + np.log1p(e)
    z = (y - f) / sig
    logsf = special.log_ndtr(-z)
    ll = np.where(cens, logsf, -0.5 * z * z - log_s[:, None])
    total = (w * ll).sum(axis=1)
    if not derivatives:
        return total, None, None
    lam = np.exp(_norm_logpdf(z) - logsf)
    lz = lam * (lam - z)
    l_f = np.where(cens, lam, z) / sig
    l_ff = np.where(cens, -lz, -1.0) / sig**2
    l_s = np.where(cens, lam * z, z * z - 1.0)
    l_ss = np.where(cens, -lam * z * (1.0 + z * (lam - z)), -2.0 * z * z)
    l_fs = np.where(cens, -lam * (1.0 + z * (lam - z)), -2.0 * z) / sig
    h = e / (1.0 + e)
    G = np.stack([(w * l_f).sum(1), (w * l_f * h).sum(1), (w * l_s).sum(1)], axis=1)
    H = np.empty((len(a), 3, 3))
    H[:, 0, 0] = (w * l_ff).sum(1)
    H[:, 0, 1] = H[:, 1, 0] = (w * l_ff * h).sum(1)
    H[:, 1, 1] = (w * (l_ff * h * h + l_f * h * (1.0 - h))).sum(1)
    H[:, 0, 2] = H[:, 2, 0] = (w * l_fs).sum(1)
    H[:, 1, 2] = H[:, 2, 1] = (w * l_fs * h).sum(1)
    H[:, 2, 2] = (w * l_ss).sum(1)
    return total, G, H


def _tobit_newton(model: _Model, y, w, cens, a, b, sigma, b_bounds, n_iter: int = 60, tol: float = 1e-10):
    """Damped Newton (Levenberg-Marquardt) polish of the one-axis Tobit MLE for K tables.

    EM converges slowly when many runs are censored; Newton from the EM point converges in a
    few steps. A step is kept only if it raises the likelihood."""
    a, b = a.copy(), b.copy()
    ls = np.log(np.maximum(sigma, _SIGMA_FLOOR))
    ls_lo = math.log(_SIGMA_FLOOR)
    mu = np.full(len(a), 1e-3)
    ll, G, H = _tobit_terms(model, y, w, cens, a, b, ls)
    active = np.ones(len(a), dtype=bool)
    eye = np.eye(3)[None]
    for _ in range(n_iter):
        A = -H + mu[:, None, None] * eye * np.maximum(np.abs(np.diagonal(H, axis1=1, axis2=2)), 1e-12)[:, :, None]
        try:
            step = np.linalg.solve(A, G[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        step = np.where(np.isfinite(step), step, 0.0)
        a_n = a + step[:, 0]
        b_n = np.clip(b + step[:, 1], *b_bounds)
        ls_n = np.clip(ls + step[:, 2], ls_lo, 3.0)
        ll_n, G_n, H_n = _tobit_terms(model, y, w, cens, a_n, b_n, ls_n)
        better = active & np.isfinite(ll_n) & (ll_n >= ll - 1e-12 * np.abs(ll))
        a, b, ls = np.where(better, a_n, a), np.where(better, b_n, b), np.where(better, ls_n, ls)
        ll = np.where(better, ll_n, ll)
        G = np.where(better[:, None], G_n, G)
        H = np.where(better[:, None, None], H_n, H)
        mu = np.where(better, np.maximum(mu * 0.1, 1e-12), mu * 10.0)
        done = better & (np.abs(step).max(axis=1) < tol)
        active &= ~done & (mu < 1e12)
        if not active.any():
            break
    return a, b, np.exp(ls)


def _tobit_nll(params, model: _Model, y, w, cens, two: bool):
    a, b = params[0], params[1]
    rho = params[2] if two else 0.0
    log_s = params[-1]
    s = math.exp(log_s)
    f = a + model.g(b, rho)
    z = (y - f) / s
    ll = np.where(cens, special.log_ndtr(-z), _norm_logpdf(z) - log_s)
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
    bad = _n_distinct_reached(model.B, (w > 0) & ~cens) < 3
    return np.where(bad, np.nan, b), np.where(bad, np.nan, a), np.where(bad, np.nan, rho)


def _n_distinct_reached(B, reached) -> np.ndarray:
    """Per table (row of `reached`), how many distinct batch sizes have a reached row."""
    _, inv = np.unique(B, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    per_group = np.maximum.reduceat(reached[:, order].astype(np.int8), starts, axis=1)
    return per_group.sum(axis=1)


def _quantiles(x, q=(0.025, 0.975)):
    """Percentile interval of a bootstrap sample that may hold +-inf (fits that ran to a
    search bound); NaN when fewer than half the replicates (or < 20) gave a fit."""
    x = np.asarray(x, dtype=float)
    n_all = x.size
    x = x[~np.isnan(x)]
    if x.size < max(20, 0.5 * n_all):
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


def _as_float(x) -> np.ndarray:
    """1-D float array; pandas nullable values (pd.NA) become NaN."""
    if isinstance(x, (pd.Series, pd.Index)):
        return pd.to_numeric(x, errors="coerce").to_numpy(dtype=float, na_value=np.nan).ravel()
    return np.asarray(x, dtype=float).ravel()


def _prepare(B, S, censored):
    """Arrays, validity mask and a note on what was dropped."""
    B = _as_float(B)
    S = _as_float(S)
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
        notes.append(f"{int((finite & ~pos).sum())} point(s) with B <= 0 or S <= 0 ignored "
                     "(S = 0: target already met at step 0)")
    return B, S, c, pos, notes


def _group_weights(keys) -> np.ndarray:
    """1 / (rows in the row's group): every batch size (config) counts once in the fit."""
    keys = pd.Series(list(keys))
    return 1.0 / keys.map(keys.value_counts()).to_numpy(dtype=float)


def _bootstrap_tables(groups, y, w, cens, f_hat, K, rng, n_params: int = 2):
    """Replicate/residual bootstrap tables (K, n) for a fit on plain rows.

    Groups (batch sizes) with several rows: resample rows within the group (weights).
    Single-row groups: y* = f_hat + e*, e* drawn from the centred uncensored residuals,
    inflated by sqrt(n/(n - n_params)) for the fitted parameters; a censored row stays censored
    when y* exceeds its bound (re-censoring), else becomes the observed y*.
    """
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
        if n_u > n_params:
            pool = (res - res.mean()) * math.sqrt(n_u / (n_u - n_params))
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
        if out["n_bootstrap_ok"] < 0.5 * len(bs):
            ci_note = "; ".join(filter(None, [ci_note, (
                f"no CI: only {out['n_bootstrap_ok']} of {len(bs)} bootstrap tables had 3 batch "
                "sizes reaching the target")]))
        if ci_note:
            out["reason"] = "; ".join(filter(None, [out["reason"], ci_note]))
    return out


# ------------------------------------------------------------------------------------------
# Eval-noise bootstrap: re-measure S for every run from resampled eval series, vectorised
# ------------------------------------------------------------------------------------------
def _crossing_kernel(Y, steps, length, thresholds, method, window):
    """S and censoring for a block of resampled series.

    Y: (K, R, n) accuracies (padding beyond each run's length is ignored); steps: (R, n);
    length: (R,). Isotonic crossing without running PAVA: with C_m = sum_{l<m} (y_l - t),
    m = 0..n, the first eval whose isotonic fit is >= t is the first argmin of C (the point
    where the greatest convex minorant of the cumulative sums turns upwards; censored if the
    argmin is m = n), and the fitted values on either side are the minorant's slopes next to
    that vertex: yhat_i = t + min_{m>i} (C_m - C_i)/(m - i), yhat_{i-1} = t + max_{m<i} (C_i -
    C_m)/(i - m). Slopes are taken over +-window evals of the vertex (all evals when the
    series is short; beyond that the neighbouring vertex is practically always inside, and
    a miss only moves S within one eval interval).
    """
    K, R, n = Y.shape
    T = len(thresholds)
    S = np.empty((K, R, T))
    cens = np.zeros((K, R, T), dtype=bool)
    m = np.arange(n + 1, dtype=float)
    pad = np.where(m[None, :] > length[:, None], np.inf, 0.0)  # (R, n+1)
    last_step = steps[np.arange(R), length - 1]
    s_pad = np.concatenate([steps, steps[:, -1:]], axis=1)
    rr = np.arange(R)[None, :]
    if method == "first_crossing":
        valid = np.arange(n)[None, :] < length[:, None]
        for j, t in enumerate(thresholds):
            above = (Y >= t) & valid[None]
            hit = above.any(axis=-1)
            i = above.argmax(axis=-1)
            S[..., j] = np.where(hit, steps[rr, i], last_step[None, :])
            cens[..., j] = ~hit
        return S, cens
    P = np.zeros((K, R, n + 1))
    np.cumsum(np.where(np.arange(n)[None, None, :] < length[None, :, None], Y, 0.0), axis=-1,
              out=P[..., 1:])
    offs = np.arange(-window, window + 1)
    for j, t in enumerate(thresholds):
        C = P - t * m
        C += pad[None]
        i = C.argmin(axis=-1)  # (K, R)
        is_c = i >= length[None, :]
        idx = np.clip(i[..., None] + offs, 0, n)
        Cw = np.take_along_axis(C, idx, axis=-1)
        Ci = np.take_along_axis(C, i[..., None], axis=-1)
        dm = (idx - i[..., None]).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            sl = (Cw - Ci) / dm
        right = np.where(dm > 0, sl, np.inf).min(axis=-1)
        left = np.where(dm < 0, sl, -np.inf).max(axis=-1)
        i_prev = np.maximum(i - 1, 0)
        s0 = np.take_along_axis(np.broadcast_to(s_pad, (K, R, n + 1)), i_prev[..., None], -1)[..., 0]
        s1 = np.take_along_axis(np.broadcast_to(s_pad, (K, R, n + 1)), i[..., None], -1)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip(-left / (right - left), 0.0, 1.0)
        Sj = np.where(i == 0, s1, s0 + frac * (s1 - s0))
        S[..., j] = np.where(is_c, last_step[None, :], Sj)
        cens[..., j] = is_c
    return S, cens


def _remeasure(series, thresholds, n_val, K, seed, method="isotonic", p_source="observed"):
    """Eval-noise bootstrap of S for each run: acc* ~ Binomial(n_val, p)/n_val per eval point.

    series: list of (steps, acc) clean arrays, one per run. Returns S*, cens* of shape
    (K, R, T) plus a note. p is the observed accuracy (p_source='observed') or the run's
    isotonic fit ('isotonic').
    When K x (total eval points) exceeds _EXACT_DRAWS, each run is re-measured in
    K_sub = max(64, budget / points) distinct resamples with the normal approximation
    acc* = p + sqrt(p(1-p)/n_val) z, and each of the K replicates takes, independently per
    run, one of that run's K_sub re-measurements at random: runs are independent, so this
    draws from the same joint distribution while bounding the work.
    """
    thr = np.asarray(thresholds, dtype=float)
    R = len(series)
    lengths = np.array([len(s) for s, _ in series], dtype=int)
    total = int(lengths.sum())
    S_out = np.empty((K, R, len(thr)))
    c_out = np.zeros((K, R, len(thr)), dtype=bool)
    if R == 0:
        return S_out, c_out, ""
    exact = K * total <= _EXACT_DRAWS
    K_sub = K if exact else int(min(K, max(_MIN_DISTINCT_RESAMPLES, _DRAW_BUDGET // max(total, 1))))
    probs = []
    for _steps, a in series:
        p = optimize.isotonic_regression(a).x if (p_source == "isotonic" and len(a)) else a
        probs.append(np.clip(p, 0.0, 1.0))
    order = np.argsort(lengths, kind="stable")
    # chunks of runs of similar length, and of resamples, of about 2^20 elements each
    target = 1 << 20
    chunks = []
    start = 0
    while start < R:
        n_max = max(int(lengths[order[start]]), 1)
        stop = start + 1
        while stop < R and (stop - start + 1) * n_max * 8 <= target and lengths[order[stop]] <= 1.25 * n_max + 8:
            n_max = max(n_max, int(lengths[order[stop]]))
            stop += 1
        runs_idx = order[start:stop]
        n_max = max(int(lengths[runs_idx].max()), 1)
        k_c = max(1, min(K_sub, target // (len(runs_idx) * n_max)))
        for k0 in range(0, K_sub, k_c):
            chunks.append((runs_idx, k0, min(K_sub, k0 + k_c)))
        start = stop
    seeds = np.random.SeedSequence(seed).spawn(len(chunks) + 1)
    S_sub = np.empty((K_sub, R, len(thr)))
    c_sub = np.zeros((K_sub, R, len(thr)), dtype=bool)

    def work(ci):
        runs_idx, k0, k1 = chunks[ci]
        rng = np.random.default_rng(seeds[ci])
        Rc = len(runs_idx)
        n = max(int(lengths[runs_idx].max()), 1)
        steps = np.zeros((Rc, n))
        p = np.zeros((Rc, n))
        for q, r in enumerate(runs_idx):
            L = lengths[r]
            if L:
                steps[q, :L] = series[r][0]
                steps[q, L:] = series[r][0][-1]
                p[q, :L] = probs[r]
        shape = (k1 - k0, Rc, n)
        if exact:
            Y = rng.binomial(int(n_val), np.broadcast_to(p, shape)) / float(n_val)
        else:
            sd = np.sqrt(p * (1.0 - p) / float(n_val))
            Y = np.clip(p + sd * rng.standard_normal(shape), 0.0, 1.0)
        L = np.maximum(lengths[runs_idx], 1)
        window = n if n <= 2 * _SLOPE_WINDOW + 1 else _SLOPE_WINDOW
        S, c = _crossing_kernel(Y, steps, L, thr, method, window)
        empty = lengths[runs_idx] == 0
        S[:, empty, :] = np.nan
        c[:, empty, :] = False
        S_sub[k0:k1, runs_idx] = S
        c_sub[k0:k1, runs_idx] = c

    n_workers = min(len(chunks), max(1, min(4, os.cpu_count() or 1)))
    if n_workers > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(work, range(len(chunks))))
    else:
        for ci in range(len(chunks)):
            work(ci)
    if K_sub == K:
        return S_sub, c_sub, ("" if exact else "eval-noise draws: normal approximation")
    pick = np.random.default_rng(seeds[-1]).integers(0, K_sub, size=(K, R))
    rr = np.arange(R)[None, :]
    S_out = S_sub[pick, rr]
    c_out = c_sub[pick, rr]
    return S_out, c_out, (f"eval-noise bootstrap: {K_sub} re-measurements per run, normal "
                          "approximation")


# ------------------------------------------------------------------------------------------
# fit_phase
# ------------------------------------------------------------------------------------------
def _recentre(S_star, c_star, sb, run_ids, thr, series, idx):
    """Shift each run's uncensored log S* so its median equals the run's measured log S."""
    ok = ~c_star & np.isfinite(S_star) & (S_star > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(ok, np.log(np.where(ok, S_star, 1.0)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a run censored throughout
        med = np.nanmedian(logs, axis=0) if logs.size else np.zeros(S_star.shape[1:])  # (R, T)
    obs = sb.set_index(["run_id", "threshold"])
    keys = pd.MultiIndex.from_product([list(run_ids), list(thr)])
    S_obs = obs["S_B"].reindex(keys).to_numpy(dtype=float).reshape(len(run_ids), len(thr))
    cen = obs["censored"].reindex(keys).to_numpy(dtype=bool).reshape(len(run_ids), len(thr))
    use = ~cen & np.isfinite(S_obs) & (S_obs > 0) & (ok.mean(axis=0) >= 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(use, np.log(np.where(use, S_obs, 1.0)) - med, 0.0)
    last = np.array([series[i][0][-1] if len(series[i][0]) else np.inf for i in idx])
    shifted = np.minimum(S_star * np.exp(shift)[None], last[None, :, None])
    return np.where(ok & use[None], shifted, S_star)


def fit_phase(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val: int,
              n_bootstrap: int = 1000, seed: int = 0, method: str = "isotonic",
              p_source: str = "observed", recentre: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """S(B)/E(B) table and one McCandlish fit per threshold for the runs of one phase.

    Point fit as in fit_mccandlish (log space, censored runs as lower bounds, each batch size
    weighted 1 with its replicates sharing the weight). 95% CI by bootstrap: a batch size with
    several runs resamples its runs; a batch size with one run re-measures it from its eval
    series resampled as acc* ~ Binomial(n_val, acc)/n_val (p_source='isotonic' resamples
    around the monotone fit instead), so S* carries the eval noise, including censoring when a
    resampled run no longer reaches the target. Each of n_bootstrap tables is refitted.
    recentre=True shifts each run's re-measured log S* so that its median equals the measured
    log S: resampling adds eval noise on top of data that already carry it, and the isotonic
    crossing of the noisier series moves slightly (by ~1% where the curve flattens); the
    bootstrap should carry the spread of the measurement, not that shift, which otherwise
    becomes visible when hundreds of runs make the CI narrow.
    Returns (sb_eb, cbs_fit); cbs_fit has the contract columns (CBS_FIT_COLUMNS) and extras.
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = _run_meta(runs)
    series_all = _eval_series(history, metric)
    sb = _sb_eb_from_series(meta, series_all, thr, method)
    R = len(meta)
    B_run = meta["total_batch"].to_numpy(dtype=float)
    series = [series_all.get(rid, (np.array([]), np.array([]), 0))[:2] for rid in meta["run_id"]]
    gkey = pd.Series(B_run)
    counts = gkey.map(gkey.value_counts()).to_numpy()
    multi = counts > 1
    K = int(n_bootstrap or 0)
    S_star = c_star = W_rep = None
    boot_note = ""
    if K > 0 and R:
        single = np.flatnonzero(~multi)
        S_star = np.full((K, R, len(thr)), np.nan)
        c_star = np.zeros((K, R, len(thr)), dtype=bool)
        if single.size:
            Ss, cs, boot_note = _remeasure([series[i] for i in single], thr, n_val, K, seed,
                                           method=method, p_source=p_source)
            if recentre:
                Ss = _recentre(Ss, cs, sb, meta["run_id"].to_numpy()[single], thr, series, single)
            S_star[:, single], c_star[:, single] = Ss, cs
        rng_rep = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        W_rep = np.repeat(_group_weights(B_run)[None, :], K, axis=0)
        for key in pd.unique(gkey[multi]):
            idx = np.flatnonzero((gkey == key).to_numpy())
            draws = rng_rep.integers(0, len(idx), size=(K, len(idx)))
            cnt = np.zeros((K, len(idx)))
            np.add.at(cnt, (np.arange(K)[:, None], draws), 1.0)
            W_rep[:, idx] = cnt / len(idx)
    fits = []
    for j, t in enumerate(thr):
        rows = sb[sb["threshold"] == t]
        pos = {rid: q for q, rid in enumerate(rows["run_id"])}
        order = np.array([pos[r] for r in meta["run_id"]], dtype=int)
        S = rows["S_B"].to_numpy(dtype=float)[order]
        c = rows["censored"].to_numpy(dtype=bool)[order]
        B, S_, c_, ok, notes = _prepare(B_run, S, c)
        tables = None
        if K > 0:
            def tables(f_hat, K_, rng, j=j, ok=ok, S=S, c=c):
                Y = np.log(np.where(multi[None, :], S[None, :], S_star[:, :, j]))
                Cc = np.where(multi[None, :], c[None, :], c_star[:, :, j])
                Wt = np.where(np.isfinite(Y), W_rep, 0.0)
                Y, Wt, Cc = Y[:, ok], Wt[:, ok], Cc[:, ok]
                kinds = (["replicates"] if multi[ok].any() else []) + (
                    ["eval-noise"] if (~multi[ok]).any() else [])
                return np.nan_to_num(Y, nan=0.0, neginf=0.0), Wt, Cc, "+".join(kinds)
        res = _fit_table(B[ok], S_[ok], c_[ok], K, seed, notes, groups=B[ok], tables=tables,
                         ci_note=boot_note)
        res["threshold"] = t
        fits.append(res)
    cbs = pd.DataFrame(fits)
    extra = [c for c in cbs.columns if c not in CBS_FIT_COLUMNS]
    return sb, cbs[CBS_FIT_COLUMNS + extra]


# ------------------------------------------------------------------------------------------
# Across thresholds: B_noise vs target, Pareto check
# ------------------------------------------------------------------------------------------
def b_noise_vs_target(cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """B_noise (with CI), B_crit_20pct, S_min, E_min by target accuracy, and the growth of
    B_noise relative to the easiest target with a usable fit (status ok/extrapolated)."""
    cols = ["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "B_crit_20pct", "S_min", "E_min",
            "status"]
    out = cbs_fit[cols].sort_values("threshold").reset_index(drop=True)
    usable = out["status"].isin(["ok", "extrapolated"]) & out["B_noise"].notna()
    ref = out.loc[usable, "B_noise"].iloc[0] if usable.any() else np.nan
    out["growth_vs_easiest"] = np.where(usable, out["B_noise"] / ref, np.nan)
    return out


def pareto_table(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Per run and threshold: S/S_min - 1, E/E_min - 1 and their product, which the
    McCandlish model puts at exactly 1 ((S/S_min - 1)(E/E_min - 1) = 1). Only thresholds with
    a usable fit; censored rows are kept (flagged: their excesses are lower bounds)."""
    fit = cbs_fit.loc[cbs_fit["status"].isin(["ok", "extrapolated"]),
                      ["threshold", "S_min", "E_min", "B_noise"]]
    keep = ["run_id", "run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
            "E_B", "censored"]
    out = sb_eb[[c for c in keep if c in sb_eb.columns]].merge(fit, on="threshold", how="inner")
    out["S_excess"] = out["S_B"].astype(float) / out["S_min"] - 1.0
    out["E_excess"] = out["E_B"].astype(float) / out["E_min"] - 1.0
    out["pareto_product"] = out["S_excess"] * out["E_excess"]
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Two axes (phase 2): prompts vs rollouts
# ------------------------------------------------------------------------------------------
def _phase_axes(df: pd.DataFrame) -> dict:
    """phase -> (axis, fixed value): 'prompts' (n_rollouts fixed) or 'rollouts' (n_prompts fixed)."""
    axes = {}
    for ph, sub in df.groupby("phase", sort=True):
        n_p = sub["n_prompts"].astype(float).unique()
        n_r = sub["n_rollouts"].astype(float).unique()
        if len(n_r) == 1 and len(n_p) > 1:
            axes[ph] = ("prompts", float(n_r[0]))
        elif len(n_p) == 1 and len(n_r) > 1:
            axes[ph] = ("rollouts", float(n_p[0]))
        else:
            axes[ph] = ("mixed", np.nan)
    return axes


def _axis_b_noise(axis, fixed, B0, rho, S_min):
    """Per-axis McCandlish parameters in total samples implied by (S_min, B0, rho)."""
    if axis == "prompts":
        return B0 * (1.0 + (fixed - 1.0) * rho), S_min
    if axis == "rollouts":
        k = 1.0 + B0 * rho / fixed
        return B0 * (1.0 - rho) / k, S_min * k
    return np.nan * B0, np.nan * S_min


def two_axis_fit(sb_eb_all: pd.DataFrame, phases=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Joint fit of prompt-axis and rollout-axis runs (p1, p2a, p2b) per threshold:

        S = S_min (1 + B0 (1 + (n_r - 1) rho) / (n_p n_r)),  rho in [0, 1],

    i.e. McCandlish with the effective batch B_eff = n_p n_r / (1 + (n_r - 1) rho) counted in
    independent prompts: rollouts of one prompt are correlated with correlation rho, B0 is
    the noise scale in prompts. Log-space least squares with censored runs as lower bounds,
    each (phase, n_p, n_r) configuration weighted 1. CI: bootstrap as in fit_mccandlish
    (replicates within a configuration, residuals in log space otherwise).
    Along a prompt axis (n_r = R): B_noise = B0 (1 + (R - 1) rho) in total samples; along a
    rollout axis (n_p = P): B_noise = B0 (1 - rho) / (1 + B0 rho / P), S_min' = S_min (1 + B0 rho / P).

    Returns {'fit': one row per threshold (rho, rho_lo, rho_hi, B0, B0_lo, B0_hi, S_min,
    r2_log, n_points, n_censored, status, reason), 'axes': one row per (threshold, phase) with
    the implied B_noise (and CI) in total samples and the axis it belongs to}.
    """
    df = sb_eb_all if phases is None else sb_eb_all[sb_eb_all["phase"].isin(list(phases))]
    df = df.copy()
    if "phase" not in df.columns:
        df["phase"] = "all"
    axes = _phase_axes(df)
    fit_rows, axis_rows = [], []
    for t, sub in df.groupby("threshold", sort=True):
        n_p = sub["n_prompts"].to_numpy(dtype=float)
        n_r = sub["n_rollouts"].to_numpy(dtype=float)
        B, S, c, ok, notes = _prepare(n_p * n_r, sub["S_B"].to_numpy(dtype=float),
                                      sub["censored"].to_numpy(dtype=bool))
        ok &= np.isfinite(n_p) & np.isfinite(n_r)
        keys = list(zip(sub["phase"].astype(str), n_p, n_r, strict=True))
        keys = [k for k, o in zip(keys, ok, strict=True) if o]
        n_p, n_r, S, c = n_p[ok], n_r[ok], S[ok], c[ok]
        row = {"threshold": float(t), "rho": np.nan, "rho_lo": np.nan, "rho_hi": np.nan,
               "B0": np.nan, "B0_lo": np.nan, "B0_hi": np.nan, "S_min": np.nan, "r2_log": np.nan,
               "n_points": int(len(S)), "n_censored": int(c.sum()), "status": "failed", "reason": ""}
        reached = ~c
        n_cfg = len({(a, b) for a, b, r in zip(n_p, n_r, reached, strict=True) if r})
        n_rvals = len(np.unique(n_r[reached]))
        if n_cfg < 3 or n_rvals < 2:
            row["status"] = "insufficient"
            row["reason"] = "; ".join(filter(None, [
                f"{n_cfg} configuration(s) reach the target (3 needed) over {n_rvals} "
                "distinct n_rollouts (2 needed to separate rho)", *notes]))
            fit_rows.append(row)
            continue
        model = _Model(n_prompts=n_p, n_rollouts=n_r)
        y = np.log(S)
        w = _group_weights(keys)
        bb = _b_bounds(n_p)
        rb = (0.0, 1.0)
        with np.errstate(all="ignore"):
            pt = _fit_point(model, y, w, c, bb, rb)
        lo_hit, hi_hit = _at_bound(np.array([pt["b"]]), bb)
        if lo_hit[0] or hi_hit[0] or not np.isfinite(pt["b"]):
            row["reason"] = "B0 runs to a search bound: not identifiable from these runs"
            fit_rows.append(row)
            continue
        f_hat = pt["a"] + model.g(pt["b"], pt["rho"])
        m = w > 0
        mu = m & ~c
        ybar = np.average(y[mu], weights=w[mu])
        tss = float((w[mu] * (y[mu] - ybar) ** 2).sum())
        row.update({"rho": pt["rho"], "B0": math.exp(pt["b"]), "S_min": math.exp(pt["a"]),
                    "r2_log": 1.0 - float((w[mu] * (y[mu] - f_hat[mu]) ** 2).sum()) / tss if tss > 0 else np.nan,
                    "status": "ok", "reason": "; ".join(notes)})
        draws = None
        if n_bootstrap and n_bootstrap > 0:
            rng = np.random.default_rng(seed)
            with np.errstate(all="ignore"):
                Y, Wt, C, _ = _bootstrap_tables(keys, y, w, c, f_hat, int(n_bootstrap), rng, n_params=3)
                a_s, b_s, r_s, _ = _tobit_em(model, Y, Wt, C, bb, rb)
            lo_b, hi_b = _at_bound(b_s, bb)
            valid = ~(lo_b | hi_b) & np.isfinite(b_s)
            draws = (np.exp(a_s[valid]), np.exp(b_s[valid]), r_s[valid])
            row["rho_lo"], row["rho_hi"] = _quantiles(r_s[valid])
            row["B0_lo"], row["B0_hi"] = _quantiles(np.exp(b_s[valid]))
        fit_rows.append(row)
        for ph, (axis, fixed) in axes.items():
            bn, sm = _axis_b_noise(axis, fixed, row["B0"], row["rho"], row["S_min"])
            lo = hi = np.nan
            if draws is not None and axis != "mixed":
                bn_s, _ = _axis_b_noise(axis, fixed, draws[1], draws[2], draws[0])
                lo, hi = _quantiles(bn_s)
            axis_rows.append({"threshold": float(t), "phase": ph, "axis": axis, "n_fixed": fixed,
                              "B_noise": bn, "B_noise_lo": lo, "B_noise_hi": hi, "S_min": sm})
    axes_cols = ["threshold", "phase", "axis", "n_fixed", "B_noise", "B_noise_lo", "B_noise_hi", "S_min"]
    return {"fit": pd.DataFrame(fit_rows), "axes": pd.DataFrame(axis_rows, columns=axes_cols)}


def iso_batch_table(sb_eb_p2c: pd.DataFrame, two_axis: dict | None = None) -> pd.DataFrame:
    """Iso-batch phase (fixed B = n_p n_r): S per (n_prompts, n_rollouts) split and threshold.

    Replicates are combined by the geometric mean of S (censored if any replicate is).
    S_rel = S / (fastest uncensored split at that threshold). With a two_axis_fit result, the
    joint model's prediction S_pred is added."""
    rows = []
    for (t, n_p, n_r), sub in sb_eb_p2c.groupby(["threshold", "n_prompts", "n_rollouts"], sort=True):
        S = sub["S_B"].to_numpy(dtype=float)
        S = S[np.isfinite(S) & (S > 0)]
        rows.append({"threshold": float(t), "n_prompts": int(n_p), "n_rollouts": int(n_r),
                     "total_batch": int(n_p * n_r),
                     "S_B": float(np.exp(np.log(S).mean())) if S.size else np.nan,
                     "censored": bool(sub["censored"].any()), "n_runs": int(len(sub))})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    best = out[~out["censored"]].groupby("threshold")["S_B"].min()
    out["S_rel"] = out["S_B"] / out["threshold"].map(best)
    out["rank"] = out.groupby("threshold")["S_B"].rank(method="min")
    if two_axis is not None and len(two_axis.get("fit", [])):
        f = two_axis["fit"].set_index("threshold")
        S_min = out["threshold"].map(f["S_min"])
        B0 = out["threshold"].map(f["B0"])
        rho = out["threshold"].map(f["rho"])
        out["S_pred"] = S_min * (1.0 + B0 * (1.0 + (out["n_rollouts"] - 1) * rho) / out["total_batch"])
    return out


# ------------------------------------------------------------------------------------------
# Gradient noise (phase 3)
# ------------------------------------------------------------------------------------------
def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as Adam's: no pull towards 0 at the start)."""
    out = np.empty_like(x, dtype=float)
    m = 0.0
    for i, v in enumerate(x):
        m = (1.0 - alpha) * m + alpha * v
        out[i] = m / (1.0 - (1.0 - alpha) ** (i + 1))
    return out


def smooth_grad_noise(history: pd.DataFrame, runs: pd.DataFrame, alpha: float = 0.1,
                      estimate_key: str = "grad_noise/B_noise_estimate",
                      norm_key: str = "grad_noise/grad_norm") -> pd.DataFrame:
    """Smoothed simple noise scale B_simple = tr(Sigma) / |G|^2 per run and step.

    Assumed meaning of the custom keys (the seed's logger; no standard exists):
    grad_noise/grad_norm = |G_B|, the norm of the step's full-batch gradient over B = n_p n_r
    samples; grad_noise/B_noise_estimate = that step's (noisy) estimate of
    B_simple = tr(Sigma)/|G|^2 in samples. Since E|G_B|^2 = |G|^2 + tr(Sigma)/B, each step
    gives |G|^2 ~ |G_B|^2 / (1 + b/B) and tr(Sigma) ~ b |G|^2. As McCandlish et al. (2018,
    App. A) do, the two are smoothed separately (bias-corrected EMA) and divided afterwards:
    a ratio of noisy estimates is biased, the ratio of smoothed ones much less.
    Falls back to actor/grad_norm when norm_key is absent. Empty table when no run logs
    estimate_key.
    """
    cols = ["run_id", "run_name", "total_batch", "step", "B_simple_raw", "G2_est",
            "trSigma_est", "G2_ema", "trSigma_ema", "B_simple_ema"]
    if estimate_key not in history.columns:
        return pd.DataFrame(columns=cols)
    if norm_key not in history.columns:
        norm_key = "actor/grad_norm"
        if norm_key not in history.columns:
            return pd.DataFrame(columns=cols)
    meta = _run_meta(runs).set_index("run_id")
    parts = []
    for rid, sub in history.groupby("run_id", sort=True):
        rid = str(rid)
        if rid not in meta.index:
            continue
        b = sub[estimate_key].to_numpy(dtype=float)
        g = sub[norm_key].to_numpy(dtype=float)
        ok = np.isfinite(b) & np.isfinite(g)
        if not ok.any():
            continue
        B = float(meta.at[rid, "total_batch"])
        b, g = b[ok], g[ok]
        g2 = g * g / (1.0 + b / B)
        tr = b * g2
        g2e, tre = _ema(g2, alpha), _ema(tr, alpha)
        parts.append(pd.DataFrame({
            "run_id": rid, "run_name": meta.at[rid, "run_name"], "total_batch": B,
            "step": sub["step"].to_numpy()[ok], "B_simple_raw": b, "G2_est": g2, "trSigma_est": tr,
            "G2_ema": g2e, "trSigma_ema": tre, "B_simple_ema": tre / g2e}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def grad_noise_at_target(smoothed: pd.DataFrame, sb_eb: pd.DataFrame) -> pd.DataFrame:
    """The smoothed B_simple of each run at its crossing of each threshold (interpolated in
    step; censored runs skipped). Compare its median with the fitted B_noise."""
    rows = []
    by_run = {str(k): v for k, v in smoothed.groupby("run_id")}
    for r in sb_eb.itertuples(index=False):
        sm = by_run.get(str(r.run_id))
        if sm is None or r.censored or not np.isfinite(r.S_B):
            continue
        val = np.interp(r.S_B, sm["step"].to_numpy(dtype=float), sm["B_simple_ema"].to_numpy(dtype=float))
        rows.append({"run_id": r.run_id, "total_batch": r.total_batch, "threshold": r.threshold,
                     "S_B": r.S_B, "B_simple_ema": float(val)})
    return pd.DataFrame(rows, columns=["run_id", "total_batch", "threshold", "S_B", "B_simple_ema"])


def b_simple_posthoc(runs: pd.DataFrame, history: pd.DataFrame, metric: str, accuracies,
                     grad_key: str = "actor/grad_norm", window: float = 0.1,
                     n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """B_simple from the gradient norms of runs at different B, taken at matched accuracy.

    The norm of a B-sample gradient satisfies E|G_B|^2 = |G|^2 + tr(Sigma)/B (McCandlish et
    al. 2018, App. A). For each accuracy, each run contributes the mean of grad_key^2 over the
    training steps within +-window*S of its (isotonic, interpolated) crossing step S; an
    ordinary least-squares line of |G_B|^2 on 1/B across runs has intercept |G|^2 and slope
    tr(Sigma), so B_simple = slope / intercept. 95% CI: bootstrap over runs (percentile).
    Censored runs are skipped. Compare with the fitted B_noise (McCandlish's B_crit), which
    equals B_simple when the Hessian is isotropic.
    """
    accs = [float(a) for a in np.atleast_1d(accuracies)]
    meta = _run_meta(runs).set_index("run_id")
    series = _eval_series(history, metric)
    grads = {}
    if grad_key in history.columns:
        for rid, sub in history.groupby("run_id", sort=False):
            g = sub[grad_key].to_numpy(dtype=float)
            ok = np.isfinite(g)
            grads[str(rid)] = (sub["step"].to_numpy(dtype=float)[ok], g[ok])
    out = []
    rng = np.random.default_rng(seed)
    for acc in accs:
        xs, ys = [], []
        for rid, (s, a, _) in series.items():
            if rid not in meta.index or rid not in grads or len(grads[rid][0]) == 0:
                continue
            S, cens = _crossings(s, a, [acc], "isotonic")
            if cens[0] or not np.isfinite(S[0]) or S[0] <= 0:
                continue
            gs, g = grads[rid]
            half = max(window * S[0], 1.0)
            sel = np.abs(gs - S[0]) <= half
            if sel.sum() < 1:
                sel = np.argsort(np.abs(gs - S[0]))[:3]
            xs.append(1.0 / float(meta.at[rid, "total_batch"]))
            ys.append(float(np.mean(g[sel] ** 2)))
        x, y = np.array(xs), np.array(ys)
        row = {"accuracy": acc, "G2": np.nan, "trSigma": np.nan, "B_simple": np.nan,
               "B_simple_lo": np.nan, "B_simple_hi": np.nan, "r2": np.nan, "n_runs": len(x),
               "n_batch_sizes": len(np.unique(x)), "status": "insufficient", "reason": ""}
        if len(np.unique(x)) < 3:
            row["reason"] = f"{len(np.unique(x))} batch size(s) with runs at this accuracy, 3 needed"
            out.append(row)
            continue
        slope, icpt = np.polyfit(x, y, 1)
        resid = y - (icpt + slope * x)
        tss = float(((y - y.mean()) ** 2).sum())
        row.update({"G2": icpt, "trSigma": slope, "r2": 1 - float((resid**2).sum()) / tss if tss > 0 else np.nan})
        if icpt <= 0 or slope <= 0:
            row["status"] = "failed"
            row["reason"] = "intercept |G|^2 or slope tr(Sigma) not positive: no noise scale"
            out.append(row)
            continue
        row["B_simple"], row["status"] = slope / icpt, "ok"
        if n_bootstrap:
            idx = rng.integers(0, len(x), size=(int(n_bootstrap), len(x)))
            xb, yb = x[idx], y[idx]
            xm, ym = xb.mean(1, keepdims=True), yb.mean(1, keepdims=True)
            sxx = ((xb - xm) ** 2).sum(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                sl = ((xb - xm) * (yb - ym)).sum(1) / sxx
                ic = ym[:, 0] - sl * xm[:, 0]
                bs = np.where(ic > 0, sl / ic, np.inf)
            bs = np.where(sxx > 0, bs, np.nan)
            row["B_simple_lo"], row["B_simple_hi"] = _quantiles(bs)
        out.append(row)
    return pd.DataFrame(out)


def compare_b_simple(b_simple: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Post-hoc B_simple next to the fitted B_noise (B_crit) at the same target accuracy."""
    left = b_simple.rename(columns={"accuracy": "threshold"})
    right = cbs_fit[["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"]].rename(
        columns={"status": "fit_status"})
    out = left.merge(right, on="threshold", how="inner")
    out["B_simple_over_B_noise"] = out["B_simple"] / out["B_noise"]
    return out


# ------------------------------------------------------------------------------------------
# Wall clock
# ------------------------------------------------------------------------------------------
def wall_clock_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                     method: str = "isotonic",
                     time_keys=("perf/time_per_step", "timing_s/step")) -> pd.DataFrame:
    """Wall-clock time to each target: the sum of the logged step times of steps 1..S, with
    the fraction of step ceil(S) for an interpolated crossing S (censored: up to the last
    eval step, a lower bound). The first of time_keys that a run logs is used; steps
    without a time get the run's median step time (counted in n_steps_imputed).
    GPU-hours = hours x n_gpus where the config gives GPU counts.
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = _run_meta(runs)
    series = _eval_series(history, metric)
    hist_by_run = {str(k): v for k, v in history.groupby("run_id", sort=False)}
    rows = []
    for m in meta.itertuples(index=False):
        s, a, _ = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = _crossings(s, a, thr, method)
        h = hist_by_run.get(m.run_id)
        key, t_step = None, None
        if h is not None:
            for k in time_keys:
                if k in h.columns and np.isfinite(h[k].to_numpy(dtype=float)).any():
                    key = k
                    break
        if key is not None:
            st = h["step"].to_numpy(dtype=float)
            tv = h[key].to_numpy(dtype=float)
            okt = np.isfinite(tv) & (st >= 1)
            last = int(max(np.nanmax(st), np.nanmax(s) if len(s) else 0))
            t_step = np.full(last, np.nan)  # index i holds step i + 1
            t_step[st[okt].astype(int) - 1] = tv[okt]
            med = float(np.nanmedian(t_step)) if np.isfinite(t_step).any() else np.nan
            n_missing = np.isnan(t_step)
            t_step = np.where(n_missing, med, t_step)
            cum = np.concatenate([[0.0], np.cumsum(t_step)])
            mean_step = float(np.nanmean(tv[okt])) if okt.any() else np.nan
        n_gpus = float(m.n_gpus) if m.n_gpus is not None and pd.notna(m.n_gpus) else np.nan
        for t, sv, cv in zip(thr, S, cens, strict=True):
            secs, n_imp = np.nan, 0
            if t_step is not None and np.isfinite(sv):
                k = min(int(math.floor(sv)), len(t_step))
                frac = sv - k if k < len(t_step) else 0.0
                secs = cum[k] + (frac * t_step[k] if frac > 0 else 0.0)
                n_imp = int(n_missing[: min(int(math.ceil(sv)), len(t_step))].sum())
            rows.append({"run_id": m.run_id, "run_name": m.run_name, "n_prompts": m.n_prompts,
                         "n_rollouts": m.n_rollouts, "total_batch": m.total_batch,
                         "n_gpus": n_gpus, "threshold": t, "S_B": sv, "censored": bool(cv),
                         "time_to_target_s": secs, "time_to_target_h": secs / 3600.0,
                         "gpu_hours": secs / 3600.0 * n_gpus,
                         "mean_step_time_s": mean_step if t_step is not None else np.nan,
                         "n_steps_imputed": n_imp, "time_key": key})
    return _int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))


def fastest_batch(wall_clock: pd.DataFrame, by: str = "time_to_target_h") -> pd.DataFrame:
    """Per threshold, the (n_prompts, n_rollouts) configuration that reaches the target in the
    least wall-clock time (`by`; median over replicates that reach it). `undetermined` is True
    when a run that never reached the target had stopped earlier than that (its time is only a
    lower bound, so it might have been faster)."""
    rows = []
    for t, sub in wall_clock.groupby("threshold", sort=True):
        reached = sub[~sub["censored"] & sub[by].notna()]
        if reached.empty:
            rows.append({"threshold": t, "n_configs": 0, "undetermined": True})
            continue
        agg = reached.groupby(["n_prompts", "n_rollouts", "total_batch"], as_index=False).agg(
            value=(by, "median"), S_B=("S_B", "median"),
            time_to_target_h=("time_to_target_h", "median"), gpu_hours=("gpu_hours", "median"))
        best = agg.loc[agg["value"].idxmin()]
        cens = sub[sub["censored"] & sub[by].notna()]
        rows.append({"threshold": t, "n_prompts": best["n_prompts"], "n_rollouts": best["n_rollouts"],
                     "total_batch": best["total_batch"], "time_to_target_h": best["time_to_target_h"],
                     "gpu_hours": best["gpu_hours"], "S_B": best["S_B"], "n_configs": len(agg),
                     "undetermined": bool((cens[by] < best["value"]).any())})
    return _int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))


# ------------------------------------------------------------------------------------------
# The seed notebook's method, for comparison
# ------------------------------------------------------------------------------------------
def seed_method_fit(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                    dedupe_names: bool = True) -> pd.DataFrame:
    """The seed notebook's estimate: S = first raw eval step with acc >= target, runs that
    never reach it dropped, S(B) = S_min (1 + B_noise/B) fitted by curve_fit in linear space
    (p0 = [min S, middle B], bounds >= 0), >= 3 points required, no uncertainty.
    dedupe_names=True mimics its dict keyed by run name: one run per name survives (the
    first started, replicate 0, which a newest-first W&B listing writes last).
    Returns the cbs_fit columns (CI columns NaN) plus R2_linear."""
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    r = runs
    if dedupe_names and "replicate" in runs.columns:
        r = runs.sort_values("replicate").drop_duplicates("name", keep="first")
    sb = sb_eb_table(r, history, metric, thr, method="first_crossing")
    out = []
    for t in thr:
        sub = sb[(sb["threshold"] == t) & ~sb["censored"] & sb["S_B"].notna()]
        sub = sub.sort_values("total_batch")
        B = sub["total_batch"].to_numpy(dtype=float)
        S = sub["S_B"].to_numpy(dtype=float)
        res = _empty_fit(len(B), 0, "insufficient", "")
        res.update({"threshold": t, "R2_linear": np.nan})
        if len(B) < 3:
            res["reason"] = f"{len(B)} run(s) reach the target, the seed needs 3"
            out.append(res)
            continue
        try:
            popt, _ = optimize.curve_fit(mccandlish_steps, B, S, p0=[S.min(), B[len(B) // 2]],
                                         bounds=([0, 0], [np.inf, np.inf]), maxfev=10000)
        except (RuntimeError, ValueError) as exc:
            res["status"], res["reason"] = "failed", f"curve_fit: {exc}"
            out.append(res)
            continue
        S_min, B_noise = (float(v) for v in popt)
        pred = mccandlish_steps(B, S_min, B_noise)
        ss_tot = float(((S - S.mean()) ** 2).sum())
        res.update({"B_noise": B_noise, "S_min": S_min, "E_min": S_min * B_noise,
                    "B_crit_20pct": 0.2 * B_noise,
                    "R2_linear": 1 - float(((S - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0,
                    "status": "ok" if B.min() <= B_noise <= B.max() else "extrapolated"})
        with np.errstate(divide="ignore", invalid="ignore"):
            yl = np.log(S)
            fl = np.log(pred)
            tl = float(((yl - yl.mean()) ** 2).sum())
            res["r2_log"] = 1 - float(((yl - fl) ** 2).sum()) / tl if tl > 0 else np.nan
        out.append(res)
    df = pd.DataFrame(out)
    extra = [c for c in df.columns if c not in CBS_FIT_COLUMNS]
    return df[CBS_FIT_COLUMNS + extra]
