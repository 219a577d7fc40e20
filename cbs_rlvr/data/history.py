"""History: the rows a source logged -> one wide table per run, and which keys are kept.

Every source hands `runs.normalise_raw_run` its rows in log order (dicts from W&B or `.wandb`
files) or a wide table (export files); `normalise_history` / `normalise_history_frame` apply
one set of rules to both (steps, resumed runs, odd values, percent accuracy) and keep only the
keys the analysis reads (`analysis_key_filter`), column by column, so a run of 10^6 rows costs
about its final table in memory.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import numbers
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

_NONFINITE_STRINGS = {"nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def _metric_value(value: Any) -> tuple[float, str]:
    """(float value, kind) with kind in ok | nonfinite | non_numeric | null | structured."""
    if type(value) is float:  # the common case, without the slower ABC checks below
        return (value, "ok") if math.isfinite(value) else (math.nan, "nonfinite")
    if value is None:
        return math.nan, "null"
    if isinstance(value, (bool, np.bool_)):
        return float(value), "ok"
    if isinstance(value, numbers.Real):
        value = float(value)
        return (value, "ok") if math.isfinite(value) else (math.nan, "nonfinite")
    if isinstance(value, str):
        if value.strip().lower() in _NONFINITE_STRINGS:
            return math.nan, "nonfinite"
        return math.nan, "non_numeric"
    if isinstance(value, (Mapping, list, tuple)):
        return math.nan, "structured"  # media, tables, histograms: not a scalar metric
    return math.nan, "non_numeric"


def _row_step(row: Mapping) -> int | float | None:
    """`training/global_step` where logged (verl's own counter), else W&B's `_step`; a finite
    fractional step (1.5) is returned as the float it is (the caller counts and drops it)."""
    fractional = None
    for key in ("training/global_step", "_step"):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        if math.isfinite(value) and fractional is None:
            fractional = float(value)
    return fractional


#: A series that has passed 1 stays above it (all but this share of its later values) when it is
#: in percent; a fraction series' glitches above 1 sit between fractions.
PERCENT_TAIL_SHARE = 0.75


def _is_percent_series(finite: np.ndarray) -> bool:
    """Whether a series (its finite values in step order) was logged in percent, decided from
    all its values: every value in [0, 100], some above 1, and either most of them above 1 or,
    for a run that starts below 1% (0.2, 0.5, 0.95, then 1.3, 2, 5...), at least two above 1
    and, from the first of them on, at least PERCENT_TAIL_SHARE of the values above 1: once
    past 1% it stays past it. A fraction series with a few glitches above 1 (0.15-0.82 and six
    values of 1.7 scattered through it) is not one: its out-of-range values are flagged and
    dropped instead of rescaling the run. The whole series is in one unit either way: never
    its values below 1 as fractions and the rest dropped as out of range."""
    if not (finite.size and finite.min() >= 0 and 1 < finite.max() <= 100):
        return False
    above = finite > 1
    n_above = int(np.count_nonzero(above))
    if n_above * 2 >= finite.size:
        return True
    tail = above[int(np.argmax(above)):]
    return n_above >= 2 and n_above >= PERCENT_TAIL_SHARE * tail.size


def is_accuracy_key(key: str) -> bool:
    last = key.rsplit("/", 1)[-1].lower()
    return (key.startswith("val-core/") and re.fullmatch(r"mean@\d+", last) is not None) or "acc" in last


# Keys the analysis reads (fnmatch patterns). Every source keeps only these, plus accuracy keys
# (`is_accuracy_key`) and the phases' own `metric` patterns, so a snapshot holds the same keys
# whichever source it came from, and a verl run's hundred other keys (pg_loss, response_length,
# mfu...) cost neither requests nor memory.
ANALYSIS_KEY_PATTERNS = (
    "val-core/*",
    "training/global_step",
    "critic/score/mean",
    "actor/entropy",
    "actor/grad_norm",
    "perf/*",
    "timing_s/step",
    "timing_s/testing",          # validation and checkpoint time, counted apart from step time
    "timing_s/save_checkpoint",
    "train/num_gen_batches",     # dynamic sampling (DAPO): generated vs trained samples
    "grad_noise/*",
)


@functools.lru_cache(maxsize=16)
def analysis_key_filter(extra_patterns: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """keep(key): whether a history key enters the snapshot (ANALYSIS_KEY_PATTERNS, accuracy
    keys, and `extra_patterns`, e.g. the phases' `metric` patterns)."""
    patterns = tuple(dict.fromkeys(ANALYSIS_KEY_PATTERNS + tuple(extra_patterns)))

    @functools.lru_cache(maxsize=4096)
    def keep(key: str) -> bool:
        return is_accuracy_key(key) or any(fnmatch.fnmatchcase(key, p) for p in patterns)

    return keep


def _new_counts() -> dict:
    return {"nonfinite": 0, "non_numeric": 0, "duplicate_steps": 0, "step_restarts": 0,
            "rows_without_step": 0, "fractional_steps": 0, "negative_steps": 0,
            "accuracy_below_0": 0, "accuracy_above_1": 0, "percent_columns": []}


def normalise_history(rows: Iterable[Mapping],
                      keep: Callable[[str], bool] | None = None) -> tuple[pd.DataFrame, dict]:
    """Rows in log order (dicts with `_step` and metric values) -> (wide frame, counts).

    The frame has an int64 `step` column (`training/global_step` where logged, else `_step`) and
    one float64 column per metric, one row per step, sorted by step. Rules, applied in log order:
    - several rows with the same step (a resumed run re-logging steps): the last write of each
      metric wins; counted as `duplicate_steps` (rows merged into an earlier step);
    - the step counter going down (a run restarted from a checkpoint): counted as `step_restarts`;
      the later segment's values win wherever the segments overlap (same last-write rule), so the
      frame holds the newest value of each step;
    - NaN/inf -> NaN, counted as `nonfinite`; strings -> NaN, counted as `non_numeric`; None ->
      NaN (a write all the same: it overwrites an earlier value of the step); dict/list values
      (media, tables) are not metrics and are dropped; keys starting with `_` (`_step`,
      `_timestamp`, `_runtime`) are bookkeeping and dropped;
    - a row whose step is fractional (1.5) or negative is dropped, counted as
      `fractional_steps` / `negative_steps` (S counts whole optimizer steps from 0); a row with
      no step at all, as `rows_without_step`;
    - keys for which `keep(key)` is false (default: every key) are not columns; the step keys
      still give the step;
    - accuracy columns (val-core `.../mean@N`, or `acc` in the last key part) logged in percent
      as a whole series (`_is_percent_series`) are divided by 100 (`percent_columns`); then
      every accuracy value outside [0, 1] is dropped (NaN), counted as `accuracy_below_0` /
      `accuracy_above_1`.

    One pass over `rows` (a generator will do) stores each kept key as a column over the usable
    rows (values and a written-or-not byte, 9 bytes a row) rather than a dict per step: 10^6
    rows of 12 keys hold ~110 MB where the dicts took ~0.8 GB. `_columns_by_step` then applies
    the rules above with numpy.
    """
    counts = _new_counts()
    steps = array("q")  # the step of each usable row, in log order
    columns: dict[str, tuple[array, bytearray]] = {}  # key -> (values, written) over usable rows
    not_columns: set = set()
    isfinite = math.isfinite  # a local name: the loop below runs once per logged value
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
        i = len(steps)
        steps.append(step)
        for key, raw in row.items():
            column = columns.get(key)
            if column is None:
                if key in not_columns:
                    continue
                if not isinstance(key, str) or key.startswith("_") or (keep is not None and not keep(key)):
                    not_columns.add(key)
                    continue
                column = columns[key] = (array("d"), bytearray())
            if type(raw) is not float or not isfinite(raw):  # else the common case, without a call
                raw, kind = _metric_value(raw)
                if kind == "structured":
                    continue
                if kind in ("nonfinite", "non_numeric"):
                    counts[kind] += 1
            values, written = column
            if len(written) < i:  # the rows since the key's last write did not log it: pad them
                values.frombytes(bytes(8 * (i - len(written))))
                written.extend(bytes(i - len(written)))
            values.append(raw)
            written.append(1)

    def by_key() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for key in sorted(columns):
            values, written = columns.pop(key)  # freed once placed
            values.frombytes(bytes(8 * (len(steps) - len(written))))
            written.extend(bytes(len(steps) - len(written)))
            yield key, np.frombuffer(values, dtype="float64"), np.frombuffer(written, dtype="bool")

    return _columns_by_step(np.frombuffer(steps, dtype="int64"), by_key(), counts), counts


def history_frame_steps(frame: pd.DataFrame) -> np.ndarray:
    """W&B's `_step` of each row of a wide history table: its `_step` column, else its `step`
    column, else the row number; float64, NaN where a cell is not a number."""
    column = "_step" if "_step" in frame.columns else "step" if "step" in frame.columns else None
    if column is None:
        return np.arange(len(frame), dtype="float64")
    return _as_float64(frame[column])


def _as_float64(cells: pd.Series) -> np.ndarray:
    return pd.to_numeric(cells, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _whole(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (values == np.floor(values))


def normalise_history_frame(frame: pd.DataFrame,
                            keep: Callable[[str], bool] | None = None) -> tuple[pd.DataFrame, dict]:
    """A wide history table in log order (export files) -> (wide frame, counts), exactly as
    `normalise_history` of its rows, without making them.

    Each table row is a logged row: its `_step` is `history_frame_steps`, a `training/global_step`
    column takes precedence as in `_row_step`, and every other column (named `str(column)`) is a
    key. An empty cell (NaN, None) is a key not logged in that row; a cell that is not a number
    (`pd.to_numeric`) is not logged either but is counted as `non_numeric`, in every row and in
    every column `keep` accepts (as export files always were); inf is a write of NaN, counted
    `nonfinite`.
    """
    counts = _new_counts()
    log_steps = history_frame_steps(frame)
    step = np.where(np.isfinite(log_steps), log_steps, np.nan)
    if "training/global_step" in frame.columns:
        global_steps = _as_float64(frame["training/global_step"])
        # `_row_step`: a whole global step, else a whole `_step`, else a fractional global step
        step = np.where(_whole(global_steps) | (np.isfinite(global_steps) & ~_whole(log_steps)),
                        global_steps, step)
    finite, whole = np.isfinite(step), _whole(step)
    counts["rows_without_step"] = int(np.count_nonzero(~finite))
    counts["fractional_steps"] = int(np.count_nonzero(finite & ~whole))
    counts["negative_steps"] = int(np.count_nonzero(whole & (step < 0)))
    usable = whole & (step >= 0)
    if usable.any() and step[usable].max() >= 2.0**63:
        raise OverflowError("a history step does not fit in int64")  # as `normalise_history`
    rows = slice(None) if usable.all() else usable  # a slice takes no copy of each column
    names = [str(column) for column in frame.columns]
    last = {name: j for j, name in enumerate(names)}  # of two columns named alike the later wins

    def by_key() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for j in sorted(range(len(names)), key=names.__getitem__):
            if names[j] in ("_step", "step") or (keep is not None and not keep(names[j])):
                continue
            cells = frame.iloc[:, j]
            numeric = pd.to_numeric(cells, errors="coerce")
            counts["non_numeric"] += int((numeric.isna() & cells.notna()).sum())
            if names[j].startswith("_") or last[names[j]] != j:
                continue
            values = numeric.to_numpy(dtype="float64", na_value=np.nan)[rows]
            infinite = np.isinf(values)
            counts["nonfinite"] += int(np.count_nonzero(infinite))
            yield names[j], np.where(infinite, np.nan, values), ~np.isnan(values)

    return _columns_by_step(step[rows].astype("int64"), by_key(), counts), counts


def _columns_by_step(steps: np.ndarray, columns: Iterable[tuple[str, np.ndarray, np.ndarray]],
                     counts: dict) -> pd.DataFrame:
    """The usable rows' steps (int64, log order) and (key, values, written) over those rows, in
    key order -> the wide frame of `normalise_history`: one row per step (any usable row's),
    sorted, each key's last write of the step (NaN if none; a key never written is no column);
    counts `step_restarts`, `duplicate_steps` and the accuracy rules into `counts`. `columns` is
    read one key at a time, so a generator need hold only the key at hand."""
    counts["step_restarts"] = int(np.count_nonzero(steps[1:] < steps[:-1]))
    if not np.all(steps[1:] > steps[:-1]):
        order = np.argsort(steps, kind="stable")  # by step, then log order
        by_step = steps[order]
        starts = np.ones(len(by_step), dtype=bool)
        starts[1:] = by_step[1:] != by_step[:-1]
        unique_steps = by_step[starts]
        slot_of = np.cumsum(starts) - 1  # position in unique_steps of each row in `order`
    else:  # the common case, a row per step in order: each row is its step's only write
        unique_steps = steps
    counts["duplicate_steps"] = len(steps) - len(unique_steps)
    frame: dict[str, np.ndarray] = {"step": unique_steps}
    for key, values, written in columns:
        if not written.any():
            continue
        if unique_steps is steps:
            column = np.where(written, values, np.nan)
        else:
            hits = np.flatnonzero(written[order])
            slots = slot_of[hits]
            last = np.ones(len(slots), dtype=bool)  # the last write of each step (log order within)
            last[:-1] = slots[1:] != slots[:-1]
            column = np.full(len(unique_steps), np.nan)
            column[slots[last]] = values[order[hits[last]]]
        if is_accuracy_key(key):
            if _is_percent_series(column[np.isfinite(column)]):
                column = column / 100.0
                counts["percent_columns"].append(key)
            below, above = column < 0, column > 1  # NaN compares False
            if below.any() or above.any():
                counts["accuracy_below_0"] += int(below.sum())
                counts["accuracy_above_1"] += int(above.sum())
                column = np.where(below | above, np.nan, column)
        frame[key] = column
    return pd.DataFrame(frame, copy=False)  # the columns are new arrays: no second copy


def history_flags(counts: Mapping) -> list[str]:
    flags = []
    for key in ("nonfinite", "non_numeric", "duplicate_steps", "rows_without_step",
                "fractional_steps", "negative_steps", "accuracy_below_0", "accuracy_above_1"):
        if counts.get(key):
            flags.append(f"{key}:{counts[key]}")
    if counts.get("step_restarts"):
        flags.append("step_restart")
    if counts.get("percent_columns"):
        flags.append("percent_accuracy")
    return flags
