"""Which running runs can stop: those whose continuation changes neither the decision nor the
B_noise interval at the decision target by more than a stated amount (OUT/<phase>/tables/
stop_runs.csv), the GPU-hours stopping them saves, and the index's sentence for a running sweep.

The answer if every run goes on is the phase's fit with every running run's forecast imputed
(plan/forecast.py, fit/imputed.py): the decision at the decision target (the configuration with
the fewest expected hours) and B_noise's 95% interval there. Stopping a run means it stays a lower
bound at its last step. A run that has crossed every target stops for free (nothing it logs from
now on enters the answer). The others are tried one at a time, the most GPU-hours first: a run
joins the stop list when, with it and the runs already on the list left as lower bounds, the
decision is the same configuration and B_noise and both ends of its interval move by less than
STOP_TOLERANCE (a quarter) of the width of that interval, in log. Only runs that cannot add a
crossing beyond what the sweep has seen are tried: those that will not reach, within their budget,
the highest target 3 batch sizes have reached, and replicates of a configuration whose other run goes
on and is as far along (a target no run has reached yet has no forecast, so no answer today can
weigh it). The GPU-hours saved are the steps left to a run's budget times its mean step time
times its GPU count (hours where the count is unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..fit.imputed import fit_with_forecasts
from ..fit.result import PhaseFit
from ..words.numbers import count, interval
from .decide import decision_target
from .forecast import PhaseForecast, run_budgets
from .predict import RECOMMENDABLE, axis_model, predict

STOP_COLUMNS = ["run_name", "reason", "gpu_hours_saved"]
STOP_EXTRA_COLUMNS = ["run_id", "n_prompts", "n_rollouts", "last_step", "budget", "unit", "rule"]
#: B_noise and the ends of its 95% interval may move by at most this share of the interval's width
#: (in log) when runs stop: a narrow interval allows little, one that spans a decade a factor 1.8
STOP_TOLERANCE = 0.25
#: at most this many runs are tried (the most GPU-hours first)
MAX_CHECKS = 24
#: a run with less than this chance to reach the sweep's frontier within its budget adds no crossing beyond it
FRONTIER_REACH = 0.05


@dataclass
class StopPlan:
    """stop_runs.csv (`table`), the answer every run going on gives (`answer`), how far the sweep
    is (`progress`: spent, left and their unit), and the runs tried (`checks`)."""
    table: pd.DataFrame
    answer: dict
    progress: dict
    checks: list = field(default_factory=list)


def answer(fit: PhaseFit | None, phase: str, step_model: dict, step_times: pd.DataFrame, thresholds,
           target: float | None = None, seed: int = 0) -> dict:
    """The decision of a fit at `target` (default: its decision target): the configuration with the
    fewest expected hours among those a recommendation may rest on, its hours band, and B_noise's
    interval there. Empty where there is no usable target."""
    if fit is None or not len(fit.table):
        return {}
    t, _ = decision_target(fit.table, target)
    m = axis_model(phase, fit)
    if t is None or m is None:
        return {}
    pred = predict([m], step_model, step_times, [t], seed=seed).predictions[float(t)]
    tab = pred.table
    ok = tab["basis"].isin(RECOMMENDABLE) & np.isfinite(tab["expected_hours"].astype(float))
    row = fit.row(t)
    out = {"threshold": float(t), "B_noise": float(row["B_noise"]), "B_noise_lo": float(row["B_noise_lo"]),
           "B_noise_hi": float(row["B_noise_hi"]), "status": str(row["status"])}
    if ok.any():
        best = tab[ok].loc[tab.loc[ok, "expected_hours"].astype(float).idxmin()]
        out.update({k: float(best[k]) for k in ("n_prompts", "n_rollouts", "total_batch", "predicted_hours",
                                                 "predicted_hours_lo", "predicted_hours_hi")})
    return out


def same_answer(a: dict, b: dict, tolerance: float = STOP_TOLERANCE) -> bool:
    """The same configuration, and B_noise and both ends of its interval within `tolerance` of the
    reference `a`'s interval width (in log)."""
    if not a or not b or a.get("total_batch") != b.get("total_batch"):
        return False
    if (a.get("n_prompts"), a.get("n_rollouts")) != (b.get("n_prompts"), b.get("n_rollouts")):
        return False
    lo, hi = a.get("B_noise_lo", np.nan), a.get("B_noise_hi", np.nan)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        return False
    lim = tolerance * math.log(hi / lo)
    for key in ("B_noise", "B_noise_lo", "B_noise_hi"):
        x, y = a.get(key, np.nan), b.get(key, np.nan)
        if not (np.isfinite(x) and np.isfinite(y) and x > 0 and y > 0) or abs(math.log(x / y)) > lim:
            return False
    return True


def sweep_progress(runs: pd.DataFrame, step_times: pd.DataFrame, budgets: pd.Series | None = None) -> pd.DataFrame:
    """One row per run: last_step, budget, mean step time (s), n_gpus, hours spent and left (to its
    budget while it runs), and the same in GPU-hours (NaN where the GPU count is unknown)."""
    budgets = run_budgets(runs) if budgets is None else budgets
    st = step_times.drop_duplicates("run_id").set_index("run_id") if "run_id" in step_times else pd.DataFrame()
    rid = runs["run_id"].astype(str)
    out = pd.DataFrame({"run_id": rid.to_numpy(), "run_name": runs["name"].astype(str).to_numpy(),
                        "state": runs["state"].astype(str).to_numpy(),
                        "n_prompts": pd.to_numeric(runs["n_prompts"], errors="coerce").to_numpy(float),
                        "n_rollouts": pd.to_numeric(runs["n_rollouts"], errors="coerce").to_numpy(float),
                        "last_step": pd.to_numeric(runs["last_step"], errors="coerce").to_numpy(float)})
    out["configuration"] = _configurations(runs)
    out["budget"] = [float(budgets.get(r, np.nan)) for r in out["run_id"]]
    out["step_time_s"] = [float(st["step_time_s"].get(r, np.nan)) if len(st) else np.nan for r in out["run_id"]]
    out["n_gpus"] = [float(st["n_gpus"].get(r, np.nan)) if len(st) else np.nan for r in out["run_id"]]
    left = np.where(out["state"] == "running", np.maximum(out["budget"] - out["last_step"], 0.0), 0.0)
    out["hours_spent"] = out["last_step"] * out["step_time_s"] / 3600.0
    out["hours_left"] = np.where(np.isfinite(left), left, 0.0) * out["step_time_s"] / 3600.0
    out["gpu_hours_spent"] = out["hours_spent"] * out["n_gpus"]
    out["gpu_hours_left"] = out["hours_left"] * out["n_gpus"]
    return out


def _configurations(runs: pd.DataFrame) -> np.ndarray:
    from ..measure.crossings import run_meta

    return run_meta(runs)["configuration"].astype(str).to_numpy()


def _unit(progress: pd.DataFrame) -> str:
    return "GPU-hours" if np.isfinite(progress["n_gpus"]).all() else "hours"


def progress_summary(progress: pd.DataFrame) -> dict:
    """spent, left and share done of the sweep, in GPU-hours (hours where a GPU count is unknown)."""
    unit = _unit(progress)
    col = "gpu_hours" if unit == "GPU-hours" else "hours"
    spent = float(np.nansum(progress[f"{col}_spent"]))
    left = float(np.nansum(progress[f"{col}_left"]))
    return {"spent": spent, "left": left, "done": spent / (spent + left) if spent + left > 0 else np.nan,
            "unit": unit, "n_running": int((progress["state"] == "running").sum())}


def _crossed_all(fc: PhaseForecast, rid: str, thresholds) -> bool:
    rows = fc.table[fc.table["run_id"] == rid]
    seen = set(rows.loc[rows["observed"].astype(bool), "threshold"].astype(float))
    return bool(len(rows)) and all(float(t) in seen for t in thresholds)


def _row(p: pd.Series, reason: str, rule: str, unit: str) -> dict:
    saved = p["gpu_hours_left"] if unit == "GPU-hours" else p["hours_left"]
    return {"run_name": p["run_name"], "reason": reason, "gpu_hours_saved": float(saved), "run_id": p["run_id"],
            "n_prompts": p["n_prompts"], "n_rollouts": p["n_rollouts"], "last_step": p["last_step"],
            "budget": p["budget"], "unit": unit, "rule": rule}


def _answer_words(a: dict) -> str:
    return (f"the decision ({count(a.get('n_prompts'))} × {count(a.get('n_rollouts'))}, "
            f"B = {count(a.get('total_batch'))}) and B_noise at {a['threshold']:g} "
            f"({interval(a['B_noise'], a['B_noise_lo'], a['B_noise_hi'], 'samples')})")


def _may_try(p: pd.Series, fc: PhaseForecast, prog: pd.DataFrame, stopped: set) -> str:
    """Why a run may be weighed for stopping ('' when it may not): below the sweep's frontier for
    good (it will not reach, within its budget, the highest target 3 batch sizes reached), or a run of
    its configuration that goes on is at least as far along. Else it may still cross a target no
    run has reached, which no answer today can weigh."""
    if fc.frontier.get(p["run_id"], np.nan) < FRONTIER_REACH:
        return "frontier"
    same = prog[(prog["state"] == "running") & (prog["run_id"] != p["run_id"]) & ~prog["run_id"].isin(stopped)
                & np.isclose(prog["n_prompts"], p["n_prompts"]) & np.isclose(prog["n_rollouts"], p["n_rollouts"])
                & (prog["configuration"] == p["configuration"]) & (prog["last_step"] >= p["last_step"])]
    return "replicate" if len(same) else ""


def stop_runs(fc: PhaseForecast, fit: PhaseFit, phase: str, runs: pd.DataFrame, step_model: dict,
              step_times: pd.DataFrame, thresholds, target: float | None = None, n_bootstrap: int = 400,
              n_imputations: int = 4, tolerance: float = STOP_TOLERANCE, seed: int = 0) -> StopPlan:
    """The runs that can stop (module docstring). fc: the phase's forecasts; fit: its fit_phase
    (the runs as lower bounds); runs: the phase's runs (state, config, last_step); step_model,
    step_times: wallclock's step-time model and per-run table."""
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    prog = sweep_progress(runs, step_times)
    unit = _unit(prog)
    left = prog[(prog["state"] == "running") & (prog["hours_left"] > 0)]
    left = left.sort_values("gpu_hours_left" if unit == "GPU-hours" else "hours_left", ascending=False)

    def answer_with(stopped: set, at: float | None) -> dict:
        cells = {k: v for k, v in fc.cells.items() if k[0] not in stopped}
        f = fit_with_forecasts(fit, cells, n_bootstrap, n_imputations, seed, targets="all")
        return answer(f, phase, step_model, step_times, thr, at, seed)

    # the answer the sweep will give if every run goes on, at the target it will then decide at
    ref = answer_with(set(), target)
    rows, stopped, checks = [], set(), []
    for _, p in left.iterrows():
        if _crossed_all(fc, p["run_id"], thr):
            rows.append(_row(p, f"crossed every target ({thr[0]:g} to {thr[-1]:g}): what it logs from now on "
                                "enters no answer", "crossed", unit))
            stopped.add(p["run_id"])
    for _, p in (left[~left["run_id"].isin(stopped)].head(MAX_CHECKS).iterrows() if ref else ()):
        why = _may_try(p, fc, prog, stopped)
        if not why:
            continue
        trial = answer_with(stopped | {p["run_id"]}, ref["threshold"])
        ok = same_answer(ref, trial, tolerance)
        checks.append({"run_id": p["run_id"], "rule": why, "same": ok, **{f"trial_{k}": v for k, v in trial.items()}})
        if ok:
            stopped.add(p["run_id"])
            lead = ("it will not reach the highest target the sweep answers within its budget" if why == "frontier"
                    else "a run of its configuration that goes on is as far along")
            rows.append(_row(p, f"{lead}, and as a lower bound at step {count(p['last_step'])} it leaves "
                                f"{_answer_words(ref)} within {tolerance:.0%} of the interval's width", why, unit))
    table = pd.DataFrame(rows, columns=STOP_COLUMNS + STOP_EXTRA_COLUMNS)
    return StopPlan(table.astype({"n_prompts": "Int64", "n_rollouts": "Int64"}), ref, progress_summary(prog), checks)

