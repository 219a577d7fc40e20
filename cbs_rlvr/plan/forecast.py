"""Forecasts of a running sweep: for every run still below a target (running or stopped), the step
it will cross at with a 90% interval and its chance to cross within its step budget
(OUT/<phase>/tables/forecast.csv), and the phase's fit with the running runs' forecasts in it.

The forecasts come from the progress model of every evaluation (fit/allevals.py): the curve at the
run's batch at the run's own speed, with the curve's bootstrap, the speed's uncertainty and the
run's path variance measured on the sweep's own runs (fit/runpath.py); a forecast is conditioned
on what the run showed, that it had not crossed by its last evaluation. A target no run of the
phase has reached has no forecast (the curve there is unknown): the row says so. A run that
crossed is listed too while it runs (observed, its measured crossing). The budget is the run's
`trainer.total_training_steps`, else the phase's longest run.

The running runs' forecasts enter the crossing fit as multiple imputations (fit/imputed.py): the
decision and every interval downstream then carry them with their uncertainty. A sweep with no
running run keeps its fit as it was.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.runs import config_lookup
from ..fit.allevals import ProgressFit, fit_all_evals
from ..fit.imputed import N_IMPUTATIONS, fit_with_forecasts
from ..fit.result import PhaseFit
from ..fit.runpath import PathNoise, path_noise

FORECAST_COLUMNS = ["run_name", "n_prompts", "n_rollouts", "threshold", "observed", "step", "step_lo", "step_hi",
                    "p_reach"]
FORECAST_EXTRA_COLUMNS = ["run_id", "state", "last_step", "budget", "step_median", "note"]
#: the forecast interval's coverage
LEVEL = 0.90
#: predictive samples per curve draw
N_PER_DRAW = 40
BUDGET_KEY = "trainer.total_training_steps"
#: a target is forecast only once this many batch sizes reached it (the crossing fit's own rule): the
#: curve's noise scale at an accuracy is known only from batch sizes that got there, and a level one
#: batch size reached is the polynomial's extrapolation (on the real trainer it put crossings at 1e10 steps)
MIN_SIZES_REACHED = 3
#: with n_val known, a progress curve whose evaluations scatter more than this many times the binomial
#: variance about it does not describe them (the real trainer: 1.0-1.2; benchmarks/run.py's phase at 1,000
#: runs x 2,000 evaluations: 1.7; a fit stopped on a wrong ridge, as before its start came from the
#: crossings: 5-22): no forecasts then
MAX_DISPERSION = 4.0


@dataclass
class PhaseForecast:
    """A phase's forecasts: `table` (forecast.csv), `cells` ((run_id, threshold) -> (log-step draws,
    log budget) of the running runs' crossings to come), `fit` (the crossing fit with them),
    `progress` and `noise` (the models behind them), `running` (run ids), `notes`."""
    table: pd.DataFrame
    fit: PhaseFit | None
    cells: dict = field(default_factory=dict)
    progress: ProgressFit | None = None
    noise: PathNoise | None = None
    running: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    frontier: dict = field(default_factory=dict)


def run_budgets(runs: pd.DataFrame) -> pd.Series:
    """run_id -> the run's step budget (verl's trainer.total_training_steps; NaN where absent)."""
    out = {}
    for rid, cfg in zip(runs["run_id"].astype(str), runs.get("config", pd.Series([None] * len(runs))), strict=True):
        if isinstance(cfg, str):
            try:
                cfg = json.loads(cfg)
            except ValueError:
                cfg = None
        value = config_lookup(cfg, BUDGET_KEY) if isinstance(cfg, dict) else None
        try:
            out[rid] = float(value) if value is not None and float(value) > 0 else np.nan
        except (TypeError, ValueError):
            out[rid] = np.nan
    return pd.Series(out, dtype=float)


def predictive(pf: ProgressFit, noise: PathNoise, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(mu (M, R, n), sd (R, n)): per curve draw the mean log S of every run at every threshold,
    and the sd about it (speed and path): a normal per draw, before conditioning on the bound."""
    thr = np.asarray(thresholds, dtype=float)
    if len(pf.draws):
        mu = np.stack([pf.target_log_steps(thr, th) - pf.u_draws[m][:, None] for m, th in enumerate(pf.draws)])
    else:
        mu = (pf.target_log_steps(thr) - pf.u[:, None])[None]
    last = np.log(np.maximum(np.nan_to_num(pf.data.last_steps(), nan=1.0), 1.0))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a target beyond the curve: all-NaN, no forecast
        h = np.nanmedian(mu, axis=0) - last[:, None]
    sd = np.sqrt(noise.var(np.where(np.isfinite(h), h, 0.0)) + pf.u_var[:, None])
    return mu, sd


def _cell(mu: np.ndarray, sd: float, log_last: float, log_budget: float, rng) -> dict:
    """One forecast: samples of log S above the bound (a mixture over the draws of truncated
    normals), its median and 90% interval, and the chance to cross by the budget."""
    from scipy import special, stats

    mu = mu[np.isfinite(mu)]
    if not mu.size:
        return {}
    a = (log_last - mu) / sd
    lo_p = special.ndtr(a)
    u = lo_p[:, None] + (1.0 - lo_p[:, None]) * rng.random((mu.size, N_PER_DRAW))
    x = mu[:, None] + sd * stats.norm.ppf(np.clip(u, 1e-12, 1 - 1e-12))
    x = np.maximum(x, log_last).ravel()
    q = np.quantile(x, [(1 - LEVEL) / 2, 0.5, (1 + LEVEL) / 2])
    p = np.nan
    if np.isfinite(log_budget):
        tail = np.maximum(1.0 - lo_p, 1e-300)
        p = float(np.mean(np.clip((special.ndtr((log_budget - mu) / sd) - lo_p) / tail, 0.0, 1.0)))
    return {"lo": q[0], "median": q[1], "hi": q[2], "p_reach": p, "samples": x}


def _states(runs: pd.DataFrame) -> dict:
    return dict(zip(runs["run_id"].astype(str), runs.get("state", pd.Series(["unknown"] * len(runs))).astype(str),
                    strict=True))


def _observed(fit: PhaseFit | None) -> dict:
    """(run_id, threshold) -> measured crossing step of the fit's S(B) table (reached cells)."""
    if fit is None or fit.sb_eb is None or not len(fit.sb_eb):
        return {}
    sb = fit.sb_eb
    hit = sb[~sb["censored"].astype(bool) & np.isfinite(pd.to_numeric(sb["S_B"], errors="coerce"))]
    return {(str(r), float(t)): float(s) for r, t, s in zip(hit["run_id"], hit["threshold"], hit["S_B"], strict=True)}


def known_targets(fit: PhaseFit | None, thresholds) -> list[float]:
    """The targets MIN_SIZES_REACHED batch sizes or more reached (all of them without a fit)."""
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    if fit is None or "n_reached" not in fit.table:
        return thr
    n = dict(zip(fit.table["threshold"].astype(float), pd.to_numeric(fit.table["n_reached"], errors="coerce"),
                 strict=True))
    return [t for t in thr if n.get(t, 0) >= MIN_SIZES_REACHED]


def _last_step(pf: ProgressFit, r: int) -> float:
    s = pf.data.s[pf.data.run(r)]
    return float(s.max()) if s.size else np.nan


def _row(pf: ProgressFit, r: int, t: float, state: str, budget: float, cast: dict | None, seen: float | None):
    last = _last_step(pf, r)
    row = {"run_name": pf.run_name[r], "run_id": pf.run_id[r], "threshold": float(t), "state": state,
           "last_step": last, "budget": budget, "observed": seen is not None, "note": ""}
    if seen is not None:
        row.update(step=seen, step_lo=seen, step_hi=seen, step_median=seen, p_reach=1.0)
    elif not cast:
        row.update(step=np.nan, step_lo=np.nan, step_hi=np.nan, step_median=np.nan, p_reach=np.nan,
                   note=f"fewer than {MIN_SIZES_REACHED} batch sizes have reached this accuracy yet: no forecast")
    else:
        row.update(step=math.exp(cast["median"]), step_lo=math.exp(cast["lo"]), step_hi=math.exp(cast["hi"]),
                   step_median=math.exp(cast["median"]), p_reach=cast["p_reach"])
        if state != "running":
            row["note"] = f"stopped ({state}): where it would cross if it went on"
    return row


def forecast_table(pf: ProgressFit, noise: PathNoise, runs: pd.DataFrame, thresholds, fit: PhaseFit | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """forecast.csv (FORECAST_COLUMNS, then FORECAST_EXTRA_COLUMNS) and the running runs' cells
    ((run_id, threshold) -> (log-step samples, log budget)) for the imputation."""
    rng = np.random.default_rng(seed)
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    states, budgets, seen = _states(runs), run_budgets(runs), _observed(fit)
    meta = runs.set_index(runs["run_id"].astype(str))
    longest = float(pf.data.s.max(initial=np.nan))
    mu, sd = predictive(pf, noise, thr)
    known = set(known_targets(fit, thr))
    rows, cells = [], {}
    for r, rid in enumerate(pf.run_id):
        state = states.get(rid, "unknown")
        last = _last_step(pf, r)
        budget = float(budgets.get(rid, np.nan))
        budget = budget if np.isfinite(budget) else longest
        stop_at = budget if state == "running" else (max(budget, last) if state in ("failed", "crashed", "killed")
                                                     else last)
        for j, t in enumerate(thr):
            s_seen = seen.get((rid, t))
            if s_seen is not None and state != "running":
                continue
            cast = None
            if s_seen is None and t in known and np.isfinite(last) and last > 0:
                cast = _cell(mu[:, r, j], float(sd[r, j]), math.log(last), math.log(stop_at), rng)
            rows.append(_row(pf, r, t, state, budget, cast, s_seen))
            if cast and state == "running":
                cells[(rid, t)] = (cast["samples"][rng.permutation(cast["samples"].size)[:256]], math.log(budget))
    table = pd.DataFrame(rows, columns=["run_name", "threshold", "observed", "step", "step_lo", "step_hi", "p_reach",
                                        *FORECAST_EXTRA_COLUMNS])
    table["n_prompts"] = [meta["n_prompts"].get(rid, np.nan) for rid in table["run_id"]]
    table["n_rollouts"] = [meta["n_rollouts"].get(rid, np.nan) for rid in table["run_id"]]
    table = table[FORECAST_COLUMNS + FORECAST_EXTRA_COLUMNS]
    return table.astype({"n_prompts": "Int64", "n_rollouts": "Int64", "observed": bool}), cells


def forecast_hours(forecast: pd.DataFrame, step_times: pd.DataFrame) -> pd.DataFrame:
    """forecast.csv's rows with total_batch and the training hours to each forecast step (hours,
    hours_lo, hours_hi): the steps times the run's mean step time (wallclock.step_time_table), the
    training time the measured time_to_target_h counts too. NaN for a run without step times."""
    out = forecast.copy()
    per_step = dict(zip(step_times["run_id"].astype(str), step_times["step_time_s"].astype(float), strict=True)) \
        if len(step_times) and "run_id" in step_times else {}
    seconds = out["run_id"].astype(str).map(per_step).astype(float) if len(out) else pd.Series(dtype=float)
    out["total_batch"] = pd.to_numeric(out["n_prompts"], errors="coerce") * pd.to_numeric(out["n_rollouts"],
                                                                                          errors="coerce")
    for col, src in (("hours", "step"), ("hours_lo", "step_lo"), ("hours_hi", "step_hi")):
        out[col] = pd.to_numeric(out[src], errors="coerce") * seconds / 3600.0
    return out


def empty_forecast() -> pd.DataFrame:
    return pd.DataFrame(columns=FORECAST_COLUMNS + FORECAST_EXTRA_COLUMNS)


def forecast_phase(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val, fit: PhaseFit | None,
                   n_draws: int = 100, n_bootstrap: int = 1000, n_imputations: int = N_IMPUTATIONS,
                   seed: int = 0) -> PhaseForecast:
    """The phase's forecasts and its fit with them (module docstring). `fit`: the phase's
    fit_phase (its S(B) table says which runs crossed; its form is the progress model's)."""
    states = _states(runs)
    running = [rid for rid, s in states.items() if s == "running"]
    below = fit is not None and len(fit.sb_eb) and fit.sb_eb["censored"].astype(bool).any()
    if not running and not below:
        return PhaseForecast(empty_forecast(), fit, notes=["every run finished and crossed every target"])
    form = "auto" if fit is None or not fit.chosen else ("mccandlish" if fit.chosen == "mccandlish" else "general")
    pf = fit_all_evals(runs, history, metric, thresholds, n_val, form=form, n_draws=n_draws, seed=seed)
    if pf is None:
        return PhaseForecast(empty_forecast(), fit, running=running,
                             notes=["no run has evaluations enough for a progress curve: no forecast"])
    if pd.notna(n_val) and float(n_val or 0) > 0 and pf.phi > MAX_DISPERSION:
        return PhaseForecast(empty_forecast(), fit, running=running, progress=pf,
                             notes=[f"the evaluations scatter {pf.phi:.1f} times the binomial variance about the "
                                    "progress curve: it does not describe them, no forecast"])
    noise = path_noise(pf)
    table, cells = forecast_table(pf, noise, runs, thresholds, fit, seed)
    # n_imputations = 0: the forecasts alone (02's figure), the fit as it was
    new_fit = fit_with_forecasts(fit, cells, n_bootstrap, n_imputations, seed) if fit is not None and n_imputations \
        else fit
    return PhaseForecast(table, new_fit, cells, pf, noise, running, list(pf.notes),
                         frontier_reach(pf, noise, runs, seed, known_targets(fit, thresholds)))


def frontier_reach(pf: ProgressFit, noise: PathNoise, runs: pd.DataFrame, seed: int = 0, known=None) -> dict:
    """run_id -> the chance that a running run reaches, within its budget, the highest target
    `known` (one MIN_SIZES_REACHED batch sizes reached; default: the highest accuracy any run
    reached), 1 where it has: below it, a run can add no crossing beyond what the sweep answers.
    Empty when no target is known (no run is then below the frontier for good)."""
    if known is not None and not len(known):
        return {}
    from ..measure.crossings import crossings

    rng = np.random.default_rng(seed)
    states, budgets = _states(runs), run_budgets(runs)
    top = float(max(known)) if known is not None else float(pf.levels[-1]) - 1e-9
    mu, sd = predictive(pf, noise, [top])
    longest = float(pf.data.s.max(initial=np.nan))
    out = {}
    for r, rid in enumerate(pf.run_id):
        if states.get(rid) != "running":
            continue
        s, y = pf.data.s[pf.data.run(r)], pf.data.y[pf.data.run(r)]
        budget = float(budgets.get(rid, np.nan))
        budget = budget if np.isfinite(budget) else longest
        if not s.size:
            out[rid] = np.nan
            continue
        if not crossings(s, y, [top], "isotonic")[1][0]:
            out[rid] = 1.0
            continue
        cast = _cell(mu[:, r, 0], float(sd[r, 0]), math.log(max(s.max(), 1.0)), math.log(budget), rng)
        out[rid] = cast.get("p_reach", np.nan) if cast else np.nan
    return out

