"""A running phase's early answers in one call (issue 26): the crossing forecasts of its running
runs (plan/forecast.py: forecast.csv), the crossing fit with them imputed (the decision uses it),
the runs that can stop (plan/stop.py: stop_runs.csv), and the row the index's sentence reads
(sweep_progress.csv, words/early.py). Nothing is computed for a phase with no run running: a
finished sweep's fit, tables and answers stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..fit.imputed import N_IMPUTATIONS
from ..fit.result import PhaseFit
from ..words.early import PROGRESS_COLUMNS
from .forecast import FORECAST_COLUMNS, PhaseForecast, forecast_phase
from .stop import StopPlan, stop_runs

#: an imputation's share of the bootstrap is at least this many tables (fewer imputations below)
TABLES_PER_IMPUTATION = 25


@dataclass
class EarlyAnswers:
    """forecast.csv (`forecast`), stop_runs.csv (`stop`), sweep_progress.csv's one row (`progress`),
    the crossing fit with the forecasts imputed (`fit`), and the objects behind them."""
    forecast: pd.DataFrame
    stop: pd.DataFrame
    progress: pd.DataFrame
    fit: PhaseFit
    forecasts: PhaseForecast
    plan: StopPlan


def is_running(runs: pd.DataFrame) -> bool:
    """Whether any run of the phase is still running (W&B's state)."""
    return "state" in runs and bool((runs["state"].astype(str) == "running").any())


def progress_row(plan: StopPlan, runs: pd.DataFrame) -> dict:
    """sweep_progress.csv's row: how far the sweep is, the answer if every run goes on, the stop
    list (names; a name that several runs share carries its run id) and what stopping saves."""
    names = runs["name"].astype(str)
    shared = set(names[names.duplicated()])
    t = plan.table
    stop = [f"{n} ({i})" if n in shared else n for n, i in zip(t["run_name"].astype(str), t["run_id"].astype(str),
                                                               strict=True)]
    row = {**{k: plan.progress.get(k, np.nan) for k in ("done", "spent", "left", "unit", "n_running")},
           **{k: plan.answer.get(k, np.nan) for k in PROGRESS_COLUMNS[5:15]},
           "stop_runs": "; ".join(stop), "gpu_hours_saved": float(t["gpu_hours_saved"].sum()) if len(t) else 0.0}
    return row


def early_answers(phase: str, runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val,
                  fit: PhaseFit, step_model: dict, step_times: pd.DataFrame, target: float | None = None,
                  n_bootstrap: int = 400, seed: int = 0) -> EarlyAnswers | None:
    """The phase's forecasts, its fit with them, its stop list and its progress row; None when no
    run is running. fit: the phase's fit_phase; step_model, step_times: wallclock's; target: the
    params' decision_target."""
    if not is_running(runs):
        return None
    # the progress curve's bootstrap refits and the imputations scale with the resampling asked for:
    # each imputation carries an equal share of the bootstrap, TABLES_PER_IMPUTATION tables or more
    n_imp = int(np.clip(n_bootstrap // TABLES_PER_IMPUTATION, 2, N_IMPUTATIONS))
    fc = forecast_phase(runs, history, metric, thresholds, n_val, fit, n_draws=min(100, n_bootstrap),
                        n_bootstrap=n_bootstrap, n_imputations=n_imp, seed=seed)
    plan = stop_runs(fc, fit, phase, runs, step_model, step_times, thresholds, target=target,
                     n_bootstrap=n_bootstrap, n_imputations=min(n_imp, 4), seed=seed)
    progress = pd.DataFrame([progress_row(plan, runs)], columns=PROGRESS_COLUMNS)
    return EarlyAnswers(fc.table, plan.table, progress, fc.fit if fc.fit is not None else fit, fc, plan)


def running_forecasts(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val, fit: PhaseFit,
                      n_draws: int = 100, seed: int = 0) -> pd.DataFrame:
    """forecast.csv's table without the fit it feeds (what 02's figure draws): empty when no run
    of the phase is running."""
    if not is_running(runs):
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    return forecast_phase(runs, history, metric, thresholds, n_val, fit, n_draws=n_draws, n_imputations=0,
                          seed=seed).table
