"""Numbers and headers as a reader sees them: rounded, with units and thousands separators,
counts never in e-notation, a dash for a missing value, plain names for columns.

Pure functions over floats and strings (no pandas import at module level: the index page uses
them from the build).
"""

from __future__ import annotations

import math

DASH = "–"

#: Plain names for the columns a reader sees (tables in reports and on the index).
HEADERS = {
    "phase": "phase", "axis": "axis", "task": "task", "threshold": "target accuracy",
    "B_noise": "B_noise (samples)", "B_noise_lo": "B_noise low", "B_noise_hi": "B_noise high",
    "B_noise_ci": "B_noise (samples) [95% interval]", "status": "fit", "model": "model",
    "alpha": "alpha (S ∝ B^-alpha at small B)", "S_min": "fewest steps (large B)",
    "E_min": "fewest samples (small B)", "B_crit_20pct": "batch at 20% extra samples",
    "r2_log": "R² of log S", "n_points": "batch sizes", "n_censored": "stopped before the target",
    "n_prompts": "prompts", "n_rollouts": "rollouts", "total_batch": "batch B",
    "predicted_steps": "steps", "predicted_hours": "hours", "predicted_gpu_hours": "GPU-hours",
    "predicted_hours_lo": "hours low", "predicted_hours_hi": "hours high", "basis": "basis",
    "noise_sd_log": "noise (sd of log S)", "B_simple_over_B_noise": "B_simple / B_noise",
    "S_B": "steps to target", "E_B": "samples to target", "censored": "stopped before the target",
    "time_to_target_h": "hours to target", "gpu_hours": "GPU-hours", "n_gpus": "GPUs",
    "p_reach": "chance to reach the target",
    "action": "run", "cost": "cost", "rank": "rank", "run_name": "run", "to_step": "to step",
    "cost_unit": "cost unit",
    "objective": "best by", "predicted_samples": "samples", "run_id": "run id",
    "sigma_log": "residual sd of log S", "S_min_lo": "S_min low", "S_min_hi": "S_min high",
    "testing_h": "validation hours", "checkpoint_h": "checkpoint hours", "n_configs": "configurations",
    "lr": "learning rate", "lr_won": "best learning rate", "n_replicates": "replicates",
    "replicate": "replicate", "n_runs": "runs", "last_step": "last step", "n_gpus_per_node": "GPUs per node",
    "B_simple": "B_simple (samples)", "r2_log [95% CI]": "R² of log S",
    "expected_reduction_h": "expected hours saved", "reduction_lo_h": "saved low (80%)",
    "reduction_hi_h": "saved high (80%)", "why": "why", "regret_now_h": "expected hours lost today",
    "expected_hours": "expected hours", "left_out": "phase left out", "n_off_lines": "configurations off the others' axes",
    "n_cells": "predictions", "error_ratio": "errors / scatter (mean square)",
    "critical": "allowed (99%)", "rms_log_error": "rms error of log S", "passed": "passed",
    "weight_general": "weight of the bent form", "weight_mccandlish": "weight of the 1/B form",
}


def header(name) -> str:
    """The reader's name of a column (the name itself when it has none: B_noise and S_min are
    the quantities' own names)."""
    return HEADERS.get(name, name) if isinstance(name, str) else name


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def count(n) -> str:
    """An integer count with thousands separators: 33600 -> '33,600'; a dash when missing."""
    return f"{round(float(n)):,}" if _finite(n) else DASH


def number(x, unit: str = "", digits: int = 2) -> str:
    """A measured value to `digits` significant digits (at least the integer part), thousands
    separated, with its unit: 2013.4 -> '2,013'; 0.01234 -> '0.012'; 31552.0 -> '31,552'.
    A dash when missing."""
    if not _finite(x):
        return DASH
    x = float(x)
    if x == 0:
        text = "0"
    elif abs(x) >= 10 ** (digits - 1):
        text = f"{round(x):,}"
    else:
        decimals = digits - 1 - math.floor(math.log10(abs(x)))
        text = f"{x:,.{decimals}f}"
    return f"{text} {unit}".strip() if unit else text


def interval(x, lo, hi, unit: str = "", digits: int = 2) -> str:
    """'2,013 [1,800, 2,300] samples'; without an interval, the value alone."""
    if not _finite(x):
        return DASH
    band = f" [{number(lo, digits=digits)}, {number(hi, digits=digits)}]" if _finite(lo) and _finite(hi) else ""
    return f"{number(x, digits=digits)}{band}" + (f" {unit}" if unit else "")


def duration(hours, lo=None, hi=None) -> str:
    """'3.1 h [2.8, 3.5]', or in minutes below an hour ('32 min [30, 35]')."""
    if not _finite(hours):
        return DASH
    scale, unit = (1.0, "h") if float(hours) >= 1 else (60.0, "min")
    band = (f" [{number(float(lo) * scale)}, {number(float(hi) * scale)}]"
            if _finite(lo) and _finite(hi) else "")
    return f"{number(float(hours) * scale)} {unit}{band}"


def percent(x, digits: int = 0) -> str:
    """0.253 -> '25%'."""
    return f"{100 * float(x):.{digits}f}%" if _finite(x) else DASH


def _missing(value) -> bool:
    """None, NaN, pd.NA or NaT (without importing pandas: pd.NA has no truth value)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def cell(name: str, value) -> str:
    """One table cell for a reader: counts as counts, fractions as they are, missing as a dash."""
    if _missing(value) or str(value) in ("", "nan", "NaN", "<NA>", "NaT", "None"):
        return DASH
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if name in ("threshold", "rho", "alpha", "r2_log", "alpha_lo", "alpha_hi"):
        return f"{float(value):g}" if name == "threshold" else number(value, digits=2)
    if 0 < abs(float(value)) < 1e-3:  # learning rates and the like: 5e-07, as they are written
        return f"{float(value):.2g}"
    if name in ("p_reach", "p_best", "weight_general", "weight_mccandlish"):
        return percent(value)
    if name in ("n_points", "n_censored", "n_prompts", "n_rollouts", "total_batch", "rank", "n_gpus", "to_step"):
        return count(value)
    return number(value, digits=3 if abs(float(value)) < 10 else 2)


def sentence(text: str) -> str:
    """A clause as a sentence: its first letter capitalised, a full stop at the end."""
    text = str(text).strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def reader_table(table, columns=None, index=None):
    """A DataFrame as a reader sees it: `columns` (all by default) with every cell through
    `cell` (a dash for missing, counts with separators) and plain headers; `index` (a column)
    becomes the index, also with a plain name."""
    t = table[list(columns)] if columns is not None else table
    t = t.copy()
    for name in t.columns:
        t[name] = [cell(name, v) for v in t[name]]
    t = t.rename(columns={c: header(c) for c in t.columns})
    return t.set_index(header(index)) if index else t.reset_index(drop=True)
