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
    _tobit_em,
    bootstrap_interval,
    poor_fit_note,
)

# ------------------------------------------------------------------------------------------
# Two axes (phase 2): prompts vs rollouts
# ------------------------------------------------------------------------------------------
#: Columns of outputs/<phase>/tables/two_axis_fit.csv (design.md's contract, then `reason`).
TWO_AXIS_FIT_COLUMNS = ["threshold", "rho", "rho_lo", "rho_hi", "B0", "B0_lo", "B0_hi", "S_min",
                        "r2_log", "n_points", "n_censored", "status", "reason"]
#: Columns of the per-axis table (two_axis_b_noise.csv).
TWO_AXIS_AXES_COLUMNS = ["threshold", "phase", "axis", "n_fixed", "B_noise", "B_noise_lo",
                         "B_noise_hi", "S_min", "reason"]
ISO_BATCH_COLUMNS = ["threshold", "n_prompts", "n_rollouts", "total_batch", "S_B", "censored",
                     "n_runs", "S_rel", "rank"]
_SB_COLUMNS = ["phase", "threshold", "n_prompts", "n_rollouts", "S_B", "censored"]


def _phase_axes(df: pd.DataFrame) -> dict:
    """phase -> (axis, fixed value): 'prompts' (n_rollouts fixed), 'rollouts' (n_prompts fixed),
    or 'mixed' (both vary, or a single configuration: no axis to speak of)."""
    axes = {}
    for ph, sub in df.groupby("phase", sort=True):
        n_p = pd.to_numeric(sub["n_prompts"], errors="coerce").dropna().unique()
        n_r = pd.to_numeric(sub["n_rollouts"], errors="coerce").dropna().unique()
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


def _axis_reason(axis: str, df_phase: pd.DataFrame) -> str:
    if axis != "mixed":
        return ""
    n_cfg = len(df_phase[["n_prompts", "n_rollouts"]].drop_duplicates())
    return ("a single (n_prompts, n_rollouts) configuration: no axis" if n_cfg <= 1 else
            "both n_prompts and n_rollouts vary in this phase: no single axis")


def _two_axis_row(t, sub: pd.DataFrame, n_bootstrap: int, seed: int):
    """Joint fit at one threshold: (fit row, draws (S_min, B0, rho) or None)."""
    n_p = pd.to_numeric(sub["n_prompts"], errors="coerce").to_numpy(dtype=float)
    n_r = pd.to_numeric(sub["n_rollouts"], errors="coerce").to_numpy(dtype=float)
    cens = sub["censored"].fillna(False).astype(bool).to_numpy()
    B, S, c, ok, notes = _prepare(n_p * n_r, pd.to_numeric(sub["S_B"], errors="coerce"), cens)
    ok &= np.isfinite(n_p) & np.isfinite(n_r)
    keys = [k for k, o in zip(zip(sub["phase"].astype(str), n_p, n_r, strict=True), ok, strict=True) if o]
    n_p, n_r, S, c = n_p[ok], n_r[ok], S[ok], c[ok]
    row = dict.fromkeys(TWO_AXIS_FIT_COLUMNS, np.nan)
    row.update({"threshold": float(t), "n_points": int(len(S)), "n_censored": int(c.sum()),
                "status": "failed", "reason": ""})
    reached = ~c
    n_cfg = len({(a, b) for a, b, r in zip(n_p, n_r, reached, strict=True) if r})
    n_rvals, n_pvals = len(np.unique(n_r[reached])), len(np.unique(n_p[reached]))
    if n_cfg < 3 or n_rvals < 2 or n_pvals < 2:
        row["status"] = "insufficient"
        row["reason"] = "; ".join(filter(None, [
            f"{n_cfg} configuration(s) reach the target (3 needed) over {n_rvals} distinct "
            f"n_rollouts and {n_pvals} distinct n_prompts (2 of each needed to separate rho "
            "from B0)", *notes]))
        return row, None
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
        return row, None
    f_hat = pt["a"] + model.g(pt["b"], pt["rho"])
    mu = (w > 0) & ~c
    ybar = np.average(y[mu], weights=w[mu])
    tss = float((w[mu] * (y[mu] - ybar) ** 2).sum())
    row.update({"rho": pt["rho"], "B0": math.exp(pt["b"]), "S_min": math.exp(pt["a"]),
                "r2_log": 1.0 - float((w[mu] * (y[mu] - f_hat[mu]) ** 2).sum()) / tss if tss > 0 else np.nan,
                "status": "ok"})
    notes = [*notes, poor_fit_note(row["r2_log"])]
    draws = None
    if n_bootstrap and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        with np.errstate(all="ignore"):
            Y, Wt, C, _ = _bootstrap_tables(keys, y, w, c, f_hat, int(n_bootstrap), rng, n_params=3)
            a_s, b_s, r_s, _ = _tobit_em(model, Y, Wt, C, bb, rb)
        lo_b, hi_b = _at_bound(b_s, bb)
        # a refit that ran to a search bound is B0 = 0 or inf, and says nothing about rho
        B0_s = np.where(lo_b, 0.0, np.where(hi_b, np.inf, np.exp(b_s)))
        valid = ~(lo_b | hi_b) & np.isfinite(b_s)
        draws = (np.where(valid, np.exp(a_s), np.nan), np.where(valid, B0_s, np.nan),
                 np.where(valid, r_s, np.nan))
        row["rho_lo"], row["rho_hi"], rho_note = bootstrap_interval(row["rho"], draws[2], "rho")
        row["B0_lo"], row["B0_hi"], b0_note = bootstrap_interval(row["B0"], B0_s, "B0")
        notes = [*notes, rho_note, b0_note]
    row["reason"] = "; ".join(filter(None, notes))
    return row, draws


def two_axis_fit(sb_eb_all: pd.DataFrame, phases=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Joint fit of prompt-axis and rollout-axis runs (p1, p2a, p2b) per threshold:

        S = S_min (1 + B0 (1 + (n_r - 1) rho) / (n_p n_r)),  rho in [0, 1],

    i.e. McCandlish with the effective batch B_eff = n_p n_r / (1 + (n_r - 1) rho) counted in
    independent prompts: rollouts of one prompt are correlated with correlation rho, B0 is
    the noise scale in prompts. Log-space least squares with censored runs as lower bounds,
    each (phase, n_p, n_r) configuration weighted 1. CI: bootstrap as in fit_mccandlish
    (replicates within a configuration, residuals in log space otherwise), each interval
    holding its estimate (`bootstrap_interval`; the reason says when it had to be extended).
    Along a prompt axis (n_r = R): B_noise = B0 (1 + (R - 1) rho) in total samples; along a
    rollout axis (n_p = P): B_noise = B0 (1 - rho) / (1 + B0 rho / P), S_min' = S_min (1 + B0 rho / P).
    rho is only identified when the configurations that reach a target span at least two
    n_rollouts and two n_prompts (status 'insufficient' otherwise).

    Returns {'fit': one row per threshold (TWO_AXIS_FIT_COLUMNS), 'axes': one row per
    (threshold, phase) with the implied B_noise (and CI) in total samples, the axis it belongs
    to, and a reason where there is none}. Empty input gives empty tables with these columns.
    """
    df = sb_eb_all if phases is None else sb_eb_all[sb_eb_all["phase"].isin(list(phases))]
    df = df.copy()
    if "phase" not in df.columns:
        df["phase"] = "all"
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, *_SB_COLUMNS])))
    df["threshold"] = pd.to_numeric(df["threshold"], errors="coerce")
    df = df[df["threshold"].notna()]
    axes = _phase_axes(df)
    fit_rows, axis_rows = [], []
    for t, sub in df.groupby("threshold", sort=True):
        row, draws = _two_axis_row(t, sub, n_bootstrap, seed)
        fit_rows.append(row)
        if row["status"] != "ok":
            continue
        for ph, (axis, fixed) in axes.items():
            bn, sm = _axis_b_noise(axis, fixed, row["B0"], row["rho"], row["S_min"])
            lo = hi = np.nan
            note = _axis_reason(axis, df[df["phase"] == ph])
            if draws is not None and axis != "mixed":
                bn_s, _ = _axis_b_noise(axis, fixed, draws[1], draws[2], draws[0])
                lo, hi, note = bootstrap_interval(bn, bn_s, f"B_noise along the {axis} axis")
            axis_rows.append({"threshold": float(t), "phase": ph, "axis": axis, "n_fixed": fixed,
                              "B_noise": bn, "B_noise_lo": lo, "B_noise_hi": hi, "S_min": sm,
                              "reason": note})
    return {"fit": pd.DataFrame(fit_rows, columns=TWO_AXIS_FIT_COLUMNS),
            "axes": pd.DataFrame(axis_rows, columns=TWO_AXIS_AXES_COLUMNS)}


def iso_batch_table(sb_eb_p2c: pd.DataFrame, two_axis: dict | None = None) -> pd.DataFrame:
    """Iso-batch phase (fixed B = n_p n_r): S per (n_prompts, n_rollouts) split and threshold.

    Replicates are combined by the geometric mean of S (censored if any replicate is).
    S_rel = S / (fastest uncensored split at that threshold). With a two_axis_fit result, the
    joint model's prediction S_pred is added. Empty input gives an empty table with the
    columns (ISO_BATCH_COLUMNS)."""
    sb = sb_eb_p2c.reindex(columns=list(dict.fromkeys([*sb_eb_p2c.columns, *_SB_COLUMNS])))
    for col in ("threshold", "n_prompts", "n_rollouts"):
        sb[col] = pd.to_numeric(sb[col], errors="coerce")
    sb = sb.dropna(subset=["threshold", "n_prompts", "n_rollouts"])
    rows = []
    for (t, n_p, n_r), sub in sb.groupby(["threshold", "n_prompts", "n_rollouts"], sort=True):
        S = pd.to_numeric(sub["S_B"], errors="coerce").to_numpy(dtype=float)
        S = S[np.isfinite(S) & (S > 0)]
        rows.append({"threshold": float(t), "n_prompts": int(n_p), "n_rollouts": int(n_r),
                     "total_batch": int(n_p * n_r),
                     "S_B": float(np.exp(np.log(S).mean())) if S.size else np.nan,
                     "censored": bool(sub["censored"].fillna(False).astype(bool).any()),
                     "n_runs": int(len(sub))})
    out = pd.DataFrame(rows, columns=ISO_BATCH_COLUMNS[:7])
    best = out[~out["censored"].astype(bool)].groupby("threshold")["S_B"].min()
    out["S_rel"] = out["S_B"] / out["threshold"].map(best)
    out["rank"] = out.groupby("threshold")["S_B"].rank(method="min")
    fit = two_axis.get("fit") if two_axis is not None else None
    if fit is not None and len(fit):
        f = fit[fit["status"] == "ok"].set_index("threshold")
        S_min = out["threshold"].map(f["S_min"])
        B0 = out["threshold"].map(f["B0"])
        rho = out["threshold"].map(f["rho"])
        out["S_pred"] = S_min * (1.0 + B0 * (1.0 + (out["n_rollouts"] - 1) * rho) / out["total_batch"])
    return out
