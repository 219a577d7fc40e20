"""Runs: names and configs -> run metadata; logged rows -> one normalised history table.

Every source (W&B server, offline `.wandb` files, export directories) hands its runs to
`normalise_raw_run` in one source-independent form (name, config, state, rows in log order or
a wide history table), which either makes a run entry (a row of runs.parquet and its history
frame) or an exclusion with its reason; `assemble_snapshot_frames` stacks the entries into the
snapshot's tables.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import numbers
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from .errors import redact_secrets
from .resume import stitch_resumed_runs

RUN_STATES = ("finished", "failed", "crashed", "running", "killed", "unknown")
RUNS_COLUMNS = [
    "run_id", "name", "phase", "n_prompts", "n_rollouts", "total_batch", "replicate",
    "n_replicates", "state", "config", "n_gpus", "flags", "source", "last_step", "updated_at",
    "n_history_rows", "start_time", "wandb_last_step",
    # verl's habits (issue 10): tags/group for phase selection, metaparameters, updates per step,
    # dynamic sampling, checkpoint/eval frequencies, and what the resume stitching did
    "phases", "tags", "group", "first_step", "lr", "ppo_mini_batch_size", "ppo_epochs",
    "updates_per_step", "gen_batch_size", "dynamic_sampling", "save_freq", "test_freq",
    "n_segments", "segment_run_ids", "resumed_at", "resume_lost_steps", "resume_lost_time_s",
]
#: Integer columns of runs.parquet (nullable Int64 where a value may be unknown).
_INT_COLUMNS = ("n_prompts", "n_rollouts", "total_batch", "n_gpus", "last_step", "wandb_last_step",
                "first_step", "ppo_mini_batch_size", "ppo_epochs", "updates_per_step",
                "gen_batch_size", "save_freq", "test_freq")
#: verl config keys (dotted) the snapshot reads; the batch size keys are counted in prompts.
LR_KEY = "actor_rollout_ref.actor.optim.lr"
MINI_BATCH_KEY = "actor_rollout_ref.actor.ppo_mini_batch_size"
PPO_EPOCHS_KEY = "actor_rollout_ref.actor.ppo_epochs"
GEN_BATCH_KEY = "data.gen_batch_size"
FILTER_GROUPS_KEY = "algorithm.filter_groups.enable"
EXCLUDED_COLUMNS = ["source", "run_id", "name", "reason"]
REASON_NO_VALIDATION = "no validation metric (val-core/*) logged"

_RUN_NAME_RE = re.compile(r"^cbs_(?P<phase>.+?)_np(?P<np>\d+)_nr(?P<nr>\d+)(?:_(?P<suffix>.+))?$")


# --------------------------------------------------------------------------------------------
# Run names and run metadata
# --------------------------------------------------------------------------------------------
def parse_run_name(name: str | None) -> dict:
    """Parse `cbs_<phase>_np<N>_nr<M>[_<suffix>]`; unparseable -> all values None.

    The phase may contain underscores (`p4_math`); the first `_np<N>_nr<M>` ends it.
    """
    match = _RUN_NAME_RE.match(name) if isinstance(name, str) else None
    if match is None:
        return {"phase": None, "n_prompts": None, "n_rollouts": None, "suffix": None}
    return {
        "phase": match["phase"],
        "n_prompts": int(match["np"]),
        "n_rollouts": int(match["nr"]),
        "suffix": match["suffix"],
    }


def unwrap_config_value(value: Any) -> Any:
    # W&B's config.yaml / raw API form wraps every value as {"value": v, "desc": ...}.
    if isinstance(value, Mapping) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


def config_lookup(config: Any, dotted_key: str) -> Any:
    """Value of `a.b.c` in a config given as nested dicts, dotted keys, or a mix; None if absent."""
    if not isinstance(config, Mapping):
        return None
    parts = dotted_key.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head not in config:
            continue
        value = unwrap_config_value(config[head])
        if i == len(parts):
            return value
        found = config_lookup(value, ".".join(parts[i:]))
        if found is not None:
            return found
    return None


def _as_positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value) if value > 0 else None
    return None


def set_nested(target: dict, path: Sequence[str], value: Any) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def _as_positive_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if isinstance(value, (bool, numbers.Real)) else False


def run_metadata(name: str | None, config: Mapping | None) -> dict:
    """Phase and batch sizes of a run from its verl config, else from its name, and the habits.

    Returns phase (from the name `cbs_<phase>_np<N>_nr<M>`, else None: a phase's params may still
    select the run by tags, group, name pattern or config), n_prompts, n_rollouts, total_batch,
    n_gpus, flags (list), reason (None when the run is usable, else why it must be excluded), and
    the metaparameters verl logs: lr, ppo_mini_batch_size, ppo_epochs, updates_per_step,
    gen_batch_size, dynamic_sampling, save_freq, test_freq. The config wins over the name (flag
    `config_name_mismatch`) because it is what the trainer actually ran with.

    updates_per_step: verl's actor makes ceil(train_batch_size / ppo_mini_batch_size) optimizer
    updates per epoch over the batch, ppo_epochs times per rollout step (both sizes counted in
    prompts; verl multiplies both by rollout.n). None when the config lacks ppo_mini_batch_size;
    a missing ppo_epochs is verl's default, 1.
    """
    parsed = parse_run_name(name)
    config = config or {}
    cfg_prompts = _as_positive_int(config_lookup(config, "data.train_batch_size"))
    cfg_rollouts = _as_positive_int(config_lookup(config, "actor_rollout_ref.rollout.n"))
    flags: list[str] = []
    if (cfg_prompts is not None and parsed["n_prompts"] is not None and cfg_prompts != parsed["n_prompts"]) or (
        cfg_rollouts is not None and parsed["n_rollouts"] is not None and cfg_rollouts != parsed["n_rollouts"]
    ):
        flags.append("config_name_mismatch")
    n_prompts = cfg_prompts if cfg_prompts is not None else parsed["n_prompts"]
    n_rollouts = cfg_rollouts if cfg_rollouts is not None else parsed["n_rollouts"]
    gpus_per_node = _as_positive_int(config_lookup(config, "trainer.n_gpus_per_node"))
    nnodes = _as_positive_int(config_lookup(config, "trainer.nnodes"))
    n_gpus = gpus_per_node * nnodes if gpus_per_node and nnodes else None
    reason = None
    if n_prompts is None or n_rollouts is None:
        reason = (
            f"cannot determine phase/n_prompts/n_rollouts from name {name!r} "
            "(expected cbs_<phase>_np<N>_nr<M>) or config "
            "(data.train_batch_size, actor_rollout_ref.rollout.n); to include it, log the verl "
            "config with the run or name it cbs_<phase>_np<N>_nr<M>"
        )
    mini = _as_positive_int(config_lookup(config, MINI_BATCH_KEY))
    epochs = _as_positive_int(config_lookup(config, PPO_EPOCHS_KEY))
    updates = None
    if mini is not None and n_prompts is not None:
        updates = math.ceil(n_prompts / mini) * (epochs or 1)
    return {
        "phase": parsed["phase"],
        "n_prompts": n_prompts,
        "n_rollouts": n_rollouts,
        "total_batch": n_prompts * n_rollouts if reason is None else None,
        "n_gpus": n_gpus,
        "flags": flags,
        "reason": reason,
        "lr": _as_positive_float(config_lookup(config, LR_KEY)),
        "ppo_mini_batch_size": mini,
        "ppo_epochs": epochs,
        "updates_per_step": updates,
        "gen_batch_size": _as_positive_int(config_lookup(config, GEN_BATCH_KEY)),
        "dynamic_sampling": _as_bool(config_lookup(config, FILTER_GROUPS_KEY)),
        "save_freq": _as_positive_int(config_lookup(config, "trainer.save_freq")),
        "test_freq": _as_positive_int(config_lookup(config, "trainer.test_freq")),
    }


def normalise_tags(tags: Any) -> list[str]:
    """W&B tags as a list of strings: from a list, a JSON list or a `;`/`,`-separated string."""
    if tags is None or (isinstance(tags, float) and not math.isfinite(tags)):
        return []
    if isinstance(tags, str):
        text = tags.strip()
        if text.startswith("["):
            try:
                return normalise_tags(json.loads(text))
            except ValueError:
                pass
        tags = re.split(r"[;,]", text)
    if isinstance(tags, (list, tuple, np.ndarray)):
        return list(dict.fromkeys(str(t).strip() for t in tags if str(t).strip()))
    return []


def normalise_run_state(state: Any) -> str:
    """Map a source's run state onto finished | failed | crashed | running | killed | unknown."""
    text = str(state).strip().lower() if state is not None else ""
    if text in RUN_STATES:
        return text
    if text in ("preempted", "preempting"):
        return "killed"  # stopped from outside and not resumed: no different from a kill here
    return "unknown"


# --------------------------------------------------------------------------------------------
# History normalisation (shared by all sources)
# --------------------------------------------------------------------------------------------
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


def _is_percent_series(finite: np.ndarray) -> bool:
    """A whole series logged in percent: every value in [0, 100] and most of them above 1. A
    fraction series with a few glitches above 1 (0.15-0.82 and six values of 1.7) is not one:
    its out-of-range values are flagged and dropped instead of rescaling the run."""
    return bool(finite.size and finite.min() >= 0 and 1 < finite.max() <= 100
                and np.count_nonzero(finite > 1) * 2 >= finite.size)


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


def _history_flags(counts: Mapping) -> list[str]:
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


def iso_utc(value: Any) -> str | None:
    """An ISO-8601 UTC string (one fixed format, so strings sort in time order) or None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    try:
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", value):
            value = float(value)  # epoch seconds written as text (CSV exports)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            stamp = datetime.fromtimestamp(float(value), tz=timezone.utc)
        else:
            parsed = pd.Timestamp(value)
            if pd.isna(parsed):
                return None
            stamp = (parsed.tz_localize("UTC") if parsed.tzinfo is None else parsed.tz_convert("UTC")).to_pydatetime()
    except (ValueError, TypeError, OverflowError, OSError):
        return None
    return stamp.isoformat(timespec="microseconds")


def normalise_raw_run(raw: Mapping, key_patterns: Sequence[str] = ()) -> dict:
    """One source-independent run (name, config, state, rows...) -> a run entry or an exclusion.

    `raw` keys: run_id, name, config, state, source, rows (log order; or instead history_frame,
    a wide table for `normalise_history_frame`), and optionally start_time, updated_at,
    wandb_last_step, flags (list), tags (list of str) and group (str or None). History keys the
    analysis does not read are dropped (`analysis_key_filter`; `key_patterns` adds patterns to
    keep, e.g. the phases' metrics).
    Returns {"kind": "run", "row": {...}, "history": DataFrame} or {"kind": "excluded", "row": {...}}.
    """
    base = {"source": raw["source"], "run_id": raw.get("run_id"), "name": raw.get("name")}
    meta = run_metadata(raw.get("name"), raw.get("config"))
    if meta["reason"]:
        return {"kind": "excluded", "row": {**base, "reason": meta["reason"]}}
    keep = analysis_key_filter(tuple(key_patterns))
    if raw.get("history_frame") is not None:
        history, counts = normalise_history_frame(raw["history_frame"], keep=keep)
    else:
        history, counts = normalise_history(raw.get("rows") or [], keep=keep)
    val_columns = [c for c in history.columns if c.startswith("val-core/")]
    dropped = [f"{counts[k]} row(s) with {what} step numbers were dropped"
               for k, what in (("fractional_steps", "fractional (e.g. 1.5)"),
                               ("negative_steps", "negative")) if counts[k]]
    if not val_columns:
        reason = REASON_NO_VALIDATION if not dropped else (
            f"no usable validation metric: {'; '.join(dropped)} (steps must be whole optimizer "
            "steps from 0)")
        return {"kind": "excluded", "row": {**base, "reason": reason}}
    if not np.isfinite(history[val_columns].to_numpy()).any():
        reason = "validation metric (val-core/*) logged but never a finite number"
        if counts["accuracy_below_0"] or counts["accuracy_above_1"]:
            reason = ("validation metric (val-core/*) never within [0, 1] (nor a whole series in "
                      "percent)")
        return {"kind": "excluded", "row": {**base, "reason": reason}}
    flags = meta["flags"] + list(raw.get("flags") or []) + _history_flags(counts)
    row = {
        **base,
        "phase": meta["phase"],
        "n_prompts": meta["n_prompts"],
        "n_rollouts": meta["n_rollouts"],
        "total_batch": meta["total_batch"],
        "state": normalise_run_state(raw.get("state")),
        "config": redact_secrets(json.dumps(raw.get("config") or {}, sort_keys=True, default=str)),
        "n_gpus": meta["n_gpus"],
        "flags": ";".join(dict.fromkeys(flags)),
        "last_step": int(history["step"].max()),
        "updated_at": iso_utc(raw.get("updated_at")),
        "n_history_rows": len(history),
        "start_time": iso_utc(raw.get("start_time")),
        "wandb_last_step": raw.get("wandb_last_step"),
        "phases": None,
        "tags": redact_secrets(json.dumps(normalise_tags(raw.get("tags")))),
        "group": redact_secrets(str(raw["group"])) if raw.get("group") not in (None, "") else None,
        "first_step": int(history["step"].min()),
        **{k: meta[k] for k in ("lr", "ppo_mini_batch_size", "ppo_epochs", "updates_per_step",
                                "gen_batch_size", "dynamic_sampling", "save_freq", "test_freq")},
        "n_segments": 1,
        "segment_run_ids": raw.get("run_id"),
        "resumed_at": None,
        "resume_lost_steps": 0,
        "resume_lost_time_s": 0.0,
    }
    return {"kind": "run", "row": row, "history": history}


def replicate_key(row: Mapping) -> tuple:
    """Runs are replicates when they share a name, a learning rate and updates per step."""
    def norm(value):
        return None if value is None or pd.isna(value) else float(value)
    return (row.get("name"), norm(row.get("lr")), norm(row.get("updates_per_step")))


def _joined_history(histories: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The runs' history frames as one (run_id, step, metrics in name order), sorted by run id
    then step, built a column at a time: a large sweep's history is held twice at most (the
    runs' frames and the joined one), never once per concat, reindex and sort."""
    histories = sorted(histories, key=lambda item: str(item[0]))  # stable: sort_values' order
    histories = [(rid, h if h["step"].is_monotonic_increasing else h.sort_values("step", kind="stable"))
                 for rid, h in histories]
    metric_columns = sorted({str(c) for _, h in histories for c in h.columns if c != "step"})
    lengths = [len(h) for _, h in histories]
    columns: dict[str, Any] = {
        "run_id": pd.array(np.repeat(np.array([rid for rid, _ in histories], dtype=object), lengths), dtype="str"),
        "step": np.concatenate([h["step"].to_numpy(dtype="int64") for _, h in histories] or [np.empty(0, "int64")]),
    }
    for column in metric_columns:
        columns[column] = np.concatenate(
            [h[column].to_numpy(dtype="float64") if column in h.columns else np.full(len(h), np.nan)
             for _, h in histories] or [np.empty(0)])
    return pd.DataFrame(columns, copy=False)


def assemble_snapshot_frames(entries: Sequence[Mapping]) -> dict:
    """Run entries and exclusions (from `normalise_raw_run`) -> runs, history, excluded frames.

    Resumed runs are stitched first (`resume.stitch_resumed_runs`: segments restarted from a
    checkpoint become one run). Runs sharing a name, learning rate and updates per step are then
    replicates: numbered 0, 1, 2... by start time then run_id.
    """
    entries = stitch_resumed_runs(entries)
    run_rows = [dict(e["row"]) for e in entries if e["kind"] == "run"]
    excluded_rows = [dict(e["row"]) for e in entries if e["kind"] == "excluded"]
    by_key: dict[tuple, list[dict]] = {}
    for row in run_rows:
        by_key.setdefault(replicate_key(row), []).append(row)
    for group in by_key.values():
        group.sort(key=lambda r: (r.get("start_time") is None, r.get("start_time") or "", r["run_id"]))
        for i, row in enumerate(group):
            row["replicate"], row["n_replicates"] = i, len(group)
    runs = pd.DataFrame(run_rows, columns=RUNS_COLUMNS)
    for column in _INT_COLUMNS:
        runs[column] = pd.array([None if pd.isna(v) else int(v) for v in runs[column]], dtype="Int64")
    for column in ("replicate", "n_replicates", "n_history_rows", "n_segments", "resume_lost_steps"):
        runs[column] = runs[column].fillna(0 if column != "n_segments" else 1).astype("int64")
    runs["lr"] = pd.to_numeric(runs["lr"], errors="coerce").astype("float64")
    runs["resume_lost_time_s"] = pd.to_numeric(runs["resume_lost_time_s"], errors="coerce").fillna(0.0)
    runs["dynamic_sampling"] = runs["dynamic_sampling"].map(lambda v: bool(v) if v is not None and not pd.isna(v) else False)
    runs["tags"] = [json.dumps(normalise_tags(t)) for t in runs["tags"]]
    runs = runs.sort_values(
        ["phase", "n_prompts", "n_rollouts", "name", "replicate", "run_id"], na_position="last", kind="stable"
    ).reset_index(drop=True)

    history = _joined_history([(e["row"]["run_id"], e["history"]) for e in entries if e["kind"] == "run"])

    excluded = pd.DataFrame(excluded_rows, columns=EXCLUDED_COLUMNS)
    excluded["reason"] = [redact_secrets(str(r)) for r in excluded["reason"]]
    excluded = excluded.sort_values(["source", "run_id"], kind="stable", na_position="last").reset_index(drop=True)
    return {"runs": runs, "history": history, "excluded": excluded}


