"""Wall-clock time to target: cumulative logged step time up to the crossing, validation and
checkpoint time counted apart, GPU-hours, and a step-time model T_step(n_prompts, n_rollouts).

verl logs `timing_s/step` (and the same value as `perf/time_per_step`) for the timer around a
training step, and `timing_s/testing` / `timing_s/save_checkpoint` for validation and
checkpoint saving. Whether the step timer contains those two depends on the trainer: verl's
PPO trainer nested both inside it up to v0.5 and times them outside since v0.6, and the DAPO
recipe nests the checkpoint but not the validation. So it is read from the data: where a
step's time exceeds its neighbours' by about the overhead logged at that step, the step time
includes it (`overhead_in_step_time`). Training time to target excludes both; the time with
overhead adds them once.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..data.select import DEFAULT_METAPARAMETERS
from .crossings import crossings, cumulative_at, eval_series, int_columns, per_step_values, run_meta
from .envelope import in_envelope

STEP_TIME_KEYS = ("perf/time_per_step", "timing_s/step")
OVERHEAD_KEYS = {"testing": "timing_s/testing", "save_checkpoint": "timing_s/save_checkpoint"}
# the history keys wall_clock_table reads beside the metric (phase_runs(..., columns=...))
WALL_CLOCK_KEYS = (*STEP_TIME_KEYS, *OVERHEAD_KEYS.values())


def _float(value) -> float:
    """A plain float from a number, None, NaN or pd.NA (truth tests on pd.NA raise)."""
    try:
        return float(value) if value is not None and not pd.isna(value) else math.nan
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------------------------------
# Validation and checkpoint time: inside or outside the logged step time?
# ------------------------------------------------------------------------------------------
def overhead_included(step_time: np.ndarray, overhead: np.ndarray, window: int = 3) -> bool | None:
    """Does the per-step time include this overhead? Both arrays index steps 1..N (overhead 0
    where none happened). At each step with overhead, the excess of its step time over the
    median of the `window` nearest steps on each side without overhead is compared with the
    overhead: included when the median ratio excess / overhead exceeds 0.5. None when the run
    has no step with both values."""
    t = np.asarray(step_time, dtype=float)
    o = np.nan_to_num(np.asarray(overhead, dtype=float), nan=0.0)
    plain = np.flatnonzero((o <= 0) & np.isfinite(t))
    ratios = []
    for i in np.flatnonzero((o > 0) & np.isfinite(t)):
        pos = np.searchsorted(plain, i)
        near = plain[max(pos - window, 0):pos + window]
        if len(near):
            ratios.append((t[i] - np.median(t[near])) / o[i])
    return None if not ratios else bool(np.median(ratios) > 0.5)


def _logs(h: pd.DataFrame, key: str) -> bool:
    return key in h.columns and bool(np.isfinite(h[key].to_numpy(dtype=float)).any())


def _overhead_array(h: pd.DataFrame, key: str, n: int) -> np.ndarray:
    out = np.zeros(n)
    if key in h.columns:
        st = h["step"].to_numpy(dtype=float)
        v = h[key].to_numpy(dtype=float)
        ok = np.isfinite(v) & (st >= 1) & (st <= n)
        out[st[ok].astype(int) - 1] = v[ok]
    return out


# ------------------------------------------------------------------------------------------
# Wall clock
# ------------------------------------------------------------------------------------------
def wall_clock_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                     method: str = "isotonic", time_keys=STEP_TIME_KEYS,
                     metaparameters=DEFAULT_METAPARAMETERS) -> pd.DataFrame:
    """Wall-clock time to each target, per run.

    time_to_target_s/_h: training time, the sum of the logged step times of steps 1..S with the
    fraction of step ceil(S) for an interpolated crossing S (censored: up to the last eval
    step, a lower bound), minus any validation or checkpoint time the step time contains. The
    first of time_keys that a run logs is used; steps without a time get the run's median step
    time (counted in n_steps_imputed). testing_h / checkpoint_h: validation and checkpoint time
    (`timing_s/testing`, `timing_s/save_checkpoint`) over the same steps, NaN for a timer the
    run never logs; time_to_target_with_overhead_h = training + the logged ones. overhead_in_step_time: which of them the logged step time
    contained (read from the data, see overhead_included): `testing`, `save_checkpoint`, both
    joined by `+`, `none`, or `not logged` (no run step logs either, so nothing to tell). GPU-hours = hours x n_gpus where the
    config gives GPU counts (NaN otherwise). mean_step_time_s: mean training step time.
    configuration / in_envelope as in the S(B) table (metaparameter sweeps).
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = run_meta(runs, metaparameters)
    series = eval_series(history, metric)
    hist_by_run = {str(k): v for k, v in history.groupby("run_id", sort=False)}
    rows = []
    for m in meta.itertuples(index=False):
        s, a, _ = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = crossings(s, a, thr, method)
        h = hist_by_run.get(m.run_id)
        key = None
        if h is not None:
            key = next((k for k in time_keys if _logs(h, k)), None)
        train = testing = ckpt = np.full(len(thr), np.nan)
        n_imp = np.zeros(len(thr), dtype=int)
        mean_step, inside, checked = np.nan, [], False
        if key is not None:
            last = int(max(np.nanmax(h["step"].to_numpy(dtype=float)), np.nanmax(s) if len(s) else 0))
            t_step, missing = per_step_values(h["step"], h[key], last)
            over = {name: _overhead_array(h, k, last) for name, k in OVERHEAD_KEYS.items()}
            t_train, checked = t_step.copy(), False
            for name, o in over.items():
                included = overhead_included(np.where(missing, np.nan, t_step), o)
                checked |= included is not None
                if included:
                    inside.append(name)
                    t_train = t_train - o
            train, n_imp = cumulative_at(t_train, missing, S)
            none = np.zeros(last, dtype=bool)
            testing, _ = cumulative_at(over["testing"], none, S)
            ckpt, _ = cumulative_at(over["save_checkpoint"], none, S)
            # a timer the run never logged is unknown, not zero
            if not _logs(h, OVERHEAD_KEYS["testing"]):
                testing = np.full(len(thr), np.nan)
            if not _logs(h, OVERHEAD_KEYS["save_checkpoint"]):
                ckpt = np.full(len(thr), np.nan)
            mean_step = float(np.mean(t_train[~missing])) if (~missing).any() else np.nan
        n_gpus = _float(m.n_gpus)
        for j, t in enumerate(thr):
            secs = train[j]
            total = secs + np.nan_to_num(testing[j]) + np.nan_to_num(ckpt[j])  # what was logged
            rows.append({"run_id": m.run_id, "run_name": m.run_name, "n_prompts": m.n_prompts,
                         "n_rollouts": m.n_rollouts, "total_batch": m.total_batch,
                         "configuration": m.configuration, "n_gpus": n_gpus, "threshold": t,
                         "S_B": S[j], "censored": bool(cens[j]),
                         "time_to_target_s": secs, "time_to_target_h": secs / 3600.0,
                         "testing_h": testing[j] / 3600.0, "checkpoint_h": ckpt[j] / 3600.0,
                         "time_to_target_with_overhead_h": total / 3600.0,
                         "gpu_hours": secs / 3600.0 * n_gpus,
                         "gpu_hours_with_overhead": total / 3600.0 * n_gpus,
                         "mean_step_time_s": mean_step, "n_steps_imputed": int(n_imp[j]),
                         "time_key": key,
                         "overhead_in_step_time": "+".join(inside) or ("none" if checked else "not logged")})
    out = int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))
    if len(out):
        out["in_envelope"] = in_envelope(out)
    return out


def fastest_batch(wall_clock: pd.DataFrame, by: str = "time_to_target_h") -> pd.DataFrame:
    """Per threshold, the (n_prompts, n_rollouts) configuration that reaches the target in the
    least wall-clock time (`by`; median over replicates that reach it; with a metaparameter
    sweep, the best configuration at each batch size). `undetermined` is True when a run that
    never reached the target had stopped earlier than that (its time is only a lower bound, so
    it might have been faster). `value`: the winner's `by`. Values are plain floats (NaN, never
    pd.NA, where unknown)."""
    rows = []
    wall = wall_clock.copy()
    if "configuration" not in wall.columns:
        wall["configuration"] = ""
    wall["configuration"] = wall["configuration"].fillna("").astype(str)
    for t, sub in wall.groupby("threshold", sort=True):
        reached = sub[~sub["censored"].astype(bool) & sub[by].notna()]
        if reached.empty:
            rows.append({"threshold": t, "n_configs": 0, "undetermined": True})
            continue
        agg = reached.groupby(["n_prompts", "n_rollouts", "total_batch", "configuration"], as_index=False).agg(
            value=(by, "median"), S_B=("S_B", "median"),
            time_to_target_h=("time_to_target_h", "median"), gpu_hours=("gpu_hours", "median"))
        best = agg.loc[agg["value"].astype(float).idxmin()]
        cens = sub[sub["censored"].astype(bool) & sub[by].notna()]
        rows.append({"threshold": t, "n_prompts": best["n_prompts"], "n_rollouts": best["n_rollouts"],
                     "total_batch": best["total_batch"], "configuration": best["configuration"],
                     "time_to_target_h": _float(best["time_to_target_h"]),
                     "gpu_hours": _float(best["gpu_hours"]), "S_B": _float(best["S_B"]),
                     "value": _float(best["value"]), "n_configs": len(agg),
                     "undetermined": bool((cens[by].astype(float) < _float(best["value"])).any())})
    out = pd.DataFrame(rows)
    for col in ("time_to_target_h", "gpu_hours", "S_B", "value"):
        if col in out:
            out[col] = out[col].astype(float)
    return int_columns(out, ("n_prompts", "n_rollouts", "total_batch"))


# ------------------------------------------------------------------------------------------
# Step-time model T_step(n_prompts, n_rollouts)
# ------------------------------------------------------------------------------------------
def step_time_table(wall_or_runs: pd.DataFrame, time_col: str = "mean_step_time_s") -> pd.DataFrame:
    """One row per run (run_id, n_prompts, n_rollouts, total_batch, n_gpus, step_time_s) from a
    wall_clock_table (one row per run and threshold) or any per-run table with `time_col`."""
    df = wall_or_runs
    if "run_id" in df.columns:
        df = df.drop_duplicates("run_id")
    out = pd.DataFrame({col: pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                        for col in ("n_prompts", "n_rollouts")})
    out["total_batch"] = out["n_prompts"] * out["n_rollouts"]
    out["n_gpus"] = (pd.to_numeric(df["n_gpus"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                     if "n_gpus" in df.columns else np.nan)
    out["step_time_s"] = pd.to_numeric(df[time_col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if "run_id" in df.columns:
        out.insert(0, "run_id", df["run_id"].astype(str).to_numpy())
    return out[np.isfinite(out["step_time_s"]) & np.isfinite(out["total_batch"])].reset_index(drop=True)


def step_time_model(wall_or_runs: pd.DataFrame, terms: str = "auto",
                    time_col: str = "mean_step_time_s") -> dict:
    """Fit the training step time against the batch: T_step = a + b_B B (terms='B') or, where
    both n_prompts and n_rollouts vary, T_step = a + b_B B + b_p n_prompts (terms='B+prompts':
    a per-sample cost (generation, log-probs, updates) and a per-prompt cost (prompt prefill,
    which rollouts of one prompt share; per-group work)). terms='auto' takes the second when at
    least two values of each axis and five runs make it identifiable, and T_step = a + b_p
    n_prompts (terms='prompts', `B_fixed` in the result) for an iso-batch phase, where only the
    split of one B varies (predict_step_time then answers only at that B).

    Input: a wall_clock_table or a per-run table with n_prompts, n_rollouts and `time_col`
    (one mean step time per run). Ordinary least squares over the runs.
    Returns {status ('ok' | 'insufficient'), reason, terms, formula, coef {a, b_B[, b_p]} (s,
    s per sample, s per prompt), se (standard errors), r2, resid_sd_s, rel_resid_sd (residual
    sd over the mean step time), n_runs, n_gpus (distinct GPU counts; a note when they differ),
    B_range}. `predict_step_time` evaluates it.
    """
    table = step_time_table(wall_or_runs, time_col)
    n = len(table)
    gpus = sorted(int(g) for g in table["n_gpus"].dropna().unique()) if n else []
    out = {"status": "insufficient", "reason": "", "terms": [], "formula": "", "coef": {}, "se": {},
           "r2": np.nan, "resid_sd_s": np.nan, "rel_resid_sd": np.nan, "n_runs": n,
           "n_gpus": gpus, "B_range": (float(table["total_batch"].min()), float(table["total_batch"].max()))
           if n else (np.nan, np.nan)}
    both = table["n_prompts"].nunique() >= 2 and table["n_rollouts"].nunique() >= 2 if n else False
    if terms == "auto":
        one_b = n and table["total_batch"].nunique() == 1
        terms = "prompts" if one_b and both else "B+prompts" if both and n >= 5 else "B"
    columns = {"B": ["total_batch"], "B+prompts": ["total_batch", "n_prompts"], "prompts": ["n_prompts"]}[terms]
    names = ["a"] + [{"total_batch": "b_B", "n_prompts": "b_p"}[c] for c in columns]
    out["terms"] = names
    out["formula"] = {"B": "T_step = a + b_B·B", "B+prompts": "T_step = a + b_B·B + b_p·n_prompts",
                      "prompts": "T_step = a + b_p·n_prompts"}[terms]
    if terms == "prompts":  # an iso-batch phase: how the split of one B changes the step time
        out["B_fixed"] = float(table["total_batch"].iloc[0])
        out["formula"] += f" (at B = {out['B_fixed']:.0f})"
    X = np.column_stack([np.ones(n)] + [table[c].to_numpy() for c in columns])
    if n <= len(names) or table[columns[0]].nunique() < 2 or np.linalg.matrix_rank(X) < len(names):
        out["reason"] = (f"{n} run(s) at {table['total_batch'].nunique() if n else 0} batch size(s): "
                         f"too few to fit {out['formula']} with an uncertainty")
        return out
    y = table["step_time_s"].to_numpy()
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = n - len(names)
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.inv(X.T @ X)
    tss = float(((y - y.mean()) ** 2).sum())
    out.update(status="ok", coef=dict(zip(names, map(float, coef), strict=True)),
               se=dict(zip(names, map(float, np.sqrt(np.diag(cov))), strict=True)),
               r2=1.0 - float(resid @ resid) / tss if tss > 0 else np.nan,
               resid_sd_s=math.sqrt(sigma2), rel_resid_sd=math.sqrt(sigma2) / float(y.mean()),
               cov=cov.tolist())
    if len(gpus) > 1:
        out["reason"] = f"runs use different GPU counts {gpus}: the model mixes them"
    return out


def predict_step_time(model: dict, n_prompts, n_rollouts) -> tuple[np.ndarray, np.ndarray]:
    """(predicted step time in s, its standard error from the coefficients' covariance) at
    the given n_prompts and n_rollouts (arrays broadcast); NaN when the model is not `ok`."""
    n_p, n_r = np.broadcast_arrays(np.asarray(n_prompts, dtype=float), np.asarray(n_rollouts, dtype=float))
    if model.get("status") != "ok":
        return np.full(n_p.shape, np.nan), np.full(n_p.shape, np.nan)
    term = {"a": np.ones(n_p.shape), "b_B": n_p * n_r, "b_p": n_p}
    X = np.stack([term[k] for k in model["terms"]], axis=-1)
    beta = np.array([model["coef"][k] for k in model["terms"]])
    cov = np.asarray(model["cov"])
    pred = X @ beta
    se = np.sqrt(np.einsum("...i,ij,...j->...", X, cov, X))
    if "B_fixed" in model:  # an iso-batch model holds at its batch size only
        off = ~np.isclose(n_p * n_r, model["B_fixed"])
        pred, se = np.where(off, np.nan, pred), np.where(off, np.nan, se)
    return pred, se
