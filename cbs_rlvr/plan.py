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

Next runs (`next_runs`): a new run at each candidate batch size is simulated from the fitted
curve with the phase's eval noise and added to each of the fit's bootstrap tables (or, without
them, to tables drawn with the log-space residual sd); the refits give the B_noise interval
expected after. The candidate leaving the narrowest one is taken, then the best other one
given it (greedy, up to three).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .fit import (
    _b_bounds,
    _bootstrap_tables,
    _group_weights,
    _Model,
    _n_distinct_reached,
    _prepare,
    _tobit_em,
)
from .wallclock import predict_step_time

#: outputs/<phase>/tables/plan.csv: design.md's contract, then extras.
PLAN_COLUMNS = ["threshold", "objective", "n_prompts", "n_rollouts", "total_batch", "predicted_steps",
                "predicted_hours", "predicted_hours_lo", "predicted_hours_hi", "predicted_gpu_hours",
                "basis"]
PLAN_EXTRA_COLUMNS = ["predicted_steps_lo", "predicted_steps_hi", "predicted_gpu_hours_lo",
                      "predicted_gpu_hours_hi", "predicted_samples", "predicted_samples_lo",
                      "predicted_samples_hi", "step_time_s", "n_gpus", "model", "fit_status", "note"]
OBJECTIVES = ("wall_clock", "gpu_hours", "samples")
NEXT_RUNS_COLUMNS = ["threshold", "rank", "n_prompts", "n_rollouts", "total_batch", "B_noise",
                     "B_noise_lo", "B_noise_hi", "width_now", "expected_lo_after", "expected_hi_after",
                     "expected_width_after", "expected_narrowing", "basis", "predicted_steps",
                     "predicted_hours", "noise_sd_log", "n_simulations", "note"]
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
# Next runs: which batch sizes would narrow the B_noise interval most
# ------------------------------------------------------------------------------------------
def _width(b: np.ndarray) -> float:
    """Width of the central 95% of the refits (NaN when fewer than max(20, half) are finite)."""
    n = b.size
    b = b[np.isfinite(b)]
    if b.size < max(20, 0.5 * n):
        return np.nan
    lo, hi = np.quantile(b, [0.025, 0.975], method="inverted_cdf")
    return float(hi - lo)


def _new_run_sd(d: dict, log_S_new: np.ndarray, sigma: float, exponent: float = -0.5) -> np.ndarray:
    """The eval-noise sd of a new run's log S. A run that needs S steps to the target has about
    S / (eval interval) evaluations around its crossing, so the sd of its log S falls like
    S^-1/2: scaled from the phase's re-measured runs, sd_i (S_i / S_new)^1/2, median over them
    (one run's sd is itself noisy; the exponent is the theory's, not fitted). Without
    re-measured runs: the log-space residual sd."""
    sd, log_S = d.get("eval_sd_rows", np.array([])), d["log_S"]
    ok = np.isfinite(sd) & (sd > 0) & ~d["censored"]
    if not ok.any():
        return np.full(len(log_S_new), sigma)
    scaled = np.log(sd[ok])[None, :] + exponent * (log_S_new[:, None] - log_S[ok][None, :])
    return np.exp(np.median(scaled, axis=1))


def _base_tables(d: dict, a: float, b: float, sigma: float, M: int, rng):
    """The sweep as it stands, M times: the first M of fit_phase's bootstrap tables (so the
    refits spread like its interval), or without them tables drawn from the fitted curve with
    the residual sd (a censored run stays censored when its draw passes its last step)."""
    if d.get("tables") is not None and d["tables"][0].shape[0] >= 20:
        Y, W, C = (x[:M] for x in d["tables"])
        return Y, W, C, "fit_phase's bootstrap tables; new runs with the eval noise of the phase's runs"
    B, y, c = d["B"], d["log_S"], d["censored"]
    ys = a + np.log1p(math.exp(b) / B)[None, :] + sigma * rng.standard_normal((M, len(B)))
    C = c[None, :] & (ys >= y[None, :])
    Y = np.where(c[None, :], np.maximum(ys, y[None, :]), ys)
    W = np.repeat(_group_weights(d["groups"])[None, :], M, axis=0)
    return Y, W, C, "tables drawn with the log-space residual sd (no bootstrap tables)"


def _simulated_widths(base, B, extra_B, extra_y, cand_B, cand_y, bb):
    """The 95% spread of refitted log B_noise over the M tables of `base` (the sweep as it
    stands) with the runs already chosen (extra_B, their log S draws extra_y (M, e)) added:
    without a further run, and with each candidate (cand_B, draws cand_y (M, m)) added. Every
    candidate is compared on the same tables and draws (common random numbers). A new run at a
    batch size already sampled joins that configuration's runs, which share its weight of 1."""
    Y0, W0, C0 = base
    M, n = Y0.shape
    e, m = len(extra_B), len(cand_B)
    rows_B = np.r_[B, np.asarray(extra_B, dtype=float), cand_B]
    Y = np.zeros(((m + 1) * M, len(rows_B)))
    C = np.zeros(Y.shape, dtype=bool)
    W = np.zeros(Y.shape)
    for k in range(m + 1):  # block 0: no further run; block k: candidate k - 1 added
        blk = slice(k * M, (k + 1) * M)
        new_B = np.r_[np.asarray(extra_B, dtype=float), cand_B[k - 1:k] if k else []]
        Y[blk, :n], C[blk, :n] = Y0, C0
        Y[blk, n:n + e] = extra_y
        w_old = W0.copy()
        w_new = np.ones(len(new_B))
        for i, v in enumerate(new_B):
            same = B == v
            if same.any():
                k_old = int(same.sum())
                w_old[:, same] *= k_old / (k_old + 1.0)
                w_new[i] = 1.0 / (k_old + 1.0)
        W[blk, :n] = w_old
        W[blk, n:n + e] = w_new[:e]
        if k:
            Y[blk, n + e + k - 1] = cand_y[:, k - 1]
            W[blk, n + e + k - 1] = w_new[e]
    with np.errstate(all="ignore"):
        _, bs, _, _ = _tobit_em(_Model(B=rows_B), np.where(W > 0, Y, 0.0), W, C, bb, (0.0, 0.0))
    bs = np.where(_n_distinct_reached(rows_B, (W > 0) & ~C) < 3, np.nan, bs)
    widths = np.array([_width(bs[k * M:(k + 1) * M]) for k in range(m + 1)])
    return widths[0], widths[1:]


def next_runs(draws: dict, cbs_fit: pd.DataFrame, sb_eb: pd.DataFrame, step_model: dict | None = None,
              n_simulations: int = 400, max_runs: int = 3, min_gain: float = 0.05, octaves: int = 1,
              seed: int = 0) -> pd.DataFrame:
    """next_runs.csv: at each target with a usable fit, the one to three batch sizes (along
    the phase's axis) whose addition most narrows the B_noise interval, with the interval
    expected after.

    The sweep as it stands is taken n_simulations times: fit_phase's own bootstrap tables
    (draws from fit_phase(..., return_draws=True)), so that refitting them spreads like the
    reported interval; without them, tables drawn from the fitted curve with the log-space
    residual sd (df-corrected). A new run at a candidate batch size (candidate_configs) is
    simulated from the fitted curve with the phase's eval noise (_new_run_sd; run until it
    reaches the target), added to every table, and the tables refitted (_simulated_widths).
    The candidate leaving the narrowest 95% spread of log B_noise is rank 1; rank 2 is the
    best other batch size given rank 1, and so on, while each narrows it by at least
    `min_gain` (5%) more. Candidates reach one octave beyond the sampled range (a run launched
    to pin B_noise should not rest on a far extrapolation); ranks are distinct batch sizes
    (under the model a second run at the best one can be as good, but a spread hedges
    against the model being wrong). The expected interval after scales the current one's
    distances from the estimate (in log B) by the simulated ratio of spreads, after / now;
    expected_narrowing = 1 - that ratio, cumulative over the ranks. Each row also gives the
    run's predicted steps and hours (its cost).
    Cost: one vectorised refit of (candidates + 1) x n_simulations tables per target and rank
    (about 0.1 s each).
    """
    rng = np.random.default_rng(seed)
    configs = sb_eb[["n_prompts", "n_rollouts"]].drop_duplicates()
    cand = candidate_configs(configs, both_axes=False, octaves=octaves)
    cand_B = cand["total_batch"].to_numpy(dtype=float)
    rows = []
    for fit in cbs_fit.itertuples(index=False):
        t = float(fit.threshold)
        d = draws.get(t) or {}
        if fit.status not in _USABLE or "B" not in d or not len(cand):
            continue
        a, b = math.log(fit.S_min), math.log(fit.B_noise)
        n_u = int((~d["censored"]).sum())
        sigma = fit.sigma_log * math.sqrt(n_u / (n_u - 2)) if n_u > 2 else np.nan
        sigma = float(np.nanmax([sigma, d.get("eval_sd_log", np.nan), 1e-3]))
        Y0, W0, C0, how = _base_tables(d, a, b, sigma, n_simulations, rng)
        M = Y0.shape[0]
        log_S_new = a + np.log1p(math.exp(b) / cand_B)
        sd_new = _new_run_sd(d, log_S_new, sigma)
        bb = _b_bounds(d["B"])
        chosen, extra_y, base0, prev = [], np.zeros((M, 0)), np.nan, np.nan
        for r in range(max_runs):
            cand_y = log_S_new[None, :] + sd_new[None, :] * rng.standard_normal((M, 1))
            base, widths = _simulated_widths((Y0, W0, C0), d["B"], cand_B[chosen], extra_y, cand_B, cand_y, bb)
            if r == 0:
                base0 = prev = base
            widths[chosen] = np.nan
            if not np.isfinite(widths).any():
                break
            j = int(np.nanargmin(widths))
            gain = 1 - widths[j] / prev
            if r and not gain >= min_gain:
                break
            chosen.append(j)
            extra_y = np.column_stack([extra_y, cand_y[:, j]])
            rows.append(_next_run_row(fit, t, r + 1, cand.iloc[j], widths[j] / base0, gain, sd_new[j], M,
                                      d, step_model, how))
            prev = widths[j]
    out = pd.DataFrame(rows, columns=NEXT_RUNS_COLUMNS)
    return out.astype({"rank": "Int64", "n_prompts": "Int64", "n_rollouts": "Int64", "total_batch": "Int64",
                       "n_simulations": "Int64"})


def _next_run_row(fit, t, rank, cand, ratio, gain, sd, n_sim, d, step_model, how) -> dict:
    B_hat, lo, hi = float(fit.B_noise), float(fit.B_noise_lo), float(fit.B_noise_hi)
    note = [f"simulated on {how}"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        note.append("no current interval (no bootstrap) to scale the expected one from")
    lo_after = B_hat * (lo / B_hat) ** ratio if np.isfinite(lo) else np.nan
    hi_after = B_hat * (hi / B_hat) ** ratio if np.isfinite(hi) else np.nan
    n_p, n_r = float(cand["n_prompts"]), float(cand["n_rollouts"])
    reached = d["B"][~d["censored"]]
    Bc = n_p * n_r
    inside = bool(len(reached)) and reached.min() <= Bc <= reached.max()
    if not inside:
        note.append("beyond the sampled batch sizes: the simulation extrapolates the fitted curve")
    if rank > 1:
        note.append(f"narrows it a further {100 * gain:.0f}% given the run(s) ranked above")
    S = _steps(fit.S_min, B_hat, 0.0, n_p, n_r)
    T = float(predict_step_time(step_model, n_p, n_r)[0]) if step_model else np.nan
    return {"threshold": t, "rank": rank, "n_prompts": int(n_p), "n_rollouts": int(n_r),
            "total_batch": int(Bc), "B_noise": B_hat, "B_noise_lo": lo, "B_noise_hi": hi,
            "width_now": hi - lo, "expected_lo_after": lo_after, "expected_hi_after": hi_after,
            "expected_width_after": hi_after - lo_after, "expected_narrowing": 1 - ratio,
            "basis": "interpolated" if inside and fit.status == "ok" else "extrapolated",
            "predicted_steps": S, "predicted_hours": S * T / 3600.0, "noise_sd_log": float(sd),
            "n_simulations": n_sim, "note": "; ".join(note)}


# ------------------------------------------------------------------------------------------
# The answer in words
# ------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def duration(hours: float, lo: float = np.nan, hi: float = np.nan) -> str:
    """'3.1 h [2.8, 3.5]', or in minutes below an hour ('32 min [30, 35]')."""
    scale, unit = (1.0, "h") if hours >= 1 else (60.0, "min")
    band = f" [{_num(lo * scale)}, {_num(hi * scale)}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{_num(hours * scale)} {unit}{band}"


def _split(r) -> str:
    return f"{int(r['n_prompts'])} prompts × {int(r['n_rollouts'])} rollouts (B = {int(r['total_batch'])})"


def _vs_fastest_run(predicted: float, f) -> str:
    ran = f"{int(f['n_prompts'])} × {int(f['n_rollouts'])}, {duration(f['time_to_target_h'])}"
    ratio = f["time_to_target_h"] / predicted
    if ratio >= 1.05:
        return f", {ratio:.1f}x faster than your fastest run so far ({ran})"
    if ratio > 0.95:
        return f", about as fast as your fastest run so far ({ran})"
    return (f"; your fastest run so far ({ran}) took {100 * (1 - ratio):.0f}% less than this prediction "
            "(runs scatter around the fit)")


def plan_summary(plan: pd.DataFrame, fastest: pd.DataFrame | None = None,
                 next_run_table: pd.DataFrame | None = None, fits: pd.DataFrame | None = None) -> list[str]:
    """The plan in sentences, every number from the tables: per target the fastest batch with
    its band and GPU count, compared with the fastest measured run (wallclock.fastest_batch),
    the cheapest in GPU-hours and in samples, and the next runs. `fits` (threshold, status,
    reason) names the targets without a plan and why."""
    lines = []
    fast = fastest.set_index("threshold") if fastest is not None and len(fastest) else pd.DataFrame()
    planned = set(plan["threshold"]) if len(plan) else set()
    for t, rows in (plan.groupby("threshold", sort=True) if len(plan) else []):
        by = rows.set_index("objective")
        parts = []
        if "wall_clock" in by.index:
            r = by.loc["wall_clock"]
            gpus = f" on {int(r['n_gpus'])} GPUs" if np.isfinite(r["n_gpus"]) else ""
            text = (f"To reach {t:g} fastest, train with {_split(r)}: about "
                    f"{duration(r['predicted_hours'], r['predicted_hours_lo'], r['predicted_hours_hi'])}{gpus}")
            if t in fast.index and np.isfinite(fast.loc[t].get("time_to_target_h", np.nan)):
                text += _vs_fastest_run(r["predicted_hours"], fast.loc[t])
            if r["basis"] == "extrapolated":
                text += f" (extrapolated: {r['note'].split('; ')[0]})"
            parts.append(text + ".")
            if "gpu_hours" in by.index:
                g = by.loc["gpu_hours"]
                same = int(g["total_batch"]) == int(r["total_batch"]) and int(g["n_prompts"]) == int(r["n_prompts"])
                parts.append(f"It is also the cheapest in GPU-hours ({_num(g['predicted_gpu_hours'])} GPU-hours)." if same else
                             f"Fewest GPU-hours: {_split(g)}, {_num(g['predicted_gpu_hours'])} GPU-hours in "
                             f"{duration(g['predicted_hours'])}.")
        elif "samples" in by.index:
            parts.append(f"To reach {t:g}: no step times, so no prediction of hours.")
        if "samples" in by.index:
            s = by.loc["samples"]
            hours = f" in {duration(s['predicted_hours'])}" if np.isfinite(s["predicted_hours"]) else ""
            parts.append(f"Fewest samples (within 10%): {_split(s)}, {s['predicted_samples']:.3g} samples{hours}"
                         + (" (extrapolated)." if s["basis"] == "extrapolated" else "."))
        lines.append(" ".join(parts))
    if fits is not None:
        for f in fits.itertuples(index=False):
            if float(f.threshold) not in planned:
                why = f.reason if isinstance(f.reason, str) and f.reason else ""
                lines.append(f"{f.threshold:g}: no plan (fit {f.status}" + (f": {why})." if why else ")."))
    if next_run_table is not None and len(next_run_table):
        for t, rows in next_run_table.groupby("threshold", sort=True):
            first, last = rows.iloc[0], rows.iloc[-1]
            runs = [f"B = {int(r.total_batch)} ({int(r.n_prompts)} × {int(r.n_rollouts)}"
                    + (f", about {duration(r.predicted_hours)})" if np.isfinite(r.predicted_hours) else ")")
                    for r in rows.itertuples()]
            now = f"{first['B_noise']:.0f} [{first['B_noise_lo']:.0f}, {first['B_noise_hi']:.0f}]"
            after = (f"to about [{last['expected_lo_after']:.0f}, {last['expected_hi_after']:.0f}]"
                     if np.isfinite(last["expected_lo_after"]) else "")
            lines.append(f"To pin B_noise down at {t:g} (now {now}), run {' then '.join(runs)}: the interval is "
                         f"expected to narrow by {100 * last['expected_narrowing']:.0f}% {after}".rstrip() + ".")
    return lines
