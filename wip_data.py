"""Data layer: turn any W&B source (server, offline run files, export directory) into one snapshot.

Sources -> normalised run rows + history -> `build_snapshot` -> `write_snapshot` (atomic) ->
`read_snapshot`. Everything that touches the disk or the network is named read_*/write_*/
load_*/fetch_*; the rest are pure functions over plain data and DataFrames.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import hashlib
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
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
            for item in rec.config.update:
                path = _item_path(item)
                if path:
                    _set_nested(run["config"], path, _loads_lenient(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                path = _item_path(item)
                if path:
                    _set_nested(run["config"], path, _loads_lenient(item.value_json))
            for item in record.config.remove:
                path = _item_path(item)
                if path:
                    _del_nested(run["config"], path)
        elif kind == "summary":
            for item in record.summary.update:
                path = _item_path(item)
                if path:
                    _set_nested(run["summary"], path, _loads_lenient(item.value_json))
            for item in record.summary.remove:
                path = _item_path(item)
                if path:
                    _del_nested(run["summary"], path)
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
    try:
        _, _, old = read_snapshot(out_dir)
    except Exception:  # noqa: BLE001 -- missing or corrupt: write a new one
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
