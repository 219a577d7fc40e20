"""Prompts vs rollouts (phase 2): the joint two-axis fit for the within-prompt rollout
correlation rho, and the iso-batch comparison of splits of one total batch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .fit import (
    _at_bound,
    _b_bounds,
    _bootstrap_tables,
    _fit_point,
    _group_weights,
    _Model,
    _prepare,
    _quantiles,
    _tobit_em,
)


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



