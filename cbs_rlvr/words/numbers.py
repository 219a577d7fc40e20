"""Numbers and headers as a reader sees them: rounded, with units and thousands separators,
counts never in e-notation, a dash for a missing value, plain names for columns.

Pure functions over floats and strings (no pandas import at module level: the index page uses
them from the build).
"""

from __future__ import annotations

import math
import re

DASH = "–"

#: Plain names for the columns a reader sees (tables in reports and on the index).
HEADERS = {
    "phase": "phase", "axis": "axis", "task": "task", "threshold": "target accuracy",
    "B_noise": "B_noise (samples)", "B_noise_lo": "B_noise low", "B_noise_hi": "B_noise high",
    "B_noise_ci": "B_noise (samples) [95% interval]", "status": "fit", "model": "model",
    "alpha": "alpha (S ∝ B^-alpha at small B)", "S_min": "fewest steps (large B)",
    "E_min": "fewest samples (small B)", "B_crit_20pct": "batch at 20% extra samples",
    "r2_log": "R² of log S", "n_points": "runs", "n_censored": "stopped before the target",
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
    "n_eval": "evaluations", "n_segments": "segments", "B_noise_mccandlish": "B_noise if S ∝ 1/B",
    "time_to_target_with_overhead_h": "hours with validation and checkpoints",
    "overhead_in_step_time": "validation inside the step time", "configuration": "configuration",
    "configurations": "configurations", "n_runs_total": "runs",
}

#: Columns that count things: shown as integers, whatever their dtype (a column with a missing
#: value is float in pandas: '1.00' runs is not a count a reader believes).
COUNT_COLUMNS = frozenset({"n_points", "n_censored", "n_prompts", "n_rollouts", "total_batch", "rank", "n_gpus",
                           "to_step", "replicate", "last_step", "step", "n_eval", "n_segments", "n_configs",
                           "n_runs", "n_replicates", "n_gpus_per_node", "n_cells", "n_off_lines", "updates",
                           "n_updates", "predicted_steps", "S_B", "E_B", "predicted_samples", "steps"})

#: Columns whose text holds config values written as Python writes them ('lr=1e-06').
_CONFIG_TEXT_COLUMNS = frozenset({"configuration", "configurations", "lr_label", "lr", "lr_won", "tried",
                                  "won_by_target"})

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_E_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")


def as_float(x) -> float:
    """x as a float; NaN where it is none (None, a string that is not a number)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def header(name) -> str:
    """The reader's name of a column (the name itself when it has none: B_noise and S_min are
    the quantities' own names)."""
    return HEADERS.get(name, name) if isinstance(name, str) else name


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def is_count_column(name) -> bool:
    """A column of counts: listed in COUNT_COLUMNS, or named n_<something>."""
    return isinstance(name, str) and (name in COUNT_COLUMNS or name.startswith("n_"))


def scientific(x, digits: int = 2) -> str:
    """A very small or very large number as a reader writes it, never in e-notation:
    1e-06 -> '1×10⁻⁶', 8.9e-05 -> '8.9×10⁻⁵'; a dash when missing."""
    if not _finite(x):
        return DASH
    x = float(x)
    if x == 0:
        return "0"
    exp = math.floor(math.log10(abs(x)))
    mant = round(x / 10 ** exp, digits - 1)
    if abs(mant) >= 10:
        mant, exp = mant / 10, exp + 1
    m = f"{mant:.{digits - 1}f}".rstrip("0").rstrip(".")
    return f"{m}×10{str(exp).translate(_SUPERSCRIPT)}"


def small(x, unit: str = "", digits: int = 2) -> str:
    """`number`, except that values below 0.001 (learning rates, per-sample costs) are written
    as '8.9×10⁻⁵' rather than in e-notation or as a row of zeros."""
    if _finite(x) and 0 < abs(float(x)) < 1e-3:
        return f"{scientific(x, digits)} {unit}".strip() if unit else scientific(x, digits)
    return number(x, unit, digits=digits)


def plain_text(text: str) -> str:
    """Config values inside a text ('lr=1e-06') as a reader writes them ('learning rate 1×10⁻⁶')."""
    text = _E_NUMBER.sub(lambda m: scientific(float(m.group(0)), 2), str(text))
    return re.sub(r"\blr=", "learning rate ", text)


def count(n) -> str:
    """An integer count with thousands separators: 33600 -> '33,600'; a dash when missing."""
    return f"{round(float(n)):,}" if _finite(n) else DASH


def _known(x) -> bool:
    """A number, finite or infinite (an open end of an interval)."""
    try:
        return x is not None and not math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def number(x, unit: str = "", digits: int = 2, decimals: int | None = None) -> str:
    """A measured value to `digits` significant digits (at least the integer part), thousands
    separated, with its unit: 2013.4 -> '2,013'; 0.01234 -> '0.012'; 31552.0 -> '31,552'; or to
    a fixed number of `decimals` (2013.4 -> '2,013' with 0). ±inf as '∞' / '−∞'. A dash when
    missing."""
    if not _known(x):
        return DASH
    x = float(x)
    if math.isinf(x):
        text = "∞" if x > 0 else "−∞"
    elif decimals is not None:
        text = f"{x:,.{decimals}f}"
    elif x == 0:
        text = "0"
    elif abs(x) >= 10 ** (digits - 1):
        text = f"{round(x):,}"
    else:
        places = digits - 1 - math.floor(math.log10(abs(x)))
        text = f"{x:,.{places}f}"
    return f"{text} {unit}".strip() if unit else text


def interval(x, lo, hi, unit: str = "", digits: int = 2, decimals: int | None = None) -> str:
    """'2,013 [1,800, 2,300] samples'; an open upper end as '290 [250, ∞)'; without an interval,
    the value alone; a dash when the value is missing or infinite. `digits`/`decimals` as in
    `number`."""
    if not _finite(x):
        return DASH
    def num(v):
        return number(v, digits=digits, decimals=decimals)
    band = ""
    if _known(lo) and _known(hi):
        band = f" [{num(lo)}, {num(hi)}{')' if math.isinf(float(hi)) and float(hi) > 0 else ']'}"
    return f"{num(x)}{band}" + (f" {unit}" if unit else "")


#: Below this many hours a time is said in its own unit (minutes, or seconds below a minute) whatever
#: its card's unit: '0.0016 h' is '6 s' to a reader.
SHORT_HOURS = 0.1
_SCALE = {"h": 1.0, "min": 60.0, "s": 3600.0}


def duration_unit(hours) -> str:
    """The unit a duration is said in: 'h' from an hour up, 'min' from a minute, 's' below (one unit
    per card: the card's headline decides, and every duration in it follows)."""
    if not _finite(hours) or float(hours) >= 1:
        return "h"
    return "min" if float(hours) >= 1 / 60 else "s"


def duration(hours, lo=None, hi=None, unit: str | None = None) -> str:
    """'3.1 h [2.8, 3.5]', in minutes below an hour ('32 min [30, 35]'), in seconds below a minute
    ('6 s'). `unit` ('h', 'min' or 's') fixes the unit, so that one card says its times in one unit,
    except a time under SHORT_HOURS (a tenth of an hour), which keeps its own ('6 s', never
    '0.0016 h'; its band in the same unit)."""
    if not _finite(hours):
        return DASH
    if unit not in _SCALE or abs(float(hours)) < SHORT_HOURS:
        unit = duration_unit(abs(float(hours)))
    scale = _SCALE[unit]
    band = (f" [{number(float(lo) * scale)}, {number(float(hi) * scale)}]"
            if _finite(lo) and _finite(hi) else "")
    return f"{number(float(hours) * scale)} {unit}{band}"


def percent(x, digits: int = 0) -> str:
    """0.253 -> '25%'; a share that rounds to 100% or 0% without being it says so: 0.998 ->
    'over 99%', 0.002 -> 'under 1%' (every page words the same share the same way)."""
    if not _finite(x):
        return DASH
    v, top = 100 * float(x), 100 - 10 ** -digits
    if top < round(v, digits) < 100 or (v < 100 and round(v, digits) >= 100):
        return f"over {top:.{digits}f}%"
    if 0 < v and round(v, digits) <= 0:
        return f"under {10 ** -digits:.{digits}f}%"
    return f"{v:.{digits}f}%"


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
            return plain_text(value) if name in _CONFIG_TEXT_COLUMNS else value
    if name in ("threshold", "rho", "alpha", "r2_log", "alpha_lo", "alpha_hi"):
        return f"{float(value):g}" if name == "threshold" else number(value, digits=2)
    if name in ("p_reach", "p_best", "weight_general", "weight_mccandlish"):
        return percent(value)
    if is_count_column(name):
        return count(value)
    if "ratio" in name or "_over_" in name:  # a ratio to two decimals, as the sentences beside it say it
        return number(value, decimals=2)
    if 0 < abs(float(value)) < 1e-3:  # learning rates and the like: 5×10⁻⁷, never 5e-07
        return scientific(value)
    return number(value, digits=3 if abs(float(value)) < 10 else 2)


def sentence(text: str) -> str:
    """A clause as a sentence: its first letter capitalised, a full stop at the end."""
    text = str(text).strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def mark_censored(value, censored: bool, digits: int = 0) -> str:
    """A measured value as '70', a lower bound (a run that never reached the target: its last
    evaluated step) as '≥70', a missing one as a dash."""
    if not _finite(value):
        return DASH
    return f"{'≥' if censored else ''}{float(value):.{digits}f}"


def shape_label(model, alpha) -> str:
    """The chosen form of S(B) in a table cell: '1/B (McCandlish)', 'B^-0.62' or a dash."""
    if model == "general" and _finite(alpha):
        return f"B^-{float(alpha):.2f}"
    if model == "mccandlish":
        return "1/B (McCandlish)"
    return DASH


def reader_table(table, columns=None, index=None):
    """A DataFrame as a reader sees it: `columns` (all by default), numbers through `cell` (counts
    with separators, no e-notation), a dash for every missing value, plain headers (`header`:
    'r2_log' -> 'R² of log S'). `index` (a column) becomes the index; otherwise a table's own
    index is kept (its names made plain) unless it is the default 0..n-1."""
    import pandas as pd

    t = table[list(columns)] if columns is not None else table
    out = t.astype(object).where(t.notna(), DASH)
    for name in t.columns:
        if pd.api.types.is_numeric_dtype(t[name]) and not pd.api.types.is_bool_dtype(t[name]):
            integers = pd.api.types.is_integer_dtype(t[name]) and str(name) not in ("threshold",)
            out[name] = [count(v) if integers else cell(str(name), v) for v in t[name]]
        elif name in _CONFIG_TEXT_COLUMNS:
            out[name] = [plain_text(v) if isinstance(v, str) else v for v in out[name]]
        elif not pd.api.types.is_bool_dtype(t[name]):  # mixed columns: their numbers as numbers
            out[name] = [cell(str(name), v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                         for v in out[name]]
    out = out.rename(columns=header)
    if index is not None:
        return out.set_index(header(index))
    if isinstance(t.index, pd.RangeIndex) and t.index.name is None:
        return out.reset_index(drop=True)
    out.index = reader_index(out.index)
    return out


def reader_index(index):
    """A table's own index as a reader sees it: plain names, counts and numbers through `cell`."""
    import pandas as pd

    def level(values, name):
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return pd.Index([cell(str(name), v) for v in values], name=header(name))
        return pd.Index(values, name=header(name))

    if isinstance(index, pd.MultiIndex):
        return pd.MultiIndex.from_arrays([level(index.get_level_values(i), n) for i, n in enumerate(index.names)])
    return level(index, index.name)
