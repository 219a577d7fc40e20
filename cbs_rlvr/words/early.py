"""A running sweep said: how far it is, the answer it already gives, which runs can stop
(`running_sentence`, the index's line while runs run), and which targets it answers yet
(`targets_sentence`). Each reads the table it speaks for: the row of OUT/<phase>/tables/
sweep_progress.csv (plan/running.py writes it), cbs_fit and forecast.csv.
"""

from __future__ import annotations

import math

from .numbers import as_float as _f
from .numbers import count, duration, interval, percent

#: sweep_progress.csv: how far a running sweep is, the answer if every run goes on, the stop list
PROGRESS_COLUMNS = ["done", "spent", "left", "unit", "n_running", "threshold", "n_prompts", "n_rollouts",
                    "total_batch", "predicted_hours", "predicted_hours_lo", "predicted_hours_hi", "B_noise",
                    "B_noise_lo", "B_noise_hi", "stop_runs", "gpu_hours_saved"]


def _listing(values) -> str:
    v = [str(x) for x in values]
    return v[0] if len(v) == 1 else ", ".join(v[:-1]) + " and " + v[-1]


def running_sentence(row: dict) -> str:
    """The index's line while runs run, from a sweep_progress.csv row: 'This sweep is 50% done
    (31 of 62 GPU-hours to the runs' budgets); the answer is already 64 prompts × 8 rollouts
    (B = 512) to reach 0.6, 3.1 h [2.8, 3.5] of training, B_noise 420 [300, 610] samples; stop
    runs A and B to save 12 GPU-hours.' Empty when no run is running."""
    if not row or not _f(row.get("n_running")) > 0:
        return ""
    row = {k: v if k in ("unit", "stop_runs") else _f(v) for k, v in row.items()}  # a CSV row's strings too
    unit = str(row.get("unit") or "hours")
    spent, left = _f(row.get("spent")), _f(row.get("left"))
    head = f"This sweep is {percent(row.get('done'))} done ({count(spent)} of {count(spent + left)} {unit} to the runs' budgets)"
    if math.isfinite(_f(row.get("total_batch"))):
        what = (f"the answer is already {count(row['n_prompts'])} prompts × {count(row['n_rollouts'])} rollouts "
                f"(B = {count(row['total_batch'])}) to reach {_f(row['threshold']):g}, "
                f"{duration(row.get('predicted_hours'), row.get('predicted_hours_lo'), row.get('predicted_hours_hi'))}"
                f" of training, B_noise {interval(row.get('B_noise'), row.get('B_noise_lo'), row.get('B_noise_hi'), 'samples')}")
    else:
        what = "no target has an answer yet (3 batch sizes must reach one)"
    names = [n for n in str(row.get("stop_runs") or "").split("; ") if n and n.lower() != "nan"]
    if names:
        act = (f"stop run{'s' if len(names) > 1 else ''} {_listing(names)} to save "
               f"{count(row.get('gpu_hours_saved'))} {unit}")
    else:
        act = "no run can stop yet without moving the answer"
    return f"{head}; {what}; {act}."


def targets_sentence(cbs_fit, forecast=None) -> str:
    """Which targets a (running) sweep answers yet and which not, and why: 'Answers at 0.3 and 0.4
    (3 or more batch sizes reached each); not yet at 0.5 (2 batch sizes reached it; 3 more are
    forecast to, by step 410) and 0.6 (no run has reached it yet: no forecast).'"""
    import numpy as np

    if cbs_fit is None or not len(cbs_fit):
        return "No target has a fit."
    usable = cbs_fit["status"].isin(["ok", "extrapolated"])
    done = [f"{t:g}" for t in cbs_fit.loc[usable, "threshold"].astype(float)]
    parts = [f"Answers at {_listing(done)} (3 or more batch sizes reached each)" if done
             else "No target is answered yet (3 batch sizes must reach one)"]
    later = []
    for r in cbs_fit[~usable].itertuples():
        n = int(r.n_reached) if np.isfinite(r.n_reached) else 0
        why = f"{n} batch size{'s' if n != 1 else ''} reached it" if n else "no run has reached it yet"
        f = forecast[np.isclose(forecast["threshold"].astype(float), float(r.threshold)) & ~forecast["observed"]
                     & (forecast["state"] == "running")] if forecast is not None and len(forecast) else None
        if f is not None and len(f):
            likely = f[f["p_reach"].astype(float) >= 0.5]
            sizes = likely.assign(B=likely["n_prompts"].astype(float) * likely["n_rollouts"].astype(float))["B"].nunique()
            if sizes:
                why += (f"; {sizes} more batch size{'s are' if sizes != 1 else ' is'} forecast to, by step "
                        f"{likely['step'].max():,.0f}")
            elif f["step"].isna().all():
                why += ": no forecast (beyond the accuracy any run has reached)"
            else:
                why += "; no running run is forecast to within its budget"
        later.append(f"{r.threshold:g} ({why})")
    if later:
        parts.append("not yet at " + _listing(later))
    return "; ".join(parts) + "."


#: the legend of a forecast crossing in 02's and 08's figures (open circle, bar over its interval)
FORECAST_LABEL = "forecast crossing of a running run (90% interval)"


def forecast_alt(n_runs: int, n_forecasts: int) -> str:
    """The alt text's line for a figure that draws forecasts: they are named as forecasts, with how
    many runs and crossings they are ('' for none)."""
    if not n_forecasts:
        return ""
    runs = "1 running run has" if n_runs == 1 else f"{count(n_runs)} running runs have"
    what = "1 crossing" if n_forecasts == 1 else f"{count(n_forecasts)} crossings"
    return (f"Open circles with bars are forecasts, not measurements: {what} that {runs} not made yet, "
            "each where it is forecast with its 90% interval.")
