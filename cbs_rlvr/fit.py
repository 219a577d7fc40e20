"""The McCandlish fit S(B) = S_min (1 + B_noise / B) in log space, with censored runs as lower
bounds (a Tobit likelihood), its bootstrap, and what follows from it across targets.

The engine is vectorised over K bootstrap tables at once; `bootstrap.py` supplies the
eval-noise tables of a phase, `axes.py` reuses the engine for the two-axis model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

FIT_STATUSES = ("ok", "extrapolated", "insufficient", "failed")
CBS_FIT_COLUMNS = [
    "threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min", "E_min", "B_crit_20pct",
    "r2_log", "n_points", "n_censored", "status", "reason",
    # the shape of S(B) (shape.py): the general fit's alpha at every target, the chosen form,
    # and the alpha = 1 estimate beside the chosen one
    "alpha", "alpha_lo", "alpha_hi", "model", "B_noise_mccandlish",
]
# B_noise is searched within [min B / 1000, max B * 1000]; a fit that runs into either end
# is not identified by the data (S flat in B, or S proportional to 1/B throughout).
_SEARCH_DECADES = 3.0
_SIGMA_FLOOR = 1e-6
_BOUND_TOL = 1e-3

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)



# scipy is imported where it is used: `import cbs_helpers` stays as light as pandas +
# matplotlib for the notebooks that fit nothing.

def _norm_logpdf(z):
    """log of the standard normal density (scipy.stats costs 0.3 s of import per notebook)."""
    return -0.5 * np.square(z) - _LOG_SQRT_2PI

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
    from scipy import special

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
    active = np.arange(len(sel))  # tables still moving: a converged table stops being refitted
    for _ in range(n_iter):
        ya, wa, ca = ys[active], ws[active], cs[active]
        aa, ba, ra, sa = a_s[active], b_s[active], r_s[active], s_s[active]
        f = aa[:, None] + model.g(ba[:, None], ra[:, None])
        alpha = (ya - f) / sa[:, None]
        lam = np.exp(_norm_logpdf(alpha) - special.log_ndtr(-alpha))
        ytil = np.where(ca, f + sa[:, None] * lam, ya)
        var_c = np.where(ca, sa[:, None] ** 2 * np.clip(1.0 + alpha * lam - lam * lam, 0.0, 1.0), 0.0)
        a_n, b_n, r_n, _ = _ls_fit(model, ytil, wa, b_bounds, rho_bounds,
                                   start=(ba, ra, hb, hr), rounds=10 if model.two_axis else 3)
        f_n = a_n[:, None] + model.g(b_n[:, None], r_n[:, None])
        s2 = (wa * ((ytil - f_n) ** 2 + var_c)).sum(axis=1) / wa.sum(axis=1)
        s_n = np.sqrt(np.maximum(s2, _SIGMA_FLOOR**2))
        delta = np.max(np.abs(np.stack([b_n - ba, r_n - ra, a_n - aa])), axis=0)
        a_s[active], b_s[active], r_s[active], s_s[active] = a_n, b_n, r_n, s_n
        active = active[delta >= tol]
        if active.size == 0:
            break
    if not model.two_axis:
        a_s, b_s, s_s = _tobit_newton(model, ys, ws, cs, a_s, b_s, s_s, b_bounds)
    a[sel], b[sel], rho[sel], sigma[sel] = a_s, b_s, r_s, s_s
    return a, b, rho, sigma


def _tobit_terms(model: _Model, y, w, cens, a, b, log_s, derivatives: bool = True):
    """Weighted Tobit log-likelihood (K,) and, optionally, its gradient (K, 3) and Hessian
    (K, 3, 3) in (a, b, log sigma) for the one-axis model."""
    from scipy import special

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
    from scipy import special

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
    from scipy import optimize

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


# ------------------------------------------------------------------------------------------
# fit_mccandlish
# ------------------------------------------------------------------------------------------
def _empty_fit(n_points=0, n_censored=0, status="failed", reason="") -> dict:
    return {"B_noise": np.nan, "B_noise_lo": np.nan, "B_noise_hi": np.nan, "S_min": np.nan,
            "E_min": np.nan, "B_crit_20pct": np.nan, "r2_log": np.nan, "n_points": int(n_points),
            "n_censored": int(n_censored), "status": status, "reason": reason,
            "S_min_lo": np.nan, "S_min_hi": np.nan, "sigma_log": np.nan,
            "n_batch_sizes": 0, "n_reached": 0, "ci_method": "", "n_bootstrap_ok": 0,
            "alpha": np.nan, "alpha_lo": np.nan, "alpha_hi": np.nan, "model": "mccandlish",
            "B_noise_mccandlish": np.nan}


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


def poor_fit_note(r2_log: float) -> str:
    """The caveat of a fit whose curve explains less of the spread of log S than their mean
    (R² < 0 on the runs that reached the target: the censored runs, or noise, drive it)."""
    if not (np.isfinite(r2_log) and r2_log < 0):
        return ""
    return (f"poor fit: the curve explains less of the spread of log S than their mean "
            f"(R² = {r2_log:.2f}); read the estimate with care")


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
    poor = poor_fit_note(out["r2_log"])
    if B_noise < B_all.min() or B_noise > B_all.max():
        return out, "extrapolated", "; ".join(filter(None, [
            f"B_noise = {B_noise:.4g} lies outside the sampled batch sizes [{B_all.min():g}, "
            f"{B_all.max():g}]", poor]))
    return out, "ok", poor


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


def _point_stage(B, S, c, notes, groups, out: dict):
    """The first stage every fit of one S(B) table shares: the counts, the 3-batch-size check and
    the McCandlish point fit with its status, written into `out`. Returns None when `out` is
    final (too few batch sizes, a fit that failed or could not run), else (model, y, w, bb, pt,
    core, status, reason): the fit's data and point fit, and what _summarise_fit said of it."""
    out["n_batch_sizes"] = int(len(np.unique(B)))
    n_reached = int(len(np.unique(B[~c])))
    out["n_reached"] = n_reached
    note = "; ".join(notes)
    if n_reached < 3:
        out["status"] = "insufficient"
        out["reason"] = "; ".join(filter(None, [
            f"{n_reached} batch size(s) reach the target, 3 needed", note]))
        return None
    model = _Model(B=B)
    y = np.log(S)
    w = _group_weights(groups)
    bb = _b_bounds(B)
    try:
        with np.errstate(all="ignore"):
            pt = _fit_point(model, y, w, c, bb)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        out["reason"] = f"fit failed: {exc}"
        return None
    core, status, reason = _summarise_fit(model, y, w, c, pt, bb, B)
    out.update(core)
    out["B_noise_mccandlish"] = out["B_noise"]
    out["status"] = status
    out["reason"] = "; ".join(filter(None, [reason, note]))
    return None if status == "failed" else (model, y, w, bb, pt, core, status, reason)


def ci_shortfall(n_tables: int, n_ok: int) -> str:
    """Why a fit's bootstrap gives no interval ('' when it can): fewer than 20 resamples, or fewer
    than max(20, half) of them with 3 batch sizes reaching the target."""
    if n_tables < 20:
        return f"no CI: {n_tables} bootstrap resamples, at least 20 needed"
    if n_ok < max(20, 0.5 * n_tables):
        return (f"no CI: only {n_ok} of {n_tables} bootstrap tables had 3 batch sizes reaching the "
                f"target (at least {max(20, math.ceil(n_tables / 2))} needed)")
    return ""


def _fit_table(B, S, c, n_bootstrap, seed, notes, groups, tables=None, ci_note=None) -> dict:
    """Shared body of fit_mccandlish / fit_phase: point fit, status, bootstrap CI.

    tables: optional callable (f_hat, K, rng) -> (Y, W, C, method) supplying bootstrap tables.
    """
    out = _empty_fit(len(B), int(c.sum()))
    stage = _point_stage(B, S, c, notes, groups, out)
    if stage is None:
        return out
    model, y, w, bb, pt, *_ = stage
    if n_bootstrap and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        f_hat = pt["a"] + model.g(pt["b"], 0.0)
        with np.errstate(all="ignore"):
            if tables is None:
                Y, Wt, C, method = _bootstrap_tables(groups, y, w, c, f_hat, int(n_bootstrap), rng)
            else:
                Y, Wt, C, method = tables(f_hat, int(n_bootstrap), rng)
            bs, as_, _ = _fit_batch(model, Y, Wt, C, bb)
            # in the natural scale (exp is monotone: the same order statistics); a refit that
            # ran to a search bound is B_noise = 0 or inf
            b_draws, s_draws = np.exp(bs), np.exp(as_)
        out["n_bootstrap_ok"] = int(np.isfinite(bs).sum() + np.isinf(bs).sum())
        out["B_noise_lo"], out["B_noise_hi"], b_note = bootstrap_interval(
            out["B_noise"], b_draws, "B_noise")
        out["S_min_lo"], out["S_min_hi"], s_note = bootstrap_interval(out["S_min"], s_draws, "S_min")
        out["ci_method"] = method
        short = ci_shortfall(len(bs), out["n_bootstrap_ok"])
        if short:
            b_note, s_note = short, ""
        ci_note = "; ".join(filter(None, [ci_note, b_note, s_note]))
        if ci_note:
            out["reason"] = "; ".join(filter(None, [out["reason"], ci_note]))
    return out



# ------------------------------------------------------------------------------------------
# Across thresholds: B_noise vs target, Pareto check
# ------------------------------------------------------------------------------------------
def b_noise_vs_target(cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """B_noise (with CI), B_crit_20pct, S_min, E_min by target accuracy, and the growth of
    B_noise relative to the easiest target with a usable fit (status ok/extrapolated).
    An empty or partial cbs_fit gives the same columns (missing values NaN)."""
    cols = ["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "B_crit_20pct", "S_min", "E_min",
            "status"]
    out = cbs_fit.reindex(columns=cols).sort_values("threshold").reset_index(drop=True)
    usable = out["status"].isin(["ok", "extrapolated"]) & out["B_noise"].notna()
    ref = out.loc[usable, "B_noise"].iloc[0] if usable.any() else np.nan
    out["growth_vs_easiest"] = np.where(usable, out["B_noise"] / ref, np.nan)
    return out


def pareto_table(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Per run and threshold: S/S_min - 1, E/E_min - 1 (E_min = S_min B_noise) and their
    product, which the McCandlish model puts at exactly 1 ((S/S_min - 1)(E/E_min - 1) = 1), and
    the chosen form's alpha (1 for McCandlish). Only thresholds with a usable fit; censored rows
    are kept (flagged: their excesses are lower bounds)."""
    cbs_fit = cbs_fit.reindex(columns=list(dict.fromkeys([*cbs_fit.columns, "threshold", "S_min",
                                                         "E_min", "B_noise", "status"])))
    fit = cbs_fit.loc[cbs_fit["status"].isin(["ok", "extrapolated"]),
                      ["threshold", "S_min", "B_noise"]].copy()
    # the McCandlish samples scale S_min B_noise (its E_min); for the general form it is the
    # reference of the same coordinates (E_min itself may not exist there)
    fit["E_min"] = fit["S_min"] * fit["B_noise"]
    if "model" in cbs_fit.columns and "alpha" in cbs_fit.columns:
        gen = cbs_fit.loc[fit.index, "model"].eq("general")
        fit["alpha"] = np.where(gen, pd.to_numeric(cbs_fit.loc[fit.index, "alpha"], errors="coerce"), 1.0)
    else:
        fit["alpha"] = 1.0
    keep = ["run_id", "run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
            "E_B", "censored"]
    sb = sb_eb.reindex(columns=keep)
    sb["threshold"] = pd.to_numeric(sb["threshold"], errors="coerce").astype(float)
    fit = fit.assign(threshold=pd.to_numeric(fit["threshold"], errors="coerce").astype(float))
    out = sb.merge(fit, on="threshold", how="inner")
    out["S_excess"] = out["S_B"].astype(float) / out["S_min"] - 1.0
    out["E_excess"] = out["E_B"].astype(float) / out["E_min"] - 1.0
    out["pareto_product"] = out["S_excess"] * out["E_excess"]
    return out.reset_index(drop=True)



