"""Plan the next runs: from a phase's fits to the batch size to train with, and the runs that
would pin B_noise down.

The prediction for a candidate (n_prompts, n_rollouts), at each target:
    steps     S = S_min (1 + B0 (1 + (n_r - 1) rho) / (n_p n_r))
              (a phase's McCandlish fit is the case rho = 0, B0 = B_noise, along its own axis;
              the two-axis fit of axes.py prices the split between prompts and rollouts)
    step time T = a + b_B B (+ b_p n_p), wallclock.step_time_model
    hours     S T / 3600 (training steps only: validation and checkpoints come on top)
    GPU-hours hours x the GPU count of the runs (where the configs give it)
    samples   S B
Bands: every bootstrap draw of the fit (the same tables that gave its 95% interval) paired
with a draw of the step-time coefficients from their normal approximation; 2.5% and 97.5%
percentiles, extended to the point estimate where that falls outside (the row says so).
A candidate's basis is `extrapolated` beyond the batch sizes that reached the target (for
two axes: beyond their n_prompts, n_rollouts or B) or when the fit's status is not `ok`.

The next runs (which run would narrow the decision's B_noise interval most per GPU-hour) are
in nextruns.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .decisions import why_fastest_differs
from .fit import (
    _b_bounds,
    _bootstrap_tables,
    _group_weights,
    _Model,
    _prepare,
    _tobit_em,
)
from .fmt import count, duration, interval, number, percent
from .wallclock import predict_step_time

#: outputs/<phase>/tables/plan.csv: design.md's contract, then extras.
PLAN_COLUMNS = ["threshold", "objective", "n_prompts", "n_rollouts", "total_batch", "predicted_steps",
                "predicted_hours", "predicted_hours_lo", "predicted_hours_hi", "predicted_gpu_hours",
                "basis"]
PLAN_EXTRA_COLUMNS = ["predicted_steps_lo", "predicted_steps_hi", "predicted_gpu_hours_lo",
                      "predicted_gpu_hours_hi", "predicted_samples", "predicted_samples_lo",
                      "predicted_samples_hi", "step_time_s", "n_gpus", "model", "fit_status", "note"]
OBJECTIVES = ("wall_clock", "gpu_hours", "samples")
#: GRPO needs two rollouts of a prompt for a group baseline.
MIN_ROLLOUTS = 2
_USABLE = ("ok", "extrapolated")


# ------------------------------------------------------------------------------------------
# Candidates
# ------------------------------------------------------------------------------------------
def _floats(values) -> np.ndarray:
    """A float array from a column that may be nullable (pd.NA becomes NaN)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _pow2_range(values, octaves: int, floor: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    lo = max(math.floor(math.log2(v.min())) - octaves, math.ceil(math.log2(floor)))
    hi = math.ceil(math.log2(v.max())) + octaves
    return 2.0 ** np.arange(lo, hi + 1)


def candidate_configs(configs: pd.DataFrame, both_axes: bool = False, octaves: int = 2) -> pd.DataFrame:
    """Candidate (n_prompts, n_rollouts): powers of two across the sampled range and `octaves`
    beyond it on each side, and the sampled configurations themselves. One axis
    (both_axes=False): along the axis the sampled configs vary on, the other held at its most
    common value. Both axes (where a two-axis fit prices the
    split): every power-of-two pair within the widened n_prompts and n_rollouts ranges whose B
    lies within the widened range of B. n_rollouts >= 2 (GRPO's group baseline), n_prompts >= 1."""
    n_p, n_r = _floats(configs["n_prompts"]), _floats(configs["n_rollouts"])
    keep = np.isfinite(n_p) & np.isfinite(n_r) & (n_p > 0) & (n_r > 0)
    n_p, n_r = n_p[keep], n_r[keep]
    cols = ["n_prompts", "n_rollouts", "total_batch"]
    if not len(n_p):
        return pd.DataFrame(columns=cols)
    if both_axes:
        P, R = np.meshgrid(_pow2_range(n_p, octaves, 1), _pow2_range(n_r, octaves, MIN_ROLLOUTS))
        P, R = P.ravel(), R.ravel()
        B = P * R
        b_lo, b_hi = (n_p * n_r).min() / 2.0**octaves, (n_p * n_r).max() * 2.0**octaves
        inside = (B >= b_lo) & (B <= b_hi)
        P, R = P[inside], R[inside]
    elif len(np.unique(n_r)) == 1 or len(np.unique(n_p)) > len(np.unique(n_r)):
        P = _pow2_range(n_p, octaves, 1)
        R = np.full(len(P), pd.Series(n_r).mode().iloc[0])
    else:
        R = _pow2_range(n_r, octaves, MIN_ROLLOUTS)
        P = np.full(len(R), pd.Series(n_p).mode().iloc[0])
    if not both_axes:  # the sampled values along the axis, at the held value
        on_axis = (R[0] == n_r) if len(np.unique(P)) > 1 else (P[0] == n_p)
        P, R = np.r_[P, n_p[on_axis]], np.r_[R, n_r[on_axis]]
    else:
        P, R = np.r_[P, n_p], np.r_[R, n_r]
    out = pd.DataFrame({"n_prompts": P, "n_rollouts": R, "total_batch": P * R}).astype(int).drop_duplicates()
    return out.sort_values(["total_batch", "n_prompts"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Steps models: S(n_p, n_r) at each target, with bootstrap draws
# ------------------------------------------------------------------------------------------
def mccandlish_models(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame, draws: dict) -> dict:
    """One steps model per threshold from a phase's McCandlish fit (fit_phase with
    return_draws=True): {threshold: {kind, status, reason, S_min, B0 (= B_noise), rho (= 0),
    draws (S_min, B0, rho arrays, or None), configs (the configurations in the fit), reached
    (those that reached the target)}}."""
    env = sb_eb[sb_eb["in_envelope"]] if "in_envelope" in sb_eb.columns else sb_eb
    models = {}
    for row in cbs_fit.itertuples(index=False):
        t = float(row.threshold)
        rows = env[(env["threshold"] == t) & env["S_B"].notna()]
        d = draws.get(t) or {}
        dr = None
        alpha = _chosen_alpha(row)
        if d.get("log_B_noise") is not None:
            k = len(d["log_B_noise"])
            al = d.get("alpha")
            al = np.full(k, alpha) if al is None else np.asarray(al, dtype=float)
            dr = (np.exp(d["log_S_min"]), np.exp(d["log_B_noise"]), np.zeros(k), al)
        models[t] = {"kind": "mccandlish", "threshold": t, "status": row.status,
                     "reason": row.reason if isinstance(row.reason, str) else "",
                     "S_min": float(row.S_min), "B0": float(row.B_noise), "rho": 0.0, "draws": dr,
                     "alpha": alpha, "form": getattr(row, "model", "mccandlish") or "mccandlish",
                     "configs": rows[["n_prompts", "n_rollouts"]].drop_duplicates(),
                     "reached": rows.loc[~rows["censored"].astype(bool), ["n_prompts", "n_rollouts"]].drop_duplicates()}
    return models


def _chosen_alpha(row) -> float:
    """The exponent of a cbs_fit row's chosen form: the general fit's alpha where the data chose
    it, else 1 (McCandlish)."""
    if getattr(row, "model", "mccandlish") == "general":
        alpha = float(getattr(row, "alpha", np.nan))
        if np.isfinite(alpha):
            return alpha
    return 1.0


def two_axis_models(sb_eb_all: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """One steps model per threshold from the joint two-axis fit (axes.two_axis_fit) over the
    rows of sb_eb_all (a `phase` column names the phases): S_min, B0, rho and K bootstrap draws
    of them (the bootstrap two_axis_fit uses: replicates within a configuration, residuals in
    log space otherwise; draws that ran to B0's search bound are left out)."""
    from .axes import two_axis_fit

    fit = two_axis_fit(sb_eb_all, n_bootstrap=0)["fit"]
    models = {}
    for row in fit.itertuples(index=False):
        t = float(row.threshold)
        sub = sb_eb_all[sb_eb_all["threshold"] == t]
        n_p, n_r = _floats(sub["n_prompts"]), _floats(sub["n_rollouts"])
        _, S, c, ok, _ = _prepare(n_p * n_r, _floats(sub["S_B"]), sub["censored"].fillna(False).to_numpy(dtype=bool))
        ok &= np.isfinite(n_p) & np.isfinite(n_r)
        rows = sub[ok]
        dr = None
        if row.status == "ok" and n_bootstrap and n_bootstrap > 0:
            keys = list(zip(rows["phase"].astype(str), n_p[ok], n_r[ok], strict=True))
            model = _Model(n_prompts=n_p[ok], n_rollouts=n_r[ok])
            y, w = np.log(S[ok]), _group_weights(keys)
            f_hat = math.log(row.S_min) + model.g(math.log(row.B0), row.rho)
            bb = _b_bounds(n_p[ok])
            with np.errstate(all="ignore"):
                Y, Wt, C, _ = _bootstrap_tables(keys, y, w, c[ok], f_hat, int(n_bootstrap),
                                                np.random.default_rng(seed), n_params=3)
                a, b, rho, _ = _tobit_em(model, Y, Wt, C, bb, (0.0, 1.0))
            span = bb[1] - bb[0]
            valid = np.isfinite(b) & (b - bb[0] > 1e-3 * span) & (bb[1] - b > 1e-3 * span)
            dr = (np.where(valid, np.exp(a), np.nan), np.where(valid, np.exp(b), np.nan),
                  np.where(valid, rho, np.nan))
        models[t] = {"kind": "two_axis", "threshold": t, "status": row.status,
                     "reason": row.reason if isinstance(row.reason, str) else "",
                     "S_min": float(row.S_min), "B0": float(row.B0), "rho": float(row.rho), "draws": dr,
                     "configs": rows[["n_prompts", "n_rollouts"]].drop_duplicates(),
                     "reached": rows.loc[~rows["censored"].astype(bool), ["n_prompts", "n_rollouts"]].drop_duplicates()}
    return models


def choose_models(one_axis: dict, two_axis: dict | None = None) -> dict:
    """Per threshold, the two-axis model where its fit is `ok` (it prices the split) and the
    phase's own data keep the 1/B form the two-axis model assumes; else the phase's own fit (in
    the form its data chose)."""
    two_axis = two_axis or {}
    return {t: two_axis[t] if (two_axis.get(t, {}).get("status") == "ok"
                               and m.get("alpha", 1.0) == 1.0) else m
            for t, m in one_axis.items()}


def _steps(S_min, B0, rho, n_p, n_r, alpha=1.0):
    """S = S_min (1 + (B0 (1 + (n_r - 1) rho) / (n_p n_r))^alpha)."""
    return S_min * (1.0 + (B0 * (1.0 + (n_r - 1.0) * rho) / (n_p * n_r)) ** alpha)


def _band(estimate: np.ndarray, draws: np.ndarray, level: float = 0.95):
    """Percentile band of draws (K, n) per column, extended to hold the estimate; NaN where
    fewer than max(20, K/2) draws are finite. Returns lo, hi, extended (bool per column)."""
    K = draws.shape[0]
    good = np.isfinite(draws).sum(axis=0) >= max(20, 0.5 * K)
    lo = np.full(estimate.shape, np.nan)
    hi = np.full(estimate.shape, np.nan)
    if good.any():
        q = np.nanquantile(np.where(np.isfinite(draws[:, good]), draws[:, good], np.nan),
                           [(1 - level) / 2, (1 + level) / 2], axis=0, method="inverted_cdf")
        lo[good], hi[good] = q
    ext = good & np.isfinite(estimate) & ((estimate < lo) | (estimate > hi))
    return np.fmin(lo, np.where(ext, estimate, lo)), np.fmax(hi, np.where(ext, estimate, hi)), ext


# ------------------------------------------------------------------------------------------
# Predictions and the recommendation
# ------------------------------------------------------------------------------------------
def gpu_counts(step_times: pd.DataFrame, total_batch) -> tuple[np.ndarray, str]:
    """The GPU count a run at each batch size would use: the runs' one count, or where they
    differ the count of the run at the nearest batch size (in log B), with a note."""
    B = np.asarray(total_batch, dtype=float)
    known = step_times[np.isfinite(step_times["n_gpus"].astype(float))] if len(step_times) else step_times
    if not len(known):
        return np.full(B.shape, np.nan), "no GPU count in the run configs: no GPU-hours"
    counts = known["n_gpus"].astype(float).unique()
    if len(counts) == 1:
        return np.full(B.shape, counts[0]), ""
    lb = np.log(known["total_batch"].to_numpy(dtype=float))
    nearest = np.abs(np.log(B)[:, None] - lb[None, :]).argmin(axis=1)
    return (known["n_gpus"].to_numpy(dtype=float)[nearest],
            f"runs use different GPU counts {sorted(int(c) for c in counts)}: each candidate takes the count "
            "of the run at the nearest batch size")


def predict_plan(models: dict, step_model: dict, step_times: pd.DataFrame, octaves: int = 2,
                 seed: int = 0) -> pd.DataFrame:
    """Every candidate at every target: predicted steps, hours, GPU-hours and samples with
    95% bands, and the basis (`interpolated` / `extrapolated`).

    models: {threshold: steps model} (mccandlish_models / two_axis_models / choose_models);
    step_model: wallclock.step_time_model; step_times: its per-run table (step_time_table),
    for the GPU counts. Candidates come from each model's configurations (candidate_configs:
    along the axis for a McCandlish model, both axes for a two-axis one)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t, m in sorted(models.items()):
        if not len(m["configs"]):
            continue
        cand = candidate_configs(m["configs"], both_axes=m["kind"] == "two_axis", octaves=octaves)
        n_p = cand["n_prompts"].to_numpy(dtype=float)
        n_r = cand["n_rollouts"].to_numpy(dtype=float)
        B = n_p * n_r
        usable = m["status"] in _USABLE if m["kind"] == "mccandlish" else m["status"] == "ok"
        notes = [[] for _ in range(len(cand))]
        S = (_steps(m["S_min"], m["B0"], m["rho"], n_p, n_r, m.get("alpha", 1.0)) if usable
             else np.full(len(cand), np.nan))
        T, _ = predict_step_time(step_model, n_p, n_r)
        T = np.where(T > 0, T, np.nan)
        n_gpus, gpu_note = gpu_counts(step_times, B)
        est = {"steps": S, "hours": S * T / 3600.0, "gpu_hours": S * T / 3600.0 * n_gpus, "samples": S * B}
        reached = m["reached"]
        r_np, r_nr = _floats(reached["n_prompts"]), _floats(reached["n_rollouts"])
        inside = np.zeros(len(cand), dtype=bool)
        if len(reached):
            rB = r_np * r_nr
            inside = (B >= rB.min()) & (B <= rB.max())
            if m["kind"] == "two_axis":
                inside &= (n_p >= r_np.min()) & (n_p <= r_np.max()) & (n_r >= r_nr.min()) & (n_r <= r_nr.max())
        for i in np.flatnonzero(~inside):
            notes[i].append("beyond the sampled batch sizes that reached the target")
        if m["status"] != "ok":
            for n in notes:
                n.append(f"fit status {m['status']}" + (f": {m['reason']}" if m["reason"] else ""))
        if step_model.get("status") != "ok":
            for n in notes:
                n.append("no step-time model: " + (step_model.get("reason") or "insufficient"))
        elif gpu_note:
            for n in notes:
                n.append(gpu_note)
        bands = {k: (np.full(len(cand), np.nan),) * 2 for k in est}
        if usable and m["draws"] is not None:
            S0, B0, rho, *al = (d[:, None] for d in m["draws"])
            S_d = _steps(S0, B0, rho, n_p[None, :], n_r[None, :], al[0] if al else 1.0)
            T_d = _step_time_draws(step_model, n_p, n_r, S_d.shape[0], rng)
            draws = {"steps": S_d, "hours": S_d * T_d / 3600.0,
                     "gpu_hours": S_d * T_d / 3600.0 * n_gpus[None, :], "samples": S_d * B[None, :]}
            for k, d in draws.items():
                lo, hi, ext = _band(est[k], d)
                bands[k] = (lo, hi)
                for i in np.flatnonzero(ext):
                    notes[i].append(f"{k}: the estimate lies outside the bootstrap percentiles, "
                                    "band extended to it")
        frames.append(pd.DataFrame({
            "threshold": t, "n_prompts": cand["n_prompts"], "n_rollouts": cand["n_rollouts"],
            "total_batch": cand["total_batch"], "predicted_steps": S,
            "predicted_steps_lo": bands["steps"][0], "predicted_steps_hi": bands["steps"][1],
            "step_time_s": T, "predicted_hours": est["hours"], "predicted_hours_lo": bands["hours"][0],
            "predicted_hours_hi": bands["hours"][1], "n_gpus": n_gpus,
            "predicted_gpu_hours": est["gpu_hours"], "predicted_gpu_hours_lo": bands["gpu_hours"][0],
            "predicted_gpu_hours_hi": bands["gpu_hours"][1], "predicted_samples": est["samples"],
            "predicted_samples_lo": bands["samples"][0], "predicted_samples_hi": bands["samples"][1],
            "basis": np.where(inside & (m["status"] == "ok"), "interpolated", "extrapolated"),
            "model": m["kind"], "fit_status": m["status"], "note": ["; ".join(n) for n in notes]}))
    if not frames:
        return pd.DataFrame(columns=[c for c in PLAN_COLUMNS + PLAN_EXTRA_COLUMNS if c != "objective"])
    return pd.concat(frames, ignore_index=True)


def _step_time_draws(step_model: dict, n_p, n_r, K: int, rng) -> np.ndarray:
    """(K, n) step times from the coefficients' normal approximation (NaN without a model);
    a draw <= 0 (a linear model extrapolated with an uncertain intercept) is set to NaN."""
    if step_model.get("status") != "ok":
        return np.full((K, len(n_p)), np.nan)
    names = step_model["terms"]
    beta = np.array([step_model["coef"][k] for k in names])
    coef = rng.multivariate_normal(beta, np.asarray(step_model["cov"]), size=K, method="svd")
    term = {"a": np.ones(len(n_p)), "b_B": n_p * n_r, "b_p": n_p}
    T = coef @ np.stack([term[k] for k in names])
    if "B_fixed" in step_model:
        T[:, ~np.isclose(n_p * n_r, step_model["B_fixed"])] = np.nan
    return np.where(T > 0, T, np.nan)


def recommend(predictions: pd.DataFrame, samples_slack: float = 0.10) -> pd.DataFrame:
    """plan.csv: per threshold and objective, the candidate that is best by it.

    wall_clock: the fewest predicted hours; gpu_hours: the fewest predicted GPU-hours (rows only
    where GPU counts are known); samples: E(B) = E_min (1 + B / B_noise) keeps falling as B
    shrinks, so the fewest samples alone would always pick the smallest candidate whatever the
    hours: the plan takes the fastest candidate whose predicted samples are within
    `samples_slack` (10%) of the fewest any candidate needs (the largest such B when there are
    no step times). An objective no candidate can be scored on gives no row."""
    rows = []
    for _, sub in predictions.groupby("threshold", sort=True):
        sub = sub.reset_index(drop=True)
        for obj in OBJECTIVES:
            if obj == "samples":
                ok = np.isfinite(sub["predicted_samples"].to_numpy(dtype=float))
                if not ok.any():
                    continue
                within = ok & (sub["predicted_samples"] <= (1 + samples_slack) * sub.loc[ok, "predicted_samples"].min())
                pool = sub[within]
                hours = pool["predicted_hours"].astype(float)
                i = hours.idxmin() if hours.notna().any() else pool["total_batch"].astype(float).idxmax()
            else:
                col = "predicted_hours" if obj == "wall_clock" else "predicted_gpu_hours"
                value = sub[col].astype(float)
                if not value.notna().any():
                    continue
                i = value.idxmin()
            rows.append({"objective": obj, **sub.loc[i].to_dict()})
    out = pd.DataFrame(rows, columns=PLAN_COLUMNS + PLAN_EXTRA_COLUMNS)
    return out.astype({"n_prompts": "Int64", "n_rollouts": "Int64", "total_batch": "Int64"})


# ------------------------------------------------------------------------------------------
# The answer in words
# ------------------------------------------------------------------------------------------
def _split(r) -> str:
    return f"{count(r['n_prompts'])} prompts × {count(r['n_rollouts'])} rollouts (B = {count(r['total_batch'])})"


def _vs_fastest_run(r, f) -> str:
    """The recommendation against the fastest run made: never a configuration against itself."""
    ran = f"{count(f['n_prompts'])} × {count(f['n_rollouts'])}, {duration(f['time_to_target_h'])}"
    if int(f["n_prompts"]) == int(r["n_prompts"]) and int(f["n_rollouts"]) == int(r["n_rollouts"]):
        return f"; it is the batch of your fastest run so far ({ran})"
    ratio = f["time_to_target_h"] / r["predicted_hours"]
    if ratio >= 1.05:
        return f", {ratio:.1f}x faster than your fastest run so far ({ran})"
    if ratio > 0.95:
        return f", about as fast as your fastest run so far ({ran})"
    return (f"; your fastest run so far ({ran}) took {100 * (1 - ratio):.0f}% less than this prediction "
            "(runs scatter around the fit)")


def plan_summary(plan: pd.DataFrame, fastest: pd.DataFrame | None = None,
                 next_run_table: pd.DataFrame | None = None, fits: pd.DataFrame | None = None) -> list[str]:
    """The plan in sentences, every number from the tables: per target the fastest batch with
    its band and GPU count, compared with the fastest measured run (wallclock.fastest_batch;
    why they differ where they do), the cheapest in GPU-hours and in samples, and the next runs
    (nextruns.next_runs). `fits` (threshold, status, reason) names the targets without a plan
    and why."""
    lines = []
    fast = fastest.set_index("threshold") if fastest is not None and len(fastest) else pd.DataFrame()
    planned = set(plan["threshold"]) if len(plan) else set()
    for t, rows in (plan.groupby("threshold", sort=True) if len(plan) else []):
        by = rows.set_index("objective")
        parts = []
        if "wall_clock" in by.index:
            r = by.loc["wall_clock"]
            gpus = f" on {count(r['n_gpus'])} GPUs" if np.isfinite(r["n_gpus"]) else ""
            text = (f"To reach {t:g} fastest, train with {_split(r)}: about "
                    f"{duration(r['predicted_hours'], r['predicted_hours_lo'], r['predicted_hours_hi'])}{gpus}")
            why = ""
            if t in fast.index and np.isfinite(fast.loc[t].get("time_to_target_h", np.nan)):
                text += _vs_fastest_run(r, fast.loc[t])
                why = why_fastest_differs(fast.loc[t], r, t)
            if r["basis"] == "extrapolated":
                text += f" (extrapolated: {r['note'].split('; ')[0]})"
            parts.append(text + ".")
            if why:
                parts.append(why)
            if "gpu_hours" in by.index:
                g = by.loc["gpu_hours"]
                same = int(g["total_batch"]) == int(r["total_batch"]) and int(g["n_prompts"]) == int(r["n_prompts"])
                parts.append(f"It is also the cheapest in GPU-hours ({number(g['predicted_gpu_hours'])} GPU-hours)."
                             if same else
                             f"Fewest GPU-hours: {_split(g)}, {number(g['predicted_gpu_hours'])} GPU-hours in "
                             f"{duration(g['predicted_hours'])}.")
        elif "samples" in by.index:
            parts.append(f"To reach {t:g}: no step times, so no prediction of hours.")
        if "samples" in by.index:
            s = by.loc["samples"]
            hours = f" in {duration(s['predicted_hours'])}" if np.isfinite(s["predicted_hours"]) else ""
            parts.append(f"Fewest samples (within 10%): {_split(s)}, {number(s['predicted_samples'])} samples{hours}"
                         + (" (extrapolated)." if s["basis"] == "extrapolated" else "."))
        lines.append(" ".join(parts))
    if fits is not None:
        for f in fits.itertuples(index=False):
            if float(f.threshold) not in planned:
                why = f.reason if isinstance(f.reason, str) and f.reason else ""
                lines.append(f"{f.threshold:g}: no plan (fit {f.status}" + (f": {why})." if why else ")."))
    if next_run_table is not None and len(next_run_table):
        for t, rows in next_run_table.groupby("threshold", sort=True):
            first = rows.iloc[0]
            runs = []
            for r in rows.itertuples():
                what = (f"extend {r.run_name} to step {count(r.to_step)}" if r.action != "new" else
                        f"a new run at B = {count(r.total_batch)} ({count(r.n_prompts)} × {count(r.n_rollouts)})")
                runs.append(f"{int(r.rank)}. {what}: narrows it by about {percent(r.expected_narrowing)} for "
                            f"{number(r.cost)} {r.cost_unit}, {percent(r.p_reach)} chance to reach {t:g}")
            now = interval(first["B_noise"], first["B_noise_lo"], first["B_noise_hi"])
            lines.append(f"To pin B_noise down at {t:g} (now {now} samples), in order of narrowing per "
                         f"{first['cost_unit'].removesuffix('s')}: " + "; ".join(runs) + ".")
    return lines
