"""W&B offline run files (`offline-run-*/run-*.wandb`), read directly: no `wandb sync`, no network.

wandb ships no reader. The format, checked against files written by wandb 0.31: the header
`:W&B` + 0xBEE1 (uint16 LE) + a version byte, then LevelDB-log framing (32 KiB blocks, 7-byte
record headers: crc32, length, type FULL/FIRST/MIDDLE/LAST) of protobuf
`wandb.proto.wandb_internal_pb2.Record` messages (history, run (config), summary, exit...).
A truncated file is read up to its last whole record.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..data.history import analysis_key_filter
from ..data.runs import assemble_snapshot_frames, normalise_raw_run, set_nested
from ..errors import WandbFileError

_LOG = logging.getLogger("cbs_rlvr.data")

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
            set_nested(target, path, _loads_lenient(item.value_json))
    for item in removes:
        path = _item_path(item)
        if path:
            _del_nested(target, path)


def decode_wandb_records(payloads: Iterable[bytes],
                         keep: Callable[[str], bool] | None = None) -> tuple[dict, int]:
    """Protobuf `Record` payloads -> (run dict, number of payloads that failed to decode).
    keep(key) false: a history key is not decoded (`_`-keys always are)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    run: dict[str, Any] = {
        "run_id": None, "name": None, "project": None, "entity": None, "config": {}, "history": [],
        "summary": {}, "exit_code": None, "start_time": None, "wandb_version": None, "n_records": 0,
        "tags": [], "group": None,
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
                    key = ".".join(path)
                    if keep is None or key.startswith("_") or keep(key):
                        row[key] = _history_item_value(item)
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
            if rec.tags:
                run["tags"] = list(rec.tags)
            if rec.run_group:
                run["group"] = rec.run_group
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


def read_wandb_file(path: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> dict:
    """Read a W&B offline run file (`run-<id>.wandb`) without uploading it. keep(key): which
    history keys to decode (default: all; the snapshot decodes only those it keeps).

    Returns run_id, name, project, entity, config (nested, `_wandb` dropped), tags (list), group
    (None when none), history (rows in log order: `_step` plus the logged values, NaN/Infinity
    decoded), summary, exit_code, state
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
    run, n_bad_decode = decode_wandb_records(payloads, keep)
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
        "tags": next((s["tags"] for s in reversed(segments) if s.get("tags")), []),
        "group": next((s["group"] for s in reversed(segments) if s.get("group")), None),
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


def _read_segment(path: Path, root: Path, exclusions: list[dict],
                  keep: Callable[[str], bool] | None = None) -> dict | None:
    """One `.wandb` file -> its run dict (with `source`), or None after appending its exclusion."""
    rel = path.relative_to(root).as_posix()
    excluded = {"source": rel, "run_id": _run_id_from_filename(path), "name": None}
    try:
        run = read_wandb_file(path, keep)
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


def _read_group(root: Path, key: str, paths: list[Path],
                key_patterns: tuple[str, ...] = ()) -> tuple[list[dict], dict | None, list[dict]]:
    """The files of one run id -> (exclusions, the normalised run or None, segments of other ids).

    Runs in a worker process when decoding in parallel: everything it takes and returns pickles."""
    exclusions: list[dict] = []
    segments, leftovers = [], []
    keep = analysis_key_filter(key_patterns)  # keys nobody reads are not even decoded
    for path in paths:
        segment = _read_segment(path, root, exclusions, keep)
        if segment is not None:
            (segments if segment["run_id"] == key else leftovers).append(segment)
    run = normalise_raw_run(_merge_segments(segments), key_patterns) if segments else None
    return exclusions, run, leftovers


# files of this many bytes in all are decoded in one process: below it, starting workers costs
# more than it saves
PARALLEL_MIN_BYTES = 16 << 20


def decode_workers(paths: Sequence[Path] = (), environ: dict | None = None) -> int:
    """How many processes decode offline runs: CBS_DECODE_WORKERS if set (1: in this process),
    else the cores this process may use, 1 for less than PARALLEL_MIN_BYTES of files."""
    environ = os.environ if environ is None else environ
    text = str(environ.get("CBS_DECODE_WORKERS", "")).strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            raise WandbFileError(f"CBS_DECODE_WORKERS={text!r}: expected a number of processes") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    size = 0
    for path in paths:
        try:
            size += path.stat().st_size
        except OSError:
            pass
    return 1 if size < PARALLEL_MIN_BYTES else max(1, cores)


def _map_groups(root: Path, groups: dict[str, list[Path]], workers: int,
                key_patterns: tuple[str, ...] = ()) -> Iterable[tuple]:
    """_read_group over every group, in the groups' order: in this process or in `workers`
    processes: forked from this one when it runs no other thread (nothing to import again), else
    from a fork server preloaded with this module (no worker inherits the caller's threads; a
    script that starts a snapshot must then guard its code with `if __name__ == "__main__"`, as
    multiprocessing asks)."""
    items = list(groups.items())
    if workers <= 1 or len(items) <= 1:
        return (_read_group(root, key, paths, key_patterns) for key, paths in items)
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        context = multiprocessing.get_context("fork")  # nothing to re-import, no thread to inherit
    elif "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    workers = min(workers, len(items))
    chunk = max(1, min(8, len(items) // (4 * workers)))
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            return list(pool.map(_read_group, [root] * len(items), [k for k, _ in items], [p for _, p in items],
                                 [key_patterns] * len(items), chunksize=chunk))
    except (OSError, BrokenProcessPool) as exc:  # no processes here (a sandbox, a limit): decode in this one
        _LOG.warning("decoding offline runs in one process: could not start %d workers (%s)", workers, exc)
        return [_read_group(root, key, paths, key_patterns) for key, paths in items]


def load_offline_runs(root: str | os.PathLike, workers: int | None = None,
                      key_patterns: Sequence[str] = ()) -> dict:
    """Read every `.wandb` file under root -> runs, history, excluded frames (snapshot schema).

    Each file either becomes (part of) a run or an excluded row with its reason; other files
    (logs, requirements.txt, stray notes) are ignored. Files sharing a run id are segments of one
    resumed run and are merged in start-time order (flag `segments:N`). Files are grouped by run
    id first (from the head of each file), then read and normalised one run at a time, so memory
    holds one run's raw records, not the whole sweep's. Runs are decoded in `workers` processes
    (default: decode_workers(), every core for a large sweep); the frames are the same in any
    case (results are taken in the files' order). Of the history only the keys the analysis
    reads are kept (`history.analysis_key_filter`, plus `key_patterns`).
    """
    root = Path(root)
    exclusions: list[dict] = []
    runs: dict[str, dict] = {}
    merged_paths: dict[str, list[Path]] = {}
    groups: dict[str, list[Path]] = {}
    files = find_wandb_files(root)
    for path in files:
        groups.setdefault(_peek_run_id(path) or f"\0{path}", []).append(path)
    leftovers: list[dict] = []  # files whose id was not known from their head
    workers = decode_workers(files) if workers is None else max(1, int(workers))
    decoded = _map_groups(root, groups, workers, tuple(key_patterns))
    for (key, paths), (excluded, run, others) in zip(groups.items(), decoded, strict=True):
        exclusions.extend(excluded)
        leftovers.extend(others)
        if run is not None:
            merged_paths[key] = [p for p in paths if not any(p == root / o["source"] for o in others)]
            runs[key] = run
    by_id: dict[str, list[dict]] = {}
    for segment in leftovers:
        by_id.setdefault(segment["run_id"], []).append(segment)
    for run_id, segments in by_id.items():
        # rare: a segment of a run already merged (its head did not show the id): merge again
        keep = analysis_key_filter(tuple(key_patterns))
        again = [_read_segment(p, root, [], keep) for p in merged_paths.get(run_id, [])]
        runs[run_id] = normalise_raw_run(_merge_segments(segments + [s for s in again if s]), key_patterns)
    return assemble_snapshot_frames(exclusions + list(runs.values()))


