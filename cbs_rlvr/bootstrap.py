"""A phase's S(B) table and McCandlish fits with 95% bootstrap intervals (`fit_phase`).

Replicates are resampled where a batch size has several runs; otherwise every run is
re-measured from its eval series resampled as Binomial(n_val, p) / n_val, vectorised.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from .fit import (
    CBS_FIT_COLUMNS,
    _group_weights,
    _prepare,
)
from .measure import eval_series, run_meta, sb_eb_from_series
from .select import DEFAULT_METAPARAMETERS
from .shape import fit_curve

# Eval-noise bootstrap: above this many (resample x eval point) draws the per-run
# re-measurement uses fewer distinct resamples and a normal approximation (see fit_phase).
_EXACT_DRAWS = 5_000_000
_DRAW_BUDGET = 40_000_000
_MIN_DISTINCT_RESAMPLES = 64
_SLOPE_WINDOW = 48

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
    from scipy import optimize

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
              p_source: str = "observed", recentre: bool = True,
              metaparameters=DEFAULT_METAPARAMETERS, units: str = "steps",
              return_draws: bool = False) -> tuple:
    """S(B)/E(B) table and one McCandlish fit per threshold for the runs of one phase.

    Point fit as in fit_mccandlish (log space, censored runs as lower bounds, each batch size
    weighted 1 with its replicates sharing the weight). 95% CI by bootstrap: a configuration
    with several runs resamples its runs; a configuration with one run re-measures it from its
    eval series resampled as acc* ~ Binomial(n_val, acc)/n_val (p_source='isotonic' resamples
    around the monotone fit instead), so S* carries the eval noise, including censoring when a
    resampled run no longer reaches the target. Each of n_bootstrap tables is refitted.
    recentre=True shifts each run's re-measured log S* so that its median equals the measured
    log S: resampling adds eval noise on top of data that already carry it, and the isotonic
    crossing of the noisier series moves slightly (by ~1% where the curve flattens); the
    bootstrap should carry the spread of the measurement, not that shift, which otherwise
    becomes visible when hundreds of runs make the CI narrow.

    Metaparameter sweeps: runs at one (n_prompts, n_rollouts) that differ in `metaparameters`
    (default: the learning rate) are different configurations, not replicates; at each batch
    size and threshold only the best configuration (the envelope, `in_envelope` in the S(B)
    table, see envelope.py) enters the fit.
    units: 'steps' fits S in rollout steps against B = n_prompts x n_rollouts samples per step;
    'updates' fits S in optimizer updates (S x updates_per_step) against the samples per update
    (B / updates_per_step), leaving out runs whose updates per step are unknown.
    Returns (sb_eb, cbs_fit); cbs_fit has the contract columns (CBS_FIT_COLUMNS) and extras,
    among them `units` and `n_envelope_dropped` (runs of losing configurations left out).
    return_draws=True returns (sb_eb, cbs_fit, draws) with draws[threshold] the fit's data and
    bootstrap draws (`_fit_draws`), for predictions with a band (plan.py); the default output
    is unchanged.
    """
    if units not in ("steps", "updates"):
        raise ValueError(f"units must be 'steps' or 'updates', not {units!r}")
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = run_meta(runs, metaparameters)
    series_all = eval_series(history, metric)
    sb = sb_eb_from_series(meta, series_all, thr, method)
    R = len(meta)
    B_run = meta["total_batch"].to_numpy(dtype=float)
    scale = meta["updates_per_step"].to_numpy(dtype=float) if units == "updates" else np.ones(R)
    unit_note = ""
    if units == "updates" and (~np.isfinite(scale)).any():
        unit_note = (f"{int((~np.isfinite(scale)).sum())} run(s) without updates per step "
                     "(no ppo_mini_batch_size in the config) left out")
    B_fit = B_run / scale
    series = [series_all.get(rid, (np.array([]), np.array([]), 0))[:2] for rid in meta["run_id"]]
    # replicates: runs of one configuration at one batch size
    gkey = pd.Series([f"{p}x{r}|{c}" for p, r, c in zip(meta["n_prompts"], meta["n_rollouts"],
                                                        meta["configuration"], strict=True)])
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
        S_star = S_star * scale[None, :, None]
        rng_rep = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        W_rep = np.repeat(_group_weights(gkey)[None, :], K, axis=0)
        rep_groups = []
        for key in pd.unique(gkey[multi]):
            idx = np.flatnonzero((gkey == key).to_numpy())
            draws = rng_rep.integers(0, len(idx), size=(K, len(idx)))
            cnt = np.zeros((K, len(idx)))
            np.add.at(cnt, (np.arange(K)[:, None], draws), 1.0)
            W_rep[:, idx] = cnt / len(idx)
            rep_groups.append((idx, draws))
    fits, draws = [], {}
    for j, t in enumerate(thr):
        rows = sb[sb["threshold"] == t]
        pos = {rid: q for q, rid in enumerate(rows["run_id"])}
        order = np.array([pos[r] for r in meta["run_id"]], dtype=int)
        S = rows["S_B"].to_numpy(dtype=float)[order] * scale
        c = rows["censored"].to_numpy(dtype=bool)[order]
        env = rows["in_envelope"].to_numpy(dtype=bool)[order]
        B, S_, c_, ok, notes = _prepare(B_fit, S, c)
        n_dropped = int((ok & ~env).sum())
        ok = ok & env
        if n_dropped:
            notes.append(f"{n_dropped} run(s) of a losing configuration left out (envelope)")
        if unit_note:
            notes.append(unit_note)
        tables = None
        if K > 0:
            def tables(f_hat, K_, rng, j=j, ok=ok, S=S, c=c):
                Y = np.log(np.where(multi[None, :], S[None, :], S_star[:, :, j]))
                Cc = np.where(multi[None, :], c[None, :], c_star[:, :, j])
                Wt = np.where(np.isfinite(Y), W_rep, 0.0)
                _smooth_replicates(Y, Wt, S, c, rep_groups)
                Y, Wt, Cc = Y[:, ok], Wt[:, ok], Cc[:, ok]
                kinds = (["replicates"] if multi[ok].any() else []) + (
                    ["eval-noise"] if (~multi[ok]).any() else [])
                return np.nan_to_num(Y, nan=0.0, neginf=0.0), Wt, Cc, "+".join(kinds)
        # each batch point (n_prompts, n_rollouts, configuration) weighs 1, as in the bootstrap
        res = fit_curve(B[ok], S_[ok], c_[ok], gkey.to_numpy()[ok], K, seed, notes, tables=tables,
                        ci_note=boot_note, keep_draws=return_draws)
        kept = res.pop("_draws", None)
        res["threshold"] = t
        res["units"] = "optimizer updates" if units == "updates" else "rollout steps"
        res["n_envelope_dropped"] = n_dropped
        fits.append(res)
        if return_draws:
            eval_S = S_star[:, ok & ~multi, j] if S_star is not None else None
            eval_c = c_star[:, ok & ~multi, j] if S_star is not None else None
            draws[t] = _fit_draws(B[ok], S_[ok], c_[ok], gkey.to_numpy()[ok], res, kept,
                                  eval_S, eval_c, ~multi[ok])
    cbs = pd.DataFrame(fits)
    extra = [c for c in cbs.columns if c not in CBS_FIT_COLUMNS]
    if return_draws:
        return sb, cbs[CBS_FIT_COLUMNS + extra], draws
    return sb, cbs[CBS_FIT_COLUMNS + extra]


def _smooth_replicates(Y, Wt, S, c, rep_groups) -> None:
    """Replicates of a configuration resampled by value, in place: y* = m + sqrt(n/(n-1)) (y_i* - m)
    around the group's mean log S, each draw weighing 1/n. Resampling n runs within their group
    alone gives their mean a variance (n-1)/n too small (half for the 2 seeds a sweep usually has);
    the factor restores it. Groups with a censored run keep the plain resampling (weights): a
    lower bound has no value to centre."""
    for idx, draws in rep_groups:
        y = np.log(S[idx])
        if c[idx].any() or not np.isfinite(y).all() or len(idx) < 2:
            continue
        m = y.mean()
        Y[:, idx] = m + math.sqrt(len(idx) / (len(idx) - 1.0)) * (y[draws] - m)
        Wt[:, idx] = 1.0 / len(idx)


def _fit_draws(B, S, c, groups, res: dict, kept: dict | None, eval_S, eval_c, single) -> dict:
    """One threshold's fit data and bootstrap draws, for predictions with a band.

    B, log_S, censored, groups: the rows the fit used. log_S_min, log_B_noise, alpha: the
    chosen form's refits of the same K bootstrap tables that gave the interval (NaN where a
    table had fewer than 3 batch sizes reaching the target; alpha = 1 under McCandlish). A
    refit that ran to a search bound keeps the bound's finite value (`at_bound`): B_noise is
    then not identified, but the curve it gives still describes S over the sampled batch sizes.
    tables: the bootstrap tables themselves (log S, weights, censored; K x rows). eval_sd_rows:
    the eval-noise spread of each row's log S over its re-measurements (NaN for replicated
    configurations, which are resampled instead); eval_sd_log: their median.
    """
    out = {"B": B, "log_S": np.log(S), "censored": c, "groups": groups, "log_S_min": None,
           "log_B_noise": None, "alpha": None, "at_bound": None, "tables": None,
           "model": res.get("model") or "mccandlish",
           "eval_sd_rows": np.full(len(B), np.nan), "eval_sd_log": np.nan}
    if eval_S is not None and eval_S.size:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a run censored in every resample
            ls = np.where(~eval_c & (eval_S > 0), np.log(np.where(eval_S > 0, eval_S, 1.0)), np.nan)
            sd = np.nanstd(ls, axis=0, ddof=1)
        out["eval_sd_rows"][single] = sd
        if np.isfinite(sd).any():
            out["eval_sd_log"] = float(np.nanmedian(sd))
    if not kept or res.get("status") not in ("ok", "extrapolated"):
        return out
    out.update({k: kept[k] for k in ("tables", "log_S_min", "log_B_noise", "alpha", "at_bound")})
    return out
