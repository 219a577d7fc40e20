"""Runs: names and configs -> run metadata; a run's history normalised (history.py) -> an entry.

Every source (W&B server, offline `.wandb` files, export directories) hands its runs to
`normalise_raw_run` in one source-independent form (name, config, state, rows in log order or
a wide history table), which either makes a run entry (a row of runs.parquet and its history
frame) or an exclusion with its reason; `assemble_snapshot_frames` stacks the entries into the
snapshot's tables.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ..errors import has_unprintable, source_text
from .history import analysis_key_filter, history_flags, normalise_history, normalise_history_frame
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

_RUN_NAME_RE = re.compile(r"cbs_(?P<phase>.+?)_np(?P<np>\d+)_nr(?P<nr>\d+)(?:_(?P<suffix>.+))?")


# --------------------------------------------------------------------------------------------
# Run names and run metadata
# --------------------------------------------------------------------------------------------
def parse_run_name(name: str | None) -> dict:
    """Parse `cbs_<phase>_np<N>_nr<M>[_<suffix>]`; unparseable -> all values None.

    The phase may contain underscores (`p4_math`); the first `_np<N>_nr<M>` ends it.
    """
    # the whole name (a `$` would let a trailing newline through); surrounding whitespace is
    # what clean_run_name removes and flags
    match = _RUN_NAME_RE.fullmatch(name.strip()) if isinstance(name, str) else None
    if match is None:
        return {"phase": None, "n_prompts": None, "n_rollouts": None, "suffix": None}
    return {
        "phase": match["phase"],
        "n_prompts": int(match["np"]),
        "n_rollouts": int(match["nr"]),
        "suffix": match["suffix"],
    }


def clean_run_name(name: Any) -> tuple[Any, list[str]]:
    """(the name the snapshot keeps, flags): surrounding whitespace (a trailing newline from a
    script) removed, flagged `name_whitespace`; characters that would break a line inside it
    written visibly (`errors.source_text`), flagged `name_unprintable`."""
    if not isinstance(name, str):
        return name, []
    flags: list[str] = []
    if name != name.strip():
        flags.append("name_whitespace")
    if has_unprintable(name.strip()):
        flags.append("name_unprintable")
    return source_text(name.strip()), flags


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
    name, name_flags = clean_run_name(raw.get("name"))
    base = {"source": raw["source"], "run_id": raw.get("run_id"), "name": name}
    meta = run_metadata(name, raw.get("config"))
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
    flags = name_flags + meta["flags"] + list(raw.get("flags") or []) + history_flags(counts)
    row = {
        **base,
        "phase": meta["phase"],
        "n_prompts": meta["n_prompts"],
        "n_rollouts": meta["n_rollouts"],
        "total_batch": meta["total_batch"],
        "state": normalise_run_state(raw.get("state")),
        "config": json.dumps(raw.get("config") or {}, sort_keys=True, default=str),
        "n_gpus": meta["n_gpus"],
        "flags": ";".join(dict.fromkeys(flags)),
        "last_step": int(history["step"].max()),
        "updated_at": iso_utc(raw.get("updated_at")),
        "n_history_rows": len(history),
        "start_time": iso_utc(raw.get("start_time")),
        "wandb_last_step": raw.get("wandb_last_step"),
        "phases": None,
        "tags": json.dumps(normalise_tags(raw.get("tags"))),
        "group": str(raw["group"]) if raw.get("group") not in (None, "") else None,
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
    excluded["reason"] = [str(r) for r in excluded["reason"]]
    excluded = excluded.sort_values(["source", "run_id"], kind="stable", na_position="last").reset_index(drop=True)
    return {"runs": runs, "history": history, "excluded": excluded}


