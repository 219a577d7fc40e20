"""Wall-clock time to target: cumulative logged step time up to the crossing, GPU-hours."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .measure import crossings, eval_series, int_columns, run_meta


# ------------------------------------------------------------------------------------------
# Wall clock
# ------------------------------------------------------------------------------------------
def wall_clock_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                     method: str = "isotonic",
                     time_keys=("perf/time_per_step", "timing_s/step")) -> pd.DataFrame:
    """Wall-clock time to each target: the sum of the logged step times of steps 1..S, with
    the fraction of step ceil(S) for an interpolated crossing S (censored: up to the last
    eval step, a lower bound). The first of time_keys that a run logs is used; steps
    without a time get the run's median step time (counted in n_steps_imputed).
    GPU-hours = hours x n_gpus where the config gives GPU counts.
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = run_meta(runs)
    series = eval_series(history, metric)
    hist_by_run = {str(k): v for k, v in history.groupby("run_id", sort=False)}
    rows = []
    for m in meta.itertuples(index=False):
        s, a, _ = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = crossings(s, a, thr, method)
        h = hist_by_run.get(m.run_id)
        key, t_step = None, None
        if h is not None:
            for k in time_keys:
                if k in h.columns and np.isfinite(h[k].to_numpy(dtype=float)).any():
                    key = k
                    break
        if key is not None:
            st = h["step"].to_numpy(dtype=float)
            tv = h[key].to_numpy(dtype=float)
            okt = np.isfinite(tv) & (st >= 1)
            last = int(max(np.nanmax(st), np.nanmax(s) if len(s) else 0))
            t_step = np.full(last, np.nan)  # index i holds step i + 1
            t_step[st[okt].astype(int) - 1] = tv[okt]
            med = float(np.nanmedian(t_step)) if np.isfinite(t_step).any() else np.nan
            n_missing = np.isnan(t_step)
            t_step = np.where(n_missing, med, t_step)
            cum = np.concatenate([[0.0], np.cumsum(t_step)])
            mean_step = float(np.nanmean(tv[okt])) if okt.any() else np.nan
        n_gpus = float(m.n_gpus) if m.n_gpus is not None and pd.notna(m.n_gpus) else np.nan
        for t, sv, cv in zip(thr, S, cens, strict=True):
            secs, n_imp = np.nan, 0
            if t_step is not None and np.isfinite(sv):
                k = min(int(math.floor(sv)), len(t_step))
                frac = sv - k if k < len(t_step) else 0.0
                secs = cum[k] + (frac * t_step[k] if frac > 0 else 0.0)
                n_imp = int(n_missing[: min(int(math.ceil(sv)), len(t_step))].sum())
            rows.append({"run_id": m.run_id, "run_name": m.run_name, "n_prompts": m.n_prompts,
                         "n_rollouts": m.n_rollouts, "total_batch": m.total_batch,
                         "n_gpus": n_gpus, "threshold": t, "S_B": sv, "censored": bool(cv),
                         "time_to_target_s": secs, "time_to_target_h": secs / 3600.0,
                         "gpu_hours": secs / 3600.0 * n_gpus,
                         "mean_step_time_s": mean_step if t_step is not None else np.nan,
                         "n_steps_imputed": n_imp, "time_key": key})
    return int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))


def fastest_batch(wall_clock: pd.DataFrame, by: str = "time_to_target_h") -> pd.DataFrame:
    """Per threshold, the (n_prompts, n_rollouts) configuration that reaches the target in the
    least wall-clock time (`by`; median over replicates that reach it). `undetermined` is True
    when a run that never reached the target had stopped earlier than that (its time is only a
    lower bound, so it might have been faster)."""
    rows = []
    for t, sub in wall_clock.groupby("threshold", sort=True):
        reached = sub[~sub["censored"] & sub[by].notna()]
        if reached.empty:
            rows.append({"threshold": t, "n_configs": 0, "undetermined": True})
            continue
        agg = reached.groupby(["n_prompts", "n_rollouts", "total_batch"], as_index=False).agg(
            value=(by, "median"), S_B=("S_B", "median"),
            time_to_target_h=("time_to_target_h", "median"), gpu_hours=("gpu_hours", "median"))
        best = agg.loc[agg["value"].idxmin()]
        cens = sub[sub["censored"] & sub[by].notna()]
        rows.append({"threshold": t, "n_prompts": best["n_prompts"], "n_rollouts": best["n_rollouts"],
                     "total_batch": best["total_batch"], "time_to_target_h": best["time_to_target_h"],
                     "gpu_hours": best["gpu_hours"], "S_B": best["S_B"], "n_configs": len(agg),
                     "undetermined": bool((cens[by] < best["value"]).any())})
    return int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))



