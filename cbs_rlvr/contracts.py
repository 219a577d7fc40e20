"""The files other code reads, and their columns: design.md's contracts in one place, with no
pandas, so that the build (which writes the index from them) imports nothing of the analysis.

decisions.csv: one row per phase, the decision its sweep exists for (written by 08_plan through
plan/decide.py, gathered by the build, read by the index). OUT/.build/answer.json: what the last
index showed (its decisions and each phase's runs), for the next one to say what changed.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

DECISION_COLUMNS = ["phase", "threshold", "objective", "n_prompts", "n_rollouts", "total_batch", "predicted_hours",
                    "predicted_hours_lo", "predicted_hours_hi", "basis", "model", "next_n_prompts",
                    "next_n_rollouts", "next_action", "next_predicted_hours"]
DECISION_EXTRA_COLUMNS = ["summary", "title", "expected_hours", "predicted_gpu_hours", "n_gpus", "predicted_steps",
                          "B_noise", "B_noise_lo", "B_noise_hi", "alpha", "fit_status", "gpu_note", "regret_now_h",
                          "p_best", "margin", "margin_batch_lo", "margin_batch_hi", "margin_n", "worth_testing",
                          "next_to_step", "next_p_reach", "fewest_samples_batch", "fewest_samples_hours", "next_reduction_h", "next_reduction_lo_h",
                          "next_reduction_hi_h", "next_cost", "next_cost_unit", "next_why", "fewest_gpu_hours",
                          "lr_context", "target_rule"]


def write_decisions(out: Path, phases: list[str]) -> Path | None:
    """OUT/decisions.csv from each phase's OUT/<phase>/tables/decision.csv (written by 08_plan);
    None when no phase has one. Atomic."""
    rows = []
    for phase in phases:
        path = Path(out) / phase / "tables" / "decision.csv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                rows += list(csv.DictReader(handle))
    target = Path(out) / "decisions.csv"
    if not rows:
        if target.exists():
            target.unlink()
        return None
    cols = DECISION_COLUMNS + [c for c in DECISION_EXTRA_COLUMNS if c in rows[0]]
    tmp = target.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        w = csv.DictWriter(handle, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, target)
    return target


def read_decisions(out: Path) -> list[dict]:
    path = Path(out) / "decisions.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


#: What the last index showed, kept for the next build to say what changed (the build's own folder).
ANSWER_RECORD = Path(".build") / "answer.json"


def phase_run_names(out: Path, phases: list[str]) -> dict[str, list[str] | None]:
    """phase -> the names of its runs (OUT/<phase>/tables/runs.csv, written by 01_load_runs; a name
    once per run, replicates repeated), None where the table is missing."""
    names: dict[str, list[str] | None] = {}
    for phase in phases:
        path = Path(out) / phase / "tables" / "runs.csv"
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                names[phase] = [r.get("name", "") for r in csv.DictReader(handle)]
        except (OSError, csv.Error, UnicodeDecodeError):
            names[phase] = None
    return names


def read_answer_record(out: Path) -> dict | None:
    """The last index's record (built, decisions, runs), or None: a first build, or a record that
    is unreadable (then nothing is said to have changed)."""
    try:
        record = json.loads((Path(out) / ANSWER_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("decisions"), list) and isinstance(record.get("runs"), dict)
    return record if ok else None


def write_answer_record(out: Path, record: dict) -> None:
    """OUT/.build/answer.json, atomically."""
    target = Path(out) / ANSWER_RECORD
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, target)
