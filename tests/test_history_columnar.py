"""normalise_history (one pass into columns, then numpy) and normalise_history_frame (export
tables) against the dict-per-step implementation they replaced, kept here verbatim as the
reference, on random logs that exercise every rule."""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # until pytest's pythonpath is set in pyproject.toml
    sys.path.insert(0, str(REPO))

from cbs_rlvr.data.history import (  # noqa: E402 (the reference's helpers are the module's own)
    _is_percent_series,
    _metric_value,
    _row_step,
    analysis_key_filter,
    is_accuracy_key,
    normalise_history,
    normalise_history_frame,
)


# --------------------------------------------------------------------------------------------
# The reference: normalise_history (then in runs.py) and export_dir.history_rows_from_frame before the
# columnar rewrite, verbatim
# --------------------------------------------------------------------------------------------
def _reference_normalise_history(rows: Iterable[Mapping],
                                   keep: Callable[[str], bool] | None = None) -> tuple[pd.DataFrame, dict]:
    """Rows in log order (dicts with `_step` and metric values) -> (wide frame, counts).

    The frame has an int64 `step` column (`training/global_step` where logged, else `_step`) and
    one float64 column per metric, one row per step, sorted by step. Rules, applied in log order:
    - several rows with the same step (a resumed run re-logging steps): the last write of each
      metric wins; counted as `duplicate_steps` (rows merged into an earlier step);
    - the step counter going down (a run restarted from a checkpoint): counted as `step_restarts`;
      the later segment's values win wherever the segments overlap (same last-write rule), so the
      frame holds the newest value of each step;
    - NaN/inf -> NaN, counted as `nonfinite`; strings -> NaN, counted as `non_numeric`;
      dict/list values (media, tables) are not metrics and are dropped; keys starting with `_`
      (`_step`, `_timestamp`, `_runtime`) are bookkeeping and dropped;
    - a row whose step is fractional (1.5) or negative is dropped, counted as
      `fractional_steps` / `negative_steps` (S counts whole optimizer steps from 0);
    - keys for which `keep(key)` is false (default: every key) are not columns; the step keys
      still give the step;
    - accuracy columns (val-core `.../mean@N`, or `acc` in the last key part) logged in percent
      as a whole series (`_is_percent_series`) are divided by 100 (`percent_columns`); then
      every accuracy value outside [0, 1] is dropped (NaN), counted as `accuracy_below_0` /
      `accuracy_above_1`.
    """
    table: dict[int, dict[str, float]] = {}
    counts = {"nonfinite": 0, "non_numeric": 0, "duplicate_steps": 0, "step_restarts": 0,
              "rows_without_step": 0, "fractional_steps": 0, "negative_steps": 0,
              "accuracy_below_0": 0, "accuracy_above_1": 0, "percent_columns": []}
    previous_step = None
    for row in rows:
        step = _row_step(row)
        if step is None:
            counts["rows_without_step"] += 1
            continue
        if isinstance(step, float):
            counts["fractional_steps"] += 1
            continue
        if step < 0:
            counts["negative_steps"] += 1
            continue
        if previous_step is not None and step < previous_step:
            counts["step_restarts"] += 1
        previous_step = step
        slot = table.get(step)
        if slot is None:
            slot = table[step] = {}
        else:
            counts["duplicate_steps"] += 1
        for key, raw in row.items():
            if not isinstance(key, str) or key.startswith("_") or (keep is not None and not keep(key)):
                continue
            value, kind = _metric_value(raw)
            if kind == "structured":
                continue
            if kind in ("nonfinite", "non_numeric"):
                counts[kind] += 1
            slot[key] = value
    steps = sorted(table)
    metrics = sorted({key for slot in table.values() for key in slot})
    columns: dict[str, Any] = {"step": np.asarray(steps, dtype="int64")}
    for key in metrics:
        values = np.fromiter((table[s].get(key, math.nan) for s in steps), dtype="float64", count=len(steps))
        if is_accuracy_key(key):
            if _is_percent_series(values[np.isfinite(values)]):
                values = values / 100.0
                counts["percent_columns"].append(key)
            below, above = values < 0, values > 1  # NaN compares False
            if below.any() or above.any():
                counts["accuracy_below_0"] += int(below.sum())
                counts["accuracy_above_1"] += int(above.sum())
                values = np.where(below | above, np.nan, values)
        columns[key] = values
    return pd.DataFrame(columns), counts


def _reference_history_rows_from_frame(frame: pd.DataFrame) -> tuple[list[dict], int]:
    """A wide history table (step column + metric columns) -> (rows in file order, n_non_numeric).

    Step column: `_step`, else `step`; `training/global_step` (if present) takes precedence per
    row later. An empty cell means "not logged"; a non-numeric cell is counted and becomes NaN.
    """
    step_column = "_step" if "_step" in frame.columns else "step" if "step" in frame.columns else None
    metric_columns = [c for c in frame.columns if c not in ("_step", "step")]
    n_non_numeric = 0
    numeric: dict[str, np.ndarray] = {}
    for column in metric_columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        n_non_numeric += int((values.isna() & frame[column].notna()).sum())
        numeric[str(column)] = values.to_numpy(dtype="float64", na_value=np.nan)
    steps = (pd.to_numeric(frame[step_column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
             if step_column else np.arange(len(frame), dtype="float64"))
    rows = []
    for i in range(len(frame)):
        row: dict[str, Any] = {"_step": steps[i]}
        for column, values in numeric.items():
            if not np.isnan(values[i]):
                row[column] = values[i]
        rows.append(row)
    return rows, n_non_numeric



def _reference_export_history(frame: pd.DataFrame, keep: Callable[[str], bool] | None) -> tuple[pd.DataFrame, dict]:
    """What load_export_dir did with a history table before `normalise_history_frame`."""
    if keep is not None:
        frame = frame[[c for c in frame.columns if c in ("_step", "step") or keep(str(c))]]
    rows, n_non_numeric = _reference_history_rows_from_frame(frame)
    history, counts = _reference_normalise_history(rows, keep=keep)
    counts["non_numeric"] += n_non_numeric
    return history, counts


# --------------------------------------------------------------------------------------------
# Random logs
# --------------------------------------------------------------------------------------------
ACC, ACC2, ACC3 = "val-core/a/reward/mean@1", "val-core/b/reward/mean@4", "train/acc"
KEEPS: list[Callable[[str], bool] | None] = [
    None,
    analysis_key_filter(()),
    lambda key: not key.startswith("loss"),
    lambda key: key != "training/global_step",  # the step key still gives the step
]


def _random_value(rng: np.random.Generator) -> Any:
    kind = rng.integers(20)
    if kind < 8:
        return float(rng.normal(1.0, 2.0))
    return [lambda: int(rng.integers(-5, 5)), lambda: bool(rng.integers(2)), lambda: np.float32(rng.normal()),
            lambda: np.float64(rng.normal()), lambda: np.int64(rng.integers(9)), lambda: np.bool_(rng.integers(2)),
            lambda: str(rng.choice(["nan", " -Infinity ", "inf", "abc", "1.5"])), lambda: {"_type": "image-file"},
            lambda: [1, 2], lambda: (1.0,), lambda: None, lambda: float(rng.choice([math.nan, math.inf, -math.inf]))
            ][kind - 8]()


def _accuracy_value(rng: np.random.Generator, percent: bool) -> Any:
    value = float(rng.uniform(0, 100 if percent else 1))
    glitch = rng.random()
    if glitch < 0.05:
        return value + 1.5   # above 1 (or above 100)
    if glitch < 0.08:
        return -value - 0.1  # below 0
    if glitch < 0.12:
        return math.nan
    return int(value) if percent and glitch > 0.9 else value


def _random_step(rng: np.random.Generator, step: int) -> Any:
    kind = rng.integers(40)
    if kind < 30:
        return step
    return [step + 0.5, -1 - step, math.nan, math.inf, float(step), np.int64(step), np.float64(step),
            True, str(step), None][kind - 30]


def random_rows(rng: np.random.Generator) -> list[dict]:
    """A log with duplicates, restarts, odd and missing steps, disagreeing global steps, every
    kind of value, late keys, bookkeeping keys, percent and out-of-range accuracy."""
    n_rows = int(rng.integers(0, 60))
    steady = rng.random() < 0.3  # a row per step in order (numpy's shortcut in normalise_history)
    percent = {key: rng.random() < 0.4 for key in (ACC, ACC2, ACC3)}
    late = int(rng.integers(0, max(n_rows, 1)))
    rows, step = [], 0
    for i in range(n_rows):
        move = 0.0 if steady else rng.random()
        step = step + 1 if move < 0.75 else step if move < 0.85 else max(step - int(rng.integers(1, 6)), 0)
        row: dict[Any, Any] = {}
        if steady:
            row["_step"] = step
        elif rng.random() < 0.95:
            row["_step"] = _random_step(rng, i)
        if not steady and rng.random() < 0.6:
            row["training/global_step"] = _random_step(rng, step) if rng.random() < 0.9 else _random_step(rng, i)
        for key in ("x", "loss/pg", "_runtime", "perf/throughput", "actor/entropy", 7):
            if rng.random() < 0.7:
                row[key] = _random_value(rng)
        if i >= late and rng.random() < 0.8:
            row["late/key"] = _random_value(rng)
        for key in (ACC, ACC2, ACC3):
            if rng.random() < 0.3:
                row[key] = _accuracy_value(rng, percent[key]) if rng.random() < 0.95 else _random_value(rng)
        rows.append(row)
    return rows


def random_frame(rng: np.random.Generator) -> pd.DataFrame:
    """An export table: step columns of several kinds, NaN/inf/string/bool/int/nullable cells."""
    n = int(rng.integers(0, 50))
    steady = rng.random() < 0.3  # a row per step in order
    steps = np.cumsum(rng.choice([1, 1, 1, 0, -3], n) if not steady else np.ones(n)).astype("float64") + 3
    odd = rng.random(n) if not steady else np.ones(n)
    steps[odd < 0.05] += 0.5
    steps[(odd >= 0.05) & (odd < 0.1)] = np.nan
    steps[(odd >= 0.1) & (odd < 0.13)] = -2
    columns: dict[str, Any] = {}
    layout = rng.integers(4)
    if layout in (0, 1):
        columns["_step"] = steps if rng.random() < 0.5 else np.where(np.isnan(steps), -1, steps).astype("int64")
    if layout in (1, 2):
        columns["step"] = np.arange(n) * 2
    if layout in (0, 2, 3) and rng.random() < 0.7 or layout == 3:
        global_steps = steps.copy()
        if not steady:
            global_steps[rng.random(n) < 0.2] = np.nan
            global_steps[rng.random(n) < 0.05] += 0.25
        columns["training/global_step"] = global_steps
    for key in ("x", "loss/pg", "perf/throughput", "_runtime", ACC, ACC3):
        scale = 100 if key in (ACC, ACC3) and rng.random() < 0.5 else 1
        values = rng.uniform(-0.05, 1.05, n) * scale
        values[rng.random(n) < 0.3] = np.nan
        values[rng.random(n) < 0.05] = np.inf
        cell = rng.integers(4)
        if cell == 0:  # strings among numbers (a csv column pandas could not parse)
            column = pd.Series(values, dtype=object)
            column[rng.random(n) < 0.15] = "abc"
            column[rng.random(n) < 0.05] = None
            columns[key] = column
        elif cell == 1:
            columns[key] = pd.array(np.where(np.isfinite(values), np.round(values), -1).astype("int64"), dtype="Int64")
            columns[key][rng.random(n) < 0.3] = pd.NA
        else:
            columns[key] = values
    if rng.random() < 0.3:
        columns["flag/bool"] = rng.random(n) < 0.5
    return pd.DataFrame(columns)


def _compare(new: tuple[pd.DataFrame, dict], reference: tuple[pd.DataFrame, dict]) -> None:
    pd.testing.assert_frame_equal(new[0], reference[0])
    assert new[1] == reference[1]


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(300))
def test_normalise_history_equals_reference(seed):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng)
    keep = KEEPS[seed % len(KEEPS)]
    new = normalise_history(iter(rows), keep=keep)  # one pass: a generator will do
    _compare(new, _reference_normalise_history(rows, keep=keep))


def test_random_logs_exercise_every_rule():
    counts: dict[str, int] = {}
    n_steady = 0  # logs of a row per step in order, with ten steps or more
    for seed in range(300):
        history, run_counts = _reference_normalise_history(random_rows(np.random.default_rng(seed)))
        for key, value in run_counts.items():
            counts[key] = counts.get(key, 0) + (len(value) if isinstance(value, list) else value)
        n_steady += len(history) >= 10 and not run_counts["duplicate_steps"] + run_counts["step_restarts"]
    assert all(counts.values()), counts
    assert n_steady >= 30
    n_steady_frames = 0
    for seed in range(200):
        history, run_counts = _reference_export_history(random_frame(np.random.default_rng(seed)), None)
        n_steady_frames += len(history) >= 10 and not run_counts["duplicate_steps"] + run_counts["step_restarts"]
    assert n_steady_frames >= 20


def test_normalise_history_overwrites_and_empty_logs():
    rows = [{"_step": 1, "x": 1.0, "y": 2.0}, {"_step": 1, "x": math.nan, "y": None}, {"_step": 2},
            {"_step": 1, "x": {"_type": "table"}}, {"_step": 0.5, "z": 1.0}]
    frame, counts = normalise_history(rows)
    _compare((frame, counts), _reference_normalise_history(rows))
    assert frame.columns.tolist() == ["step", "x", "y"] and frame["step"].tolist() == [1, 2]
    assert np.isnan(frame["x"]).all()  # a later NaN overwrites an earlier value
    for rows in ([], [{"_step": -1, "x": 1.0}], [{"x": 1.0}]):
        _compare(normalise_history(rows), _reference_normalise_history(rows))


@pytest.mark.parametrize("seed", range(200))
def test_normalise_history_frame_equals_export_rows_path(seed):
    rng = np.random.default_rng(seed)
    frame = random_frame(rng)
    keep = KEEPS[seed % 3]  # export_dir's keep accepts training/global_step (ANALYSIS_KEY_PATTERNS)
    _compare(normalise_history_frame(frame, keep=keep), _reference_export_history(frame, keep))
    csv = pd.read_csv(io.StringIO(frame.to_csv(index=False)))  # as read back from an export csv
    _compare(normalise_history_frame(csv, keep=keep), _reference_export_history(csv, keep))

