"""Which runs belong to a phase, and which runs are the same configuration.

A phase's runs are, by default, those named `cbs_<phase>_np<N>_nr<M>`. verl experiment names are
often free-form, so a phase's params may instead select its runs with `select:` by W&B tags, W&B
group, a name pattern (glob) and/or config values; every criterion given must hold. The
snapshot applies the same rule to list every run no phase selects in excluded_runs.csv, with
what would include it.

Within a phase, runs at one (n_prompts, n_rollouts) that differ in a metaparameter the params
name (`metaparameters`, by default the learning rate) are different configurations, not
replicates: `configuration_labels` names them ("lr=1e-06").
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..params import DEFAULT_METAPARAMETERS as _DEFAULT_METAPARAMETERS
from .runs import LR_KEY, config_lookup, normalise_tags

#: The metaparameters that make runs at one batch size different configurations, by default.
DEFAULT_METAPARAMETERS = tuple(_DEFAULT_METAPARAMETERS)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _config_dicts(runs: pd.DataFrame) -> list[dict]:
    out = []
    for text in (runs["config"] if "config" in runs.columns else [None] * len(runs)):
        try:
            config = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            config = {}
        out.append(config if isinstance(config, dict) else {})
    return out


def _value_matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return any(_value_matches(actual, w) for w in wanted)
    if _missing(actual):
        return wanted is None
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(wanted).lower()
    if isinstance(wanted, (int, float)):
        try:
            return math.isclose(float(actual), float(wanted), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return str(actual) == str(wanted)


def select_runs(runs: pd.DataFrame, params: Mapping) -> pd.Series:
    """Boolean mask of the runs a phase's params select.

    Without `select`: the runs whose name gives the phase (the `phase` column). With `select`
    (a mapping of tags: [..] (all present), group: glob, name: glob, config: {dotted key: value
    or list of values}): the runs that meet every criterion given.
    """
    select = params.get("select")
    if not select:
        phase = runs["phase"] if "phase" in runs.columns else pd.Series([None] * len(runs), index=runs.index)
        return phase.astype(object).eq(params["phase"]).fillna(False).astype(bool)
    mask = pd.Series(True, index=runs.index)
    if select.get("tags"):
        wanted = set(normalise_tags(select["tags"]))
        tags = runs["tags"] if "tags" in runs.columns else pd.Series([None] * len(runs), index=runs.index)
        mask &= np.array([wanted <= set(normalise_tags(t)) for t in tags], dtype=bool)
    if select.get("group"):
        groups = runs["group"] if "group" in runs.columns else pd.Series([None] * len(runs), index=runs.index)
        mask &= np.array([not _missing(g) and fnmatch.fnmatchcase(str(g), str(select["group"])) for g in groups],
                         dtype=bool)
    if select.get("name"):
        mask &= np.array([isinstance(n, str) and fnmatch.fnmatchcase(n, str(select["name"])) for n in runs["name"]],
                         dtype=bool)
    if select.get("config"):
        configs = _config_dicts(runs)
        for key, wanted in select["config"].items():
            mask &= np.array([_value_matches(config_lookup(c, str(key)), wanted) for c in configs], dtype=bool)
    return mask.astype(bool)


def _describe(row: Mapping) -> str:
    tags = normalise_tags(row.get("tags"))
    group = row.get("group")
    return f"tags {tags}, group {None if _missing(group) else group!r}"


def unselected_reason(row: Mapping, phase_params: Mapping[str, Mapping] | None) -> str:
    """Why no phase selects a run, and what would include it."""
    name, phase = row.get("name"), row.get("phase")
    n_p, n_r = row.get("n_prompts"), row.get("n_rollouts")
    rename = f"cbs_<phase>_np{n_p}_nr{n_r}"
    how = ("add a `select:` to a phase's params (tags, group, a name pattern or config values, "
           "see params/README.md)")
    if _missing(phase):
        return (f"no phase in run name {name!r} (expected cbs_<phase>_np<N>_nr<M>) and no phase's "
                f"params select it ({_describe(row)}); to include it, rename it {rename} or {how}")
    if phase_params is not None and phase not in phase_params:
        return (f"phase {phase!r} (from its name) has no params file; add params/{phase}.yaml to "
                f"analyse it, or {how}")
    criteria = ", ".join(sorted((phase_params or {}).get(phase, {}).get("select") or {}))
    return (f"named for phase {phase!r}, but params/{phase}.yaml selects its runs by {criteria} and "
            f"this run does not match ({_describe(row)}); to include it, make it match that "
            "`select` or remove the `select` key (runs are then selected by name)")


def assign_phases(runs: pd.DataFrame, phase_params: Mapping[str, Mapping] | None) -> tuple[pd.Series, pd.Series]:
    """(phases, reasons): for every run, the `;`-joined phases that select it (empty when none)
    and, for the unselected, why. phase_params None: runs are selected by name only."""
    if not phase_params:
        phases = runs["phase"].map(lambda p: "" if _missing(p) else str(p))
    else:
        masks = {p: select_runs(runs, params) for p, params in sorted(phase_params.items())}
        phases = pd.Series([";".join(p for p, m in masks.items() if m.iloc[i]) for i in range(len(runs))],
                           index=runs.index, dtype=object)
    reasons = pd.Series([unselected_reason(row, phase_params) if not phases.iloc[i] else None
                         for i, row in enumerate(runs.to_dict("records"))], index=runs.index, dtype=object)
    return phases, reasons


def apply_phase_selection(frames: Mapping, phase_params: Mapping[str, Mapping] | None) -> dict:
    """Snapshot frames -> the same with `phases` set, and every run no phase selects moved to
    `excluded` (with its reason) and out of `history`. A run with no phase in its name takes
    the first phase that selects it as its `phase`."""
    runs, history, excluded = frames["runs"], frames["history"], frames["excluded"]
    phases, reasons = assign_phases(runs, phase_params)
    keep = phases != ""
    gone = runs[~keep]
    moved_rows = []
    for (_, run), reason in zip(gone.iterrows(), reasons[~keep], strict=True):
        # a stitched resumed run is listed once per W&B run it was made of: every input run
        # is accounted for by its own id
        pieces = run.get("segment_run_ids")
        ids = str(pieces).split(";") if isinstance(pieces, str) and pieces else [run["run_id"]]
        sources = str(run["source"]).split(";")
        if len(sources) != len(ids):
            sources = [run["source"]] * len(ids)
        note = f" (one of the {len(ids)} W&B runs of a resumed run)" if len(ids) > 1 else ""
        moved_rows += [{"source": s, "run_id": i, "name": run["name"], "reason": f"{reason}{note}"}
                       for i, s in zip(ids, sources, strict=True)]
    moved = pd.DataFrame(moved_rows, columns=["source", "run_id", "name", "reason"])
    runs = runs[keep].copy()
    runs["phases"] = phases[keep]
    first = runs["phases"].str.split(";").str[0]
    runs["phase"] = runs["phase"].where(runs["phase"].notna(), first)
    excluded = pd.concat([excluded, moved], ignore_index=True) if len(moved) else excluded
    excluded = excluded.sort_values(["source", "run_id"], kind="stable", na_position="last").reset_index(drop=True)
    kept = history["run_id"].isin(runs["run_id"]).to_numpy()
    if not kept.all():  # a copy of a large history only when some of it goes
        history = history[kept].reset_index(drop=True)
    return {**frames, "runs": runs.reset_index(drop=True), "history": history, "excluded": excluded}


# ------------------------------------------------------------------------------------------
# Configurations: runs at one batch size that differ in a metaparameter
# ------------------------------------------------------------------------------------------
def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _format(value: Any) -> str:
    if _missing(value):
        return "?"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def metaparameter_values(runs: pd.DataFrame, keys: Sequence[str] = DEFAULT_METAPARAMETERS) -> pd.DataFrame:
    """One column per metaparameter key (its last part, e.g. `lr`): the run's config value."""
    configs = _config_dicts(runs)
    out = pd.DataFrame(index=runs.index)
    for key in keys:
        values = [config_lookup(c, key) for c in configs]
        if key == LR_KEY and "lr" in runs.columns:  # the snapshot's parsed column where present
            values = [v if _missing(c) else c for v, c in zip(values, runs["lr"], strict=True)]
        out[_short(key)] = values
    return out


def configuration_labels(runs: pd.DataFrame, keys: Sequence[str] = DEFAULT_METAPARAMETERS) -> pd.Series:
    """A readable label per run of its metaparameter values ("lr=1e-06"; "" when keys is empty)."""
    if not keys:
        return pd.Series([""] * len(runs), index=runs.index, dtype=object)
    values = metaparameter_values(runs, keys)
    return pd.Series([", ".join(f"{col}={_format(v)}" for col, v in row.items())
                      for row in values.to_dict("records")], index=runs.index, dtype=object)


def selection_description(params: Mapping) -> str:
    """How a phase selects its runs, in words."""
    select = params.get("select")
    if not select:
        return f"by name: cbs_{params['phase']}_np<N>_nr<M>"
    parts = []
    if select.get("tags"):
        parts.append(f"W&B tags {', '.join(map(str, select['tags']))}")
    if select.get("group"):
        parts.append(f"W&B group {select['group']!r}")
    if select.get("name"):
        parts.append(f"name matching {select['name']!r}")
    if select.get("config"):
        parts.append("config " + ", ".join(f"{k} = {v!r}" for k, v in select["config"].items()))
    return "by " + " and ".join(parts)


def configuration_counts(runs: pd.DataFrame, keys: Sequence[str] = DEFAULT_METAPARAMETERS) -> pd.DataFrame:
    """Per batch size (n_prompts, n_rollouts): how many configurations (metaparameter values)
    and runs it has, and the configurations by name. Several configurations at one batch size
    mean a sweep of that metaparameter: the analysis uses the best one there (the envelope)."""
    labels = configuration_labels(runs, keys)
    table = pd.DataFrame({"n_prompts": runs["n_prompts"].to_numpy(), "n_rollouts": runs["n_rollouts"].to_numpy(),
                          "configuration": labels.to_numpy(), "run_id": runs["run_id"].to_numpy()})
    out = table.groupby(["n_prompts", "n_rollouts"], sort=True).agg(
        n_configs=("configuration", "nunique"), n_runs=("run_id", "size"),
        configurations=("configuration", lambda c: "; ".join(sorted(set(c))))).reset_index()
    out.insert(2, "total_batch", out["n_prompts"] * out["n_rollouts"])
    return out
