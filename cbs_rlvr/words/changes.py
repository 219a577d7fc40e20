"""What changed in the answer since the last build, said per phase: the batch to train with, its
predicted time, B_noise, the decision target, the runs added or removed. From two builds'
decisions.csv rows (values may be strings, as read back from the CSV) and each phase's run names;
nothing when nothing a reader sees changed, and nothing on a first build. The index shows it."""

from __future__ import annotations

import math
from collections import Counter

from .numbers import as_float as _f
from .numbers import count, duration, duration_unit, number

#: Run names listed in a sentence before 'and N more'.
_NAMES_SHOWN = 3


def _rows(table) -> dict[str, dict]:
    """phase -> row, from a list of dicts or a DataFrame (decisions.csv)."""
    if table is None:
        return {}
    records = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    return {str(r.get("phase")): r for r in records}


def _batch(row: dict) -> str:
    if not math.isfinite(_f(row.get("total_batch"))):
        return "no batch"
    return f"{count(row.get('n_prompts'))} × {count(row.get('n_rollouts'))} (B = {count(row.get('total_batch'))})"


def _names(names: list[str], verb: str) -> str:
    shown = sorted(names)[:_NAMES_SHOWN]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return f"{len(names)} run{'s' if len(names) != 1 else ''} {verb} ({', '.join(shown)}{more})"


def run_changes(before, after) -> list[str]:
    """'2 runs added (a, b)', '1 run removed (c)' between two lists of a phase's run names (a name
    logged twice counts twice: replicates); nothing when either list is unknown (None)."""
    if before is None or after is None:
        return []
    b, a = Counter(map(str, before)), Counter(map(str, after))
    added, removed = list((a - b).elements()), list((b - a).elements())
    return ([_names(added, "added")] if added else []) + ([_names(removed, "removed")] if removed else [])


def _moved(what: str, old: str, new: str) -> list[str]:
    return [f"{what} went from {old} to {new}"] if old != new else []


def decision_changes(before: dict, after: dict) -> list[str]:
    """What a reader of the answer box sees change between two rows of one phase: the decision
    target, the batch to train with, its predicted time (one unit for both), B_noise; as clauses."""
    parts = []
    t0, t1 = _f(before.get("threshold")), _f(after.get("threshold"))
    if f"{t0:g}" != f"{t1:g}":
        parts.append(f"the decision target went from accuracy {t0:g} to {t1:g}")
    parts += _moved("the batch to train with", _batch(before), _batch(after))
    h0, h1 = _f(before.get("predicted_hours")), _f(after.get("predicted_hours"))
    if math.isfinite(h0) and math.isfinite(h1):
        unit = duration_unit(max(h0, h1))
        parts += _moved("the predicted time", duration(h0, unit=unit), duration(h1, unit=unit))
    b0, b1 = _f(before.get("B_noise")), _f(after.get("B_noise"))
    if math.isfinite(b0) and math.isfinite(b1) and number(b0) != number(b1):
        parts.append(f"B_noise went from {number(b0)} to {number(b1)} samples")
    return parts


def answer_changes(before, after, runs_before: dict | None = None, runs_after: dict | None = None) -> list[str]:
    """One sentence per phase whose answer changed since the last build: 'p1: the batch to train
    with went from 32 × 8 (B = 256) to 64 × 8 (B = 512); the predicted time went from 52 min to
    1.0 h; 2 runs added (a, b).' `before` None: a first build, nothing to compare (an empty table:
    the last build decided nothing). runs_*: phase -> its run names (a phase's None: unknown; a
    phase missing from runs_before: it had no runs). Phases in the order of `after`, then phases
    that only gained or lost runs, then answers gone."""
    if before is None:
        return []
    old, new = _rows(before), _rows(after)
    phases = list(new) + sorted(set(runs_after or {}) - set(new) - set(old)) + [p for p in old if p not in new]
    lines = []
    for phase in phases:
        if phase in new and phase in old:
            parts = decision_changes(old[phase], new[phase])
        elif phase in new:
            parts = [f"a first answer: train with {_batch(new[phase])}"
                     + (f", about {duration(new[phase]['predicted_hours'])}"
                        if math.isfinite(_f(new[phase].get("predicted_hours"))) else "")]
        elif phase in old:
            parts = [f"no answer any more (it was {_batch(old[phase])})"]
        else:
            parts = []
        # a phase the last build listed no runs for had none then (a new params file: its runs are new to it)
        had = None if runs_before is None else runs_before.get(phase, [])
        parts += run_changes(had, (runs_after or {}).get(phase))
        if parts:
            lines.append(f"{phase}: " + "; ".join(parts) + ".")
    return lines
