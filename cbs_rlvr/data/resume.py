"""Resumed runs: segments of one training run that a restart from a checkpoint split in two.

verl's tracking (`verl/utils/tracking.py`) calls `wandb.init(project, name, entity, config)`
without a run id or `resume`, so a job restarted from a checkpoint is a NEW W&B run with the
same name. The restarted trainer loads `global_step_<k>`, validates at step k (`val_before_train`)
and trains on from k + 1, over the steps the crashed run had already logged after its checkpoint.

Such a segment is told from a replicate by where it starts: a replicate (another seed, a rerun)
starts at the beginning (first logged step 0 or 1); a segment starts later, at its checkpoint
step, with the same batch size, learning rate and updates per step as the run it continues.
`stitch_resumed_runs` joins the segments of each run in order: the earlier segment is kept up to
the checkpoint step k, the later one from k on (at step k the later values win where both
logged: the crashed run's training metrics of step k stay, the restart's validation of the
checkpoint is added); the crashed run's steps after k were trained again and are dropped
(counted in resume_lost_steps / resume_lost_time_s). The stitched run keeps the first segment's
run id and is flagged `resumed:N` (N restarts). A segment whose start is nowhere in the source
is excluded with its reason. Everything here works on the source-independent run entries of
`runs.normalise_raw_run`, so it applies to offline files, export directories and the W&B API alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

#: A run whose first logged step is at most this starts at the beginning (step 0 is verl's
#: validation before training, step 1 its first update); later starts are resumed segments.
FRESH_START_MAX_STEP = 1
#: Config keys a restart may change without being another experiment (where and how long it
#: runs, where checkpoints live, how it resumes).
RESUME_VOLATILE_KEYS = (
    "trainer.resume_mode", "trainer.resume_from_path", "trainer.total_training_steps",
    "trainer.total_epochs", "trainer.n_gpus_per_node", "trainer.nnodes", "trainer.default_local_dir",
    "trainer.default_hdfs_dir", "trainer.del_local_ckpt_after_load", "trainer.val_before_train",
    "trainer.ray_wait_register_center_timeout", "trainer.max_actor_ckpt_to_keep",
    "trainer.max_critic_ckpt_to_keep",
)
#: Row fields that must agree for a segment to continue a run (the analysis depends on them).
_IDENTITY_FIELDS = ("n_prompts", "n_rollouts", "lr", "updates_per_step")
_STEP_TIME_KEYS = ("timing_s/step", "perf/time_per_step")


def _flatten(value: Any, prefix: str = "") -> dict:
    if isinstance(value, Mapping):
        out: dict = {}
        for key, child in value.items():
            out.update(_flatten(child, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _config_identity(row: Mapping) -> dict:
    try:
        config = json.loads(row.get("config") or "{}")
    except ValueError:
        config = {}
    flat = _flatten(config if isinstance(config, Mapping) else {})
    return {k: v for k, v in flat.items() if k not in RESUME_VOLATILE_KEYS}


def _missing(value: Any) -> bool:
    """None, NaN or pd.NA (rows reused from a snapshot carry pandas' missing values)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, default: float = 0.0) -> float:
    return default if _missing(value) else float(value)


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _ids(row: Mapping) -> list[str]:
    text = row.get("segment_run_ids")
    text = row.get("run_id") if _missing(text) or not text else text
    return [i for i in str(text).split(";") if i]


def _steps(text: Any) -> list[int]:
    return [] if _missing(text) else [int(s) for s in str(text).split(";") if s.strip().isdigit()]


def _start(row: Mapping) -> str:
    """The start time as a sortable string ('' when unknown)."""
    value = row.get("start_time")
    return "" if _missing(value) else str(value)


def _first_step(entry: Mapping) -> int:
    first = entry["row"].get("first_step")
    if _missing(first):
        history = entry["history"]
        return int(history["step"].min()) if len(history) else 0
    return int(first)


def is_resumed_segment(first_step: Any) -> bool:
    """A run that starts well after step 0 is a segment restarted from a checkpoint."""
    return not _missing(first_step) and int(first_step) > FRESH_START_MAX_STEP


def _attachable(chain: list[dict], segment: dict) -> bool:
    """The segment can continue this chain: same analysis identity, starts later in steps and
    (where both are known) in time."""
    head, last = chain[0]["row"], chain[-1]["row"]
    row = segment["row"]
    if not all(_same(head.get(f), row.get(f)) for f in _IDENTITY_FIELDS):
        return False
    if _first_step(segment) <= _first_step(chain[-1]):
        return False
    t_last, t_seg = _start(last), _start(row)
    return not (t_last and t_seg and t_seg < t_last)


def _chain_rank(chain: list[dict], segment: dict) -> tuple:
    """Rank of a candidate chain (highest wins): an identical config first, then the chain whose
    last segment started most recently (a crash and its restart follow each other)."""
    identical = _config_identity(chain[0]["row"]) == _config_identity(segment["row"])
    return (identical, _start(chain[-1]["row"]), _first_step(chain[-1]))


def _step_time(frame: pd.DataFrame) -> float:
    for key in _STEP_TIME_KEYS:
        if key in frame.columns and frame[key].notna().any():
            return float(frame[key].sum(skipna=True))
    return 0.0


def _stitch(chain: list[dict]) -> dict:
    """One run entry from the segments of a chain (in order)."""
    firsts = [_first_step(e) for e in chain]
    parts, lost_steps, lost_time, gaps = [], 0, 0.0, []
    for i, entry in enumerate(chain):
        frame = entry["history"]
        if i + 1 < len(chain):
            k = firsts[i + 1]
            lost = frame[frame["step"] > k]
            frame = frame[frame["step"] <= k]
            if chain[i + 1]["row"]["run_id"] not in _ids(entry["row"]):
                # (a segment already stitched in earlier, W&B's incremental reuse: not lost)
                lost_steps += int(lost["step"].nunique())
                lost_time += _step_time(lost)
            if len(frame) and k > int(frame["step"].max()) + 1:
                gaps.append(k - int(frame["step"].max()) - 1)
        parts.append(frame)
    # groupby().last() keeps, per step and metric, the last non-missing value in segment order
    history = pd.concat(parts, ignore_index=True, sort=False).groupby("step", sort=True).last().reset_index()
    rows = [e["row"] for e in chain]
    ids = list(dict.fromkeys(i for r in rows for i in _ids(r)))
    resumed_at = sorted(set(firsts[1:]) | {s for r in rows for s in _steps(r.get("resumed_at"))})
    flags = [f for r in rows for f in ("" if _missing(r.get("flags")) else str(r["flags"])).split(";")
             if f and not f.startswith(("resumed:", "resume_gap:", "resume_config_changed:"))]
    flags.append(f"resumed:{len(ids) - 1}")
    if gaps:
        flags.append(f"resume_gap:{sum(gaps)}")
    changed = {k for r in rows[1:] for k, v in _config_identity(r).items()
               if k not in _config_identity(rows[0]) or _config_identity(rows[0])[k] != v}
    if changed:
        flags.append(f"resume_config_changed:{len(changed)}")
    first, last = rows[0], rows[-1]
    sources = list(dict.fromkeys(s for r in rows if not _missing(r.get("source"))
                                 for s in str(r["source"]).split(";") if s))
    row = {
        **first,
        "state": last.get("state"),
        "config": last.get("config"),
        "flags": ";".join(dict.fromkeys(flags)),
        "source": ";".join(sources),
        "last_step": int(history["step"].max()),
        "first_step": int(history["step"].min()),
        "n_history_rows": len(history),
        "updated_at": last.get("updated_at"),
        "wandb_last_step": last.get("wandb_last_step"),
        "n_segments": len(ids),
        "segment_run_ids": ";".join(ids),
        "resumed_at": ";".join(str(s) for s in resumed_at),
        "resume_lost_steps": lost_steps + int(sum(_number(r.get("resume_lost_steps")) for r in rows)),
        "resume_lost_time_s": lost_time + sum(_number(r.get("resume_lost_time_s")) for r in rows),
    }
    return {"kind": "run", "row": row, "history": history}


def _orphan(entry: dict) -> dict:
    row = entry["row"]
    reason = (f"resumed segment without its start: its history begins at step {_first_step(entry)} "
              f"(verl restarted it from a checkpoint), but no earlier run named {row.get('name')!r} "
              "with the same batch size, learning rate and updates per step is in the source to "
              "stitch it to, and steps to target cannot be counted without the start of training. "
              "To include it, add the run that began it (the same name, starting at step 0)")
    return {"kind": "excluded", "row": {"source": row.get("source"), "run_id": row.get("run_id"),
                                        "name": row.get("name"), "reason": reason}}


def stitch_resumed_runs(entries: Sequence[Mapping]) -> list[dict]:
    """Run entries and exclusions -> the same with each resumed run's segments stitched into one.

    Within each run name, runs are taken in order of start time (then first step, run id); a
    run starting at step <= FRESH_START_MAX_STEP begins a chain (a replicate), a later start
    continues the best matching chain (same n_prompts, n_rollouts, lr, updates_per_step; an
    identical config preferred, then the most recently started), or is excluded when none
    matches. Idempotent: an already stitched run (W&B's incremental reuse) absorbs a re-read
    segment without counting it twice.
    """
    out: list[dict] = [dict(e) for e in entries if e["kind"] != "run"]
    by_name: dict[Any, list[dict]] = {}
    for entry in entries:
        if entry["kind"] == "run":
            by_name.setdefault(entry["row"].get("name"), []).append(dict(entry))
    for group in by_name.values():
        if len(group) == 1 and not is_resumed_segment(_first_step(group[0])):
            out.extend(group)
            continue
        known = {i for e in group for i in _ids(e["row"]) if i != e["row"]["run_id"]}
        group.sort(key=lambda e: (_start(e["row"]) == "", _start(e["row"]), _first_step(e),
                                  str(e["row"]["run_id"])))
        chains: list[list[dict]] = []
        for entry in group:
            if not is_resumed_segment(_first_step(entry)):
                chains.append([entry])
                continue
            candidates = [c for c in chains if _attachable(c, entry)]
            if candidates:
                max(candidates, key=lambda c: _chain_rank(c, entry)).append(entry)
            elif entry["row"]["run_id"] not in known:
                out.append(_orphan(entry))
        for chain in chains:
            out.append(chain[0] if len(chain) == 1 else _stitch(chain))
    return out


def resumed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The stitched runs of a runs table: name, run_id (the first segment's), segment_run_ids,
    n_segments, resumed_at (the checkpoint steps it restarted from), resume_lost_steps and
    resume_lost_time_s (steps the crashed segment had trained past its checkpoint, trained
    again after the restart), last_step, state. Empty when no run was resumed."""
    cols = ["name", "run_id", "segment_run_ids", "n_segments", "resumed_at", "resume_lost_steps",
            "resume_lost_time_s", "last_step", "state"]
    if "n_segments" not in runs.columns:
        return pd.DataFrame(columns=cols)
    stitched = runs[pd.to_numeric(runs["n_segments"], errors="coerce").fillna(1) > 1]
    return stitched[[c for c in cols if c in stitched.columns]].reset_index(drop=True)
