"""Eval noise: how far a run's measured S moves when its validation accuracies are re-drawn as
Binomial(n_val, p) / n_val, vectorised over runs and resamples.

The fit's scatter (the spread of log S about the curve) carries eval noise and seed noise
together; this gives its floor, the eval noise alone, which a sweep of few runs cannot estimate
from its residuals.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

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


def _chunks(lengths: np.ndarray, K_sub: int) -> list:
    """(runs, first resample, end resample) blocks: runs of similar length, about 2^20 elements each."""
    R = len(lengths)
    order = np.argsort(lengths, kind="stable")
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
    return chunks


def _redraw(series, probs, lengths, runs_idx, k, n_val, exact, thr, method, rng):
    """S and censoring (k, len(runs_idx), T) of the runs `runs_idx` re-measured k times."""
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
    shape = (k, Rc, n)
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
    return S, c


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
    chunks = _chunks(lengths, K_sub)
    seeds = np.random.SeedSequence(seed).spawn(len(chunks) + 1)
    S_sub = np.empty((K_sub, R, len(thr)))
    c_sub = np.zeros((K_sub, R, len(thr)), dtype=bool)

    def work(ci):
        runs_idx, k0, k1 = chunks[ci]
        S, c = _redraw(series, probs, lengths, runs_idx, k1 - k0, n_val, exact, thr, method,
                       np.random.default_rng(seeds[ci]))
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


def eval_noise_sd(series, thresholds, n_val: int, n_resamples: int = 64, seed: int = 0,
                  method: str = "isotonic") -> np.ndarray:
    """(R, T): the sd of each run's log S at each target over `n_resamples` re-measurements of its
    eval series (NaN where fewer than half of them reach the target, or without n_val)."""
    R, T = len(series), len(thresholds)
    if not R or not n_val or n_val <= 0:
        return np.full((R, T), np.nan)
    S, c, _ = _remeasure(series, thresholds, n_val, int(n_resamples), seed, method=method)
    ok = ~c & np.isfinite(S) & (S > 0)
    logs = np.where(ok, np.log(np.where(ok, S, 1.0)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = ok.sum(axis=0)
        mean = np.nansum(logs, axis=0) / np.maximum(n, 1)
        var = np.nansum((logs - mean) ** 2, axis=0) / np.maximum(n - 1, 1)
    return np.where(n >= max(2, n_resamples // 2), np.sqrt(var), np.nan)
