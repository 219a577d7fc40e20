"""The gradient noise scale (phase 3): the logged estimate smoothed as McCandlish et al. do,
and a post-hoc B_simple from gradient norms of runs at different B at matched accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..measure.crossings import crossings, eval_series, run_meta
from .interval import bootstrap_interval


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


# the history keys this section reads beside the metric (phase_runs(..., columns=...))
ESTIMATE_KEY, NORM_KEY, ACTOR_NORM_KEY = "grad_noise/B_noise_estimate", "grad_noise/grad_norm", "actor/grad_norm"
NOISE_KEYS = (ESTIMATE_KEY, NORM_KEY, ACTOR_NORM_KEY)


def smooth_grad_noise(history: pd.DataFrame, runs: pd.DataFrame, alpha: float = 0.1,
                      estimate_key: str = ESTIMATE_KEY, norm_key: str = NORM_KEY) -> pd.DataFrame:
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
        norm_key = ACTOR_NORM_KEY
        if norm_key not in history.columns:
            return pd.DataFrame(columns=cols)
    meta = run_meta(runs).set_index("run_id")
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
    by_run = {str(k): v for k, v in smoothed.groupby("run_id")} if "run_id" in smoothed else {}
    sb = sb_eb.reindex(columns=["run_id", "total_batch", "threshold", "S_B", "censored"])
    sb["S_B"] = pd.to_numeric(sb["S_B"], errors="coerce").astype(float)
    sb["censored"] = sb["censored"].astype("boolean").fillna(True).astype(bool)  # unknown: skip
    for r in sb.itertuples(index=False):
        sm = by_run.get(str(r.run_id))
        if sm is None or r.censored or not np.isfinite(r.S_B):
            continue
        val = np.interp(r.S_B, sm["step"].to_numpy(dtype=float), sm["B_simple_ema"].to_numpy(dtype=float))
        rows.append({"run_id": r.run_id, "total_batch": r.total_batch, "threshold": r.threshold,
                     "S_B": r.S_B, "B_simple_ema": float(val)})
    return pd.DataFrame(rows, columns=["run_id", "total_batch", "threshold", "S_B", "B_simple_ema"])


def _norms_at_crossing(series: dict, grads: dict, meta: pd.DataFrame, acc: float, window: float):
    """(1/B, mean |G_B|^2 near the step S where the run reaches acc), one pair per run that does."""
    xs, ys = [], []
    for rid, (s, a, _) in series.items():
        if rid not in meta.index or rid not in grads or len(grads[rid][0]) == 0:
            continue
        B = float(meta.at[rid, "total_batch"])
        if not (np.isfinite(B) and B > 0):
            continue
        S, cens = crossings(s, a, [acc], "isotonic")
        if cens[0] or not np.isfinite(S[0]) or S[0] <= 0:
            continue
        gs, g = grads[rid]
        half = max(window * S[0], 1.0)
        sel = np.abs(gs - S[0]) <= half
        if sel.sum() < 1:
            sel = np.argsort(np.abs(gs - S[0]))[:3]
        xs.append(1.0 / B)
        ys.append(float(np.mean(g[sel] ** 2)))
    return np.array(xs), np.array(ys)


def _b_simple_draws(x: np.ndarray, y: np.ndarray, rng, n: int) -> np.ndarray:
    """B_simple of n resamples of the runs (0: no noise, inf: all noise, NaN: one batch size)."""
    idx = rng.integers(0, len(x), size=(n, len(x)))
    xb, yb = x[idx], y[idx]
    xm, ym = xb.mean(1, keepdims=True), yb.mean(1, keepdims=True)
    sxx = ((xb - xm) ** 2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sl = ((xb - xm) * (yb - ym)).sum(1) / sxx
        ic = ym[:, 0] - sl * xm[:, 0]
        bs = np.where(sl <= 0, 0.0, np.where(ic > 0, sl / ic, np.inf))
    return np.where(sxx > 0, bs, np.nan)


def b_simple_posthoc(runs: pd.DataFrame, history: pd.DataFrame, metric: str, accuracies,
                     grad_key: str = ACTOR_NORM_KEY, window: float = 0.1,
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
    meta = run_meta(runs).set_index("run_id")
    series = eval_series(history, metric) if "step" in history.columns else {}
    grads = {}
    if grad_key in history.columns and "step" in history.columns:
        for rid, sub in history.groupby("run_id", sort=False):
            g = sub[grad_key].to_numpy(dtype=float)
            ok = np.isfinite(g)
            grads[str(rid)] = (sub["step"].to_numpy(dtype=float)[ok], g[ok])
    no_grads = not any(len(v[0]) for v in grads.values())
    out = []
    rng = np.random.default_rng(seed)
    for acc in accs:
        x, y = _norms_at_crossing(series, grads, meta, acc, window)
        row = {"accuracy": acc, "G2": np.nan, "trSigma": np.nan, "B_simple": np.nan,
               "B_simple_lo": np.nan, "B_simple_hi": np.nan, "r2": np.nan, "n_runs": len(x),
               "n_batch_sizes": len(np.unique(x)), "status": "insufficient", "reason": ""}
        if no_grads:
            row["reason"] = f"no run of the phase logs {grad_key}"
            out.append(row)
            continue
        if len(np.unique(x)) < 3:
            row["reason"] = (f"{len(np.unique(x))} batch size(s) with runs that reach this accuracy "
                             f"and log {grad_key}, 3 needed")
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
            row["B_simple_lo"], row["B_simple_hi"], row["reason"] = bootstrap_interval(
                row["B_simple"], _b_simple_draws(x, y, rng, int(n_bootstrap)), "B_simple")
        out.append(row)
    cols = ["accuracy", "G2", "trSigma", "B_simple", "B_simple_lo", "B_simple_hi", "r2", "n_runs",
            "n_batch_sizes", "status", "reason"]
    return pd.DataFrame(out, columns=cols)


def compare_b_simple(b_simple: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Post-hoc B_simple next to the fitted B_noise (B_crit) at the same target accuracy."""
    left = b_simple.rename(columns={"accuracy": "threshold"})
    left = left.reindex(columns=list(dict.fromkeys([*left.columns, "threshold", "B_simple",
                                                    "B_simple_lo", "B_simple_hi", "status", "reason"])))
    right = cbs_fit.reindex(columns=["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"]).rename(
        columns={"status": "fit_status"})
    left["threshold"] = pd.to_numeric(left["threshold"], errors="coerce").astype(float)
    right["threshold"] = pd.to_numeric(right["threshold"], errors="coerce").astype(float)
    out = left.merge(right, on="threshold", how="inner")
    out["B_simple_over_B_noise"] = out["B_simple"] / out["B_noise"]
    return out
