"""The shape of S(B): the general form S = S_min (1 + (B_noise / B)^alpha) beside McCandlish's
alpha = 1, both fitted with the censored (Tobit) likelihood in log space, and the choice
between them.

McCandlish et al. (2018) assume the learning rate tuned at each B. Sweeps at one fixed learning
rate with Adam often fall more slowly at small B (S ~ B^-0.5..-0.6, Malladi et al. 2022 give
Adam a square-root rule), and along the rollouts axis S can fall faster than 1/B. B_noise keeps
its meaning for every alpha: S(B_noise) = 2 S_min.

The choice: a likelihood-ratio test of alpha = 1 inside the general form, on the same Tobit
likelihood (runs that never reached the target enter as lower bounds, so the test respects
censoring), calibrated as an F test with n = the number of batch points:
F = (exp(LR / n) - 1)(n - 3). Without censoring that is exactly the F test of nested least
squares; a chi-square calibration would be over-confident with the 5-8 batch sizes a sweep has.
McCandlish stays unless p < SHAPE_TEST_LEVEL and alpha differs from 1 by more than a factor
ALPHA_MARGIN (a small significant bend is what picking the best learning rate and eval noise
leave in exact 1/B sweeps). Where the data cannot tell (the test keeps
alpha = 1 but alpha's 95% interval reaches 0.7 or 1.4), B_noise's interval spans both forms'.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .fit import (
    _at_bound,
    _empty_fit,
    _ls_profile,
    _n_distinct_reached,
    _norm_logpdf,
    _point_stage,
    _prepare,
    _tobit_em,
    bootstrap_interval,
    ci_shortfall,
    poor_fit_note,
)

#: the general form's exponent is searched within these bounds; a fit at either is not a shape
ALPHA_BOUNDS = (0.1, 6.0)
#: McCandlish (alpha = 1) is kept unless the F-calibrated likelihood-ratio test rejects it here
SHAPE_TEST_LEVEL = 0.05
#: the general form is chosen only where alpha also differs from 1 by more than this factor:
#: a significant but small bend (alpha 0.9) is within what the envelope's pick of the best
#: learning rate and eval noise put into formula sweeps, and the 1/B form's two parameters are
#: then the better-determined description
ALPHA_MARGIN = 1.15
#: where the test keeps alpha = 1 and alpha's interval reaches beyond these, the data cannot
#: tell the forms apart
ALPHA_CLOSE = (0.7, 1.4)
_ALPHA_GRID = np.geomspace(0.2, 4.0, 11)
_SIGMA_FLOOR = 1e-6


# ------------------------------------------------------------------------------------------
# The curves
# ------------------------------------------------------------------------------------------
def general_steps(B, S_min: float, B_noise: float, alpha: float = 1.0):
    """S(B) = S_min (1 + (B_noise / B)^alpha); alpha = 1 is McCandlish."""
    return S_min * (1.0 + (B_noise / np.asarray(B, dtype=float)) ** alpha)


def general_samples(B, S_min: float, B_noise: float, alpha: float = 1.0):
    """E(B) = B S(B)."""
    B = np.asarray(B, dtype=float)
    return B * general_steps(B, S_min, B_noise, alpha)


def samples_minimum(S_min: float, B_noise: float, alpha: float) -> tuple[float, float]:
    """(B*, E_min): the batch size with the fewest samples to target and that number.

    alpha = 1: E falls toward E_min = S_min B_noise as B -> 0 (B* = 0). alpha > 1: a minimum at
    B* = B_noise (alpha - 1)^(1/alpha), E_min = S_min B* alpha / (alpha - 1). alpha < 1: E keeps
    falling toward smaller B with no floor (E -> 0): no samples minimum, (NaN, NaN)."""
    if not all(np.isfinite(v) for v in (S_min, B_noise, alpha)):
        return np.nan, np.nan
    if abs(alpha - 1.0) < 1e-9:
        return 0.0, S_min * B_noise
    if alpha < 1.0:
        return np.nan, np.nan
    b_star = B_noise * (alpha - 1.0) ** (1.0 / alpha)
    return b_star, S_min * b_star * alpha / (alpha - 1.0)


def overhead_batch(S_min: float, B_noise: float, alpha: float, overhead: float = 0.2) -> float:
    """The batch size above the samples minimum at which E = (1 + overhead) E_min (Zhang et al.
    2024's critical batch size at 20%): 0.2 B_noise for alpha = 1; found numerically for alpha > 1;
    NaN for alpha < 1, where there is no samples minimum."""
    b_star, e_min = samples_minimum(S_min, B_noise, alpha)
    if not np.isfinite(e_min):
        return np.nan
    if abs(alpha - 1.0) < 1e-9:
        return overhead * B_noise
    from scipy import optimize

    target = (1.0 + overhead) * e_min

    def gap(log_b):
        return float(general_samples(math.exp(log_b), S_min, B_noise, alpha)) - target

    lo, hi = math.log(b_star), math.log(b_star) + 1.0
    while gap(hi) < 0 and hi < lo + 60:
        hi += 1.0
    return math.exp(optimize.brentq(gap, lo, hi, xtol=1e-10))


# ------------------------------------------------------------------------------------------
# The general-form engine: Tobit likelihood in (a, b, alpha, log sigma), K tables at once
#   log S = a + softplus(alpha (b - log B)),  a = log S_min, b = log B_noise
# ------------------------------------------------------------------------------------------
def _terms(x, y, w, cens, P, derivatives: bool = True):
    """Weighted Tobit log-likelihood (K,) and, optionally, gradient (K, 4) and Hessian
    (K, 4, 4) in P = (a, b, alpha, log sigma) (K, 4); x = log B (n,), y, w, cens (K, n).
    The normal tail (log_ndtr, the inverse Mills ratio) is computed on the censored cells only:
    it is most of the cost and most cells are uncensored."""
    from scipy import special

    a, b, al, ls = (P[:, i:i + 1] for i in range(4))
    d = b - x[None, :]
    t = al * d
    e = np.exp(-np.abs(t))
    f = a + np.maximum(t, 0.0) + np.log1p(e)
    sig = np.exp(ls)
    z = (y - f) / sig
    ll = -0.5 * z * z - ls
    ci = np.nonzero(cens) if cens.any() else None
    if ci is not None:
        zc = z[ci]
        logsf = special.log_ndtr(-zc)
        ll[ci] = logsf
    total = (w * ll).sum(axis=1)
    if not derivatives:
        return total, None, None
    h = np.where(t >= 0, 1.0, e) / (1.0 + e)
    h1 = h * (1.0 - h)
    isig = 1.0 / sig
    l_f = z * isig
    l_ff = np.broadcast_to(-isig * isig, z.shape).copy()
    l_s = z * z - 1.0
    l_ss = -2.0 * z * z
    l_fs = -2.0 * z * isig
    if ci is not None:
        lam = np.exp(_norm_logpdf(zc) - logsf)
        sc = np.broadcast_to(isig, z.shape)[ci]
        q = 1.0 + zc * (lam - zc)
        l_f[ci] = lam * sc
        l_ff[ci] = -lam * (lam - zc) * sc * sc
        l_s[ci] = lam * zc
        l_ss[ci] = -lam * zc * q
        l_fs[ci] = -lam * q * sc
    J = (None, al * h, d * h)
    F2 = {(1, 1): al * al * h1, (1, 2): h + al * d * h1, (2, 2): d * d * h1}
    K = P.shape[0]
    G = np.empty((K, 4))
    H = np.zeros((K, 4, 4))
    wl_f, wl_ff, wl_fs = w * l_f, w * l_ff, w * l_fs
    for i in range(3):
        G[:, i] = wl_f.sum(axis=1) if i == 0 else (wl_f * J[i]).sum(axis=1)
        H[:, i, 3] = H[:, 3, i] = wl_fs.sum(axis=1) if i == 0 else (wl_fs * J[i]).sum(axis=1)
        for j in range(i, 3):
            if i == 0:
                v = wl_ff if j == 0 else wl_ff * J[j]
            else:
                v = wl_ff * J[i] * J[j] + wl_f * F2[(i, j)]
            H[:, i, j] = H[:, j, i] = v.sum(axis=1)
    G[:, 3] = (w * l_s).sum(axis=1)
    H[:, 3, 3] = (w * l_ss).sum(axis=1)
    return total, G, H


def _newton(x, y, w, cens, P, b_bounds, free=(True, True, True, True), n_iter: int = 30,
            tol: float = 1e-6):
    """Damped Newton (Levenberg-Marquardt) ascent of the Tobit likelihood for K tables; a step
    is kept only when it raises the likelihood. Parameters outside `free` stay fixed."""
    P = P.copy()
    fixed = ~np.asarray(free, dtype=bool)
    lo = np.array([-np.inf, b_bounds[0], ALPHA_BOUNDS[0], math.log(_SIGMA_FLOOR)])
    hi = np.array([np.inf, b_bounds[1], ALPHA_BOUNDS[1], 3.0])
    mu = np.full(len(P), 1e-3)
    ll, G, H = _terms(x, y, w, cens, P)
    active = np.isfinite(ll)
    eye = np.eye(4)[None]
    for _ in range(n_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        Ga, Ha = G[idx].copy(), H[idx].copy()
        Ga[:, fixed] = 0.0
        Ha[:, fixed, :] = 0.0
        Ha[:, :, fixed] = 0.0
        Ha[:, fixed, fixed] = -1.0
        scale = np.maximum(np.abs(np.diagonal(Ha, axis1=1, axis2=2)), 1e-12)
        A = -Ha + mu[idx, None, None] * eye * scale[:, :, None]
        try:
            step = np.linalg.solve(A, Ga[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        step = np.where(np.isfinite(step), step, 0.0)
        Pn = np.clip(P[idx] + step, lo, hi)
        ll_n, G_n, H_n = _terms(x, y[idx], w[idx], cens[idx], Pn)
        better = np.isfinite(ll_n) & (ll_n >= ll[idx] - 1e-12 * np.abs(ll[idx]))
        kept = idx[better]
        P[kept], ll[kept], G[kept], H[kept] = Pn[better], ll_n[better], G_n[better], H_n[better]
        mu[idx] = np.where(better, np.maximum(mu[idx] * 0.1, 1e-12), mu[idx] * 10.0)
        done = better & (np.abs(step).max(axis=1) < tol)
        active[idx[done | (mu[idx] >= 1e12)]] = False
    return P, ll


def _grid_start(x, y, w, cens, b_bounds):
    """Per table, the best (alpha, b) of a coarse grid by least squares on the runs that
    reached the target; a (intercept) and sigma follow. Returns P (K, 4)."""
    wu = np.where(cens, 0.0, w)
    bg = np.linspace(b_bounds[0], b_bounds[1], 49)
    AL, BB = np.meshgrid(_ALPHA_GRID, bg, indexing="ij")
    AL, BB = AL.ravel(), BB.ravel()
    Gm = np.logaddexp(0.0, AL[:, None] * (BB[:, None] - x[None, :]))
    a, rss = _ls_profile(y, wu, Gm)
    best = rss.argmin(axis=1)
    k = np.arange(len(y))
    sw = np.maximum(wu.sum(axis=1), 1e-300)
    sigma = np.sqrt(np.maximum(rss[k, best] / sw, _SIGMA_FLOOR**2))
    return np.stack([a[k, best], BB[best], AL[best], np.log(sigma)], axis=1)


def _fit_general(x, y, w, cens, b_bounds, P_mc, P_start=None):
    """General-form Tobit MLE for K tables, from the better (by likelihood) of a start and the
    McCandlish optimum P_mc (K, 4, alpha = 1); never below the McCandlish likelihood (the
    general form nests it). The start: P_start (1, 4) (the point estimate, for bootstrap tables
    of the same data) or a coarse grid. Returns P (K, 4), ll (K,)."""
    if P_start is None:
        P0 = _grid_start(x, y, w, cens, b_bounds)
    else:
        P0 = np.repeat(np.asarray(P_start, dtype=float).reshape(1, 4), len(y), axis=0)
    ll0, _, _ = _terms(x, y, w, cens, P0, derivatives=False)
    ll_mc, _, _ = _terms(x, y, w, cens, P_mc, derivatives=False)
    use_mc = ~(np.isfinite(ll0) & (ll0 > ll_mc))
    start = np.where(use_mc[:, None], P_mc, P0)
    P, ll = _newton(x, y, w, cens, start, b_bounds)
    worse = ~(np.isfinite(ll) & (ll >= ll_mc))
    P = np.where(worse[:, None], P_mc, P)
    ll = np.where(worse, ll_mc, ll)
    return P, ll


def shape_test(ll_general, ll_mccandlish, n_eff) -> np.ndarray:
    """p-value of alpha = 1 against the general form: the likelihood ratio calibrated as an F
    test with n_eff batch points, F = (exp(LR / n) - 1)(n - 3) ~ F(1, n - 3); NaN where n < 4."""
    from scipy import stats

    lr = np.maximum(2.0 * (np.asarray(ll_general, float) - np.asarray(ll_mccandlish, float)), 0.0)
    n = np.asarray(n_eff, dtype=float)
    df2 = n - 3.0
    with np.errstate(all="ignore"):
        F = np.expm1(lr / n) * df2
        p = stats.f.sf(F, 1.0, np.where(df2 > 0, df2, 1.0))
    return np.where(df2 >= 0.999, p, np.nan)


# ------------------------------------------------------------------------------------------
# One table of S(B): both forms, the choice, intervals
# ------------------------------------------------------------------------------------------
def _empty_shape(out: dict) -> dict:
    out.update({"model": "", "shape_p_value": np.nan, "shape_undetermined": False, "E_min_note": ""})
    return out


def _quantile_pair(draws, level: float = 0.95):
    x = np.asarray(draws, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 20:
        return np.nan, np.nan
    q = (1.0 - level) / 2.0
    return tuple(float(v) for v in np.quantile(x, (q, 1.0 - q), method="inverted_cdf"))


def fit_curve(B, S, c, groups, n_bootstrap: int = 1000, seed: int = 0, notes=(), tables=None,
              ci_note=None, keep_draws: bool = False) -> dict:
    """Fit S(B) both ways on one table, choose the form, and give the chosen B_noise, S_min with
    bootstrap intervals, alpha with its interval (the general fit's, whichever is chosen) and
    the alpha = 1 estimate. B, S, c: the rows (positive, finite); groups: each row's batch point
    (rows of a group share weight 1). tables: optional callable (f_hat, K, rng) -> (Y, W, C,
    method) supplying the bootstrap tables (fit_phase's eval-noise/replicate resamples); by
    default a residual bootstrap around the general fit (_residual_tables).

    keep_draws=True adds `_draws`: {"tables", "log_S_min", "log_B_noise",
    "alpha", "at_bound"} of the chosen form (tables: the bootstrap tables), for predictions
    with a band."""
    B, S, c = (np.asarray(v) for v in (B, S, c))
    B, S, c = B.astype(float), S.astype(float), c.astype(bool)
    out = _empty_shape(_empty_fit(len(B), int(c.sum())))
    stage = _point_stage(B, S, c, notes, groups, out)
    if stage is None:
        return out
    model, y, w, bb, pt, core, status, reason = stage
    x, n_reached, note = np.log(B), out["n_reached"], "; ".join(notes)
    Y1, W1, C1 = y[None, :], w[None, :], c[None, :]
    P_mc = np.array([[pt["a"], pt["b"], 1.0, math.log(max(pt["sigma"], _SIGMA_FLOOR))]])
    with np.errstate(all="ignore"):
        P_g, ll_g = _fit_general(x, Y1, W1, C1, bb, P_mc)
        ll_mc = _terms(x, Y1, W1, C1, P_mc, derivatives=False)[0]
    # the test's n: the runs that reached the target (independent measurements; a censored run
    # bounds the curve but cannot show its bend, and counting it let 3 points and a bound
    # "reject" alpha = 1). The fit weighs each batch point 1 (replicates share it), so the
    # likelihood ratio is rescaled to one weight per run: with equal replicates that is the
    # unweighted test, whose residual degrees of freedom the replicates are.
    n_eff = float(((w > 0) & ~c).sum())
    scale = n_eff / float(w[~c].sum()) if w[~c].sum() > 0 else 1.0
    p_value = float(shape_test(scale * ll_g, scale * ll_mc, n_eff)[0])
    if n_reached < 4:
        p_value = np.nan  # 3 batch sizes: the general form fits them exactly whatever the runs
    a_g, b_g, al_g, ls_g = (float(v) for v in P_g[0])
    out["alpha"] = al_g
    out["shape_p_value"] = p_value
    alpha_at_bound = (al_g - ALPHA_BOUNDS[0] < 1e-3) or (ALPHA_BOUNDS[1] - al_g < 1e-3)
    b_at_bound = any(v[0] for v in _at_bound(np.array([b_g]), bb))
    rejected = bool(np.isfinite(p_value) and p_value < SHAPE_TEST_LEVEL)
    material = abs(math.log(al_g)) > math.log(ALPHA_MARGIN)
    general = rejected and material and not alpha_at_bound and not b_at_bound
    shape_notes = []
    if rejected and not material:
        shape_notes.append(f"the data reject alpha = 1 (p = {p_value:.2g}) but alpha = {al_g:.2f} is "
                           f"within a factor {ALPHA_MARGIN:g} of 1: the 1/B form is kept")
    if not np.isfinite(p_value):
        shape_notes.append(f"{n_reached} batch sizes reached the target: enough for the curve, "
                           "not to test its shape (4 needed); McCandlish (alpha = 1) assumed")
    elif rejected and material and not general:
        shape_notes.append(f"the data reject alpha = 1 (p = {p_value:.2g}) but the general fit runs "
                           "to a search bound (alpha or B_noise not identified): McCandlish kept")
    gpt = {"a": a_g, "b": b_g, "rho": 0.0, "sigma": math.exp(ls_g)}
    choice = {"mccandlish": (core, status, reason),
              "general": _summarise_general(x, y, w, c, gpt, al_g, B) if general else None}

    boot = None
    if n_bootstrap and n_bootstrap > 0:
        boot = _bootstrap_both(x, y, w, c, B, model, bb, (a_g, b_g, al_g, ls_g), P_g, int(n_bootstrap),
                               seed, groups, tables)
        out["alpha_lo"], out["alpha_hi"], a_note = bootstrap_interval(al_g, boot["alpha"], "alpha")
        if general and np.isfinite(out["alpha_lo"]) and out["alpha_lo"] <= 1.0 <= out["alpha_hi"]:
            # the test and the bootstrap must agree before the 1/B form is given up
            general = False
            shape_notes.append(f"the test rejects alpha = 1 (p = {p_value:.2g}) but alpha's 95% interval "
                               f"[{out['alpha_lo']:.2f}, {out['alpha_hi']:.2f}] holds 1: the 1/B form is kept")
    form = "general" if general else "mccandlish"
    core, status, reason = choice[form]
    out.update(core)
    out["model"] = form
    alpha_used = al_g if general else 1.0
    _, out["E_min"] = samples_minimum(out["S_min"], out["B_noise"], alpha_used)
    out["B_crit_20pct"] = overhead_batch(out["S_min"], out["B_noise"], alpha_used)
    if alpha_used < 1.0:
        out["E_min_note"] = ("no samples minimum: with alpha < 1 smaller batches always need fewer "
                             "samples (no 20%-overhead batch)")
    out["status"] = status
    out["reason"] = "; ".join(filter(None, [reason, *shape_notes, note]))
    if boot is None:
        return out

    K, bad = int(n_bootstrap), boot["bad"]
    b_draw = boot["B_noise_general"] if general else boot["B_noise_mccandlish"]
    s_draw = np.where(bad, np.nan, np.exp(boot["log_S_min_general"] if general else boot["log_S_min_mccandlish"]))
    out["n_bootstrap_ok"] = int((~bad).sum())
    out["B_noise_lo"], out["B_noise_hi"], b_note = bootstrap_interval(out["B_noise"], b_draw, "B_noise")
    out["S_min_lo"], out["S_min_hi"], s_note = bootstrap_interval(out["S_min"], s_draw, "S_min")
    # the 1/B form's own interval (the next-run simulation predicts how it narrows)
    out["B_noise_mccandlish_lo"], out["B_noise_mccandlish_hi"], _ = bootstrap_interval(
        out["B_noise_mccandlish"], boot["B_noise_mccandlish"], "B_noise_mccandlish")
    out["ci_method"] = boot["method"]
    short = ci_shortfall(K, out["n_bootstrap_ok"])
    if short:
        b_note, s_note, a_note = short, "", ""
    # the test keeps alpha = 1 but the general fit's alpha could lie far from it: the data
    # cannot tell the two forms apart, and the interval must hold what either says
    undetermined = (not general and np.isfinite(out["alpha_lo"])
                    and (out["alpha_lo"] < ALPHA_CLOSE[0] or out["alpha_hi"] > ALPHA_CLOSE[1]))
    if undetermined and np.isfinite(out["B_noise_lo"]):
        glo, ghi = _quantile_pair(boot["B_noise_general"])
        if np.isfinite(glo):
            out["B_noise_lo"] = min(out["B_noise_lo"], glo)
            out["B_noise_hi"] = max(out["B_noise_hi"], ghi)
        out["reason"] = "; ".join(filter(None, [out["reason"], (
            f"the sampled batch sizes cannot tell the shape (alpha 95% interval [{out['alpha_lo']:.2f}, "
            f"{out['alpha_hi']:.2f}], the test keeps 1): B_noise's interval spans the McCandlish and "
            "the general form's")]))
        out["shape_undetermined"] = True
    ci = "; ".join(filter(None, [ci_note, b_note, s_note, a_note]))
    if ci:
        out["reason"] = "; ".join(filter(None, [out["reason"], ci]))
    if keep_draws:
        out["_draws"] = {"tables": boot["tables"],
                         "log_S_min": np.where(bad, np.nan, boot["log_S_min_general" if general else
                                                                 "log_S_min_mccandlish"]),
                         "log_B_noise": np.where(bad, np.nan, boot["log_B_noise_general" if general else
                                                                   "log_B_noise_mccandlish"]),
                         "alpha": np.where(bad, np.nan, boot["alpha"] if general else 1.0),
                         "at_bound": boot["at_bound_general" if general else "at_bound_mccandlish"] & ~bad}
    return out


# cells (tables x runs) refitted at once in the bootstrap
_BLOCK_CELLS = 1 << 19


def _bootstrap_both(x, y, w, c, B, model, bb, point, P_g, K, seed, groups, tables) -> dict:
    """Both forms refitted on K bootstrap tables: draws of alpha (general), of log S_min and
    log B_noise of each form, B_noise in the natural scale (0 / inf where a refit ran to a search
    bound), and which tables had fewer than 3 batch sizes reaching the target (`bad`)."""
    a_g, b_g, al_g, _ = point
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        # resample around the general fit (it nests alpha = 1, so it is valid whichever form is
        # chosen; tables drawn from the 1/B curve would pull every alpha draw toward 1)
        f_hat = a_g + np.logaddexp(0.0, al_g * (b_g - x))
        if tables is None:
            Y, Wt, C, method = _residual_tables(y, w, c, f_hat, K, rng, n_params=3)
        else:
            Y, Wt, C, method = tables(f_hat, K, rng)
        Y = np.where(Wt > 0, Y, 0.0)
        # the refits in blocks of tables: their temporaries stay near _BLOCK_CELLS cells however
        # many runs a phase has (the tables are fitted independently; one block up to 500 runs)
        step = max(1, _BLOCK_CELLS // max(Y.shape[1], 1))
        m_parts, g_parts = [], []
        for rows in (slice(k, k + step) for k in range(0, Y.shape[0], step)):
            a, b, _, s = _tobit_em(model, Y[rows], Wt[rows], C[rows], bb, (0.0, 0.0))
            Pm = np.stack([a, b, np.ones(a.size), np.log(np.maximum(s, _SIGMA_FLOOR))], axis=1)
            m_parts.append((a, b))
            g_parts.append(_fit_general(x, Y[rows], Wt[rows], C[rows], bb, Pm, P_start=P_g)[0])
        a_m, b_m = (np.concatenate(v) for v in zip(*m_parts, strict=True))
        Pg = np.concatenate(g_parts)
    bad = _n_distinct_reached(B, (Wt > 0) & ~C) < 3
    lo_m, hi_m = _at_bound(b_m, bb)
    lo_g, hi_g = _at_bound(Pg[:, 1], bb)

    def natural(b, lo, hi):
        return np.where(bad, np.nan, np.where(lo, 0.0, np.where(hi, np.inf, np.exp(b))))

    return {"tables": (Y, Wt, C), "method": method, "bad": bad,
            "alpha": np.where(bad, np.nan, Pg[:, 2]),
            "log_S_min_mccandlish": a_m, "log_B_noise_mccandlish": b_m,
            "log_S_min_general": Pg[:, 0], "log_B_noise_general": Pg[:, 1],
            "B_noise_mccandlish": natural(b_m, lo_m, hi_m), "B_noise_general": natural(Pg[:, 1], lo_g, hi_g),
            "at_bound_mccandlish": lo_m | hi_m, "at_bound_general": lo_g | hi_g}


def _residual_tables(y, w, c, f_hat, K, rng, n_params: int = 3):
    """Residual bootstrap tables (K, n) around f_hat for every row: y* = f_hat + e*, e* drawn
    from the centred residuals of the rows that reached the target, inflated by
    sqrt(n / (n - n_params)) with n the batch points; a censored row stays censored where y*
    passes its bound. Pooling
    the residuals over all rows keeps the spread right where a batch size has only 2-3 runs
    (resampling 2 runs within their batch size halves its variance)."""
    res = (y - f_hat)[~c]
    n_u = res.size
    Y = np.repeat(y[None, :], K, axis=0)
    C = np.repeat(c[None, :], K, axis=0)
    Wt = np.repeat(w[None, :], K, axis=0)
    if n_u <= n_params:
        return Y, Wt, C, "none"
    # the fit has as many points as batch points (replicates share one weight), not rows
    n_pts = float(w[~c].sum())
    n_inf = n_pts if n_pts > n_params + 0.5 else float(n_u)
    pool = (res - res.mean()) * math.sqrt(n_inf / (n_inf - n_params))
    ystar = f_hat[None, :] + pool[rng.integers(0, n_u, size=(K, len(y)))]
    Y = np.where(c[None, :], np.maximum(ystar, y[None, :]), ystar)
    C = c[None, :] & (ystar >= y[None, :])
    return Y, Wt, C, "residual"


def _summarise_general(x, y, w, c, pt, alpha, B) -> tuple[dict, str, str]:
    """Status and core numbers of a general-form point fit (its fit is inside the bounds)."""
    f = pt["a"] + np.logaddexp(0.0, alpha * (pt["b"] - x))
    m = (w > 0) & ~c
    ybar = np.average(y[m], weights=w[m])
    tss = float((w[m] * (y[m] - ybar) ** 2).sum())
    rss = float((w[m] * (y[m] - f[m]) ** 2).sum())
    B_noise = math.exp(pt["b"])
    out = {"r2_log": 1.0 - rss / tss if tss > 0 else np.nan, "B_noise": B_noise,
           "S_min": math.exp(pt["a"]), "sigma_log": pt["sigma"]}
    poor = poor_fit_note(out["r2_log"])
    if B_noise < B.min() or B_noise > B.max():
        return out, "extrapolated", "; ".join(filter(None, [
            f"B_noise = {B_noise:.4g} lies outside the sampled batch sizes [{B.min():g}, {B.max():g}]",
            poor]))
    return out, "ok", poor


def fit_steps(batch_sizes, steps, censored=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Fit a plain S(B) table both ways (McCandlish and the general form), choose the form the
    data support, and return the chosen fit: B_noise, S_min with 95% intervals, alpha with its
    interval, `model`, B_noise_mccandlish, E_min and B_crit_20pct where they exist, r2_log,
    status and reason (fit_mccandlish's keys plus the shape's). Never raises on bad data."""
    try:
        B, S, c, ok, notes = _prepare(batch_sizes, steps, censored)
    except (ValueError, TypeError) as exc:
        return _empty_shape(_empty_fit(status="failed", reason=f"bad input: {exc}"))
    return fit_curve(B[ok], S[ok], c[ok], B[ok], n_bootstrap, seed, notes)


# ------------------------------------------------------------------------------------------
# Words
# ------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.2g}"


def shape_sentence(row) -> str:
    """What the fit says about the shape of S(B) at one target, in words (from a cbs_fit row)."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    alpha, lo, hi = (float(get(k, np.nan)) for k in ("alpha", "alpha_lo", "alpha_hi"))
    model = get("model", "") or ""
    bn, bm = float(get("B_noise", np.nan)), float(get("B_noise_mccandlish", np.nan))
    if not np.isfinite(alpha) or not model:
        return ""
    ci = f" (95% interval {lo:.2f}-{hi:.2f})" if np.isfinite(lo) and np.isfinite(hi) else ""
    if model == "general":
        if alpha < 1:
            how = f"S falls like B^-{alpha:.2f}{ci} at small B, more slowly than 1/B"
        else:
            how = f"S falls like B^-{alpha:.2f}{ci} at small B, faster than 1/B"
        ratio = bn / bm if np.isfinite(bm) and bm > 0 else np.nan
        if np.isfinite(ratio) and (ratio > 1.25 or ratio < 0.8):
            factor = ratio if ratio > 1 else 1.0 / ratio
            side = "smaller" if ratio > 1 else "larger"
            how += (f": B_noise from the 1/B form would be {factor:.1f}x {side} "
                    f"({_num(bm)} instead of {_num(bn)} samples)")
        return how + "."
    if np.isfinite(lo) and (lo < ALPHA_CLOSE[0] or hi > ALPHA_CLOSE[1]):
        return (f"The sampled batch sizes cannot tell the shape: alpha could be {lo:.2f}-{hi:.2f}; "
                "the 1/B form (McCandlish) is kept and B_noise's interval covers both.")
    return f"S(B) follows the 1/B form (McCandlish): alpha = {alpha:.2f}{ci} is consistent with 1."


def learning_rate_context(policy: dict | None, cbs_fit: pd.DataFrame, tuned: bool = False) -> str:
    """The learning-rate schedule across batch sizes and what it means for the shape, in words.
    policy: envelope.lr_policy's dict of the rates used ({'policy': 'constant' | 'sqrt(B)' |
    'linear' | 'mixed' | 'undetermined'}); tuned: several rates were tried at a batch size and
    the best is used (the envelope)."""
    kind = (policy or {}).get("policy", "") if isinstance(policy, dict) else ""
    if tuned:
        kind = "tuned"
    gen = cbs_fit[cbs_fit.get("model", pd.Series(dtype=str)) == "general"] if len(cbs_fit) else cbs_fit
    alphas = pd.to_numeric(cbs_fit.get("alpha", pd.Series(dtype=float)), errors="coerce").dropna()
    med = float(alphas.median()) if len(alphas) else np.nan
    parts = []
    if kind == "constant":
        parts.append("The learning rate is the same at every batch size.")
        if np.isfinite(med):
            parts.append(f"At a fixed rate the measured exponent (median alpha {med:.2f}) describes "
                         "this schedule, not the optimum: McCandlish's 1/B law assumes the rate "
                         "tuned at each B, and a tuned sweep may give a different B_noise "
                         "(usually larger where alpha < 1).")
    elif kind in ("sqrt(B)", "linear"):
        rule = "the square root of B" if kind == "sqrt(B)" else "B"
        parts.append(f"The learning rate grows with {rule}.")
        if np.isfinite(med):
            parts.append(f"The measured exponent (median alpha {med:.2f}) belongs to that scaling "
                         "rule; another rule may shift B_noise.")
    elif kind == "tuned":
        parts.append("Several learning rates were tried and the best one at each batch size is "
                     "used (the envelope), as McCandlish's law assumes; batch sizes that tried one "
                     "rate are tuned only as far as that rate is good.")
    elif kind == "mixed":
        parts.append("The learning rate changes with the batch size without one rule, so the "
                     "exponent mixes the batch's effect with the rate's.")
    if len(gen):
        parts.append(f"{len(gen)} of {len(cbs_fit)} targets reject the 1/B form.")
    return " ".join(parts)
