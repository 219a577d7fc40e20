"""Shared helpers of the CBS-RLVR notebooks: load, measure, fit, plot, save.

The notebooks narrate and call; everything they share, and everything a test must reach,
lives here as functions over DataFrames and arrays that return data (or a Figure). The few
functions that touch files, the network or other processes are named for it (read_*, write_*,
load_*, fetch_*, run_*, convert_*), and `python cbs_helpers.py snapshot|plan|execute|html`
is what the Makefile calls.

Sections, in order:
  1. Data layer: W&B server, offline .wandb files and export directories -> one snapshot
     (runs.parquet, history.parquet, manifest.json, excluded_runs.csv; schema in outputs/README.md).
  2. Analysis: S(B) and E(B) with isotonic crossings and censoring, McCandlish fits in log
     space with bootstrap CIs, B_noise vs target, prompts vs rollouts, gradient noise scale,
     wall clock, and the original notebook's method for comparison.
  3. Phase parameters (params/*.yaml), the one figure style, plots, paper tables, and the
     report build (papermill execution, nbconvert HTML, index page).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as _dt
import fnmatch
import hashlib
import html
import io
import json
import logging
import math
import numbers
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib import ticker
from matplotlib.figure import Figure
from scipy import optimize, special

# ===============================================================================================
# Data layer: sources -> one snapshot
# ===============================================================================================

_DATA_LOG = logging.getLogger("cbs_helpers.data")

SNAPSHOT_SCHEMA_VERSION = 1
SNAPSHOT_FILES = ("runs.parquet", "history.parquet", "excluded_runs.csv")

# Keys the analysis needs from a W&B run (fnmatch patterns); only these are fetched from the server.
NEEDED_KEY_PATTERNS = (
    "val-core/*",
    "training/global_step",
    "critic/score/mean",
    "actor/entropy",
    "actor/grad_norm",
    "perf/*",
    "timing_s/step",
    "grad_noise/*",
)
RUN_STATES = ("finished", "failed", "crashed", "running", "killed", "unknown")
RUNS_COLUMNS = [
    "run_id", "name", "phase", "n_prompts", "n_rollouts", "total_batch", "replicate",
    "n_replicates", "state", "config", "n_gpus", "flags", "source", "last_step", "updated_at",
    "n_history_rows", "start_time", "wandb_last_step",
]
EXCLUDED_COLUMNS = ["source", "run_id", "name", "reason"]
REASON_NO_VALIDATION = "no validation metric (val-core/*) logged"

_RUN_NAME_RE = re.compile(r"^cbs_(?P<phase>.+?)_np(?P<np>\d+)_nr(?P<nr>\d+)(?:_(?P<suffix>.+))?$")


# --------------------------------------------------------------------------------------------
# Errors: each carries a one-line message meant for the user (the CLI prints it, no traceback).
# --------------------------------------------------------------------------------------------
class DataLayerError(Exception):
    """Base class of the data layer's user-facing errors."""


class WandbFileError(DataLayerError):
    """A `.wandb` file that cannot be read at all (empty, bad header, not a W&B file)."""


class DataSourceError(DataLayerError):
    """A source that is missing, malformed, or refuses access."""


class SourceUnreachableError(DataSourceError):
    """A W&B server that cannot be reached (every call failed with transient errors)."""


class SnapshotError(DataLayerError):
    """A snapshot that is missing, torn or corrupt."""


class SnapshotMissingError(SnapshotError):
    """No snapshot has been written in that directory yet."""


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


def _unwrap_config_value(value: Any) -> Any:
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
        value = _unwrap_config_value(config[head])
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


def run_metadata(name: str | None, config: Mapping | None) -> dict:
    """Phase and batch sizes of a run from its verl config, else from its name.

    Returns phase, n_prompts, n_rollouts, total_batch, n_gpus, flags (list) and reason
    (None when the run is usable, else why it must be excluded). The config wins over the name
    (flag `config_name_mismatch`) because it is what the trainer actually ran with.
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
            "(data.train_batch_size, actor_rollout_ref.rollout.n)"
        )
    elif parsed["phase"] is None:
        reason = (
            f"no phase in run name {name!r} (expected cbs_<phase>_np<N>_nr<M>); the config gives "
            f"n_prompts={n_prompts}, n_rollouts={n_rollouts} but the phase is needed"
        )
    return {
        "phase": parsed["phase"],
        "n_prompts": n_prompts,
        "n_rollouts": n_rollouts,
        "total_batch": n_prompts * n_rollouts if reason is None else None,
        "n_gpus": n_gpus,
        "flags": flags,
        "reason": reason,
    }


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


def _row_step(row: Mapping) -> int | None:
    """`training/global_step` where logged (verl's own counter), else W&B's `_step`."""
    for key in ("training/global_step", "_step"):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
    return None


def _is_accuracy_key(key: str) -> bool:
    last = key.rsplit("/", 1)[-1].lower()
    return (key.startswith("val-core/") and re.fullmatch(r"mean@\d+", last) is not None) or "acc" in last


def normalise_history(rows: Iterable[Mapping]) -> tuple[pd.DataFrame, dict]:
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
    - accuracy columns (val-core `.../mean@N`, or `acc` in the last key part) whose values lie in
      [0, 100] with a maximum above 1 are percentages: divided by 100 (`percent_columns`).
    """
    table: dict[int, dict[str, float]] = {}
    counts = {"nonfinite": 0, "non_numeric": 0, "duplicate_steps": 0, "step_restarts": 0,
              "rows_without_step": 0, "percent_columns": []}
    previous_step = None
    for row in rows:
        step = _row_step(row)
        if step is None:
            counts["rows_without_step"] += 1
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
            if not isinstance(key, str) or key.startswith("_"):
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
        if _is_accuracy_key(key):
            finite = values[np.isfinite(values)]
            if finite.size and finite.min() >= 0 and 1 < finite.max() <= 100:
                values = values / 100.0
                counts["percent_columns"].append(key)
        columns[key] = values
    return pd.DataFrame(columns), counts


def _history_flags(counts: Mapping) -> list[str]:
    flags = []
    for key in ("nonfinite", "non_numeric", "duplicate_steps", "rows_without_step"):
        if counts.get(key):
            flags.append(f"{key}:{counts[key]}")
    if counts.get("step_restarts"):
        flags.append("step_restart")
    if counts.get("percent_columns"):
        flags.append("percent_accuracy")
    return flags


def _iso_utc(value: Any) -> str | None:
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


def normalise_raw_run(raw: Mapping) -> dict:
    """One source-independent run (name, config, state, rows...) -> a run entry or an exclusion.

    `raw` keys: run_id, name, config, state, source, rows (log order), and optionally
    start_time, updated_at, wandb_last_step, flags (list), n_non_numeric (pre-counted).
    Returns {"kind": "run", "row": {...}, "history": DataFrame} or {"kind": "excluded", "row": {...}}.
    """
    base = {"source": raw["source"], "run_id": raw.get("run_id"), "name": raw.get("name")}
    meta = run_metadata(raw.get("name"), raw.get("config"))
    if meta["reason"]:
        return {"kind": "excluded", "row": {**base, "reason": meta["reason"]}}
    history, counts = normalise_history(raw.get("rows") or [])
    counts["non_numeric"] += int(raw.get("n_non_numeric") or 0)
    val_columns = [c for c in history.columns if c.startswith("val-core/")]
    if not val_columns:
        return {"kind": "excluded", "row": {**base, "reason": REASON_NO_VALIDATION}}
    if not np.isfinite(history[val_columns].to_numpy()).any():
        reason = "validation metric (val-core/*) logged but never a finite number"
        return {"kind": "excluded", "row": {**base, "reason": reason}}
    flags = meta["flags"] + list(raw.get("flags") or []) + _history_flags(counts)
    row = {
        **base,
        "phase": meta["phase"],
        "n_prompts": meta["n_prompts"],
        "n_rollouts": meta["n_rollouts"],
        "total_batch": meta["total_batch"],
        "state": normalise_run_state(raw.get("state")),
        "config": _redact_secrets(json.dumps(raw.get("config") or {}, sort_keys=True, default=str)),
        "n_gpus": meta["n_gpus"],
        "flags": ";".join(dict.fromkeys(flags)),
        "last_step": int(history["step"].max()),
        "updated_at": _iso_utc(raw.get("updated_at")),
        "n_history_rows": len(history),
        "start_time": _iso_utc(raw.get("start_time")),
        "wandb_last_step": raw.get("wandb_last_step"),
    }
    return {"kind": "run", "row": row, "history": history}


def assemble_snapshot_frames(entries: Sequence[Mapping]) -> dict:
    """Run entries and exclusions (from `normalise_raw_run`) -> runs, history, excluded frames.

    Runs sharing a name are replicates: numbered 0, 1, 2... by start time then run_id.
    """
    run_rows = [dict(e["row"]) for e in entries if e["kind"] == "run"]
    excluded_rows = [dict(e["row"]) for e in entries if e["kind"] == "excluded"]
    by_name: dict[str, list[dict]] = {}
    for row in run_rows:
        by_name.setdefault(row["name"], []).append(row)
    for group in by_name.values():
        group.sort(key=lambda r: (r.get("start_time") is None, r.get("start_time") or "", r["run_id"]))
        for i, row in enumerate(group):
            row["replicate"], row["n_replicates"] = i, len(group)
    runs = pd.DataFrame(run_rows, columns=RUNS_COLUMNS)
    for column in ("n_prompts", "n_rollouts", "total_batch", "n_gpus", "last_step", "wandb_last_step"):
        runs[column] = pd.array([None if pd.isna(v) else int(v) for v in runs[column]], dtype="Int64")
    for column in ("replicate", "n_replicates", "n_history_rows"):
        runs[column] = runs[column].astype("int64")
    runs = runs.sort_values(
        ["phase", "n_prompts", "n_rollouts", "name", "replicate", "run_id"], na_position="last", kind="stable"
    ).reset_index(drop=True)

    frames = []
    for entry in entries:
        if entry["kind"] == "run":
            frame = entry["history"].copy()
            frame.insert(0, "run_id", entry["row"]["run_id"])
            frames.append(frame)
    history = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame(
        {"run_id": pd.Series([], dtype=object), "step": pd.Series([], dtype="int64")}
    )
    metric_columns = sorted(c for c in history.columns if c not in ("run_id", "step"))
    history = history.reindex(columns=["run_id", "step", *metric_columns]).astype(
        {"step": "int64", **dict.fromkeys(metric_columns, "float64")}
    )
    history = history.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)

    excluded = pd.DataFrame(excluded_rows, columns=EXCLUDED_COLUMNS)
    excluded["reason"] = [_redact_secrets(str(r)) for r in excluded["reason"]]
    excluded = excluded.sort_values(["source", "run_id"], kind="stable", na_position="last").reset_index(drop=True)
    return {"runs": runs, "history": history, "excluded": excluded}


# --------------------------------------------------------------------------------------------
# Offline `.wandb` files
# --------------------------------------------------------------------------------------------
_WANDB_MAGIC = b":W&B"
_WANDB_IDENT = 0xBEE1
_WANDB_HEADER = struct.Struct("<4sHB")  # magic, ident (uint16 LE), format version
_LOG_BLOCK = 32768  # LevelDB log framing: 32 KiB blocks counted from the start of the file
_LOG_RECORD_HEADER = struct.Struct("<IHB")  # crc32 (of type byte + data), length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _record_crc(rtype: int, payload: bytes) -> int:
    # wandb's checksum: plain zlib CRC-32 over the type byte then the data (not LevelDB's masked
    # CRC-32C); checked against files written by wandb 0.31.
    return zlib.crc32(payload, zlib.crc32(bytes((rtype,))))


def _valid_record_at(data: bytes, pos: int) -> bool:
    block_end = pos - pos % _LOG_BLOCK + _LOG_BLOCK
    if pos + _LOG_RECORD_HEADER.size > min(block_end, len(data)):
        return False
    crc, length, rtype = _LOG_RECORD_HEADER.unpack_from(data, pos)
    end = pos + _LOG_RECORD_HEADER.size + length
    if rtype not in (_FULL, _FIRST, _MIDDLE, _LAST) or end > min(block_end, len(data)):
        return False
    return _record_crc(rtype, data[pos + _LOG_RECORD_HEADER.size:end]) == crc


def split_log_records(data: bytes, start: int = _WANDB_HEADER.size) -> tuple[list[bytes], bool, int]:
    """Reassemble the payloads of a LevelDB-log framed byte string.

    Returns (payloads, truncated, n_bad). `truncated`: the data ends inside a record (a crash
    or a cut copy); everything before it is returned. `n_bad`: damaged regions skipped (a CRC
    mismatch, an impossible length or type, an orphan fragment). After a damaged record the reader
    resumes at the next record if that one checks out, else at the next block (the damaged
    length field cannot be trusted), as LevelDB does.
    """
    payloads: list[bytes] = []
    pending: bytearray | None = None
    truncated = False
    n_bad = 0
    skipping = False  # fragments of a record whose start was damaged: drop them silently
    pos, size = start, len(data)
    while pos < size:
        block_end = pos - pos % _LOG_BLOCK + _LOG_BLOCK
        if block_end - pos < _LOG_RECORD_HEADER.size:
            pos = block_end  # block trailer too short for a header: zero padding
            continue
        if pos + _LOG_RECORD_HEADER.size > size:
            truncated = True
            break
        crc, length, rtype = _LOG_RECORD_HEADER.unpack_from(data, pos)
        body_start = pos + _LOG_RECORD_HEADER.size
        body_end = body_start + length
        if crc == 0 and length == 0 and rtype == 0:
            pos = block_end  # zero-filled (preallocated) space: nothing more in this block
            continue
        if body_end > block_end or rtype not in (_FULL, _FIRST, _MIDDLE, _LAST):
            # the writer never lets a fragment cross a block: the header itself is damaged
            n_bad += 1
            pending, skipping = None, True
            pos = block_end
            continue
        if body_end > size:
            truncated = True
            break
        payload = data[body_start:body_end]
        if _record_crc(rtype, payload) != crc:
            n_bad += 1
            pending, skipping = None, True
            pos = body_end if _valid_record_at(data, body_end) else block_end
            continue
        pos = body_end
        if rtype == _FULL:
            if pending is not None:
                n_bad += 1  # a FIRST whose LAST never came
            pending, skipping = None, False
            payloads.append(payload)
        elif rtype == _FIRST:
            if pending is not None:
                n_bad += 1
            pending, skipping = bytearray(payload), False
        elif pending is None:
            if not skipping:
                n_bad += 1  # MIDDLE/LAST without a FIRST
        elif rtype == _MIDDLE:
            pending += payload
        else:
            payloads.append(bytes(pending + payload))
            pending = None
    if pending is not None:
        truncated = True
    return payloads, truncated, n_bad


def _item_path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _set_nested(target: dict, path: Sequence[str], value: Any) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def _del_nested(target: dict, path: Sequence[str]) -> None:
    for part in path[:-1]:
        target = target.get(part)
        if not isinstance(target, dict):
            return
    target.pop(path[-1], None)


def _loads_lenient(text: str) -> Any:
    try:
        return json.loads(text)  # accepts NaN / Infinity / -Infinity as W&B writes them
    except ValueError:
        return text


def _loads_history_value(text: str) -> Any:
    """A history value's JSON text -> Python value, as `_loads_lenient`, with a fast path for
    plain numbers (nearly every value; json.loads costs ~20x float() and dominated reading)."""
    if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        return int(text)
    try:
        return float(text)  # also NaN / Infinity / -Infinity, as W&B writes them
    except ValueError:
        return _loads_lenient(text)  # strings, booleans, null, media dicts


def _history_item_value(item: Any) -> Any:
    if item.value_json:
        return _loads_history_value(item.value_json)
    kind = item.WhichOneof("value")  # the typed form (x_history_value_encoding="typed")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return _loads_lenient(item.json)
    return getattr(item, kind)


def _apply_record_items(target: dict, updates, removes) -> None:
    """Apply a config or summary record's update and remove items to a nested dict."""
    for item in updates:
        path = _item_path(item)
        if path:
            _set_nested(target, path, _loads_lenient(item.value_json))
    for item in removes:
        path = _item_path(item)
        if path:
            _del_nested(target, path)


def decode_wandb_records(payloads: Iterable[bytes]) -> tuple[dict, int]:
    """Protobuf `Record` payloads -> (run dict, number of payloads that failed to decode)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    run: dict[str, Any] = {
        "run_id": None, "name": None, "project": None, "entity": None, "config": {}, "history": [],
        "summary": {}, "exit_code": None, "start_time": None, "wandb_version": None, "n_records": 0,
    }
    n_bad = 0
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            n_bad += 1
            continue
        run["n_records"] += 1
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                path = _item_path(item)
                if path:
                    row[".".join(path)] = _history_item_value(item)
            if not isinstance(row.get("_step"), numbers.Real):
                row["_step"] = record.history.step.num
            run["history"].append(row)
        elif kind == "run":
            rec = record.run
            for field, key in (("run_id", "run_id"), ("display_name", "name"), ("project", "project"), ("entity", "entity")):
                if getattr(rec, field):
                    run[key] = getattr(rec, field)
            if rec.HasField("start_time"):
                run["start_time"] = rec.start_time.seconds + rec.start_time.nanos / 1e9
            _apply_record_items(run["config"], rec.config.update, ())
        elif kind == "config":
            _apply_record_items(run["config"], record.config.update, record.config.remove)
        elif kind == "summary":
            _apply_record_items(run["summary"], record.summary.update, record.summary.remove)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
        elif kind == "header":
            run["wandb_version"] = record.header.version_info.producer or None
    run["config"].pop("_wandb", None)
    run["summary"].pop("_wandb", None)
    return run, n_bad


def read_wandb_file(path: str | os.PathLike) -> dict:
    """Read a W&B offline run file (`run-<id>.wandb`) without uploading it.

    Returns run_id, name, project, entity, config (nested, `_wandb` dropped), history (rows in
    log order: `_step` plus the logged values, NaN/Infinity decoded), summary, exit_code, state
    (exit record 0 -> finished, nonzero -> failed, none -> crashed: the process died before
    `finish`, or is still running), start_time (epoch s), truncated, n_bad_records, n_records.
    Raises WandbFileError for an empty file or one without the W&B header.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise WandbFileError(f"empty file ({path.name}): not a W&B run file")
    if len(data) < _WANDB_HEADER.size:
        raise WandbFileError(f"file too short for a W&B header ({len(data)} bytes)")
    magic, ident, version = _WANDB_HEADER.unpack_from(data)
    if magic != _WANDB_MAGIC or ident != _WANDB_IDENT:
        raise WandbFileError(f"not a W&B run file: bad header {data[:_WANDB_HEADER.size]!r}")
    payloads, truncated, n_bad_frames = split_log_records(data)
    run, n_bad_decode = decode_wandb_records(payloads)
    if run["exit_code"] is None:
        state = "crashed"
    else:
        state = "finished" if run["exit_code"] == 0 else "failed"
    return {**run, "state": state, "truncated": truncated, "n_bad_records": n_bad_frames + n_bad_decode,
            "format_version": version}


def find_wandb_files(root: str | os.PathLike) -> list[Path]:
    """Every `*.wandb` file under root (offline-run-*/run-*.wandb and any other), sorted.

    Symlinked directories (wandb's `latest-run`) are not followed and files are de-duplicated by
    real path, so no run is counted twice.
    """
    found: dict[str, Path] = {}
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for file_name in files:
            if file_name.endswith(".wandb"):
                path = Path(folder) / file_name
                found.setdefault(os.path.realpath(path), path)
    return sorted(found.values())


def _run_id_from_filename(path: Path) -> str | None:
    match = re.fullmatch(r"run-(.+)\.wandb", path.name)
    return match[1] if match else None


def _merge_segments(segments: list[dict]) -> dict:
    """Several files of one run id (an offline run resumed with the same id) -> one raw run."""
    segments = sorted(segments, key=lambda s: (s.get("start_time") or 0.0, s["source"]))
    last = segments[-1]
    config: dict = {}
    for seg in segments:
        config.update(seg["config"])
    flags = []
    if len(segments) > 1:
        flags.append(f"segments:{len(segments)}")
    if any(seg["truncated"] for seg in segments):
        flags.append("truncated")
    n_bad = sum(seg["n_bad_records"] for seg in segments)
    if n_bad:
        flags.append(f"bad_records:{n_bad}")
    rows = [row for seg in segments for row in seg["history"]]
    timestamps = [r["_timestamp"] for r in rows if isinstance(r.get("_timestamp"), numbers.Real)]
    steps = [r["_step"] for r in rows if isinstance(r.get("_step"), numbers.Real)]
    return {
        "run_id": last["run_id"],
        "name": next((s["name"] for s in reversed(segments) if s["name"]), None),
        "config": config,
        "state": last["state"],
        "source": ";".join(seg["source"] for seg in segments),
        "rows": rows,
        "start_time": segments[0].get("start_time"),
        "updated_at": max(timestamps) if timestamps else None,
        "wandb_last_step": int(max(steps)) if steps else None,
        "flags": flags,
    }


def _peek_run_id(path: Path, limit: int = 1 << 21) -> str | None:
    """The run id of the first run record of a `.wandb` file, read from the file's head only.

    None when there is none in the first `limit` bytes or the file is unreadable (the caller
    then reads the file whole). Lets load_offline_runs group files by run before reading them.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    size = 4 * _LOG_BLOCK
    try:
        with open(path, "rb") as handle:
            while True:
                handle.seek(0)
                head = handle.read(size)
                if len(head) < _WANDB_HEADER.size or head[:4] != _WANDB_MAGIC:
                    return None
                payloads, _truncated, _n_bad = split_log_records(head)
                for payload in payloads:
                    record = wandb_internal_pb2.Record()
                    try:
                        record.ParseFromString(payload)
                    except DecodeError:
                        continue
                    if record.WhichOneof("record_type") == "run":
                        return record.run.run_id or None
                if len(head) < size or size >= limit:
                    return None
                size *= 4
    except OSError:
        return None


def _read_segment(path: Path, root: Path, exclusions: list[dict]) -> dict | None:
    """One `.wandb` file -> its run dict (with `source`), or None after appending its exclusion."""
    rel = path.relative_to(root).as_posix()
    excluded = {"source": rel, "run_id": _run_id_from_filename(path), "name": None}
    try:
        run = read_wandb_file(path)
    except WandbFileError as exc:
        exclusions.append({"kind": "excluded", "row": {**excluded, "reason": str(exc)}})
        return None
    except OSError as exc:
        reason = f"cannot read file: {exc.strerror or exc}"
        exclusions.append({"kind": "excluded", "row": {**excluded, "reason": reason}})
        return None
    if run["n_records"] == 0:
        reason = ("no records after the file header (the run stopped before wandb wrote "
                  "anything to disk, e.g. a crash soon after start)")
        if run["n_bad_records"]:
            reason = f"no readable records ({run['n_bad_records']} damaged)"
        exclusions.append({"kind": "excluded", "row": {**excluded, "reason": reason}})
        return None
    if not run["run_id"]:
        reason = "no run record (run id, name, config) readable in the file"
        exclusions.append({"kind": "excluded", "row": {**excluded, "reason": reason}})
        return None
    return {**run, "source": rel}


def load_offline_runs(root: str | os.PathLike) -> dict:
    """Read every `.wandb` file under root -> runs, history, excluded frames (snapshot schema).

    Each file either becomes (part of) a run or an excluded row with its reason; other files
    (logs, requirements.txt, stray notes) are ignored. Files sharing a run id are segments of one
    resumed run and are merged in start-time order (flag `segments:N`). Files are grouped by run
    id first (from the head of each file), then read and normalised one run at a time, so memory
    holds one run's raw records, not the whole sweep's.
    """
    root = Path(root)
    exclusions: list[dict] = []
    runs: dict[str, dict] = {}
    merged_paths: dict[str, list[Path]] = {}
    groups: dict[str, list[Path]] = {}
    for path in find_wandb_files(root):
        groups.setdefault(_peek_run_id(path) or f"\0{path}", []).append(path)
    leftovers: list[dict] = []  # files whose id was not known from their head
    for key, paths in groups.items():
        segments = []
        for path in paths:
            segment = _read_segment(path, root, exclusions)
            if segment is not None:
                (segments if segment["run_id"] == key else leftovers).append(segment)
        if segments:
            merged_paths[key] = [root / s["source"] for s in segments]
            runs[key] = normalise_raw_run(_merge_segments(segments))
    by_id: dict[str, list[dict]] = {}
    for segment in leftovers:
        by_id.setdefault(segment["run_id"], []).append(segment)
    for run_id, segments in by_id.items():
        # rare: a segment of a run already merged (its head did not show the id): merge again
        again = [_read_segment(p, root, []) for p in merged_paths.get(run_id, [])]
        runs[run_id] = normalise_raw_run(_merge_segments(segments + [s for s in again if s]))
    return assemble_snapshot_frames(exclusions + list(runs.values()))


# --------------------------------------------------------------------------------------------
# Export directory: runs.csv + history/<run_id>.csv|parquet
# --------------------------------------------------------------------------------------------
_EXPORT_META_COLUMNS = {"run_id", "name", "state", "config", "start_time", "created_at",
                        "updated_at", "heartbeat_at"}
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _parse_cell(text: str) -> Any:
    """A runs.csv config cell -> number / bool / JSON value where it parses, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _export_config(row: Mapping[str, str], config_columns: Sequence[str]) -> tuple[dict, str | None]:
    config: dict = {}
    text = row.get("config") or ""
    if text.strip():
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            return {}, f"config column is not valid JSON ({exc.msg})"
        if not isinstance(parsed, dict):
            return {}, "config column is not a JSON object"
        config = {k: _unwrap_config_value(v) for k, v in parsed.items()}
    for column in config_columns:
        cell = row.get(column) or ""
        if cell.strip():
            _set_nested(config, column.split("."), _parse_cell(cell.strip()))
    config.pop("_wandb", None)
    return config, None


def history_rows_from_frame(frame: pd.DataFrame) -> tuple[list[dict], int]:
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


def read_history_table(path: Path) -> pd.DataFrame:
    """One exported history file (.parquet or .csv)."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def load_export_dir(directory: str | os.PathLike) -> dict:
    """Read an export directory -> runs, history, excluded frames (snapshot schema).

    runs.csv: run_id, name, optional state / start_time (or created_at) / updated_at, and the
    config as a `config` JSON column and/or dotted columns (`data.train_batch_size`). Each run's
    history is history/<run_id>.parquet or .csv (parquet preferred when both exist).
    """
    directory = Path(directory)
    try:
        table = pd.read_csv(directory / "runs.csv", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"cannot read {directory / 'runs.csv'}: {exc}") from None
    missing = [c for c in ("run_id", "name") if c not in table.columns]
    if missing:
        raise DataSourceError(f"{directory / 'runs.csv'} lacks column(s) {', '.join(missing)}")
    config_columns = [c for c in table.columns if c not in _EXPORT_META_COLUMNS]
    entries: list[dict] = []
    seen: set[str] = set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        run_id, name = row["run_id"].strip(), row["name"].strip() or None
        base = {"source": f"runs.csv:{line}", "run_id": run_id or None, "name": name}
        if not run_id or not _SAFE_RUN_ID.fullmatch(run_id):
            entries.append({"kind": "excluded", "row": {**base, "reason": f"missing or invalid run_id {run_id!r} in runs.csv line {line}"}})
            continue
        if run_id in seen:
            entries.append({"kind": "excluded", "row": {**base, "reason": f"duplicate run_id {run_id!r} (runs.csv line {line} repeats an earlier row)"}})
            continue
        seen.add(run_id)
        config, problem = _export_config(row, config_columns)
        if problem:
            entries.append({"kind": "excluded", "row": {**base, "reason": problem}})
            continue
        candidates = [directory / "history" / f"{run_id}{ext}" for ext in (".parquet", ".csv")]
        history_path = next((p for p in candidates if p.is_file()), None)
        if history_path is None:
            reason = f"no history file history/{run_id}.parquet or history/{run_id}.csv"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason}})
            continue
        base["source"] = history_path.relative_to(directory).as_posix()
        try:
            frame = read_history_table(history_path)
        except Exception as exc:  # noqa: BLE001 -- any parser error means the same: unreadable file
            reason = f"cannot read history file {base['source']}: {type(exc).__name__}: {exc}"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason.splitlines()[0]}})
            continue
        if not {"_step", "step", "training/global_step"} & set(frame.columns):
            reason = f"history file {base['source']} has no step column (step, _step or training/global_step)"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason}})
            continue
        rows, n_non_numeric = history_rows_from_frame(frame)
        steps = [r["_step"] for r in rows if math.isfinite(r["_step"])]
        raw = {
            **base,
            "config": config,
            "state": row.get("state") or "unknown",
            "rows": rows,
            "n_non_numeric": n_non_numeric,
            "start_time": row.get("start_time") or row.get("created_at") or None,
            "updated_at": row.get("updated_at") or row.get("heartbeat_at") or None,
            "wandb_last_step": int(max(steps)) if steps else None,
        }
        entries.append(normalise_raw_run(raw))
    return assemble_snapshot_frames(entries)


# --------------------------------------------------------------------------------------------
# W&B server (public API)
# --------------------------------------------------------------------------------------------
_TRANSIENT_NAMES = {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError", "ConnectionError",
                    "ChunkedEncodingError", "ProtocolError", "RemoteDisconnected", "IncompleteRead"}
_TRANSIENT_TEXT = re.compile(r"too many requests|rate limit|timed? ?out|temporarily unavailable|"
                             r"bad gateway|service unavailable|gateway timeout|connection (reset|refused|aborted)",
                             re.IGNORECASE)


def _http_status(exc: BaseException) -> int | None:
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        for attr in ("status_code", "status", "code"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
        stack.extend([getattr(obj, "response", None), getattr(obj, "exc", None),
                      getattr(obj, "__cause__", None), getattr(obj, "__context__", None)])
    return None


def is_transient_error(exc: BaseException) -> bool:
    """HTTP 429 / 5xx, timeouts and dropped connections are worth retrying; the rest are not."""
    status = _http_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    return bool(_TRANSIENT_TEXT.search(str(exc)))


def _redact_secrets(text: str) -> str:
    """Remove the W&B API key from text that may end up in a file or on screen."""
    key = os.environ.get("WANDB_API_KEY", "")
    if len(key) >= 6 and key in text:
        text = text.replace(key, "***")
    return text


def _portable_source(source: Any) -> str:
    """The source as the manifest records it (and the reports print it): the API key redacted and
    the home directory written `~`, so no report carries a user's absolute home path."""
    text = _redact_secrets(str(source))
    try:
        home = str(Path.home())
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return text
    if home not in ("", os.sep) and (text == home or text.startswith(home.rstrip(os.sep) + os.sep)):
        text = "~" + text[len(home.rstrip(os.sep)):]
    return text


def _describe_error(exc: BaseException) -> str:
    status = _http_status(exc)
    message = " ".join(str(exc).split())[:300]
    prefix = f"HTTP {status}: " if status is not None and str(status) not in message else ""
    return _redact_secrets(f"{type(exc).__name__}: {prefix}{message}")


class _RetriesExhausted(Exception):
    def __init__(self, last: BaseException, attempts: int):
        super().__init__(f"still failing after {attempts} attempts: {_describe_error(last)}")
        self.last, self.attempts = last, attempts


def _call_with_retries(func: Callable[[], Any], *, max_retries: int, backoff: float, max_backoff: float,
                       sleep: Callable[[float], Any]) -> Any:
    """func() with exponential backoff and full jitter on transient errors.

    Non-transient errors propagate at once; transient ones after `max_retries` retries raise
    _RetriesExhausted.
    """
    for attempt in range(max_retries + 1):
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 -- classified right here
            if not is_transient_error(exc):
                raise
            if attempt == max_retries:
                raise _RetriesExhausted(exc, attempt + 1) from None
            sleep(min(max_backoff, backoff * 2**attempt) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def needed_keys(available: Iterable[str], patterns: Sequence[str] = NEEDED_KEY_PATTERNS) -> list[str]:
    """The keys among `available` the analysis needs, sorted."""
    return sorted({k for k in available if any(fnmatch.fnmatchcase(k, p) for p in patterns)})


def history_key_groups(keys: Iterable[str], counts: Mapping[str, int] | None = None) -> list[list[str]]:
    """Split keys into groups logged together, one `scan_history` call each.

    `scan_history(keys=...)` returns only rows in which *all* requested keys are present, so keys
    logged at different steps must not share a call: validation keys (every test_freq steps)
    must not be fetched with per-step training keys. With `counts` (how many history rows hold
    each key, from the run's historyKeys) keys logged equally often form one group: for verl,
    one call for the per-step keys and one for the validation keys, instead of one per family
    (every call costs a lastHistoryStep request plus its pages). The caller checks each group's
    row count and refetches key by key if keys of equal counts were not logged together. Keys
    without a count are grouped by family (the part before the first '/'): verl logs each family
    from one place.
    """
    counts = counts or {}
    groups: dict[Any, list[str]] = {}
    for key in sorted(keys):
        group = ("count", counts[key]) if counts.get(key) else ("family", key.split("/", 1)[0])
        groups.setdefault(group, []).append(key)
    return list(groups.values())


def _history_key_counts(run: Any) -> dict[str, int]:
    """key -> number of history rows holding it, from the run's `historyKeys` ({} if absent).

    W&B's form: {"keys": {key: {"typeCounts": [{"type": "number", "count": N}, ...]}}, "lastStep": S}.
    """
    info = _run_attr(run, "history_keys")
    keys = info.get("keys") if isinstance(info, Mapping) else None
    if not isinstance(keys, Mapping):
        return {}
    counts = {}
    for key, meta in keys.items():
        types = meta.get("typeCounts") if isinstance(meta, Mapping) else None
        if isinstance(types, list):
            total = sum(t["count"] for t in types if isinstance(t, Mapping) and isinstance(t.get("count"), int)
                        and not isinstance(t.get("count"), bool))
            if total > 0:
                counts[str(key)] = total
    return counts


def _run_attr(run: Any, *names: str) -> Any:
    for name in names:
        try:
            value = getattr(run, name)
        except AttributeError:
            continue
        if value is not None:
            return value
    return None


def _run_available_keys(run: Any) -> set[str]:
    keys: set[str] = set()
    summary = _run_attr(run, "summary")
    if summary is not None:
        keys.update(str(k) for k in summary.keys())
    history_keys = _run_attr(run, "history_keys")  # {"keys": {...}, "lastStep": N} on wandb.Api runs
    if isinstance(history_keys, Mapping) and isinstance(history_keys.get("keys"), Mapping):
        keys.update(str(k) for k in history_keys["keys"])
    return keys


def _api_run_status(run: Any) -> dict:
    last_step = _run_attr(run, "lastHistoryStep")
    return {
        "state": normalise_run_state(_run_attr(run, "state")),
        "wandb_last_step": int(last_step) if isinstance(last_step, numbers.Real) and last_step >= 0 else None,
        # wandb.Api runs have no update time; the heartbeat is the last time the run wrote anything
        "updated_at": _iso_utc(_run_attr(run, "heartbeat_at", "updated_at")),
    }


def _same_status(previous: Mapping, status: Mapping) -> bool:
    def norm(value: Any) -> Any:
        return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value

    return (norm(previous.get("state")) == status["state"]
            and norm(previous.get("updated_at")) == status["updated_at"]
            and status["wandb_last_step"] is not None
            and norm(previous.get("wandb_last_step")) is not None
            and int(previous["wandb_last_step"]) == status["wandb_last_step"])


def _fetch_api_run(run: Any, path: str, previous: Mapping | None, retry: Callable[[Callable[[], Any]], Any],
                   page_size: int, patterns: Sequence[str], scan_each_key: bool) -> dict:
    """One W&B run -> a run entry, an exclusion, or {"kind": "reused"} / {"kind": "failed"}."""
    run_id = str(_run_attr(run, "id"))
    source = f"wandb:{path}/{run_id}"
    base = {"source": source, "run_id": run_id, "name": None}
    try:
        base["name"] = _run_attr(run, "name")
        status = retry(lambda: _api_run_status(run))
        if previous is not None and _same_status(previous, status):
            return {"kind": "reused", "run_id": run_id}
        config = retry(lambda: dict(_run_attr(run, "config") or {}))
        config = {k: _unwrap_config_value(v) for k, v in config.items() if not str(k).startswith("_wandb")}
        meta = run_metadata(base["name"], config)
        if meta["reason"]:
            return {"kind": "excluded", "row": {**base, "reason": meta["reason"]}}
        keys = needed_keys(retry(lambda: _run_available_keys(run)), patterns)
        if not any(k.startswith("val-core/") for k in keys):
            return {"kind": "excluded", "row": {**base, "reason": REASON_NO_VALIDATION}}
        rows_by_step: dict[int, dict] = {}
        counts = {} if scan_each_key else retry(lambda: _history_key_counts(run))
        groups = [[k] for k in keys] if scan_each_key else history_key_groups(keys, counts)
        for group in groups:
            request = ["_step", *group]
            rows = retry(lambda request=request: list(run.scan_history(keys=request, page_size=page_size)))
            if len(group) > 1 and len(rows) < counts.get(group[0], 0):
                # keys logged equally often but not at the same steps: the joint scan dropped
                # rows, so fetch each key on its own (rare; nothing is lost)
                rows = [row for key in group for row in retry(
                    lambda key=key: list(run.scan_history(keys=["_step", key], page_size=page_size)))]
            for row in rows:
                step = row.get("_step")
                if isinstance(step, numbers.Real) and math.isfinite(step):
                    rows_by_step.setdefault(int(step), {"_step": int(step)}).update(row)
        raw = {
            **base,
            "config": config,
            "state": status["state"],
            "rows": [rows_by_step[s] for s in sorted(rows_by_step)],
            "start_time": _run_attr(run, "created_at", "createdAt"),
            "updated_at": status["updated_at"],
            "wandb_last_step": status["wandb_last_step"],
        }
        return normalise_raw_run(raw)
    except _RetriesExhausted as exc:
        return {"kind": "failed", "run_id": run_id, "row": {**base, "reason": f"W&B API {exc}"}}
    except Exception as exc:  # noqa: BLE001 -- a non-transient API error excludes this run only
        return {"kind": "excluded", "row": {**base, "reason": f"W&B API error: {_describe_error(exc)}"}}


def _make_wandb_api(timeout: float) -> Any:
    try:
        import wandb

        # The key comes from WANDB_API_KEY or ~/.netrc, read by wandb itself; never touched here.
        return wandb.Api(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 -- any failure here means the same to the user
        raise DataSourceError(
            f"cannot connect to W&B ({_describe_error(exc)}); set WANDB_API_KEY or run `wandb login`"
        ) from None


def fetch_wandb_project(
    path: str,
    api: Any = None,
    previous_runs: pd.DataFrame | None = None,
    previous_history: pd.DataFrame | None = None,
    max_workers: int = 8,
    *,
    page_size: int = 1000,
    timeout: float = 60.0,
    max_retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    sleep: Callable[[float], Any] | None = None,
    progress: bool | None = None,
    key_patterns: Sequence[str] = NEEDED_KEY_PATTERNS,
    scan_each_key: bool = False,
) -> dict:
    """Fetch the runs of `entity/project` from a W&B server -> runs, history, excluded frames.

    Only the needed keys (`key_patterns`), unsampled (`scan_history`), one call per key family
    (`scan_each_key=True`: one call per key, for projects that log a family at mixed steps).
    Runs are fetched in parallel by at most `max_workers` threads, with a tqdm bar on stderr
    (default: only on a terminal). Transient errors (429, 5xx, timeouts) are retried with
    exponential backoff and jitter; other errors exclude the run with the reason. Incremental: a
    run whose state, last step and heartbeat equal those in `previous_runs` is not fetched again
    (its rows from `previous_history` are reused). Also returns n_fetched, n_reused and warnings.
    Raises SourceUnreachableError when listing the runs, or every run fetch, keeps failing.
    """
    from tqdm import tqdm

    path = path.strip().strip("/")
    prefix = f"wandb:{path}/"
    if api is None:
        api = _make_wandb_api(timeout)

    pause = sleep if sleep is not None else time.sleep  # injectable so tests need not wait

    def retry(func: Callable[[], Any]) -> Any:
        return _call_with_retries(func, max_retries=max_retries, backoff=backoff, max_backoff=max_backoff, sleep=pause)

    try:
        runs = retry(lambda: list(api.runs(path)))
    except _RetriesExhausted as exc:
        raise SourceUnreachableError(f"W&B source wandb:{path} unreachable: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- 401/403/404 and the like: one clear line
        raise DataSourceError(f"cannot list the runs of wandb:{path}: {_describe_error(exc)}") from None

    previous_by_id: dict[str, dict] = {}
    if previous_runs is not None and len(previous_runs) and previous_history is not None:
        mask = previous_runs["source"].astype(str).str.startswith(prefix)
        previous_by_id = {str(r["run_id"]): r for r in previous_runs[mask].to_dict("records")}

    results: list[dict] = []
    show = sys.stderr.isatty() if progress is None else progress
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(max_workers))) as pool:
        futures = [
            pool.submit(_fetch_api_run, run, path, previous_by_id.get(str(_run_attr(run, "id"))), retry,
                        page_size, key_patterns, scan_each_key)
            for run in runs
        ]
        with tqdm(total=len(futures), desc=f"wandb:{path}", unit="run", file=sys.stderr, disable=not show) as bar:
            for future in concurrent.futures.as_completed(futures):
                results.append(future.result())
                bar.update(1)

    failed = [r for r in results if r["kind"] == "failed"]
    attempted = [r for r in results if r["kind"] != "reused"]
    if attempted and len(failed) == len(attempted):
        raise SourceUnreachableError(
            f"W&B source wandb:{path} unreachable: all {len(failed)} run fetches failed "
            f"({failed[0]['row']['reason']})"
        )
    entries: list[dict] = []
    warnings_: list[str] = []
    reuse_ids = {r["run_id"] for r in results if r["kind"] == "reused"}
    for result in results:
        if result["kind"] == "failed" and result["run_id"] in previous_by_id:
            # a transient outage should not drop a run we already have: keep the old data, flagged
            reuse_ids.add(result["run_id"])
            warnings_.append(f"{result['row']['source']}: {result['row']['reason']}; kept the previous snapshot's data")
        elif result["kind"] == "failed":
            entries.append({"kind": "excluded", "row": result["row"]})
        elif result["kind"] != "reused":
            entries.append(result)
    stale = {r["run_id"] for r in results if r["kind"] == "failed"}
    if reuse_ids:
        grouped = dict(tuple(previous_history[previous_history["run_id"].astype(str).isin(reuse_ids)].groupby("run_id", sort=False)))
        for run_id in sorted(reuse_ids):
            row = {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in previous_by_id[run_id].items()
                   if k in RUNS_COLUMNS}
            if run_id in stale:
                row["flags"] = ";".join(f for f in [row.get("flags") or "", "stale"] if f)
            history = grouped.get(run_id, pd.DataFrame(columns=["run_id", "step"])).drop(columns="run_id")
            history = history.dropna(axis=1, how="all") if len(history) else history
            entries.append({"kind": "run", "row": row, "history": history.reset_index(drop=True)})
    frames = assemble_snapshot_frames(entries)
    return {**frames, "n_fetched": len(attempted) - len(failed), "n_reused": len(reuse_ids),
            "warnings": warnings_}


# --------------------------------------------------------------------------------------------
# Snapshot: build, write atomically, read back
# --------------------------------------------------------------------------------------------
def _package_versions() -> dict:
    from importlib import metadata

    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in ("numpy", "pandas", "pyarrow", "wandb", "protobuf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _frame_digest(hasher: Any, name: str, frame: pd.DataFrame) -> None:
    """Feed a canonical, writer-independent encoding of a frame into a hash."""
    hasher.update(f"table:{name}:{len(frame)}\n".encode())
    for column in frame.columns:
        series = frame[column]
        hasher.update(f"column:{column}\n".encode())
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(values)
            hasher.update(np.where(missing, 0.0, values).tobytes())
            hasher.update(np.packbits(missing).tobytes())
        else:
            hasher.update("\x1f".join("\x00" if pd.isna(v) else str(v) for v in series).encode())


def snapshot_content_hash(runs: pd.DataFrame, history: pd.DataFrame, excluded: pd.DataFrame) -> str:
    """sha256 over the snapshot's data (not its creation time): same input -> same hash."""
    hasher = hashlib.sha256()
    for name, frame in (("runs", runs), ("history", history), ("excluded", excluded)):
        _frame_digest(hasher, name, frame)
    return "sha256:" + hasher.hexdigest()


def _classify_source(source: str) -> tuple[str, Any]:
    text = str(source).strip()
    if text.startswith("wandb:"):
        path = text[len("wandb:"):].strip().strip("/")
        parts = path.split("/")
        if len(parts) != 2 or not all(parts):
            raise DataSourceError(f"bad W&B source {_redact_secrets(text)!r}: expected wandb:<entity>/<project>")
        return "wandb", path
    path = Path(text).expanduser()
    hint = "expected an offline-runs directory, an export directory with runs.csv, or wandb:<entity>/<project>"
    if not path.exists():
        raise DataSourceError(f"source not found: {text} ({hint})")
    if path.is_file() and path.name == "runs.csv":
        return "export", path.parent
    if not path.is_dir():
        raise DataSourceError(f"source is not a directory: {text} ({hint})")
    if (path / "runs.csv").is_file():
        return "export", path
    if not find_wandb_files(path):
        raise DataSourceError(f"no W&B offline run files (*.wandb) and no runs.csv under {text}")
    return "offline", path


def build_snapshot(source: str, previous_dir: str | os.PathLike | None = None, api: Any = None,
                   **fetch_options: Any) -> dict:
    """Read a source into the snapshot tables: dict(runs, history, excluded, manifest).

    source: `wandb:<entity>/<project>`, an export directory (has runs.csv) or a directory of
    offline runs (`.wandb` files). For W&B, `previous_dir` (an earlier snapshot's output dir)
    makes the fetch incremental; a corrupt earlier snapshot is ignored with a warning.
    `fetch_options` go to `fetch_wandb_project` (max_workers, sleep, progress, ...).
    """
    kind, target = _classify_source(source)
    warnings_: list[str] = []
    extra: dict[str, Any] = {}
    if kind == "wandb":
        previous_runs = previous_history = None
        if previous_dir is not None:
            try:
                previous_runs, previous_history, _ = read_snapshot(previous_dir)
            except SnapshotMissingError:
                pass  # first snapshot: nothing to reuse
            except SnapshotError as exc:
                message = f"earlier snapshot ignored, fetching every run again: {exc}"
                _DATA_LOG.warning(message)
                warnings_.append(message)
        frames = fetch_wandb_project(target, api=api, previous_runs=previous_runs,
                                     previous_history=previous_history, **fetch_options)
        warnings_.extend(frames.pop("warnings"))
        extra = {"n_fetched": frames.pop("n_fetched"), "n_reused": frames.pop("n_reused")}
    elif kind == "export":
        frames = load_export_dir(target)
    else:
        frames = load_offline_runs(target)
    runs, history, excluded = frames["runs"], frames["history"], frames["excluded"]
    manifest = {
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        "source": _portable_source(source),
        "source_kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_runs": len(runs),
        "n_excluded": len(excluded),
        "n_history_rows": len(history),
        "content_hash": snapshot_content_hash(runs, history, excluded),
        **extra,
        "warnings": [_redact_secrets(w) for w in warnings_],
        "package_versions": _package_versions(),
    }
    return {"runs": runs, "history": history, "excluded": excluded, "manifest": manifest}


def _write_temp_file(directory: Path, name: str, data: bytes) -> Path:
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (shared clusters)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the renames are still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _snapshot_data_dir(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    # accept the data directory itself as well as its parent
    return out_dir if (out_dir / "manifest.json").is_file() and not (out_dir / "data").is_dir() else out_dir / "data"


def write_snapshot(snapshot: Mapping, out_dir: str | os.PathLike) -> dict:
    """Write <out_dir>/data/{runs.parquet, history.parquet, excluded_runs.csv, manifest.json}.

    Atomic per file and safe as a set: all files are first written to temporary names in the
    same directory; the current set is hard-linked into data/.prev/; then each file replaces its
    predecessor with os.replace, manifest.json last. The manifest records the sha256 of every
    other file, so a reader detects a torn set and can fall back to .prev. Returns the manifest.
    """
    data_dir = Path(out_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)  # left by an earlier interrupted write
    payloads: dict[str, bytes] = {}
    for name, key in (("runs.parquet", "runs"), ("history.parquet", "history")):
        buffer = io.BytesIO()
        snapshot[key].to_parquet(buffer, index=False, engine="pyarrow")
        payloads[name] = buffer.getvalue()
    payloads["excluded_runs.csv"] = snapshot["excluded"].to_csv(index=False, lineterminator="\n").encode()
    manifest = dict(snapshot["manifest"])
    manifest["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                         for name, data in payloads.items()}
    payloads["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()

    temps: dict[str, Path] = {}
    try:
        for name, data in payloads.items():
            temps[name] = _write_temp_file(data_dir, name, data)
        _keep_previous_set(data_dir)
        for name in [*SNAPSHOT_FILES, "manifest.json"]:
            os.replace(temps.pop(name), data_dir / name)
        _fsync_directory(data_dir)
        shutil.rmtree(data_dir / ".prev", ignore_errors=True)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return manifest


def _keep_previous_set(data_dir: Path) -> None:
    """Hard-link the current snapshot into data/.prev/ before replacing its files.

    Only a consistent set is kept: after a torn write the older good .prev stays in place.
    """
    try:
        _verify_snapshot_files(data_dir)
    except SnapshotError:
        return
    staging = data_dir / ".prev.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in [*SNAPSHOT_FILES, "manifest.json"]:
        if (data_dir / name).is_file():
            try:
                os.link(data_dir / name, staging / name)
            except OSError:
                shutil.copy2(data_dir / name, staging / name)
    shutil.rmtree(data_dir / ".prev", ignore_errors=True)
    os.replace(staging, data_dir / ".prev")


def _verify_snapshot_files(data_dir: Path) -> dict:
    """The manifest of a snapshot set whose files all match their recorded sha256."""
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise SnapshotMissingError(f"no snapshot in {data_dir} (manifest.json missing); run `make snapshot`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"corrupt snapshot in {data_dir}: manifest.json unreadable ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SnapshotError(f"corrupt snapshot in {data_dir}: manifest.json has no file list")
    for name in SNAPSHOT_FILES:
        path, expected = data_dir / name, manifest["files"].get(name) or {}
        if not path.is_file():
            raise SnapshotError(f"incomplete snapshot in {data_dir}: {name} missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected.get("sha256"):
            raise SnapshotError(f"torn or corrupt snapshot in {data_dir}: {name} does not match manifest.json "
                                "(interrupted write?); run `make snapshot` again")
    return manifest


def _read_verified_set(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    manifest = _verify_snapshot_files(data_dir)
    try:
        runs = pd.read_parquet(data_dir / "runs.parquet")
        history = pd.read_parquet(data_dir / "history.parquet")
    except Exception as exc:  # noqa: BLE001 -- any parquet error means a corrupt file
        raise SnapshotError(f"corrupt snapshot in {data_dir}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in ("run_id", "name", "phase", "n_prompts", "n_rollouts", "source") if c not in runs.columns]
    missing += [f"history.{c}" for c in ("run_id", "step") if c not in history.columns]
    if missing:
        raise SnapshotError(f"snapshot in {data_dir} lacks column(s) {', '.join(missing)}")
    return runs, history, manifest


def read_snapshot(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read a snapshot written by `write_snapshot` -> (runs, history, manifest).

    Every file is checked against the hashes in manifest.json. A torn set (a write interrupted
    between two renames) falls back, with a warning, to the previous complete set in data/.prev.
    Raises SnapshotMissingError / SnapshotError with a one-line message otherwise.
    """
    data_dir = _snapshot_data_dir(out_dir)
    try:
        return _read_verified_set(data_dir)
    except SnapshotMissingError:
        raise
    except SnapshotError as exc:
        backup = data_dir / ".prev"
        if not backup.is_dir():
            raise
        try:
            runs, history, manifest = _read_verified_set(backup)
        except SnapshotError:
            raise exc from None
        _DATA_LOG.warning("%s; using the previous complete snapshot kept in %s", exc, backup)
        return runs, history, manifest


def read_excluded_runs(out_dir: str | os.PathLike) -> pd.DataFrame:
    """The excluded_runs.csv of a snapshot (source, run_id, name, reason)."""
    return pd.read_csv(_snapshot_data_dir(out_dir) / "excluded_runs.csv", dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------------------------
# Command line: python cbs_helpers.py snapshot --source SRC --out OUT
# --------------------------------------------------------------------------------------------
_PROJECT_DIR = Path(__file__).resolve().parent


def _snapshot_unchanged(manifest: dict, out_dir) -> bool:
    """True when OUT already holds a readable snapshot of the same source with the same content."""
    try:  # the per-file hashes prove the set is whole; no need to parse the parquet again
        old = _verify_snapshot_files(_snapshot_data_dir(out_dir))
    except Exception:  # noqa: BLE001 -- missing, torn or corrupt: write a new one
        return False
    return (old.get("content_hash") == manifest.get("content_hash")
            and old.get("source") == manifest.get("source"))


def main(argv: Sequence[str] | None = None) -> int:
    """`snapshot --source SRC --out OUT`: one summary line on success; one error line and exit 2 on failure."""
    parser = argparse.ArgumentParser(prog="cbs_helpers.py", description="CBS-RLVR data layer")
    commands = parser.add_subparsers(dest="command", required=True)
    snap = commands.add_parser("snapshot", help="read a source into <OUT>/data/ (parquet + manifest)")
    snap.add_argument("--source", default=str(_PROJECT_DIR / "data" / "demo"),
                      help="wandb:<entity>/<project>, an offline-runs directory, or an export directory")
    snap.add_argument("--out", default=str(_PROJECT_DIR / "outputs"), help="output directory (default: outputs/)")
    snap.add_argument("--previous", default=None,
                      help="earlier snapshot for an incremental W&B fetch (default: --out)")
    snap.add_argument("--workers", type=int, default=8, help="parallel W&B fetches (default: 8)")
    snap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    _DATA_LOG.addHandler(handler)
    try:
        options = {"max_workers": args.workers}
        if args.no_progress:
            options["progress"] = False
        snapshot = build_snapshot(args.source, previous_dir=args.previous or args.out, **options)
        unchanged = _snapshot_unchanged(snapshot["manifest"], args.out)
        if not unchanged:
            write_snapshot(snapshot, args.out)
    except DataLayerError as exc:
        print(f"error: {_redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the previous snapshot is unchanged", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- a bug: still one line unless CBS_DEBUG is set
        if os.environ.get("CBS_DEBUG"):
            raise
        print(f"error: unexpected {_describe_error(exc)} (set CBS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    finally:
        _DATA_LOG.removeHandler(handler)
    manifest = snapshot["manifest"]
    if unchanged:
        # Leave the files (and their times) alone so `make report` re-runs no notebook.
        print(f"snapshot: unchanged ({manifest['n_runs']} runs, {manifest['n_excluded']} excluded) "
              f"in {Path(args.out) / 'data'}")
        return 0
    print(f"snapshot: {manifest['n_runs']} runs in, {manifest['n_excluded']} excluded, "
          f"{manifest['n_history_rows']} history rows from {manifest['source']} -> {Path(args.out) / 'data'}")
    return 0


# ===============================================================================================
# Analysis: steps and samples to target, McCandlish fits, two axes, noise scale, wall clock
# ===============================================================================================

# ------------------------------------------------------------------------------------------
# Constants
# ------------------------------------------------------------------------------------------
FIT_STATUSES = ("ok", "extrapolated", "insufficient", "failed")
CBS_FIT_COLUMNS = [
    "threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min", "E_min", "B_crit_20pct",
    "r2_log", "n_points", "n_censored", "status", "reason",
]
SB_EB_COLUMNS = [
    "run_id", "run_name", "replicate", "n_prompts", "n_rollouts", "total_batch", "threshold",
    "S_B", "E_B", "censored", "n_eval", "n_nonfinite",
]
# B_noise is searched within [min B / 1000, max B * 1000]; a fit that runs into either end
# is not identified by the data (S flat in B, or S proportional to 1/B throughout).
_SEARCH_DECADES = 3.0
_SIGMA_FLOOR = 1e-6
_BOUND_TOL = 1e-3
# Eval-noise bootstrap: above this many (resample x eval point) draws the per-run
# re-measurement uses fewer distinct resamples and a normal approximation (see fit_phase).
_EXACT_DRAWS = 5_000_000
_DRAW_BUDGET = 40_000_000
_MIN_DISTINCT_RESAMPLES = 64
_SLOPE_WINDOW = 48


# ------------------------------------------------------------------------------------------
# Metric selection and eval series
# ------------------------------------------------------------------------------------------
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _norm_logpdf(z):
    """log of the standard normal density (scipy.stats costs 0.3 s of import per notebook)."""
    return -0.5 * np.square(z) - _LOG_SQRT_2PI


def select_accuracy_metric(columns, metric: str | None = None, prefer: str | None = None) -> str:
    """The validation-accuracy key to analyse.

    metric: an exact key, or an fnmatch pattern such as 'val-core/*/reward/mean@*'
    (default: any 'val-core/*mean@*' key). prefer: a substring of the data source that picks
    one of several matches (case-insensitive, e.g. 'gsm8k', 'math'). Ambiguity is an error
    rather than a silent pick, because analysing the wrong task looks plausible.
    Raises ValueError listing the val-core columns present when nothing (unique) matches.
    """
    cols = [str(c) for c in (columns.columns if isinstance(columns, pd.DataFrame) else columns)]
    val_cols = sorted(c for c in cols if c.startswith("val-core/"))
    if metric is not None and metric in cols:
        return metric
    pattern = metric if metric is not None else "val-core/*mean@*"
    matches = sorted(c for c in cols if fnmatch.fnmatchcase(c, pattern))
    listing = ", ".join(val_cols) if val_cols else "(none)"
    if not matches:
        raise ValueError(f"no column matches {pattern!r}; val-core columns present: {listing}")
    if prefer:
        preferred = [c for c in matches if prefer.lower() in c.lower()]
        if not preferred:
            raise ValueError(
                f"no column matching {pattern!r} contains {prefer!r}; matches: "
                f"{', '.join(matches)}; val-core columns present: {listing}")
        matches = preferred
    if len(matches) > 1:
        raise ValueError(
            f"{len(matches)} columns match {pattern!r}"
            + (f" and {prefer!r}" if prefer else "")
            + f": {', '.join(matches)}; pass an exact key or a `prefer` substring")
    return matches[0]


def _clean_series(steps, acc) -> tuple[np.ndarray, np.ndarray, int]:
    """Finite (step, acc) pairs sorted by step, and how many pairs were non-finite."""
    s = np.asarray(steps, dtype=float).ravel()
    a = np.asarray(acc, dtype=float).ravel()
    if s.shape != a.shape:
        raise ValueError(f"steps and acc differ in length ({s.size} vs {a.size})")
    ok = np.isfinite(s) & np.isfinite(a)
    n_bad = int((~ok).sum())
    s, a = s[ok], a[ok]
    order = np.argsort(s, kind="stable")
    return s[order], a[order], n_bad


def _eval_series(history: pd.DataFrame, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """run_id -> (eval steps, accuracies, n_nonfinite) for one metric.

    A NaN in the wide history means "not logged at this step" (or a non-finite value the data
    layer already counted in the run's flags); +-inf values are counted here and ignored.
    """
    if metric not in history.columns or len(history) == 0:
        return {}
    acc = history[metric].to_numpy(dtype=float)
    logged = ~np.isnan(acc)
    codes, uniq = pd.factorize(history["run_id"])
    codes = codes[logged]
    steps = history["step"].to_numpy(dtype=float)[logged]
    acc = acc[logged]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    out = {}
    for k, rid in enumerate(uniq):
        sel = order[bounds[k]:bounds[k + 1]]
        out[str(rid)] = _clean_series(steps[sel], acc[sel])
    return out


# ------------------------------------------------------------------------------------------
# Steps to target
# ------------------------------------------------------------------------------------------
def _crossings(steps: np.ndarray, acc: np.ndarray, thresholds, method: str):
    """(S, censored) arrays over thresholds for one clean, step-sorted eval series."""
    thr = np.atleast_1d(np.asarray(thresholds, dtype=float))
    S = np.full(thr.shape, np.nan)
    cens = np.zeros(thr.shape, dtype=bool)
    n = len(steps)
    if n == 0:
        cens[:] = True
        return S, cens
    if method == "isotonic":
        fit = optimize.isotonic_regression(acc, increasing=True).x
        idx = np.searchsorted(fit, thr, side="left")  # first eval with smoothed acc >= thr
    elif method == "first_crossing":
        fit = acc
        above = acc[None, :] >= thr[:, None]
        idx = np.where(above.any(axis=1), above.argmax(axis=1), n)
    else:
        raise ValueError(f"method must be 'isotonic' or 'first_crossing', not {method!r}")
    for j, i in enumerate(idx):
        if i >= n:
            S[j], cens[j] = steps[-1], True
        elif i == 0 or method == "first_crossing":
            S[j] = steps[i]
        else:
            y0, y1 = fit[i - 1], fit[i]
            S[j] = steps[i - 1] + (thr[j] - y0) / (y1 - y0) * (steps[i] - steps[i - 1])
    return S, cens


def steps_to_target(steps, acc, threshold: float, method: str = "isotonic") -> tuple[float, bool]:
    """Optimizer steps for the validation accuracy to reach `threshold`.

    method 'isotonic': fit a non-decreasing curve to the eval series (pool-adjacent-violators,
    scipy.optimize.isotonic_regression), take the first eval whose smoothed accuracy is
    >= threshold and interpolate linearly between it and the previous eval. This removes the
    early bias of taking the first noisy eval above the target and the quantisation to the
    eval interval. method 'first_crossing': the seed notebook's rule (first raw eval step
    with acc >= threshold), kept for comparison.
    A run that never reaches the target is right-censored: S = its last eval step,
    censored=True. NaN/inf points are ignored (sb_eb_table reports how many).
    """
    s, a, _ = _clean_series(steps, acc)
    S, cens = _crossings(s, a, [threshold], method)
    return float(S[0]), bool(cens[0])


def _int_columns(df: pd.DataFrame, cols) -> pd.DataFrame:
    """Cast integral float columns (batch sizes) to nullable Int64 for readable tables."""
    for c in cols:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            if len(v) and np.isfinite(v).all() and (v == np.round(v)).all():
                df[c] = df[c].astype("Int64")
    return df


def _run_meta(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-run columns the tables need, with defaults for optional ones."""
    meta = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy()})
    meta["run_name"] = (runs["name"] if "name" in runs else runs["run_id"]).astype(str).to_numpy()
    for col, default in (("replicate", 0), ("phase", None), ("n_gpus", None)):
        meta[col] = runs[col].to_numpy() if col in runs else default
    for col in ("n_prompts", "n_rollouts", "total_batch"):
        meta[col] = pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=float) if col in runs else np.nan
    missing = meta["total_batch"].isna()
    meta.loc[missing, "total_batch"] = meta.loc[missing, "n_prompts"] * meta.loc[missing, "n_rollouts"]
    return meta


def sb_eb_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                method: str = "isotonic") -> pd.DataFrame:
    """S(B) and E(B) = B S(B) per run and threshold; replicates stay separate rows.

    Columns: run_id, run_name, replicate, n_prompts, n_rollouts, total_batch, threshold, S_B,
    E_B, censored, n_eval, n_nonfinite, then phase, last_eval_step, method.
    Censored rows hold the last eval step (a lower bound). A run without any finite eval of
    `metric` gets S_B = NaN (the fit ignores it).
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    return _sb_eb_from_series(_run_meta(runs), _eval_series(history, metric), thr, method)


def _sb_eb_from_series(meta: pd.DataFrame, series: dict, thr: list, method: str) -> pd.DataFrame:
    """sb_eb_table from already extracted eval series (fit_phase reuses them)."""
    rows = []
    for m in meta.itertuples(index=False):
        s, a, n_bad = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = _crossings(s, a, thr, method)
        if len(s) == 0:
            cens[:] = False
        for t, sv, cv in zip(thr, S, cens, strict=True):
            rows.append((m.run_id, m.run_name, m.replicate, m.n_prompts, m.n_rollouts,
                         m.total_batch, t, sv, sv * m.total_batch, bool(cv), len(s), n_bad,
                         m.phase, s[-1] if len(s) else np.nan, method))
    cols = SB_EB_COLUMNS + ["phase", "last_eval_step", "method"]
    out = pd.DataFrame(rows, columns=cols)
    out = _int_columns(out, ("n_prompts", "n_rollouts", "total_batch"))
    out["censored"] = out["censored"].astype(bool)
    return out


# ------------------------------------------------------------------------------------------
# Model curves
# ------------------------------------------------------------------------------------------
def mccandlish_steps(B, S_min: float, B_noise: float):
    """S(B) = S_min (1 + B_noise / B)."""
    return S_min * (1.0 + B_noise / np.asarray(B, dtype=float))


def mccandlish_samples(B, E_min: float, B_noise: float):
    """E(B) = E_min (1 + B / B_noise)."""
    return E_min * (1.0 + np.asarray(B, dtype=float) / B_noise)


# ------------------------------------------------------------------------------------------
# Vectorised fitting engine
#   log S_i = a + log(1 + exp(b) u_i(rho)),  u_i = 1/B_i (McCandlish) or
#   (1 + (n_r - 1) rho) / (n_p n_r) (two axes). For fixed (b, rho) the intercept a has a
#   closed form, so the fit profiles over (b, rho): a coarse grid, then parabolic steps (one
#   axis) or a shrinking stencil (two axes), for K bootstrap tables at once. Censored rows:
#   EM for the Tobit likelihood, finished by damped Newton steps (one axis).
# ------------------------------------------------------------------------------------------
class _Model:
    """u_i(rho) for a set of rows; rho is ignored when `two_axis` is False."""

    def __init__(self, B=None, n_prompts=None, n_rollouts=None):
        self.two_axis = n_prompts is not None
        if self.two_axis:
            self.np_ = np.asarray(n_prompts, dtype=float)
            self.nr = np.asarray(n_rollouts, dtype=float)
            self.B = self.np_ * self.nr
        else:
            self.B = np.asarray(B, dtype=float)

    def g(self, b, rho):
        """log(1 + e^b u(rho)); b, rho broadcast as (..., 1) against rows (n,)."""
        if self.two_axis:
            u = (1.0 + (self.nr - 1.0) * rho) / self.B
        else:
            u = 1.0 / self.B
        return np.log1p(np.exp(b) * u)

    def subset(self, mask):
        if self.two_axis:
            return _Model(n_prompts=self.np_[mask], n_rollouts=self.nr[mask])
        return _Model(B=self.B[mask])


def _ls_profile(y, w, G):
    """Weighted LS of y - G on an intercept: (a, rss), each (K, M).

    y, w: (K, n); G: (M, n) shared or (K, M, n) per table.
    """
    sw = w.sum(axis=1)
    safe = np.where(sw > 0, sw, 1.0)
    ybar = (w * y).sum(axis=1) / safe
    yc = np.where(w > 0, y - ybar[:, None], 0.0)
    wy = w * yc
    if G.ndim == 2:
        swg = w @ G.T
        swgg = w @ (G * G).T
        swyg = wy @ G.T
    else:
        swg = np.matmul(G, w[:, :, None])[..., 0]
        swgg = np.matmul(G * G, w[:, :, None])[..., 0]
        swyg = np.matmul(G, wy[:, :, None])[..., 0]
    swyy = (wy * yc).sum(axis=1)
    gbar = swg / safe[:, None]
    a = ybar[:, None] - gbar
    rss = swyy[:, None] - 2.0 * swyg + swgg - safe[:, None] * gbar * gbar
    return a, np.maximum(rss, 0.0)


def _ls_fit(model: _Model, y, w, b_bounds, rho_bounds, start=None, rounds: int | None = None):
    """Profile LS over (b, rho) for K tables: returns a, b, rho, rss (each (K,)).

    A shared coarse grid (one matrix product), then per-table refinement: successive
    parabolic steps in b (one axis) or a shrinking 5x5 stencil in (b, rho) (two axes).
    start=(b, rho, hb, hr) skips the grid (warm start inside EM).
    """
    K = y.shape[0]
    two = model.two_axis
    b_lo, b_hi = b_bounds
    r_lo, r_hi = rho_bounds
    idx = np.arange(K)
    if start is None:
        bg = np.linspace(b_lo, b_hi, 161)
        rg = np.linspace(r_lo, r_hi, 21) if two else np.array([0.0])
        BB, RR = np.meshgrid(bg, rg, indexing="ij")
        BB, RR = BB.ravel(), RR.ravel()
        G = model.g(BB[:, None], RR[:, None])
        _, rss = _ls_profile(y, w, G)
        best = rss.argmin(axis=1)
        b, rho = BB[best], RR[best]
        hb = bg[1] - bg[0]
        hr = (rg[1] - rg[0]) if two else 0.0
    else:
        b, rho, hb, hr = start
        b = np.broadcast_to(np.asarray(b, float), (K,)).copy()
        rho = np.broadcast_to(np.asarray(rho, float), (K,)).copy()
    if two:
        offs = np.arange(-1, 2, dtype=float)
        ob, orr = np.meshgrid(offs, offs, indexing="ij")
        ob, orr = ob.ravel(), orr.ravel()
        for _ in range(rounds or 24):
            cb = np.clip(b[:, None] + hb * ob[None, :], b_lo, b_hi)
            cr = np.clip(rho[:, None] + hr * orr[None, :], r_lo, r_hi)
            _, rss_c = _ls_profile(y, w, model.g(cb[:, :, None], cr[:, :, None]))
            best = rss_c.argmin(axis=1)
            b, rho = cb[idx, best], cr[idx, best]
            hb *= 0.5
            hr *= 0.5
    else:
        # successive parabolic interpolation: exact for a quadratic, so a few rounds reach
        # machine-level precision from a grid point; steps are capped at 2h per round
        h = hb
        for _ in range(rounds or 5):
            cb = np.clip(b[:, None] + h * np.array([-1.0, 0.0, 1.0])[None, :], b_lo, b_hi)
            _, r3 = _ls_profile(y, w, model.g(cb[:, :, None], 0.0))
            den = r3[:, 0] - 2.0 * r3[:, 1] + r3[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.where(den > 0, 0.5 * h * (r3[:, 0] - r3[:, 2]) / den, 0.0)
            best = r3.argmin(axis=1)
            fallback = cb[idx, best]
            b_new = np.where(den > 0, np.clip(b + step, b - 2 * h, b + 2 * h), fallback)
            b = np.clip(b_new, b_lo, b_hi)
            h = max(h / 8.0, 1e-9)
    G = model.g(b[:, None], rho[:, None])
    a, rss = _ls_profile(y, w, G[:, None, :])
    return a[:, 0], b, rho, rss[:, 0]


def _tobit_em(model: _Model, y, w, cens, b_bounds, rho_bounds, n_iter: int | None = None,
              tol: float = 1e-7):
    """Censored (Tobit) MLE in log space by EM, vectorised over K tables.

    Rows with cens=True are lower bounds: log S >= y. Starts from LS on the uncensored rows;
    one-axis fits finish with damped Newton steps (_tobit_newton), two-axis fits (few rows)
    run EM longer. Returns a, b, rho, sigma (each (K,)).
    """
    if n_iter is None:
        n_iter = 200 if model.two_axis else 4
    wu = np.where(cens, 0.0, w)
    a, b, rho, rss = _ls_fit(model, y, wu, b_bounds, rho_bounds)
    sigma = np.sqrt(np.maximum(rss / np.maximum(wu.sum(axis=1), 1e-300), _SIGMA_FLOOR**2))
    has_c = ((w > 0) & cens).any(axis=1)
    if not has_c.any():
        return a, b, rho, sigma
    sel = np.flatnonzero(has_c)
    ys, ws, cs = y[sel], w[sel], cens[sel]
    a_s, b_s, r_s, s_s = a[sel], b[sel], rho[sel], sigma[sel]
    hb = 0.05
    hr = 0.02 if model.two_axis else 0.0
    for _ in range(n_iter):
        f = a_s[:, None] + model.g(b_s[:, None], r_s[:, None])
        alpha = (ys - f) / s_s[:, None]
        lam = np.exp(_norm_logpdf(alpha) - special.log_ndtr(-alpha))
        ytil = np.where(cs, f + s_s[:, None] * lam, ys)
        var_c = np.where(cs, s_s[:, None] ** 2 * np.clip(1.0 + alpha * lam - lam * lam, 0.0, 1.0), 0.0)
        a_n, b_n, r_n, _ = _ls_fit(model, ytil, ws, b_bounds, rho_bounds,
                                   start=(b_s, r_s, hb, hr), rounds=10 if model.two_axis else 3)
        f_n = a_n[:, None] + model.g(b_n[:, None], r_n[:, None])
        s2 = (ws * ((ytil - f_n) ** 2 + var_c)).sum(axis=1) / ws.sum(axis=1)
        s_n = np.sqrt(np.maximum(s2, _SIGMA_FLOOR**2))
        delta = np.max(np.abs(np.stack([b_n - b_s, r_n - r_s, a_n - a_s])), axis=0)
        a_s, b_s, r_s, s_s = a_n, b_n, r_n, s_n
        if np.all(delta < tol):
            break
    if not model.two_axis:
        a_s, b_s, s_s = _tobit_newton(model, ys, ws, cs, a_s, b_s, s_s, b_bounds)
    a[sel], b[sel], rho[sel], sigma[sel] = a_s, b_s, r_s, s_s
    return a, b, rho, sigma


def _tobit_terms(model: _Model, y, w, cens, a, b, log_s, derivatives: bool = True):
    """Weighted Tobit log-likelihood (K,) and, optionally, its gradient (K, 3) and Hessian
    (K, 3, 3) in (a, b, log sigma) for the one-axis model."""
    sig = np.exp(log_s)[:, None]
    e = np.exp(b)[:, None] / model.B[None, :]
    f = a[:, None] + np.log1p(e)
    z = (y - f) / sig
    logsf = special.log_ndtr(-z)
    ll = np.where(cens, logsf, -0.5 * z * z - log_s[:, None])
    total = (w * ll).sum(axis=1)
    if not derivatives:
        return total, None, None
    lam = np.exp(_norm_logpdf(z) - logsf)
    lz = lam * (lam - z)
    l_f = np.where(cens, lam, z) / sig
    l_ff = np.where(cens, -lz, -1.0) / sig**2
    l_s = np.where(cens, lam * z, z * z - 1.0)
    l_ss = np.where(cens, -lam * z * (1.0 + z * (lam - z)), -2.0 * z * z)
    l_fs = np.where(cens, -lam * (1.0 + z * (lam - z)), -2.0 * z) / sig
    h = e / (1.0 + e)
    G = np.stack([(w * l_f).sum(1), (w * l_f * h).sum(1), (w * l_s).sum(1)], axis=1)
    H = np.empty((len(a), 3, 3))
    H[:, 0, 0] = (w * l_ff).sum(1)
    H[:, 0, 1] = H[:, 1, 0] = (w * l_ff * h).sum(1)
    H[:, 1, 1] = (w * (l_ff * h * h + l_f * h * (1.0 - h))).sum(1)
    H[:, 0, 2] = H[:, 2, 0] = (w * l_fs).sum(1)
    H[:, 1, 2] = H[:, 2, 1] = (w * l_fs * h).sum(1)
    H[:, 2, 2] = (w * l_ss).sum(1)
    return total, G, H


def _tobit_newton(model: _Model, y, w, cens, a, b, sigma, b_bounds, n_iter: int = 60, tol: float = 1e-10):
    """Damped Newton (Levenberg-Marquardt) polish of the one-axis Tobit MLE for K tables.

    EM converges slowly when many runs are censored; Newton from the EM point converges in a
    few steps. A step is kept only if it raises the likelihood."""
    a, b = a.copy(), b.copy()
    ls = np.log(np.maximum(sigma, _SIGMA_FLOOR))
    ls_lo = math.log(_SIGMA_FLOOR)
    mu = np.full(len(a), 1e-3)
    ll, G, H = _tobit_terms(model, y, w, cens, a, b, ls)
    active = np.ones(len(a), dtype=bool)
    eye = np.eye(3)[None]
    for _ in range(n_iter):
        A = -H + mu[:, None, None] * eye * np.maximum(np.abs(np.diagonal(H, axis1=1, axis2=2)), 1e-12)[:, :, None]
        try:
            step = np.linalg.solve(A, G[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        step = np.where(np.isfinite(step), step, 0.0)
        a_n = a + step[:, 0]
        b_n = np.clip(b + step[:, 1], *b_bounds)
        ls_n = np.clip(ls + step[:, 2], ls_lo, 3.0)
        ll_n, G_n, H_n = _tobit_terms(model, y, w, cens, a_n, b_n, ls_n)
        better = active & np.isfinite(ll_n) & (ll_n >= ll - 1e-12 * np.abs(ll))
        a, b, ls = np.where(better, a_n, a), np.where(better, b_n, b), np.where(better, ls_n, ls)
        ll = np.where(better, ll_n, ll)
        G = np.where(better[:, None], G_n, G)
        H = np.where(better[:, None, None], H_n, H)
        mu = np.where(better, np.maximum(mu * 0.1, 1e-12), mu * 10.0)
        done = better & (np.abs(step).max(axis=1) < tol)
        active &= ~done & (mu < 1e12)
        if not active.any():
            break
    return a, b, np.exp(ls)


def _tobit_nll(params, model: _Model, y, w, cens, two: bool):
    a, b = params[0], params[1]
    rho = params[2] if two else 0.0
    log_s = params[-1]
    s = math.exp(log_s)
    f = a + model.g(b, rho)
    z = (y - f) / s
    ll = np.where(cens, special.log_ndtr(-z), _norm_logpdf(z) - log_s)
    return -float((w * ll).sum())


def _fit_point(model: _Model, y, w, cens, b_bounds, rho_bounds=(0.0, 0.0)):
    """Precise fit of one table: vectorised start, then scipy polish. Returns dict."""
    two = model.two_axis
    Y, W, C = y[None, :], w[None, :], cens[None, :]
    a, b, rho, sigma = (v[0] for v in _tobit_em(model, Y, W, C, b_bounds, rho_bounds, n_iter=300))
    has_c = bool(((w > 0) & cens).any())
    if not has_c:
        # plain weighted least squares in log space; polish to machine precision
        m = w > 0
        sw = np.sqrt(w[m])

        def resid(p):
            return sw * (y[m] - p[0] - model.subset(m).g(p[1], p[2] if two else 0.0))

        x0 = [a, b, rho] if two else [a, b]
        lo = [-np.inf, b_bounds[0]] + ([rho_bounds[0]] if two else [])
        hi = [np.inf, b_bounds[1]] + ([rho_bounds[1]] if two else [])
        x0 = np.clip(x0, np.array(lo) + 1e-12, np.array(hi) - 1e-12)
        try:
            res = optimize.least_squares(resid, x0, bounds=(lo, hi), method="trf",
                                         xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
            if np.sum(res.fun**2) <= np.sum(resid([a, b, rho] if two else [a, b]) ** 2):
                a, b = res.x[0], res.x[1]
                rho = res.x[2] if two else rho
        except (ValueError, np.linalg.LinAlgError):
            pass
        r = resid([a, b, rho] if two else [a, b])
        sigma = math.sqrt(max(float(np.sum(r**2) / w[m].sum()), _SIGMA_FLOOR**2))
    else:
        x0 = [a, b] + ([rho] if two else []) + [math.log(max(sigma, 1e-4))]
        bnds = [(None, None), b_bounds] + ([rho_bounds] if two else []) + [(math.log(_SIGMA_FLOOR), 3.0)]
        x0 = [float(np.clip(v, lo if lo is not None else -np.inf, hi if hi is not None else np.inf))
              for v, (lo, hi) in zip(x0, bnds, strict=True)]
        f0 = _tobit_nll(x0, model, y, w, cens, two)
        try:
            res = optimize.minimize(_tobit_nll, x0, args=(model, y, w, cens, two), method="L-BFGS-B",
                                    bounds=bnds, options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 2000})
            if np.isfinite(res.fun) and res.fun <= f0:
                a, b = res.x[0], res.x[1]
                rho = res.x[2] if two else rho
                sigma = math.exp(res.x[-1])
        except (ValueError, np.linalg.LinAlgError):
            pass
    return {"a": float(a), "b": float(b), "rho": float(rho), "sigma": float(sigma)}


def _at_bound(b, b_bounds):
    span = b_bounds[1] - b_bounds[0]
    return (b - b_bounds[0] < _BOUND_TOL * span), (b_bounds[1] - b < _BOUND_TOL * span)


def _b_bounds(B) -> tuple[float, float]:
    lb = np.log(np.asarray(B, dtype=float))
    d = _SEARCH_DECADES * math.log(10.0)
    return float(lb.min() - d), float(lb.max() + d)


def _fit_batch(model: _Model, y, w, cens, b_bounds, rho_bounds=(0.0, 0.0)):
    """Fit K bootstrap tables at once. Returns (b, a, rho) with b = +-inf at the search bounds
    and NaN where a table has fewer than 3 distinct batch sizes reaching the target."""
    y = np.where(w > 0, y, 0.0)
    a, b, rho, _ = _tobit_em(model, y, w, cens, b_bounds, rho_bounds)
    lo, hi = _at_bound(b, b_bounds)
    b = np.where(lo, -np.inf, np.where(hi, np.inf, b))
    bad = _n_distinct_reached(model.B, (w > 0) & ~cens) < 3
    return np.where(bad, np.nan, b), np.where(bad, np.nan, a), np.where(bad, np.nan, rho)


def _n_distinct_reached(B, reached) -> np.ndarray:
    """Per table (row of `reached`), how many distinct batch sizes have a reached row."""
    _, inv = np.unique(B, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    per_group = np.maximum.reduceat(reached[:, order].astype(np.int8), starts, axis=1)
    return per_group.sum(axis=1)


def _quantiles(x, q=(0.025, 0.975)):
    """Percentile interval of a bootstrap sample that may hold +-inf (fits that ran to a
    search bound); NaN when fewer than half the replicates (or < 20) gave a fit."""
    x = np.asarray(x, dtype=float)
    n_all = x.size
    x = x[~np.isnan(x)]
    if x.size < max(20, 0.5 * n_all):
        return np.nan, np.nan
    return tuple(float(v) for v in np.quantile(x, q, method="inverted_cdf"))


# ------------------------------------------------------------------------------------------
# fit_mccandlish
# ------------------------------------------------------------------------------------------
def _empty_fit(n_points=0, n_censored=0, status="failed", reason="") -> dict:
    return {"B_noise": np.nan, "B_noise_lo": np.nan, "B_noise_hi": np.nan, "S_min": np.nan,
            "E_min": np.nan, "B_crit_20pct": np.nan, "r2_log": np.nan, "n_points": int(n_points),
            "n_censored": int(n_censored), "status": status, "reason": reason,
            "S_min_lo": np.nan, "S_min_hi": np.nan, "sigma_log": np.nan,
            "n_batch_sizes": 0, "n_reached": 0, "ci_method": "", "n_bootstrap_ok": 0}


def _as_float(x) -> np.ndarray:
    """1-D float array; pandas nullable values (pd.NA) become NaN."""
    if isinstance(x, (pd.Series, pd.Index)):
        return pd.to_numeric(x, errors="coerce").to_numpy(dtype=float, na_value=np.nan).ravel()
    return np.asarray(x, dtype=float).ravel()


def _prepare(B, S, censored):
    """Arrays, validity mask and a note on what was dropped."""
    B = _as_float(B)
    S = _as_float(S)
    if B.shape != S.shape:
        raise ValueError("batch_sizes and steps differ in length")
    c = np.zeros(B.shape, bool) if censored is None else np.asarray(censored, dtype=bool).ravel()
    if c.shape != B.shape:
        raise ValueError("censored differs in length from batch_sizes")
    finite = np.isfinite(B) & np.isfinite(S)
    pos = finite & (B > 0) & (S > 0)
    notes = []
    if (~finite).sum():
        notes.append(f"{int((~finite).sum())} non-finite point(s) ignored")
    if (finite & ~pos).sum():
        notes.append(f"{int((finite & ~pos).sum())} point(s) with B <= 0 or S <= 0 ignored "
                     "(S = 0: target already met at step 0)")
    return B, S, c, pos, notes


def _group_weights(keys) -> np.ndarray:
    """1 / (rows in the row's group): every batch size (config) counts once in the fit."""
    keys = pd.Series(list(keys))
    return 1.0 / keys.map(keys.value_counts()).to_numpy(dtype=float)


def _bootstrap_tables(groups, y, w, cens, f_hat, K, rng, n_params: int = 2):
    """Replicate/residual bootstrap tables (K, n) for a fit on plain rows.

    Groups (batch sizes) with several rows: resample rows within the group (weights).
    Single-row groups: y* = f_hat + e*, e* drawn from the centred uncensored residuals,
    inflated by sqrt(n/(n - n_params)) for the fitted parameters; a censored row stays censored
    when y* exceeds its bound (re-censoring), else becomes the observed y*.
    """
    Y = np.repeat(y[None, :], K, axis=0)
    Wt = np.repeat(w[None, :], K, axis=0)
    C = np.repeat(cens[None, :], K, axis=0)
    g = pd.Series(list(groups))
    counts = g.map(g.value_counts()).to_numpy()
    multi = counts > 1
    for key in pd.unique(g[multi]):
        idx = np.flatnonzero((g == key).to_numpy())
        draws = rng.integers(0, len(idx), size=(K, len(idx)))
        cnt = np.zeros((K, len(idx)))
        np.add.at(cnt, (np.arange(K)[:, None], draws), 1.0)
        Wt[:, idx] = cnt / len(idx)
    single = np.flatnonzero(~multi)
    methods = []
    if multi.any():
        methods.append("replicates")
    if single.size:
        res = (y - f_hat)[~cens]
        n_u = res.size
        if n_u > n_params:
            pool = (res - res.mean()) * math.sqrt(n_u / (n_u - n_params))
            e = pool[rng.integers(0, n_u, size=(K, single.size))]
            ystar = f_hat[single][None, :] + e
            bound = y[single][None, :]
            was_c = cens[single][None, :]
            Y[:, single] = np.where(was_c, np.maximum(ystar, bound), ystar)
            C[:, single] = was_c & (ystar >= bound)
            methods.append("residual")
    return Y, Wt, C, "+".join(methods) if methods else "none"


def _summarise_fit(model: _Model, y, w, cens, pt, b_bounds, B_all) -> tuple[dict, str, str]:
    """Status and core numbers of a point fit."""
    b, a = pt["b"], pt["a"]
    out = {}
    lo_hit, hi_hit = _at_bound(np.array([b]), b_bounds)
    if not (np.isfinite(a) and np.isfinite(b)):
        return out, "failed", "the optimiser returned a non-finite solution"
    if lo_hit[0]:
        return out, "failed", ("S does not decrease with B over the sampled range: B_noise runs to "
                               f"the lower search bound (< min B / {10**_SEARCH_DECADES:g}); not identifiable")
    if hi_hit[0]:
        return out, "failed", ("S falls like 1/B over the whole sampled range (perfect scaling): "
                               f"B_noise runs to the upper search bound (> max B x {10**_SEARCH_DECADES:g}); "
                               "not identifiable")
    f = a + model.g(b, pt["rho"])
    m = (w > 0) & ~cens
    ybar = np.average(y[m], weights=w[m])
    tss = float((w[m] * (y[m] - ybar) ** 2).sum())
    rss = float((w[m] * (y[m] - f[m]) ** 2).sum())
    out["r2_log"] = 1.0 - rss / tss if tss > 0 else np.nan
    B_noise = math.exp(b)
    out.update({"B_noise": B_noise, "S_min": math.exp(a), "E_min": math.exp(a) * B_noise,
                "B_crit_20pct": 0.2 * B_noise, "sigma_log": pt["sigma"]})
    if B_noise < B_all.min() or B_noise > B_all.max():
        return out, "extrapolated", (f"B_noise = {B_noise:.4g} lies outside the sampled batch sizes "
                                     f"[{B_all.min():g}, {B_all.max():g}]")
    return out, "ok", ""


def fit_mccandlish(batch_sizes, steps, censored=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Fit S(B) = S_min (1 + B_noise / B) to a plain table of (B, S) points.

    Least squares in log space on (log S_min, log B_noise):
        log S = log S_min + log(1 + B_noise / B) + eps,  eps ~ N(0, sigma^2).
    Censored points (runs that never reached the target; S = their last step) are lower
    bounds and enter a censored (Tobit) likelihood in log space with the residual sigma
    estimated jointly; without censoring that is exactly plain log-space least squares.
    Repeated B values are replicates: each batch size carries total weight 1 in the fit.

    95% CI by bootstrap (n_bootstrap tables, percentile interval of B_noise): rows of a batch
    size with several replicates are resampled within it; single points get a residual
    bootstrap in log space (fitted value + resampled residual, re-censored at the bound).
    fit_phase offers the eval-noise bootstrap, which needs the raw eval series.

    E_min = S_min B_noise. B_crit_20pct = 0.2 B_noise: Zhang et al. 2024 ("How does critical
    batch size scale in pre-training?") define the critical batch size as the B at which the
    samples to target exceed E_min by 20%: E/E_min = 1 + B/B_noise = 1.2 -> B = 0.2 B_noise.

    Returns a dict with B_noise, B_noise_lo, B_noise_hi, S_min, E_min, B_crit_20pct, r2_log
    (weighted R^2 of log S over the uncensored points), n_points, n_censored, status
    ('ok' | 'extrapolated' (B_noise outside the sampled B range) | 'insufficient' (< 3 batch
    sizes reach the target) | 'failed'), reason; extras S_min_lo/hi, sigma_log,
    n_batch_sizes, n_reached, ci_method, n_bootstrap_ok. Never raises on bad data.
    """
    try:
        B, S, c, ok, notes = _prepare(batch_sizes, steps, censored)
    except (ValueError, TypeError) as exc:
        return _empty_fit(status="failed", reason=f"bad input: {exc}")
    B, S, c = B[ok], S[ok], c[ok]
    return _fit_table(B, S, c, n_bootstrap, seed, notes, groups=B)


def _fit_table(B, S, c, n_bootstrap, seed, notes, groups, tables=None, ci_note=None) -> dict:
    """Shared body of fit_mccandlish / fit_phase: point fit, status, bootstrap CI.

    tables: optional callable (f_hat, K, rng) -> (Y, W, C, method) supplying bootstrap tables.
    """
    n_points, n_cens = len(B), int(c.sum())
    out = _empty_fit(n_points, n_cens)
    out["n_batch_sizes"] = int(len(np.unique(B)))
    n_reached = int(len(np.unique(B[~c])))
    out["n_reached"] = n_reached
    note = "; ".join(notes)
    if n_reached < 3:
        out["status"] = "insufficient"
        out["reason"] = "; ".join(filter(None, [
            f"{n_reached} batch size(s) reach the target, 3 needed", note]))
        return out
    model = _Model(B=B)
    y = np.log(S)
    w = _group_weights(groups)
    bb = _b_bounds(B)
    try:
        with np.errstate(all="ignore"):
            pt = _fit_point(model, y, w, c, bb)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        out["reason"] = f"fit failed: {exc}"
        return out
    core, status, reason = _summarise_fit(model, y, w, c, pt, bb, B)
    out.update(core)
    out["status"] = status
    out["reason"] = "; ".join(filter(None, [reason, note]))
    if status == "failed":
        return out
    if n_bootstrap and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        f_hat = pt["a"] + model.g(pt["b"], 0.0)
        with np.errstate(all="ignore"):
            if tables is None:
                Y, Wt, C, method = _bootstrap_tables(groups, y, w, c, f_hat, int(n_bootstrap), rng)
            else:
                Y, Wt, C, method = tables(f_hat, int(n_bootstrap), rng)
            bs, as_, _ = _fit_batch(model, Y, Wt, C, bb)
        lo, hi = _quantiles(bs)
        out["B_noise_lo"], out["B_noise_hi"] = math.exp(lo), math.exp(hi)
        slo, shi = _quantiles(as_)
        out["S_min_lo"], out["S_min_hi"] = math.exp(slo), math.exp(shi)
        out["ci_method"] = method
        out["n_bootstrap_ok"] = int(np.isfinite(bs).sum() + np.isinf(bs).sum())
        if out["n_bootstrap_ok"] < 0.5 * len(bs):
            ci_note = "; ".join(filter(None, [ci_note, (
                f"no CI: only {out['n_bootstrap_ok']} of {len(bs)} bootstrap tables had 3 batch "
                "sizes reaching the target")]))
        if ci_note:
            out["reason"] = "; ".join(filter(None, [out["reason"], ci_note]))
    return out


# ------------------------------------------------------------------------------------------
# Eval-noise bootstrap: re-measure S for every run from resampled eval series, vectorised
# ------------------------------------------------------------------------------------------
def _crossing_kernel(Y, steps, length, thresholds, method, window):
    """S and censoring for a block of resampled series.

    Y: (K, R, n) accuracies (padding beyond each run's length is ignored); steps: (R, n);
    length: (R,). Isotonic crossing without running PAVA: with C_m = sum_{l<m} (y_l - t),
    m = 0..n, the first eval whose isotonic fit is >= t is the first argmin of C (the point
    where the greatest convex minorant of the cumulative sums turns upwards; censored if the
    argmin is m = n), and the fitted values on either side are the minorant's slopes next to
    that vertex: yhat_i = t + min_{m>i} (C_m - C_i)/(m - i), yhat_{i-1} = t + max_{m<i} (C_i -
    C_m)/(i - m). Slopes are taken over +-window evals of the vertex (all evals when the
    series is short; beyond that the neighbouring vertex is practically always inside, and
    a miss only moves S within one eval interval).
    """
    K, R, n = Y.shape
    T = len(thresholds)
    S = np.empty((K, R, T))
    cens = np.zeros((K, R, T), dtype=bool)
    m = np.arange(n + 1, dtype=float)
    pad = np.where(m[None, :] > length[:, None], np.inf, 0.0)  # (R, n+1)
    last_step = steps[np.arange(R), length - 1]
    s_pad = np.concatenate([steps, steps[:, -1:]], axis=1)
    rr = np.arange(R)[None, :]
    if method == "first_crossing":
        valid = np.arange(n)[None, :] < length[:, None]
        for j, t in enumerate(thresholds):
            above = (Y >= t) & valid[None]
            hit = above.any(axis=-1)
            i = above.argmax(axis=-1)
            S[..., j] = np.where(hit, steps[rr, i], last_step[None, :])
            cens[..., j] = ~hit
        return S, cens
    P = np.zeros((K, R, n + 1))
    np.cumsum(np.where(np.arange(n)[None, None, :] < length[None, :, None], Y, 0.0), axis=-1,
              out=P[..., 1:])
    offs = np.arange(-window, window + 1)
    for j, t in enumerate(thresholds):
        C = P - t * m
        C += pad[None]
        i = C.argmin(axis=-1)  # (K, R)
        is_c = i >= length[None, :]
        idx = np.clip(i[..., None] + offs, 0, n)
        Cw = np.take_along_axis(C, idx, axis=-1)
        Ci = np.take_along_axis(C, i[..., None], axis=-1)
        dm = (idx - i[..., None]).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            sl = (Cw - Ci) / dm
        right = np.where(dm > 0, sl, np.inf).min(axis=-1)
        left = np.where(dm < 0, sl, -np.inf).max(axis=-1)
        i_prev = np.maximum(i - 1, 0)
        s0 = np.take_along_axis(np.broadcast_to(s_pad, (K, R, n + 1)), i_prev[..., None], -1)[..., 0]
        s1 = np.take_along_axis(np.broadcast_to(s_pad, (K, R, n + 1)), i[..., None], -1)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip(-left / (right - left), 0.0, 1.0)
        Sj = np.where(i == 0, s1, s0 + frac * (s1 - s0))
        S[..., j] = np.where(is_c, last_step[None, :], Sj)
        cens[..., j] = is_c
    return S, cens


def _remeasure(series, thresholds, n_val, K, seed, method="isotonic", p_source="observed"):
    """Eval-noise bootstrap of S for each run: acc* ~ Binomial(n_val, p)/n_val per eval point.

    series: list of (steps, acc) clean arrays, one per run. Returns S*, cens* of shape
    (K, R, T) plus a note. p is the observed accuracy (p_source='observed') or the run's
    isotonic fit ('isotonic').
    When K x (total eval points) exceeds _EXACT_DRAWS, each run is re-measured in
    K_sub = max(64, budget / points) distinct resamples with the normal approximation
    acc* = p + sqrt(p(1-p)/n_val) z, and each of the K replicates takes, independently per
    run, one of that run's K_sub re-measurements at random: runs are independent, so this
    draws from the same joint distribution while bounding the work.
    """
    thr = np.asarray(thresholds, dtype=float)
    R = len(series)
    lengths = np.array([len(s) for s, _ in series], dtype=int)
    total = int(lengths.sum())
    S_out = np.empty((K, R, len(thr)))
    c_out = np.zeros((K, R, len(thr)), dtype=bool)
    if R == 0:
        return S_out, c_out, ""
    exact = K * total <= _EXACT_DRAWS
    K_sub = K if exact else int(min(K, max(_MIN_DISTINCT_RESAMPLES, _DRAW_BUDGET // max(total, 1))))
    probs = []
    for _steps, a in series:
        p = optimize.isotonic_regression(a).x if (p_source == "isotonic" and len(a)) else a
        probs.append(np.clip(p, 0.0, 1.0))
    order = np.argsort(lengths, kind="stable")
    # chunks of runs of similar length, and of resamples, of about 2^20 elements each
    target = 1 << 20
    chunks = []
    start = 0
    while start < R:
        n_max = max(int(lengths[order[start]]), 1)
        stop = start + 1
        while stop < R and (stop - start + 1) * n_max * 8 <= target and lengths[order[stop]] <= 1.25 * n_max + 8:
            n_max = max(n_max, int(lengths[order[stop]]))
            stop += 1
        runs_idx = order[start:stop]
        n_max = max(int(lengths[runs_idx].max()), 1)
        k_c = max(1, min(K_sub, target // (len(runs_idx) * n_max)))
        for k0 in range(0, K_sub, k_c):
            chunks.append((runs_idx, k0, min(K_sub, k0 + k_c)))
        start = stop
    seeds = np.random.SeedSequence(seed).spawn(len(chunks) + 1)
    S_sub = np.empty((K_sub, R, len(thr)))
    c_sub = np.zeros((K_sub, R, len(thr)), dtype=bool)

    def work(ci):
        runs_idx, k0, k1 = chunks[ci]
        rng = np.random.default_rng(seeds[ci])
        Rc = len(runs_idx)
        n = max(int(lengths[runs_idx].max()), 1)
        steps = np.zeros((Rc, n))
        p = np.zeros((Rc, n))
        for q, r in enumerate(runs_idx):
            L = lengths[r]
            if L:
                steps[q, :L] = series[r][0]
                steps[q, L:] = series[r][0][-1]
                p[q, :L] = probs[r]
        shape = (k1 - k0, Rc, n)
        if exact:
            Y = rng.binomial(int(n_val), np.broadcast_to(p, shape)) / float(n_val)
        else:
            sd = np.sqrt(p * (1.0 - p) / float(n_val))
            Y = np.clip(p + sd * rng.standard_normal(shape), 0.0, 1.0)
        L = np.maximum(lengths[runs_idx], 1)
        window = n if n <= 2 * _SLOPE_WINDOW + 1 else _SLOPE_WINDOW
        S, c = _crossing_kernel(Y, steps, L, thr, method, window)
        empty = lengths[runs_idx] == 0
        S[:, empty, :] = np.nan
        c[:, empty, :] = False
        S_sub[k0:k1, runs_idx] = S
        c_sub[k0:k1, runs_idx] = c

    n_workers = min(len(chunks), max(1, min(4, os.cpu_count() or 1)))
    if n_workers > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(work, range(len(chunks))))
    else:
        for ci in range(len(chunks)):
            work(ci)
    if K_sub == K:
        return S_sub, c_sub, ("" if exact else "eval-noise draws: normal approximation")
    pick = np.random.default_rng(seeds[-1]).integers(0, K_sub, size=(K, R))
    rr = np.arange(R)[None, :]
    S_out = S_sub[pick, rr]
    c_out = c_sub[pick, rr]
    return S_out, c_out, (f"eval-noise bootstrap: {K_sub} re-measurements per run, normal "
                          "approximation")


# ------------------------------------------------------------------------------------------
# fit_phase
# ------------------------------------------------------------------------------------------
def _recentre(S_star, c_star, sb, run_ids, thr, series, idx):
    """Shift each run's uncensored log S* so its median equals the run's measured log S."""
    ok = ~c_star & np.isfinite(S_star) & (S_star > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(ok, np.log(np.where(ok, S_star, 1.0)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a run censored throughout
        med = np.nanmedian(logs, axis=0) if logs.size else np.zeros(S_star.shape[1:])  # (R, T)
    obs = sb.set_index(["run_id", "threshold"])
    keys = pd.MultiIndex.from_product([list(run_ids), list(thr)])
    S_obs = obs["S_B"].reindex(keys).to_numpy(dtype=float).reshape(len(run_ids), len(thr))
    cen = obs["censored"].reindex(keys).to_numpy(dtype=bool).reshape(len(run_ids), len(thr))
    use = ~cen & np.isfinite(S_obs) & (S_obs > 0) & (ok.mean(axis=0) >= 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(use, np.log(np.where(use, S_obs, 1.0)) - med, 0.0)
    last = np.array([series[i][0][-1] if len(series[i][0]) else np.inf for i in idx])
    shifted = np.minimum(S_star * np.exp(shift)[None], last[None, :, None])
    return np.where(ok & use[None], shifted, S_star)


def fit_phase(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val: int,
              n_bootstrap: int = 1000, seed: int = 0, method: str = "isotonic",
              p_source: str = "observed", recentre: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """S(B)/E(B) table and one McCandlish fit per threshold for the runs of one phase.

    Point fit as in fit_mccandlish (log space, censored runs as lower bounds, each batch size
    weighted 1 with its replicates sharing the weight). 95% CI by bootstrap: a batch size with
    several runs resamples its runs; a batch size with one run re-measures it from its eval
    series resampled as acc* ~ Binomial(n_val, acc)/n_val (p_source='isotonic' resamples
    around the monotone fit instead), so S* carries the eval noise, including censoring when a
    resampled run no longer reaches the target. Each of n_bootstrap tables is refitted.
    recentre=True shifts each run's re-measured log S* so that its median equals the measured
    log S: resampling adds eval noise on top of data that already carry it, and the isotonic
    crossing of the noisier series moves slightly (by ~1% where the curve flattens); the
    bootstrap should carry the spread of the measurement, not that shift, which otherwise
    becomes visible when hundreds of runs make the CI narrow.
    Returns (sb_eb, cbs_fit); cbs_fit has the contract columns (CBS_FIT_COLUMNS) and extras.
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = _run_meta(runs)
    series_all = _eval_series(history, metric)
    sb = _sb_eb_from_series(meta, series_all, thr, method)
    R = len(meta)
    B_run = meta["total_batch"].to_numpy(dtype=float)
    series = [series_all.get(rid, (np.array([]), np.array([]), 0))[:2] for rid in meta["run_id"]]
    gkey = pd.Series(B_run)
    counts = gkey.map(gkey.value_counts()).to_numpy()
    multi = counts > 1
    K = int(n_bootstrap or 0)
    S_star = c_star = W_rep = None
    boot_note = ""
    if K > 0 and R:
        single = np.flatnonzero(~multi)
        S_star = np.full((K, R, len(thr)), np.nan)
        c_star = np.zeros((K, R, len(thr)), dtype=bool)
        if single.size:
            Ss, cs, boot_note = _remeasure([series[i] for i in single], thr, n_val, K, seed,
                                           method=method, p_source=p_source)
            if recentre:
                Ss = _recentre(Ss, cs, sb, meta["run_id"].to_numpy()[single], thr, series, single)
            S_star[:, single], c_star[:, single] = Ss, cs
        rng_rep = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        W_rep = np.repeat(_group_weights(B_run)[None, :], K, axis=0)
        for key in pd.unique(gkey[multi]):
            idx = np.flatnonzero((gkey == key).to_numpy())
            draws = rng_rep.integers(0, len(idx), size=(K, len(idx)))
            cnt = np.zeros((K, len(idx)))
            np.add.at(cnt, (np.arange(K)[:, None], draws), 1.0)
            W_rep[:, idx] = cnt / len(idx)
    fits = []
    for j, t in enumerate(thr):
        rows = sb[sb["threshold"] == t]
        pos = {rid: q for q, rid in enumerate(rows["run_id"])}
        order = np.array([pos[r] for r in meta["run_id"]], dtype=int)
        S = rows["S_B"].to_numpy(dtype=float)[order]
        c = rows["censored"].to_numpy(dtype=bool)[order]
        B, S_, c_, ok, notes = _prepare(B_run, S, c)
        tables = None
        if K > 0:
            def tables(f_hat, K_, rng, j=j, ok=ok, S=S, c=c):
                Y = np.log(np.where(multi[None, :], S[None, :], S_star[:, :, j]))
                Cc = np.where(multi[None, :], c[None, :], c_star[:, :, j])
                Wt = np.where(np.isfinite(Y), W_rep, 0.0)
                Y, Wt, Cc = Y[:, ok], Wt[:, ok], Cc[:, ok]
                kinds = (["replicates"] if multi[ok].any() else []) + (
                    ["eval-noise"] if (~multi[ok]).any() else [])
                return np.nan_to_num(Y, nan=0.0, neginf=0.0), Wt, Cc, "+".join(kinds)
        res = _fit_table(B[ok], S_[ok], c_[ok], K, seed, notes, groups=B[ok], tables=tables,
                         ci_note=boot_note)
        res["threshold"] = t
        fits.append(res)
    cbs = pd.DataFrame(fits)
    extra = [c for c in cbs.columns if c not in CBS_FIT_COLUMNS]
    return sb, cbs[CBS_FIT_COLUMNS + extra]


# ------------------------------------------------------------------------------------------
# Across thresholds: B_noise vs target, Pareto check
# ------------------------------------------------------------------------------------------
def b_noise_vs_target(cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """B_noise (with CI), B_crit_20pct, S_min, E_min by target accuracy, and the growth of
    B_noise relative to the easiest target with a usable fit (status ok/extrapolated)."""
    cols = ["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "B_crit_20pct", "S_min", "E_min",
            "status"]
    out = cbs_fit[cols].sort_values("threshold").reset_index(drop=True)
    usable = out["status"].isin(["ok", "extrapolated"]) & out["B_noise"].notna()
    ref = out.loc[usable, "B_noise"].iloc[0] if usable.any() else np.nan
    out["growth_vs_easiest"] = np.where(usable, out["B_noise"] / ref, np.nan)
    return out


def pareto_table(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Per run and threshold: S/S_min - 1, E/E_min - 1 and their product, which the
    McCandlish model puts at exactly 1 ((S/S_min - 1)(E/E_min - 1) = 1). Only thresholds with
    a usable fit; censored rows are kept (flagged: their excesses are lower bounds)."""
    fit = cbs_fit.loc[cbs_fit["status"].isin(["ok", "extrapolated"]),
                      ["threshold", "S_min", "E_min", "B_noise"]]
    keep = ["run_id", "run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
            "E_B", "censored"]
    out = sb_eb[[c for c in keep if c in sb_eb.columns]].merge(fit, on="threshold", how="inner")
    out["S_excess"] = out["S_B"].astype(float) / out["S_min"] - 1.0
    out["E_excess"] = out["E_B"].astype(float) / out["E_min"] - 1.0
    out["pareto_product"] = out["S_excess"] * out["E_excess"]
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Two axes (phase 2): prompts vs rollouts
# ------------------------------------------------------------------------------------------
def _phase_axes(df: pd.DataFrame) -> dict:
    """phase -> (axis, fixed value): 'prompts' (n_rollouts fixed) or 'rollouts' (n_prompts fixed)."""
    axes = {}
    for ph, sub in df.groupby("phase", sort=True):
        n_p = sub["n_prompts"].astype(float).unique()
        n_r = sub["n_rollouts"].astype(float).unique()
        if len(n_r) == 1 and len(n_p) > 1:
            axes[ph] = ("prompts", float(n_r[0]))
        elif len(n_p) == 1 and len(n_r) > 1:
            axes[ph] = ("rollouts", float(n_p[0]))
        else:
            axes[ph] = ("mixed", np.nan)
    return axes


def _axis_b_noise(axis, fixed, B0, rho, S_min):
    """Per-axis McCandlish parameters in total samples implied by (S_min, B0, rho)."""
    if axis == "prompts":
        return B0 * (1.0 + (fixed - 1.0) * rho), S_min
    if axis == "rollouts":
        k = 1.0 + B0 * rho / fixed
        return B0 * (1.0 - rho) / k, S_min * k
    return np.nan * B0, np.nan * S_min


def two_axis_fit(sb_eb_all: pd.DataFrame, phases=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Joint fit of prompt-axis and rollout-axis runs (p1, p2a, p2b) per threshold:

        S = S_min (1 + B0 (1 + (n_r - 1) rho) / (n_p n_r)),  rho in [0, 1],

    i.e. McCandlish with the effective batch B_eff = n_p n_r / (1 + (n_r - 1) rho) counted in
    independent prompts: rollouts of one prompt are correlated with correlation rho, B0 is
    the noise scale in prompts. Log-space least squares with censored runs as lower bounds,
    each (phase, n_p, n_r) configuration weighted 1. CI: bootstrap as in fit_mccandlish
    (replicates within a configuration, residuals in log space otherwise).
    Along a prompt axis (n_r = R): B_noise = B0 (1 + (R - 1) rho) in total samples; along a
    rollout axis (n_p = P): B_noise = B0 (1 - rho) / (1 + B0 rho / P), S_min' = S_min (1 + B0 rho / P).

    Returns {'fit': one row per threshold (rho, rho_lo, rho_hi, B0, B0_lo, B0_hi, S_min,
    r2_log, n_points, n_censored, status, reason), 'axes': one row per (threshold, phase) with
    the implied B_noise (and CI) in total samples and the axis it belongs to}.
    """
    df = sb_eb_all if phases is None else sb_eb_all[sb_eb_all["phase"].isin(list(phases))]
    df = df.copy()
    if "phase" not in df.columns:
        df["phase"] = "all"
    axes = _phase_axes(df)
    fit_rows, axis_rows = [], []
    for t, sub in df.groupby("threshold", sort=True):
        n_p = sub["n_prompts"].to_numpy(dtype=float)
        n_r = sub["n_rollouts"].to_numpy(dtype=float)
        B, S, c, ok, notes = _prepare(n_p * n_r, sub["S_B"].to_numpy(dtype=float),
                                      sub["censored"].to_numpy(dtype=bool))
        ok &= np.isfinite(n_p) & np.isfinite(n_r)
        keys = list(zip(sub["phase"].astype(str), n_p, n_r, strict=True))
        keys = [k for k, o in zip(keys, ok, strict=True) if o]
        n_p, n_r, S, c = n_p[ok], n_r[ok], S[ok], c[ok]
        row = {"threshold": float(t), "rho": np.nan, "rho_lo": np.nan, "rho_hi": np.nan,
               "B0": np.nan, "B0_lo": np.nan, "B0_hi": np.nan, "S_min": np.nan, "r2_log": np.nan,
               "n_points": int(len(S)), "n_censored": int(c.sum()), "status": "failed", "reason": ""}
        reached = ~c
        n_cfg = len({(a, b) for a, b, r in zip(n_p, n_r, reached, strict=True) if r})
        n_rvals = len(np.unique(n_r[reached]))
        if n_cfg < 3 or n_rvals < 2:
            row["status"] = "insufficient"
            row["reason"] = "; ".join(filter(None, [
                f"{n_cfg} configuration(s) reach the target (3 needed) over {n_rvals} "
                "distinct n_rollouts (2 needed to separate rho)", *notes]))
            fit_rows.append(row)
            continue
        model = _Model(n_prompts=n_p, n_rollouts=n_r)
        y = np.log(S)
        w = _group_weights(keys)
        bb = _b_bounds(n_p)
        rb = (0.0, 1.0)
        with np.errstate(all="ignore"):
            pt = _fit_point(model, y, w, c, bb, rb)
        lo_hit, hi_hit = _at_bound(np.array([pt["b"]]), bb)
        if lo_hit[0] or hi_hit[0] or not np.isfinite(pt["b"]):
            row["reason"] = "B0 runs to a search bound: not identifiable from these runs"
            fit_rows.append(row)
            continue
        f_hat = pt["a"] + model.g(pt["b"], pt["rho"])
        m = w > 0
        mu = m & ~c
        ybar = np.average(y[mu], weights=w[mu])
        tss = float((w[mu] * (y[mu] - ybar) ** 2).sum())
        row.update({"rho": pt["rho"], "B0": math.exp(pt["b"]), "S_min": math.exp(pt["a"]),
                    "r2_log": 1.0 - float((w[mu] * (y[mu] - f_hat[mu]) ** 2).sum()) / tss if tss > 0 else np.nan,
                    "status": "ok", "reason": "; ".join(notes)})
        draws = None
        if n_bootstrap and n_bootstrap > 0:
            rng = np.random.default_rng(seed)
            with np.errstate(all="ignore"):
                Y, Wt, C, _ = _bootstrap_tables(keys, y, w, c, f_hat, int(n_bootstrap), rng, n_params=3)
                a_s, b_s, r_s, _ = _tobit_em(model, Y, Wt, C, bb, rb)
            lo_b, hi_b = _at_bound(b_s, bb)
            valid = ~(lo_b | hi_b) & np.isfinite(b_s)
            draws = (np.exp(a_s[valid]), np.exp(b_s[valid]), r_s[valid])
            row["rho_lo"], row["rho_hi"] = _quantiles(r_s[valid])
            row["B0_lo"], row["B0_hi"] = _quantiles(np.exp(b_s[valid]))
        fit_rows.append(row)
        for ph, (axis, fixed) in axes.items():
            bn, sm = _axis_b_noise(axis, fixed, row["B0"], row["rho"], row["S_min"])
            lo = hi = np.nan
            if draws is not None and axis != "mixed":
                bn_s, _ = _axis_b_noise(axis, fixed, draws[1], draws[2], draws[0])
                lo, hi = _quantiles(bn_s)
            axis_rows.append({"threshold": float(t), "phase": ph, "axis": axis, "n_fixed": fixed,
                              "B_noise": bn, "B_noise_lo": lo, "B_noise_hi": hi, "S_min": sm})
    axes_cols = ["threshold", "phase", "axis", "n_fixed", "B_noise", "B_noise_lo", "B_noise_hi", "S_min"]
    return {"fit": pd.DataFrame(fit_rows), "axes": pd.DataFrame(axis_rows, columns=axes_cols)}


def iso_batch_table(sb_eb_p2c: pd.DataFrame, two_axis: dict | None = None) -> pd.DataFrame:
    """Iso-batch phase (fixed B = n_p n_r): S per (n_prompts, n_rollouts) split and threshold.

    Replicates are combined by the geometric mean of S (censored if any replicate is).
    S_rel = S / (fastest uncensored split at that threshold). With a two_axis_fit result, the
    joint model's prediction S_pred is added."""
    rows = []
    for (t, n_p, n_r), sub in sb_eb_p2c.groupby(["threshold", "n_prompts", "n_rollouts"], sort=True):
        S = sub["S_B"].to_numpy(dtype=float)
        S = S[np.isfinite(S) & (S > 0)]
        rows.append({"threshold": float(t), "n_prompts": int(n_p), "n_rollouts": int(n_r),
                     "total_batch": int(n_p * n_r),
                     "S_B": float(np.exp(np.log(S).mean())) if S.size else np.nan,
                     "censored": bool(sub["censored"].any()), "n_runs": int(len(sub))})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    best = out[~out["censored"]].groupby("threshold")["S_B"].min()
    out["S_rel"] = out["S_B"] / out["threshold"].map(best)
    out["rank"] = out.groupby("threshold")["S_B"].rank(method="min")
    if two_axis is not None and len(two_axis.get("fit", [])):
        f = two_axis["fit"].set_index("threshold")
        S_min = out["threshold"].map(f["S_min"])
        B0 = out["threshold"].map(f["B0"])
        rho = out["threshold"].map(f["rho"])
        out["S_pred"] = S_min * (1.0 + B0 * (1.0 + (out["n_rollouts"] - 1) * rho) / out["total_batch"])
    return out


# ------------------------------------------------------------------------------------------
# Gradient noise (phase 3)
# ------------------------------------------------------------------------------------------
def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as Adam's: no pull towards 0 at the start)."""
    out = np.empty_like(x, dtype=float)
    m = 0.0
    for i, v in enumerate(x):
        m = (1.0 - alpha) * m + alpha * v
        out[i] = m / (1.0 - (1.0 - alpha) ** (i + 1))
    return out


def smooth_grad_noise(history: pd.DataFrame, runs: pd.DataFrame, alpha: float = 0.1,
                      estimate_key: str = "grad_noise/B_noise_estimate",
                      norm_key: str = "grad_noise/grad_norm") -> pd.DataFrame:
    """Smoothed simple noise scale B_simple = tr(Sigma) / |G|^2 per run and step.

    Assumed meaning of the custom keys (the seed's logger; no standard exists):
    grad_noise/grad_norm = |G_B|, the norm of the step's full-batch gradient over B = n_p n_r
    samples; grad_noise/B_noise_estimate = that step's (noisy) estimate of
    B_simple = tr(Sigma)/|G|^2 in samples. Since E|G_B|^2 = |G|^2 + tr(Sigma)/B, each step
    gives |G|^2 ~ |G_B|^2 / (1 + b/B) and tr(Sigma) ~ b |G|^2. As McCandlish et al. (2018,
    App. A) do, the two are smoothed separately (bias-corrected EMA) and divided afterwards:
    a ratio of noisy estimates is biased, the ratio of smoothed ones much less.
    Falls back to actor/grad_norm when norm_key is absent. Empty table when no run logs
    estimate_key.
    """
    cols = ["run_id", "run_name", "total_batch", "step", "B_simple_raw", "G2_est",
            "trSigma_est", "G2_ema", "trSigma_ema", "B_simple_ema"]
    if estimate_key not in history.columns:
        return pd.DataFrame(columns=cols)
    if norm_key not in history.columns:
        norm_key = "actor/grad_norm"
        if norm_key not in history.columns:
            return pd.DataFrame(columns=cols)
    meta = _run_meta(runs).set_index("run_id")
    parts = []
    for rid, sub in history.groupby("run_id", sort=True):
        rid = str(rid)
        if rid not in meta.index:
            continue
        b = sub[estimate_key].to_numpy(dtype=float)
        g = sub[norm_key].to_numpy(dtype=float)
        ok = np.isfinite(b) & np.isfinite(g)
        if not ok.any():
            continue
        B = float(meta.at[rid, "total_batch"])
        b, g = b[ok], g[ok]
        g2 = g * g / (1.0 + b / B)
        tr = b * g2
        g2e, tre = _ema(g2, alpha), _ema(tr, alpha)
        parts.append(pd.DataFrame({
            "run_id": rid, "run_name": meta.at[rid, "run_name"], "total_batch": B,
            "step": sub["step"].to_numpy()[ok], "B_simple_raw": b, "G2_est": g2, "trSigma_est": tr,
            "G2_ema": g2e, "trSigma_ema": tre, "B_simple_ema": tre / g2e}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def grad_noise_at_target(smoothed: pd.DataFrame, sb_eb: pd.DataFrame) -> pd.DataFrame:
    """The smoothed B_simple of each run at its crossing of each threshold (interpolated in
    step; censored runs skipped). Compare its median with the fitted B_noise."""
    rows = []
    by_run = {str(k): v for k, v in smoothed.groupby("run_id")}
    for r in sb_eb.itertuples(index=False):
        sm = by_run.get(str(r.run_id))
        if sm is None or r.censored or not np.isfinite(r.S_B):
            continue
        val = np.interp(r.S_B, sm["step"].to_numpy(dtype=float), sm["B_simple_ema"].to_numpy(dtype=float))
        rows.append({"run_id": r.run_id, "total_batch": r.total_batch, "threshold": r.threshold,
                     "S_B": r.S_B, "B_simple_ema": float(val)})
    return pd.DataFrame(rows, columns=["run_id", "total_batch", "threshold", "S_B", "B_simple_ema"])


def b_simple_posthoc(runs: pd.DataFrame, history: pd.DataFrame, metric: str, accuracies,
                     grad_key: str = "actor/grad_norm", window: float = 0.1,
                     n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """B_simple from the gradient norms of runs at different B, taken at matched accuracy.

    The norm of a B-sample gradient satisfies E|G_B|^2 = |G|^2 + tr(Sigma)/B (McCandlish et
    al. 2018, App. A). For each accuracy, each run contributes the mean of grad_key^2 over the
    training steps within +-window*S of its (isotonic, interpolated) crossing step S; an
    ordinary least-squares line of |G_B|^2 on 1/B across runs has intercept |G|^2 and slope
    tr(Sigma), so B_simple = slope / intercept. 95% CI: bootstrap over runs (percentile).
    Censored runs are skipped. Compare with the fitted B_noise (McCandlish's B_crit), which
    equals B_simple when the Hessian is isotropic.
    """
    accs = [float(a) for a in np.atleast_1d(accuracies)]
    meta = _run_meta(runs).set_index("run_id")
    series = _eval_series(history, metric)
    grads = {}
    if grad_key in history.columns:
        for rid, sub in history.groupby("run_id", sort=False):
            g = sub[grad_key].to_numpy(dtype=float)
            ok = np.isfinite(g)
            grads[str(rid)] = (sub["step"].to_numpy(dtype=float)[ok], g[ok])
    out = []
    rng = np.random.default_rng(seed)
    for acc in accs:
        xs, ys = [], []
        for rid, (s, a, _) in series.items():
            if rid not in meta.index or rid not in grads or len(grads[rid][0]) == 0:
                continue
            S, cens = _crossings(s, a, [acc], "isotonic")
            if cens[0] or not np.isfinite(S[0]) or S[0] <= 0:
                continue
            gs, g = grads[rid]
            half = max(window * S[0], 1.0)
            sel = np.abs(gs - S[0]) <= half
            if sel.sum() < 1:
                sel = np.argsort(np.abs(gs - S[0]))[:3]
            xs.append(1.0 / float(meta.at[rid, "total_batch"]))
            ys.append(float(np.mean(g[sel] ** 2)))
        x, y = np.array(xs), np.array(ys)
        row = {"accuracy": acc, "G2": np.nan, "trSigma": np.nan, "B_simple": np.nan,
               "B_simple_lo": np.nan, "B_simple_hi": np.nan, "r2": np.nan, "n_runs": len(x),
               "n_batch_sizes": len(np.unique(x)), "status": "insufficient", "reason": ""}
        if len(np.unique(x)) < 3:
            row["reason"] = f"{len(np.unique(x))} batch size(s) with runs at this accuracy, 3 needed"
            out.append(row)
            continue
        slope, icpt = np.polyfit(x, y, 1)
        resid = y - (icpt + slope * x)
        tss = float(((y - y.mean()) ** 2).sum())
        row.update({"G2": icpt, "trSigma": slope, "r2": 1 - float((resid**2).sum()) / tss if tss > 0 else np.nan})
        if icpt <= 0 or slope <= 0:
            row["status"] = "failed"
            row["reason"] = "intercept |G|^2 or slope tr(Sigma) not positive: no noise scale"
            out.append(row)
            continue
        row["B_simple"], row["status"] = slope / icpt, "ok"
        if n_bootstrap:
            idx = rng.integers(0, len(x), size=(int(n_bootstrap), len(x)))
            xb, yb = x[idx], y[idx]
            xm, ym = xb.mean(1, keepdims=True), yb.mean(1, keepdims=True)
            sxx = ((xb - xm) ** 2).sum(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                sl = ((xb - xm) * (yb - ym)).sum(1) / sxx
                ic = ym[:, 0] - sl * xm[:, 0]
                bs = np.where(ic > 0, sl / ic, np.inf)
            bs = np.where(sxx > 0, bs, np.nan)
            row["B_simple_lo"], row["B_simple_hi"] = _quantiles(bs)
        out.append(row)
    return pd.DataFrame(out)


def compare_b_simple(b_simple: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Post-hoc B_simple next to the fitted B_noise (B_crit) at the same target accuracy."""
    left = b_simple.rename(columns={"accuracy": "threshold"})
    right = cbs_fit[["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"]].rename(
        columns={"status": "fit_status"})
    out = left.merge(right, on="threshold", how="inner")
    out["B_simple_over_B_noise"] = out["B_simple"] / out["B_noise"]
    return out


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
    meta = _run_meta(runs)
    series = _eval_series(history, metric)
    hist_by_run = {str(k): v for k, v in history.groupby("run_id", sort=False)}
    rows = []
    for m in meta.itertuples(index=False):
        s, a, _ = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = _crossings(s, a, thr, method)
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
    return _int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))


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
    return _int_columns(pd.DataFrame(rows), ("n_prompts", "n_rollouts", "total_batch"))


# ------------------------------------------------------------------------------------------
# The seed notebook's method, for comparison
# ------------------------------------------------------------------------------------------
def seed_method_fit(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                    dedupe_names: bool = True) -> pd.DataFrame:
    """The seed notebook's estimate: S = first raw eval step with acc >= target, runs that
    never reach it dropped, S(B) = S_min (1 + B_noise/B) fitted by curve_fit in linear space
    (p0 = [min S, middle B], bounds >= 0), >= 3 points required, no uncertainty.
    dedupe_names=True mimics its dict keyed by run name: one run per name survives (the
    first started, replicate 0, which a newest-first W&B listing writes last).
    Returns the cbs_fit columns (CI columns NaN) plus R2_linear."""
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    r = runs
    if dedupe_names and "replicate" in runs.columns:
        r = runs.sort_values("replicate").drop_duplicates("name", keep="first")
    sb = sb_eb_table(r, history, metric, thr, method="first_crossing")
    out = []
    for t in thr:
        sub = sb[(sb["threshold"] == t) & ~sb["censored"] & sb["S_B"].notna()]
        sub = sub.sort_values("total_batch")
        B = sub["total_batch"].to_numpy(dtype=float)
        S = sub["S_B"].to_numpy(dtype=float)
        res = _empty_fit(len(B), 0, "insufficient", "")
        res.update({"threshold": t, "R2_linear": np.nan})
        if len(B) < 3:
            res["reason"] = f"{len(B)} run(s) reach the target, the seed needs 3"
            out.append(res)
            continue
        try:
            popt, _ = optimize.curve_fit(mccandlish_steps, B, S, p0=[S.min(), B[len(B) // 2]],
                                         bounds=([0, 0], [np.inf, np.inf]), maxfev=10000)
        except (RuntimeError, ValueError) as exc:
            res["status"], res["reason"] = "failed", f"curve_fit: {exc}"
            out.append(res)
            continue
        S_min, B_noise = (float(v) for v in popt)
        pred = mccandlish_steps(B, S_min, B_noise)
        ss_tot = float(((S - S.mean()) ** 2).sum())
        res.update({"B_noise": B_noise, "S_min": S_min, "E_min": S_min * B_noise,
                    "B_crit_20pct": 0.2 * B_noise,
                    "R2_linear": 1 - float(((S - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0,
                    "status": "ok" if B.min() <= B_noise <= B.max() else "extrapolated"})
        with np.errstate(divide="ignore", invalid="ignore"):
            yl = np.log(S)
            fl = np.log(pred)
            tl = float(((yl - yl.mean()) ** 2).sum())
            res["r2_log"] = 1 - float(((yl - fl) ** 2).sum()) / tl if tl > 0 else np.nan
        out.append(res)
    df = pd.DataFrame(out)
    extra = [c for c in df.columns if c not in CBS_FIT_COLUMNS]
    return df[CBS_FIT_COLUMNS + extra]


# ===============================================================================================
# Phase parameters, figures, tables and the report build
# ===============================================================================================

#: Every analysis section, in report order, with the title used in the index.
SECTIONS = {
    "01_load_runs": "Runs in the phase",
    "02_steps_to_target": "Steps and samples to target, McCandlish fit",
    "03_training_curves": "Training curves",
    "04_two_axis": "Prompts vs rollouts",
    "05_gradient_noise": "Gradient noise scale",
    "06_wall_clock": "Wall-clock time",
}
SUMMARY_SECTION = "07_summary"
#: Column order of outputs/<phase>/tables/sb_eb.csv: design.md's contract first, extras last.
SB_EB_CSV_COLUMNS = ["run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
                     "E_B", "censored", "run_id", "replicate", "n_eval", "n_nonfinite"]
AXES = ("prompts", "rollouts", "iso_batch")
PARAM_SPEC = {  # key: (types, required)
    "phase": ((str,), True),
    "title": ((str,), True),
    "axis": ((str,), True),
    "metric": ((str,), True),
    "prefer_source": ((str, type(None)), False),
    "n_val": ((int,), True),
    "thresholds": ((list,), True),
    "sections": ((list,), True),
    "two_axis_phases": ((list,), False),
}


class ParamsError(ValueError):
    """A params/<phase>.yaml file that cannot be used; the message says what to fix."""


def validate_phase_params(raw: object, where: str = "params") -> dict:
    """Check one phase's parameters and return them with defaults filled in.

    Raises ParamsError naming the file and the key on: a non-mapping, an unknown or missing
    key, a wrong type, a threshold outside (0, 1), an unknown axis or section.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(PARAM_SPEC))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(PARAM_SPEC)}")
    missing = sorted(k for k, (_, req) in PARAM_SPEC.items() if req and k not in raw)
    if missing:
        raise ParamsError(f"{where}: missing key(s) {missing}")
    for key, value in raw.items():
        types, _ = PARAM_SPEC[key]
        # bool is an int subclass; n_val: true would otherwise pass as 1
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ParamsError(f"{where}: {key} must be {names}, got {value!r}")
    params = dict(raw)
    params.setdefault("prefer_source", None)
    params.setdefault("two_axis_phases", [])
    if params["axis"] not in AXES:
        raise ParamsError(f"{where}: axis must be one of {list(AXES)}, got {params['axis']!r}")
    if params["n_val"] <= 0:
        raise ParamsError(f"{where}: n_val must be a positive number of validation problems")
    thresholds = params["thresholds"]
    if not thresholds:
        raise ParamsError(f"{where}: thresholds is empty")
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ParamsError(f"{where}: every threshold must be a number in (0, 1), got {t!r}"
                              " (accuracy is a fraction: write 0.6, not 60)")
    params["thresholds"] = sorted(float(t) for t in thresholds)
    bad = [s for s in params["sections"] if s not in SECTIONS]
    if bad:
        raise ParamsError(f"{where}: unknown section(s) {bad}; known: {list(SECTIONS)}")
    if not all(isinstance(p, str) for p in params["two_axis_phases"]):
        raise ParamsError(f"{where}: two_axis_phases must be a list of phase names")
    return params


def load_phase_params(params_dir: str | Path, phase: str) -> dict:
    """Read and validate params/<phase>.yaml (the phase's metric, thresholds, n_val, sections)."""
    params_dir = Path(params_dir)
    known = sorted(p.stem for p in params_dir.glob("*.yaml"))
    path = params_dir / f"{phase}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown phase {phase!r}: there is no {path}. Known phases: {known}."
                          " To add a phase, add a params file (see params/README.md).")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    params = validate_phase_params(raw, where=str(path))
    if params["phase"] != phase:
        raise ParamsError(f"{path}: phase is {params['phase']!r} but the file is named for {phase!r}")
    return params


# ---------------------------------------------------------------------------------------------
# Figure style and saving
# ---------------------------------------------------------------------------------------------

#: Okabe & Ito's colour-blind-safe palette (black last, it is kept for reference lines).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def setup_style() -> None:
    """The one matplotlib style of every figure in the reports and the paper."""
    matplotlib.rcParams.update({
        "figure.figsize": (6.4, 4.2),
        "figure.dpi": 110,
        "figure.constrained_layout.use": True,
        "savefig.dpi": 150,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
        "legend.frameon": False,
        "lines.linewidth": 1.6,
        "lines.markersize": 5,
        "pdf.fonttype": 42,  # editable text in the paper's PDF
        "ps.fonttype": 42,
    })
    _register_figure_display()


def _register_figure_display() -> None:
    """Let a bare `fig` at the end of a notebook cell display as PNG (figures here are built
    with matplotlib.figure.Figure, not pyplot, so nothing global is left open)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def to_png(fig: Figure) -> bytes:
        import io
        saved = getattr(fig, "_cbs_saved_png", None)
        if saved is not None:  # save_figure already rendered it: do not render twice
            return saved
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        return buf.getvalue()

    shell.display_formatter.formatters["image/png"].for_type(Figure, to_png)


def threshold_colors(thresholds) -> dict:
    """A fixed colour per accuracy threshold, the same in every figure of a phase."""
    return {t: PALETTE[i % (len(PALETTE) - 1)] for i, t in enumerate(sorted(thresholds))}


def batch_colors(batch_sizes) -> dict:
    """Sequential colours (viridis, colour-blind safe) for an ordered set of batch sizes."""
    values = sorted(set(batch_sizes))
    cmap = matplotlib.colormaps["viridis"]
    n = max(len(values) - 1, 1)
    return {b: cmap(0.9 * i / n) for i, b in enumerate(values)}


def _pow2_label(x: float, _pos=None) -> str:
    if x <= 0:
        return ""
    k = np.log2(x)
    if abs(k - round(k)) > 1e-6:
        return ""
    value = int(round(x))
    return f"{value // 1024}K" if value >= 8192 and value % 1024 == 0 else f"{value}"


def set_log2_axis(ax, which: str = "x", lo: float | None = None, hi: float | None = None) -> None:
    """log2 axis with ticks at powers of two labelled as plain numbers (64, 128, ... 16K)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=2)
    axis.set_major_locator(ticker.LogLocator(base=2, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(_pow2_label))
    axis.set_minor_locator(ticker.NullLocator())
    if lo is not None and hi is not None:
        (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)


def set_log_axis(ax, which: str = "y") -> None:
    """log10 axis with plain labels (10, 100, 1K, ...). Call it after plotting: when the data
    span less than about two decades, 2 and 5 times each power of ten are labelled too, so the
    axis never shows a single number."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    decades = np.log10(hi / lo) if lo > 0 and hi > lo else 3.0
    subs = (1.0, 2.0, 5.0) if decades < 2.2 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(_sci_label))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def _sci_label(x: float, _pos=None) -> str:
    """1, 2, 5 times powers of ten as 0.5, 1, 20, 500, 1K, 20K, 1M ...; other ticks unlabelled."""
    if x <= 0:
        return ""
    k = int(np.floor(np.log10(x) + 1e-9))
    m = x / 10.0**k
    if min(abs(m - d) for d in (1, 2, 5)) > 1e-6:
        return ""
    m = int(round(m))
    if k < 0:
        return f"{x:g}"
    suffix, scale = next((s, d) for s, d in (("G", 9), ("M", 6), ("K", 3), ("", 0)) if k >= d)
    return f"{m * 10 ** (k - scale)}{suffix}"


def save_figure(fig: Figure, data: pd.DataFrame, out_dir: str | Path, name: str) -> dict:
    """Save a figure as PDF (vector, for the paper) and PNG (for the HTML), with its data as CSV.

    Returns the three paths. The PDF carries no creation date, so rebuilding gives the same file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("pdf", "png", "csv")}
    fig.savefig(paths["pdf"], metadata={"CreationDate": None})
    fig.savefig(paths["png"])
    fig._cbs_saved_png = paths["png"].read_bytes()
    data.to_csv(paths["csv"], index=False)
    return paths


# ---------------------------------------------------------------------------------------------
# Plots. Each takes result tables and returns a Figure; none saves or shows.
# ---------------------------------------------------------------------------------------------

def _fit_curve(B, S_min, B_noise):
    return S_min * (1.0 + B_noise / B)


def _batch_limits(b) -> tuple[float, float]:
    b = np.asarray(b, dtype=float)
    b = b[np.isfinite(b) & (b > 0)]
    if b.size == 0:
        return 1.0, 2.0
    return 2 ** (np.floor(np.log2(b.min())) - 0.5), 2 ** (np.ceil(np.log2(b.max())) + 0.5)


def plot_sb_eb(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame, title: str = "",
               batch_col: str = "total_batch") -> Figure:
    """S(B) and E(B) per threshold: measured points, censored runs as lower bounds (open
    triangles), the McCandlish fit with its 95% band over B_noise, and B_noise marked (diamond:
    there S = 2 S_min and E = 2 E_min)."""
    fig = Figure(figsize=(10.5, 4.6))
    ax_s, ax_e = fig.subplots(1, 2)
    fits = cbs_fit.set_index("threshold")
    colors = threshold_colors(sb_eb["threshold"].unique())
    lo, hi = _batch_limits(sb_eb[batch_col])
    grid = np.geomspace(lo, hi, 200)
    for t, rows in sb_eb.groupby("threshold"):
        c = colors[t]
        ok = rows[~rows["censored"].astype(bool)]
        cen = rows[rows["censored"].astype(bool)]
        for ax, col in ((ax_s, "S_B"), (ax_e, "E_B")):
            ax.scatter(ok[batch_col], ok[col], color=c, s=22, zorder=3)
            ax.scatter(cen[batch_col], cen[col], marker="^", facecolors="none", edgecolors=c,
                       s=30, zorder=3)
        label = f"acc ≥ {t:g}"
        if t in fits.index and np.isfinite(fits.loc[t, "B_noise"]) and \
                fits.loc[t, "status"] in ("ok", "extrapolated"):
            f = fits.loc[t]
            s_fit = _fit_curve(grid, f["S_min"], f["B_noise"])
            ax_s.plot(grid, s_fit, color=c, lw=1.4)
            ax_e.plot(grid, s_fit * grid, color=c, lw=1.4)
            if np.isfinite(f["B_noise_lo"]) and np.isfinite(f["B_noise_hi"]):
                # Band: the curve through the fitted S_min as B_noise spans its 95% CI.
                s_lo = _fit_curve(grid, f["S_min"], f["B_noise_lo"])
                s_hi = _fit_curve(grid, f["S_min"], f["B_noise_hi"])
                ax_s.fill_between(grid, s_lo, s_hi, color=c, alpha=0.15, lw=0)
                ax_e.fill_between(grid, s_lo * grid, s_hi * grid, color=c, alpha=0.15, lw=0)
            ax_s.scatter([f["B_noise"]], [2 * f["S_min"]], marker="D", color=c, s=36,
                         edgecolors="black", linewidths=0.6, zorder=4)
            ax_e.scatter([f["B_noise"]], [2 * f["S_min"] * f["B_noise"]], marker="D", color=c,
                         s=36, edgecolors="black", linewidths=0.6, zorder=4)
            label += f": B_noise = {f['B_noise']:.0f}"
            if np.isfinite(f["B_noise_lo"]):
                label += f" [{f['B_noise_lo']:.0f}, {f['B_noise_hi']:.0f}]"
        ax_s.plot([], [], color=c, marker="o", label=label)
    for ax in (ax_s, ax_e):
        set_log2_axis(ax, "x", lo, hi)
        set_log_axis(ax, "y")
        ax.set_xlabel("batch size B = prompts × rollouts (samples per step)")
    ax_s.set_ylabel("optimizer steps to target S(B)")
    ax_e.set_ylabel("samples to target E(B) = B·S(B)")
    ax_s.set_title("steps to target")
    ax_e.set_title("samples to target")
    handles, labels = ax_s.get_legend_handles_labels()
    handles += [matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.3"),
                matplotlib.lines.Line2D([], [], ls="", marker="D", mfc="0.6", mec="black")]
    labels += ["never reached (lower bound)", "B = B_noise"]
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def _ci_errorbar(ax, x, y, lo, hi, capsize: float = 2.5, **kw) -> None:
    """Points with their interval [lo, hi] as error bars; a missing bound draws no bar."""
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    yerr = np.vstack([y - lo, hi - y])
    ax.errorbar(x, y, yerr=np.where(np.isfinite(yerr), yerr, 0), capsize=capsize, **kw)


def plot_b_noise_vs_target(cbs_fit: pd.DataFrame, compare: pd.DataFrame | None = None,
                           compare_label: str = "seed method", title: str = "") -> Figure:
    """B_noise against the target accuracy, with 95% CIs; optionally a second method beside it."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ok = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"]) & np.isfinite(cbs_fit["B_noise"])]
    _ci_errorbar(ax, ok["threshold"], ok["B_noise"], ok["B_noise_lo"], ok["B_noise_hi"],
                 marker="o", color=PALETTE[0], capsize=3, label="this project (95% CI)")
    ext = ok[ok["status"] == "extrapolated"]
    if len(ext):
        ax.scatter(ext["threshold"], ext["B_noise"], marker="o", facecolors="white",
                   edgecolors=PALETTE[0], zorder=4, label="outside the sampled B (extrapolated)")
    if compare is not None and len(compare):
        cmp_ok = compare[np.isfinite(compare["B_noise"])]
        ax.plot(cmp_ok["threshold"] + 0.004, cmp_ok["B_noise"], marker="s", ls="--",
                color=PALETTE[3], label=compare_label)
    set_log2_axis(ax, "y")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("B_noise (samples per step)")
    ax.set_title(title or "critical batch size grows with the target")
    ax.legend(loc="best")
    return fig


def plot_pareto(pareto: pd.DataFrame, title: str = "") -> Figure:
    """(S/S_min - 1) against (E/E_min - 1): the McCandlish model puts every run on x·y = 1."""
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.subplots()
    colors = threshold_colors(pareto["threshold"].unique())
    xcol, ycol = "E_excess", "S_excess"
    data = pareto[(pareto[xcol] > 0) & (pareto[ycol] > 0)]
    for t, rows in data.groupby("threshold"):
        cen = rows["censored"].astype(bool)
        ax.scatter(rows.loc[~cen, xcol], rows.loc[~cen, ycol], color=colors[t], s=22,
                   label=f"acc ≥ {t:g}")
        ax.scatter(rows.loc[cen, xcol], rows.loc[cen, ycol], marker="^", facecolors="none",
                   edgecolors=colors[t], s=26)
    if len(data):
        lo = min(data[xcol].min(), data[ycol].min(), 0.5) / 2
        hi = max(data[xcol].max(), data[ycol].max(), 2) * 2
        x = np.geomspace(lo, hi, 100)
        ax.plot(x, 1 / x, color="black", lw=1, ls="--", label="(S/S_min−1)(E/E_min−1) = 1")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("E/E_min − 1 (extra samples)")
    ax.set_ylabel("S/S_min − 1 (extra steps)")
    ax.set_title(title or "steps-samples trade-off")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def training_curves_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long table of the validation curve of every run: accuracy against steps and samples."""
    cols = ["run_id", "name", "replicate", "n_prompts", "n_rollouts", "total_batch"]
    h = history.loc[history[metric].notna() & np.isfinite(history[metric]), ["run_id", "step", metric]]
    out = h.merge(runs[cols], on="run_id", how="inner").rename(columns={metric: "accuracy"})
    out["samples"] = out["step"].astype(float) * out["total_batch"].astype(float)
    return out.sort_values(["total_batch", "n_prompts", "replicate", "step"]).reset_index(drop=True)


def plot_training_curves(curves: pd.DataFrame, thresholds=(), title: str = "",
                         color_by: str = "total_batch") -> Figure:
    """Validation accuracy against optimizer steps (left) and samples seen (right), one line per
    run coloured by batch size; dashed lines are the target accuracies."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_n = fig.subplots(1, 2, sharey=True)
    keys = sorted(curves[["total_batch", "n_prompts", "n_rollouts"]].drop_duplicates().itertuples(index=False))
    colors = batch_colors(range(len(keys)))
    for i, (b, npr, nro) in enumerate(keys):
        sel = curves[(curves["total_batch"] == b) & (curves["n_prompts"] == npr)
                     & (curves["n_rollouts"] == nro)]
        for j, (_, run) in enumerate(sel.groupby("run_id", sort=False)):
            label = f"B={b} ({npr}×{nro})" if j == 0 else None
            ax_s.plot(run["step"], run["accuracy"], color=colors[i], lw=1.1, alpha=0.9, label=label)
            ax_n.plot(run["samples"].where(run["samples"] > 0), run["accuracy"], color=colors[i],
                      lw=1.1, alpha=0.9)
    for t in thresholds:
        for ax in (ax_s, ax_n):
            ax.axhline(t, color="0.5", lw=0.7, ls="--", zorder=0)
    ax_s.set_xlabel("optimizer step")
    ax_n.set_xlabel("samples seen (step × B)")
    set_log_axis(ax_n, "x")
    ax_s.set_ylabel("validation accuracy")
    ax_s.set_title("accuracy vs steps")
    ax_n.set_title("accuracy vs samples")
    fig.legend(loc="outside right center", title="batch (prompts×rollouts)", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_cross_phase(summary_long: pd.DataFrame, title: str = "") -> Figure:
    """The headline figure: B_noise against the target accuracy, one line per phase, 95% CIs."""
    fig = Figure(figsize=(7.4, 4.4))
    ax = fig.subplots()
    ok = summary_long[summary_long["status"].isin(["ok", "extrapolated"])
                      & np.isfinite(summary_long["B_noise"])]
    markers = "osD^vP*X"
    for i, (phase, rows) in enumerate(ok.groupby("phase", sort=False)):
        _ci_errorbar(ax, rows["threshold"], rows["B_noise"], rows["B_noise_lo"], rows["B_noise_hi"],
                     marker=markers[i % len(markers)], color=PALETTE[i % (len(PALETTE) - 1)],
                     label=f"{phase}: {rows['axis'].iloc[0]} axis, {rows['task'].iloc[0]}")
    set_log2_axis(ax, "y")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("B_noise (samples per step)")
    ax.set_title(title or "critical batch size by phase and target")
    fig.legend(loc="outside right center", fontsize=8)
    return fig


def plot_two_axis(sb_eb_all: pd.DataFrame, two_axis: dict, threshold: float, title: str = "") -> Figure:
    """Left: S against B at one target for each phase (prompt and rollout axes), with the joint
    model S = S_min (1 + B0 (1 + (n_r - 1) rho) / (n_p n_r)). Right: the per-axis B_noise in
    total samples that the joint fit implies, against the target, with 95% CIs."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_b = fig.subplots(1, 2)
    sub = sb_eb_all[np.isclose(sb_eb_all["threshold"], threshold)]
    fit = two_axis["fit"].set_index("threshold")
    axes_tab = two_axis["axes"]
    lo, hi = _batch_limits(sb_eb_all["total_batch"])
    markers = "osD^v"
    for i, (phase, rows) in enumerate(sub.groupby("phase", sort=True)):
        c = PALETTE[i % (len(PALETTE) - 1)]
        cen = rows["censored"].astype(bool)
        ax_s.scatter(rows.loc[~cen, "total_batch"], rows.loc[~cen, "S_B"], color=c,
                     marker=markers[i % len(markers)], s=24, zorder=3)
        ax_s.scatter(rows.loc[cen, "total_batch"], rows.loc[cen, "S_B"], marker="^",
                     facecolors="none", edgecolors=c, s=30, zorder=3)
        n_p, n_r = rows["n_prompts"].astype(float), rows["n_rollouts"].astype(float)
        if n_r.nunique() == 1:
            fixed, label = n_r.iloc[0], f"{phase}: prompts vary, n_rollouts = {int(n_r.iloc[0])}"
            grid_np, grid_nr = np.geomspace(lo, hi, 100) / fixed, np.full(100, fixed)
        else:
            fixed, label = n_p.iloc[0], f"{phase}: rollouts vary, n_prompts = {int(n_p.iloc[0])}"
            grid_nr = np.geomspace(max(lo / fixed, 1), hi / fixed, 100)
            grid_np = np.full(100, fixed)
        if threshold in fit.index and fit.loc[threshold, "status"] == "ok":
            f = fit.loc[threshold]
            s_pred = f["S_min"] * (1 + f["B0"] * (1 + (grid_nr - 1) * f["rho"]) / (grid_np * grid_nr))
            ax_s.plot(grid_np * grid_nr, s_pred, color=c, lw=1.3, label=label)
        else:
            ax_s.plot([], [], color=c, label=label)
        ph_axes = axes_tab[axes_tab["phase"] == phase].sort_values("threshold")
        if len(ph_axes):
            _ci_errorbar(ax_b, ph_axes["threshold"] + 0.003 * (i - 1), ph_axes["B_noise"],
                         ph_axes["B_noise_lo"], ph_axes["B_noise_hi"], color=c,
                         marker=markers[i % len(markers)],
                         label=f"{phase} ({ph_axes['axis'].iloc[0]} axis)")
    set_log2_axis(ax_s, "x", lo, hi)
    set_log_axis(ax_s, "y")
    ax_s.set_xlabel("batch size B = prompts × rollouts")
    ax_s.set_ylabel("optimizer steps to target S")
    ax_s.set_title(f"steps to accuracy {threshold:g}: joint fit")
    ax_s.legend(loc="upper right", fontsize=7.5)
    set_log2_axis(ax_b, "y")
    ax_b.set_xlabel("target validation accuracy")
    ax_b.set_ylabel("implied B_noise (samples per step)")
    ax_b.set_title("B_noise along each axis")
    ax_b.legend(loc="best", fontsize=7.5)
    if title:
        fig.suptitle(title)
    return fig


def plot_iso_batch(iso: pd.DataFrame, title: str = "") -> Figure:
    """At a fixed total batch: steps to each target against how it is split (n_rollouts per
    prompt, log2), measured (points; open triangles never reached) and, when given, the joint
    two-axis model's prediction (dashed)."""
    fig = Figure(figsize=(6.8, 4.4))
    ax = fig.subplots()
    colors = threshold_colors(iso["threshold"].unique())
    for t, rows in iso.groupby("threshold", sort=True):
        rows = rows.sort_values("n_rollouts")
        c = colors[t]
        cen = rows["censored"].astype(bool)
        ax.plot(rows["n_rollouts"], rows["S_B"], color=c, lw=1.2, marker="o",
                label=f"acc ≥ {t:g}")
        ax.scatter(rows.loc[cen, "n_rollouts"], rows.loc[cen, "S_B"], marker="^",
                   facecolors="white", edgecolors=c, s=40, zorder=4)
        if "S_pred" in rows:
            ax.plot(rows["n_rollouts"], rows["S_pred"], color=c, lw=1, ls="--")
    set_log2_axis(ax, "x")
    set_log_axis(ax, "y")
    splits = iso[["n_prompts", "n_rollouts"]].drop_duplicates().sort_values("n_rollouts")
    ax.set_xticks(splits["n_rollouts"].to_numpy(dtype=float))
    ax.set_xticklabels([f"{int(r)}\n({int(p)} prompts)" for p, r in splits.itertuples(index=False)],
                       fontsize=8)
    ax.set_xlabel("rollouts per prompt (prompts per step) at a fixed batch")
    ax.set_ylabel("optimizer steps to target S")
    ax.set_title(title or "iso-batch: prompt diversity vs rollout diversity")
    handles, labels = ax.get_legend_handles_labels()
    if "S_pred" in iso:
        handles.append(matplotlib.lines.Line2D([], [], color="0.4", ls="--"))
        labels.append("joint two-axis model")
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return fig


def plot_grad_noise(smoothed: pd.DataFrame, cbs_fit: pd.DataFrame | None = None,
                    title: str = "") -> Figure:
    """The smoothed simple noise scale B_simple over training for each run (log2), with the
    fitted B_noise range of the phase shaded for reference."""
    fig = Figure(figsize=(7.4, 4.4))
    ax = fig.subplots()
    colors = batch_colors(smoothed["total_batch"].unique())
    seen = set()
    for _rid, rows in smoothed.groupby("run_id", sort=False):
        b = rows["total_batch"].iloc[0]
        ax.plot(rows["step"], rows["B_simple_ema"], color=colors[b], lw=1.1,
                label=None if b in seen else f"B={int(b)}")
        seen.add(b)
    if cbs_fit is not None:
        ok = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"])]
        if len(ok):
            ax.axhspan(ok["B_noise"].min(), ok["B_noise"].max(), color="0.5", alpha=0.15, lw=0,
                       label="fitted B_noise (range over targets)")
    set_log2_axis(ax, "y")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("B_simple = tr(Σ)/|G|² (samples)")
    ax.set_title(title or "gradient noise scale during training (EMA)")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith("B="),
                   int(labels[i][2:]) if labels[i].startswith("B=") else 0))
    fig.legend([handles[i] for i in order], [labels[i] for i in order],
               loc="outside right center", fontsize=8)
    return fig


def plot_noise_scale_vs_fit(comparison: pd.DataFrame, at_target: pd.DataFrame | None = None,
                            title: str = "") -> Figure:
    """Does the gradient noise scale predict B_crit? Fitted B_noise, post-hoc B_simple from
    gradient norms at matched accuracy, and (if logged) the smoothed B_simple at the crossing,
    each against the target accuracy with 95% CIs."""
    fig = Figure(figsize=(6.8, 4.4))
    ax = fig.subplots()

    c = comparison.sort_values("threshold")
    _ci_errorbar(ax, c["threshold"], c["B_noise"], c["B_noise_lo"], c["B_noise_hi"], marker="o",
                 color=PALETTE[0], label="B_noise fitted from S(B)")
    ok = c[c["status"] == "ok"]
    _ci_errorbar(ax, ok["threshold"] + 0.004, ok["B_simple"], ok["B_simple_lo"], ok["B_simple_hi"],
                 marker="s", color=PALETTE[1], label="B_simple from actor/grad_norm (post hoc)")
    if at_target is not None and len(at_target):
        med = at_target.groupby("threshold")["B_simple_ema"].agg(
            med="median", lo=lambda v: np.quantile(v, 0.1), hi=lambda v: np.quantile(v, 0.9))
        _ci_errorbar(ax, med.index.to_numpy() - 0.004, med["med"], med["lo"], med["hi"],
                     marker="D", color=PALETTE[2], label="logged B_simple at the crossing (median, 10-90%)")
    set_log2_axis(ax, "y")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("batch size (samples per step)")
    ax.set_title(title or "gradient noise scale vs fitted critical batch")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_wall_clock(wall: pd.DataFrame, title: str = "") -> Figure:
    """Left: hours to each target against B (median over replicates; open triangles: never
    reached, a lower bound). Right: mean step time against B."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_t, ax_s = fig.subplots(1, 2)
    colors = threshold_colors(wall["threshold"].unique())
    lo, hi = _batch_limits(wall["total_batch"])
    for t, rows in wall.groupby("threshold", sort=True):
        agg = rows.groupby(["total_batch", "censored"], as_index=False)["time_to_target_h"].median()
        ok = agg[~agg["censored"]].sort_values("total_batch")
        cen = agg[agg["censored"]]
        ax_t.plot(ok["total_batch"], ok["time_to_target_h"], color=colors[t], marker="o",
                  label=f"acc ≥ {t:g}")
        ax_t.scatter(cen["total_batch"], cen["time_to_target_h"], marker="^", facecolors="none",
                     edgecolors=colors[t], s=30)
        if len(ok):
            best = ok.loc[ok["time_to_target_h"].idxmin()]
            ax_t.scatter([best["total_batch"]], [best["time_to_target_h"]], marker="*", s=120,
                         color=colors[t], edgecolors="black", linewidths=0.5, zorder=4)
    steps = wall.drop_duplicates("run_id")
    ax_s.scatter(steps["total_batch"], steps["mean_step_time_s"], color=PALETTE[0], s=24)
    for ax in (ax_t, ax_s):
        set_log2_axis(ax, "x", lo, hi)
        ax.set_xlabel("batch size B = prompts × rollouts")
    set_log_axis(ax_t, "y")
    ax_t.set_ylabel("wall-clock hours to target")
    ax_t.set_title("time to target (★ fastest)")
    ax_s.set_ylabel("mean step time (s)")
    ax_s.set_title("step time grows with B")
    handles, labels = ax_t.get_legend_handles_labels()
    handles.append(matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.3"))
    labels.append("never reached (lower bound)")
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Tables for the paper
# ---------------------------------------------------------------------------------------------

def cbs_summary_long(fits: dict, params: dict) -> pd.DataFrame:
    """All phases' cbs_fit tables stacked, with the phase's axis and task."""
    frames = []
    for phase, fit in fits.items():
        p = params[phase]
        task = p.get("prefer_source") or p["metric"]
        frames.append(fit.assign(phase=phase, axis=p["axis"], task=task))
    cols = ["phase", "axis", "task", "threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min",
            "E_min", "B_crit_20pct", "r2_log", "n_points", "n_censored", "status"]
    return pd.concat(frames, ignore_index=True)[cols]


def cbs_summary_table(summary_long: pd.DataFrame) -> pd.DataFrame:
    """The paper's cross-phase table: one row per (phase, target), B_noise with its 95% CI."""
    rows = summary_long.copy()
    return pd.DataFrame({
        "phase": rows["phase"], "axis": rows["axis"], "task": rows["task"],
        "target": rows["threshold"].map(lambda t: f"{t:g}"),
        "B_noise [95% CI]": [format_ci(b, lo, hi) for b, lo, hi in
                             zip(rows["B_noise"], rows["B_noise_lo"], rows["B_noise_hi"], strict=True)],
        "S_min": rows["S_min"].round(1),
        "0.2 B_noise": rows["B_crit_20pct"].round(0),
        "R2 (log)": rows["r2_log"].round(3),
        "runs (censored)": [f"{n} ({c})" for n, c in zip(rows["n_points"], rows["n_censored"], strict=True)],
        "status": rows["status"],
    })


def format_ci(value: float, lo: float, hi: float, digits: int = 0) -> str:
    """'290 [250, 330]', or an en dash where the value is missing."""
    if not np.isfinite(value):
        return "–"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{value:.{digits}f}"


def to_latex_booktabs(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs LaTeX table (no pandas Styler/jinja dependency): escapes &, %, _, #, $."""
    def esc(x) -> str:
        s = "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else str(x)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                     ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("≥", r"$\geq$"),
                     ("–", "--"), ("×", r"$\times$")):
            s = s.replace(a, b)
        return s
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule"]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(esc(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def open_snapshot(out_dir: str | Path, source: str | None = None):
    """(runs, history, manifest) of the snapshot in <out_dir>/data. When there is none yet
    (a notebook opened in JupyterLab before any `make snapshot`) and a source is given, build it
    first with the same code as `make snapshot`."""

    out_dir = Path(out_dir)
    if source is not None and not (out_dir / "data" / "manifest.json").exists():
        write_snapshot(build_snapshot(source), out_dir)
    return read_snapshot(out_dir)


def phase_runs(runs_all: pd.DataFrame, history_all: pd.DataFrame, params: dict):
    """(runs, history, metric) of one phase: its runs in the snapshot, their history, and the
    validation-accuracy key its params select among the columns those runs logged."""
    phase = params["phase"]
    runs = runs_all[runs_all["phase"] == phase]
    if runs.empty:
        present = sorted(runs_all["phase"].dropna().astype(str).unique())
        raise ValueError(f"no runs of phase {phase!r} in the snapshot; phases present: {present}")
    history = history_all[history_all["run_id"].isin(runs["run_id"])]
    logged = [c for c in history.columns if history[c].notna().any()]
    metric = select_accuracy_metric(logged, params["metric"], params["prefer_source"])
    return runs, history, metric


def save_table(table: pd.DataFrame, out_dir: str | Path, name: str, latex: bool = False,
               caption: str = "", label: str = "") -> dict:
    """Write a result table as <name>.csv (and <name>.tex, booktabs, when latex=True)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{name}.csv"}
    table.to_csv(paths["csv"], index=False)
    if latex:
        paths["tex"] = out_dir / f"{name}.tex"
        paths["tex"].write_text(to_latex_booktabs(table, caption, label))
    return paths


# ---------------------------------------------------------------------------------------------
# Report build: plan (make rules), execute (papermill), html (nbconvert) and the index page.
# These are the only functions here that touch files or start processes.
# ---------------------------------------------------------------------------------------------

def _phase_sections(path: Path) -> tuple[str, list[str], list[str]]:
    """(title, sections in report order, two_axis_phases) of one params file. An invalid file
    still gets its 01_load_runs section, whose first cell then stops with the message."""
    try:
        params = validate_phase_params(yaml.safe_load(path.read_text()), str(path))
    except (ParamsError, yaml.YAMLError):
        return "(params file invalid)", ["01_load_runs"], []
    return (params["title"], [s for s in SECTIONS if s in params["sections"]],
            params["two_axis_phases"])


def report_plan(params_dir: str | Path, notebooks_dir: str | Path, out_dir: str,
                n_bootstrap: int = 1000) -> str:
    """Make rules for every (phase, section) in params/*.yaml, plus the cross-phase summary.

    A params file that does not validate still gets its 01_load_runs notebook, whose first cell
    then stops with the validation message; the other phases build as usual.
    """
    params_dir, notebooks_dir = Path(params_dir), Path(notebooks_dir)
    lines = ["# generated by `cbs_helpers.py plan` from params/*.yaml; do not edit", ""]
    summary_deps = []
    all_params = " ".join(str(p) for p in sorted(params_dir.glob("*.yaml")))
    for path in sorted(params_dir.glob("*.yaml")):
        phase = path.stem
        _title, sections, joint = _phase_sections(path)
        extra = [params_dir / f"{p}.yaml" for p in joint if p != phase]
        targets = []
        for section in sections:
            nb = notebooks_dir / f"{section}.ipynb"
            target = f"{out_dir}/{phase}/{section}.ipynb"
            deps = [str(nb), str(path), "cbs_helpers.py", "$(SNAPSHOT)"] + [str(e) for e in extra
                                                                          if e.exists()]
            lines.append(f"{target}: {' '.join(deps)} | $(STAMP)")
            lines.append(_notebook_recipe(nb, target, phase, out_dir, params_dir, notebooks_dir))
            targets.append(target)
            if section == "02_steps_to_target":
                summary_deps.append(target)
        lines.append(f"NOTEBOOKS_{phase} := {' '.join(targets)}")
        lines.append("")
    nb = notebooks_dir / f"{SUMMARY_SECTION}.ipynb"
    target = f"{out_dir}/summary/{SUMMARY_SECTION}.ipynb"
    lines.append(f"SUMMARY_NB := {target}")
    lines.append(f"{target}: {nb} cbs_helpers.py {all_params} $(SNAPSHOT) "
                 f"$(filter {' '.join(summary_deps)},$(foreach p,$(PHASES),$(NOTEBOOKS_$(p)))) | $(STAMP)")
    lines.append(_notebook_recipe(nb, target, "summary", out_dir, params_dir, notebooks_dir))
    return "\n".join(lines) + "\n"


def _notebook_recipe(nb: Path, target: str, phase: str, out_dir: str, params_dir: Path,
                     notebooks_dir: Path) -> str:
    """The make recipe of one (phase, section): papermill's own command line on the notebook's
    .ipynb twin (kept in sync with its .py by make), so the driver process imports nothing of
    the analysis stack; the kernel runs in notebooks/ with paths relative to it, as in
    JupyterLab. On failure, `cbs_helpers.py failed` prints one line naming the notebook and cell."""
    rel_out = os.path.relpath(out_dir, notebooks_dir)
    rel_params = os.path.relpath(params_dir, notebooks_dir)
    stem = Path(target).with_suffix("")
    return (
        f'\t@mkdir -p "{Path(target).parent}" && '
        f'PYTHONPATH="$(CURDIR)$${{PYTHONPATH:+:$$PYTHONPATH}}" "$(PY)" -m papermill {nb} '
        f'"{target}.tmp" -k python3 --language python --cwd {notebooks_dir} --no-progress-bar --log-level WARNING '
        f'-p phase {phase} -p out_dir "{rel_out}" -p params_dir "{rel_params}" '
        f'-p n_bootstrap $(N_BOOTSTRAP) 2> "{stem}.log" '
        f'&& mv "{target}.tmp" "{target}" && rm -f "{stem}.log" "{stem}.error.txt" '
        f'"{stem}.failed.ipynb" && touch "{out_dir}/.make/status.stamp" '
        f'&& echo "ok: {nb.stem} [phase {phase}]" '
        f'|| "$(PY)" cbs_helpers.py failed "{target}" --notebook {nb.with_suffix(".py")} --phase {phase}')


def record_notebook_failure(target: str | Path, notebook: str | Path, phase: str,
                            partial: str | Path | None = None, log: str | Path | None = None) -> str:
    """After a failed execution of <notebook> for <phase> into <target>: keep the partial
    notebook as <stem>.failed.ipynb, remove the stale executed notebook and HTML, write the
    one-line message to <stem>.error.txt (the index shows it) and return it. The message names
    the notebook, the phase and the cell, and carries the error's last line, not a traceback."""
    import nbformat

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.with_suffix("")
    partial = Path(partial) if partial else Path(f"{target}.tmp")
    log = Path(log) if log else stem.with_suffix(".log")
    where, error = "", ""
    if partial.exists():
        try:
            nb = nbformat.read(partial, as_version=4)
            for cell in nb.cells:
                for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
                    if out.get("output_type") == "error":
                        where = f", cell {cell.get('execution_count') or '?'}"
                        error = f"{out.get('ename', 'Error')}: {_first_error_line(out.get('evalue', ''))}"
                        break
                if error:
                    break
        except Exception:  # noqa: BLE001 -- an unreadable partial notebook: fall back to the log
            pass
        os.replace(partial, stem.with_name(stem.name + ".failed.ipynb"))
    if not error and log.exists():
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith(" ") and "Traceback" not in ln]
        error = lines[-1] if lines else "the kernel stopped without an error message"
    msg = f"FAILED: {notebook} [phase {phase}]{where}: {error or 'unknown error'}"
    for stale in (target, target.with_suffix(".html")):
        stale.unlink(missing_ok=True)
    stem.with_name(stem.name + ".error.txt").write_text(msg + "\n")
    status = target.parent.parent / ".make" / "status.stamp"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.touch()
    return msg


def _first_error_line(evalue: str) -> str:
    lines = [ln for ln in str(evalue).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_notebook(notebook: str | Path, phase: str, out_dir: str | Path, params_dir: str | Path,
                 n_bootstrap: int = 1000, timeout: int = 1800) -> int:
    """Execute notebooks/<NN_section>.py for one phase through papermill into
    <out>/<phase>/<NN_section>.ipynb. The .py percent file is executed (it is the source of
    truth), with phase, paths and n_bootstrap injected as parameters.

    On failure: one line naming the notebook, phase and cell on stderr, the partial notebook kept
    as <NN_section>.failed.ipynb, the error in <NN_section>.error.txt, return code 1.
    """
    import jupytext
    import nbformat
    import papermill as pm

    notebook = Path(notebook)
    out_dir = Path(out_dir).resolve()
    target_dir = out_dir / phase
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = notebook.stem
    target = target_dir / f"{stem}.ipynb"
    failed = target_dir / f"{stem}.failed.ipynb"
    error_file = target_dir / f"{stem}.error.txt"
    status = out_dir / ".make" / "status.stamp"
    status.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(notebook)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # Paths relative to the notebook's directory (the kernel's cwd, as in JupyterLab), so the
    # executed notebooks carry no absolute (home) paths.
    nb_dir = notebook.parent.resolve()
    parameters = {"phase": phase, "out_dir": os.path.relpath(out_dir, nb_dir),
                  "params_dir": os.path.relpath(Path(params_dir).resolve(), nb_dir),
                  "n_bootstrap": int(n_bootstrap)}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{stem}.ipynb"
        dst = Path(tmp) / f"{stem}.out.ipynb"
        nbformat.write(nb, src)
        for stale in (target, target.with_suffix(".html")):
            stale.unlink(missing_ok=True)
        # The kernel imports cbs_helpers from the project root whatever the environment.
        root = str(Path(__file__).resolve().parent)
        env_path = os.environ.get("PYTHONPATH", "")
        if root not in env_path.split(os.pathsep):
            os.environ["PYTHONPATH"] = root + (os.pathsep + env_path if env_path else "")
        try:
            pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name="python3",
                                cwd=str(notebook.parent.resolve()), progress_bar=False,
                                log_output=False, execution_timeout=timeout,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except Exception as exc:  # a cell error, a dead kernel, a timeout: one clear line
            log = Path(tmp) / "error.log"
            log.write_text(f"{type(exc).__name__}: {_first_error_line(getattr(exc, 'evalue', exc))}")
            msg = record_notebook_failure(target, notebook, phase, partial=dst, log=log)
            print(msg, file=sys.stderr)
            return 1
        os.replace(dst, target)
    failed.unlink(missing_ok=True)
    error_file.unlink(missing_ok=True)
    status.touch()
    print(f"ok: {notebook.name} [phase {phase}]")
    return 0


def convert_reports(out_dir: str | Path) -> list[Path]:
    """Convert every executed notebook under OUT that is newer than its HTML, in one nbconvert
    exporter (one process): code hidden for collaborators, figures embedded, no JavaScript
    needed to read it. Returns the HTML files written."""
    import nbformat
    from nbconvert import HTMLExporter

    out_dir = Path(out_dir)
    todo = []
    for nb_path in sorted(out_dir.glob("*/[0-9][0-9]_*.ipynb")):
        if nb_path.name.endswith(".failed.ipynb"):
            continue
        html_path = nb_path.with_suffix(".html")
        if not html_path.exists() or html_path.stat().st_mtime < nb_path.stat().st_mtime:
            todo.append((nb_path, html_path))
    if not todo:
        return []
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    written = []
    for nb_path, html_path in todo:
        nb = nbformat.read(nb_path, as_version=4)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
        tmp = html_path.with_suffix(".html.tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, html_path)
        written.append(html_path)
    return written


def _embed_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_index_html(phases: dict, summary: pd.DataFrame | None, headline_png: Path | None,
                      created: str, source: str) -> str:
    """The index page. phases: {phase: {"title": str, "sections": [(section, title, href|None,
    error|None)]}}. Every name and value is HTML-escaped."""
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<title>Critical batch size in RLVR: reports</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:14px}"
             "th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}.fail{color:#b00}"
             "img{max-width:100%}h2{margin-top:1.6em}.muted{color:#666;font-size:13px}</style>",
             "</head><body>",
             "<h1>Critical batch size in RLVR</h1>",
             f"<p class='muted'>Source: {e(source)} &middot; built {e(created)}</p>"]
    if summary is not None and len(summary):
        parts.append("<h2>B_noise across phases</h2>")
        parts.append(summary.to_html(index=False, escape=True, na_rep="–", border=0))
    if headline_png is not None and headline_png.exists():
        parts.append(f"<p><img alt='headline figure' src='{_embed_png(headline_png)}'></p>")
    parts.append("<h2>Reports by phase</h2>")
    for phase, info in phases.items():
        parts.append(f"<h3>{e(phase)}: {e(info.get('title', ''))}</h3><ul>")
        for _section, title, href, error in info["sections"]:
            if error:
                parts.append(f"<li class='fail'>{e(title)}: failed &mdash; {e(error)}</li>")
            elif href:
                parts.append(f"<li><a href='{e(href)}'>{e(title)}</a></li>")
            else:
                parts.append(f"<li class='muted'>{e(title)}: not built</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_index(out_dir: str | Path, params_dir: str | Path = "params") -> Path:
    """Write <OUT>/index.html linking every phase's reports, with the cross-phase summary."""
    out_dir = Path(out_dir)
    phases = {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        phase = path.stem
        if not (out_dir / phase).is_dir():
            continue
        title, sections, _joint = _phase_sections(path)
        phases[phase] = {"title": title, "sections": [
            _section_entry(out_dir, phase, s, SECTIONS[s]) for s in sections]}
    if (out_dir / "summary").is_dir():
        phases["summary"] = {"title": "all phases", "sections": [
            _section_entry(out_dir, "summary", SUMMARY_SECTION, "Cross-phase summary")]}
    summary_csv = out_dir / "summary" / "tables" / "cbs_summary.csv"
    summary = pd.read_csv(summary_csv, keep_default_na=False) if summary_csv.exists() else None
    source = ""
    manifest = out_dir / "data" / "manifest.json"
    if manifest.exists():
        try:
            source = str(json.loads(manifest.read_text()).get("source", ""))
        except (ValueError, OSError):
            source = "(unreadable manifest)"
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_index_html(phases, summary, out_dir / "summary" / "figures" / "headline.png",
                             created, source)
    target = out_dir / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _section_entry(out_dir: Path, phase: str, section: str, title: str):
    html_path = out_dir / phase / f"{section}.html"
    error_path = out_dir / phase / f"{section}.error.txt"
    error = error_path.read_text().strip() if error_path.exists() else None
    if error:
        error = re.sub(r"^FAILED: ", "", error)
    href = f"{phase}/{section}.html" if html_path.exists() else None
    return (section, title, href, error)


def report_main(argv: list[str]) -> int:
    """`python cbs_helpers.py plan|execute|html ...`: the report steps the Makefile calls."""
    import argparse

    parser = argparse.ArgumentParser(prog="cbs_helpers.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p_plan = sub.add_parser("plan", help="print the make rules of the report")
    p_plan.add_argument("--params-dir", default="params")
    p_plan.add_argument("--notebooks-dir", default="notebooks")
    p_plan.add_argument("--out", default="outputs")
    p_plan.add_argument("--n-bootstrap", type=int, default=1000)
    p_exec = sub.add_parser("execute", help="run one section notebook for one phase")
    p_exec.add_argument("notebook")
    p_exec.add_argument("--phase", required=True)
    p_exec.add_argument("--out", default="outputs")
    p_exec.add_argument("--params-dir", default="params")
    p_exec.add_argument("--n-bootstrap", type=int, default=1000)
    p_fail = sub.add_parser("failed", help="record a failed notebook execution (used by make)")
    p_fail.add_argument("target")
    p_fail.add_argument("--notebook", required=True)
    p_fail.add_argument("--phase", required=True)
    p_html = sub.add_parser("html", help="convert executed notebooks to HTML and write the index")
    p_html.add_argument("--out", default="outputs")
    p_html.add_argument("--params-dir", default="params")
    args = parser.parse_args(argv)
    if args.command == "plan":
        sys.stdout.write(report_plan(args.params_dir, args.notebooks_dir, args.out, args.n_bootstrap))
        return 0
    if args.command == "execute":
        return run_notebook(args.notebook, args.phase, args.out, args.params_dir, args.n_bootstrap)
    if args.command == "failed":
        print(record_notebook_failure(args.target, args.notebook, args.phase), file=sys.stderr)
        return 1
    written = convert_reports(args.out)
    index = write_index(args.out, args.params_dir)
    print(f"html: {len(written)} report(s) converted; index at {index}")
    return 0


def _cli(argv=None) -> int:
    """`python cbs_helpers.py snapshot ...` (data layer) or `plan|execute|html ...` (report)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "snapshot":
        return main(argv)
    return report_main(argv)


if __name__ == "__main__":
    sys.exit(_cli())
