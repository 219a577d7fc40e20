"""The decision a phase's sweep exists for, and its sentences: which batch to train with at the
phase's decision target, how sure, and the one next run to make.

`decide` builds the row of OUT/decisions.csv (design.md's contract) from the plan (plan.csv),
the next runs (next_runs.csv) and the fit (cbs_fit.csv); `decision_sentences` says it in words,
from that row alone, so the index (which reads decisions.csv) and 08_plan print the same
sentences. `gpu_claim` and `why_fastest_differs` are the computed claims around it.
No pandas at module level: the index imports this module from the build.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from .fmt import count, duration, interval, number, percent, sentence

DECISION_COLUMNS = ["phase", "threshold", "objective", "n_prompts", "n_rollouts", "total_batch", "predicted_hours",
                    "predicted_hours_lo", "predicted_hours_hi", "basis", "model", "next_n_prompts",
                    "next_n_rollouts", "next_action", "next_predicted_hours"]
DECISION_EXTRA_COLUMNS = ["title", "predicted_gpu_hours", "n_gpus", "predicted_steps", "B_noise", "B_noise_lo",
                          "B_noise_hi", "alpha", "fit_status", "gpu_note", "next_to_step", "next_p_reach",
                          "next_narrowing", "next_narrowing_lo", "next_narrowing_hi", "next_cost", "next_cost_unit",
                          "fewest_gpu_hours"]


def _f(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _ok(x) -> bool:
    return math.isfinite(_f(x))


def gpu_claim(n_gpus) -> str:
    """What the run configs say about GPU counts, counted, never assumed: 'every run used 8
    GPUs', 'GPU counts unknown for 3 of 10 runs (...)', or that they differ."""
    values = [_f(g) for g in n_gpus]
    known = sorted({int(v) for v in values if math.isfinite(v)})
    unknown = sum(1 for v in values if not math.isfinite(v))
    if not values:
        return "no runs: no GPU count"
    if not known:
        return "no run config gives a GPU count (trainer.n_gpus_per_node × trainer.nnodes): hours only, no GPU-hours"
    if unknown:
        return (f"GPU counts unknown for {unknown} of {len(values)} runs (no trainer.n_gpus_per_node × trainer.nnodes"
                f" in their configs); the others used {' or '.join(str(k) for k in known)} GPUs; GPU-hours only "
                "where the count is known")
    if len(known) == 1:
        return f"every run used {known[0]} GPUs"
    return f"the runs used {', '.join(str(k) for k in known[:-1])} or {known[-1]} GPUs"


def decide(phase: str, target: float | None, plan, next_table=None, cbs_fit=None, gpu_note: str = "",
           title: str = "") -> dict:
    """One row of decisions.csv: the plan's best candidate at `target` (wall clock when step
    times exist, else samples), the fit's B_noise and model there, and the rank-1 next run."""
    row = {c: math.nan for c in DECISION_COLUMNS + DECISION_EXTRA_COLUMNS}
    row.update({"phase": phase, "threshold": _f(target), "title": title, "gpu_note": gpu_note,
                "next_action": "", "objective": "", "basis": "", "model": "", "fit_status": "",
                "next_cost_unit": "", "fewest_gpu_hours": ""})
    if target is None:
        return row
    if cbs_fit is not None and len(cbs_fit):
        f = cbs_fit[cbs_fit["threshold"].astype(float) == float(target)]
        if len(f):
            f = f.iloc[0]
            row.update({"B_noise": _f(f["B_noise"]), "B_noise_lo": _f(f["B_noise_lo"]), "B_noise_hi": _f(f["B_noise_hi"]),
                        "fit_status": str(f["status"]), "model": str(f.get("model", "mccandlish") or "mccandlish"),
                        "alpha": _f(f.get("alpha", 1.0)) if str(f.get("model", "")) == "general" else 1.0})
    rows = plan[plan["threshold"].astype(float) == float(target)] if plan is not None and len(plan) else None
    if rows is not None and len(rows):
        by = rows.set_index("objective")
        obj = "wall_clock" if "wall_clock" in by.index else "samples" if "samples" in by.index else None
        if obj:
            r = by.loc[obj]
            row.update({"objective": obj, "n_prompts": int(r["n_prompts"]), "n_rollouts": int(r["n_rollouts"]),
                        "total_batch": int(r["total_batch"]), "predicted_hours": _f(r["predicted_hours"]),
                        "predicted_hours_lo": _f(r["predicted_hours_lo"]), "predicted_hours_hi": _f(r["predicted_hours_hi"]),
                        "predicted_gpu_hours": _f(r.get("predicted_gpu_hours")), "n_gpus": _f(r.get("n_gpus")),
                        "predicted_steps": _f(r.get("predicted_steps")), "basis": str(r["basis"])})
            if obj == "wall_clock" and "gpu_hours" in by.index:  # where GPU counts differ it can be another
                g = by.loc["gpu_hours"]
                if (int(g["n_prompts"]), int(g["n_rollouts"])) != (int(r["n_prompts"]), int(r["n_rollouts"])):
                    row["fewest_gpu_hours"] = (f"{_split(g['n_prompts'], g['n_rollouts'], g['total_batch'])}, "
                                               f"{number(g['predicted_gpu_hours'])} GPU-hours in "
                                               f"{duration(g['predicted_hours'])}")
    if next_table is not None and len(next_table):
        n = next_table.sort_values("rank").iloc[0]
        row.update({"next_n_prompts": int(n["n_prompts"]), "next_n_rollouts": int(n["n_rollouts"]),
                    "next_action": str(n["action"]), "next_predicted_hours": _f(n["predicted_hours"]),
                    "next_to_step": _f(n["to_step"]), "next_p_reach": _f(n["p_reach"]),
                    "next_narrowing": _f(n["expected_narrowing"]), "next_narrowing_lo": _f(n["narrowing_lo"]),
                    "next_narrowing_hi": _f(n["narrowing_hi"]), "next_cost": _f(n["cost"]),
                    "next_cost_unit": str(n["cost_unit"])})
    return row


def _split(n_p, n_r, B) -> str:
    return f"{count(n_p)} prompts × {count(n_r)} rollouts (B = {count(B)})"


def _model_words(row: dict) -> str:
    if row.get("model") == "general" and _ok(row.get("alpha")):
        a = f"{_f(row['alpha']):.2g}"
        return (f"the general form S = S_min (1 + (B_noise/B)^alpha) with alpha = {a}: "
                f"S falls like B^-{a} at small B, not like 1/B")
    return "the McCandlish form S = S_min (1 + B_noise/B)"


def decision_sentences(row: dict) -> list[str]:
    """The decision in words, from one row of decisions.csv (values may be strings, as read
    back from the CSV). Every number from the row; missing parts are said, not printed as NaN."""
    phase, t = row.get("phase", ""), _f(row.get("threshold"))
    name = f"{phase} · {row['title']}" if isinstance(row.get("title"), str) and row["title"] else f"{phase}"
    if not _ok(t):
        return [f"{name}. No decision yet: no target has a fit (3 batch sizes must reach a target)."]
    lines = []
    goal = f"accuracy {t:g}"
    if _ok(row.get("total_batch")):
        what = _split(row["n_prompts"], row["n_rollouts"], row["total_batch"])
        if row.get("objective") == "wall_clock" and _ok(row.get("predicted_hours")):
            gpu = ""
            if _ok(row.get("predicted_gpu_hours")) and _ok(row.get("n_gpus")):
                gpu = f", {number(row['predicted_gpu_hours'])} GPU-hours on {count(row['n_gpus'])} GPUs"
            lines.append(f"{name}. To reach {goal} in the least training time, train with {what}: about "
                         f"{duration(row['predicted_hours'], row.get('predicted_hours_lo'), row.get('predicted_hours_hi'))}"
                         f" (95% band){gpu}.")
        else:
            lines.append(f"{name}. To reach {goal} with the fewest samples without giving up speed, train with "
                         f"{what} (no step times were logged, so no hours).")
        if isinstance(row.get("fewest_gpu_hours"), str) and row["fewest_gpu_hours"]:
            lines.append(f"Fewest GPU-hours instead: {row['fewest_gpu_hours']}.")
        how = ("interpolated: inside the batch sizes that reached the target" if row.get("basis") == "interpolated"
               else "extrapolated: beyond the batch sizes that reached the target, or from a fit that is not 'ok'")
        bn = interval(row.get("B_noise"), row.get("B_noise_lo"), row.get("B_noise_hi"), "samples")
        lines.append(f"How sure: {how}; from {_model_words(row)}. B_noise = {bn} (95% interval), the batch at which "
                     "a step is worth half of what an infinitely large one would be (S = 2 S_min).")
    else:
        status = row.get("fit_status")
        lines.append(f"{name}. No batch to recommend at {goal}: the fit there is "
                     f"{status if isinstance(status, str) and status else 'missing'}.")
    act = row.get("next_action")
    act = act if isinstance(act, str) else ""  # NaN when read back by pandas
    if act:
        cost = (f"{number(row['next_cost'])} {row['next_cost_unit']}" if _ok(row.get("next_cost")) else "cost unknown")
        p = _f(row.get("next_p_reach"))
        chance = ("" if not math.isfinite(p) else f"over 99% chance to reach {t:g}" if p > 0.99 else
                  f"{percent(p)} chance to reach {t:g} within the step budget")
        band = (f" [{percent(row['next_narrowing_lo'])}, {percent(row['next_narrowing_hi'])}] (80% band)"
                if _ok(row.get("next_narrowing_lo")) else "")
        if act.startswith("extend "):
            first = f"Next run: extend {act.removeprefix('extend ')} to step {count(row.get('next_to_step'))}"
        else:
            B = _f(row["next_n_prompts"]) * _f(row["next_n_rollouts"])
            first = (f"Next run: a new run with {count(row['next_n_prompts'])} prompts × "
                     f"{count(row['next_n_rollouts'])} rollouts, B = {count(B)}")
        parts = [x for x in (f"about {cost}", chance) if x]
        which = "the B_noise interval" if row.get("model", "mccandlish") == "mccandlish" else "the 1/B fit's B_noise interval"
        lines.append(f"{first}: {', '.join(parts)}; expected to narrow {which} by "
                     f"{percent(row.get('next_narrowing'))}{band}.")
    elif _ok(row.get("total_batch")):
        lines.append("Next run: none is expected to narrow the B_noise interval by 5% or more.")
    if isinstance(row.get("gpu_note"), str) and row["gpu_note"]:
        lines.append(sentence(row["gpu_note"]))
    return lines


def why_fastest_differs(measured, planned, target: float) -> str:
    """Why the fastest measured run (06) and the plan's fastest batch (08) differ at a target,
    or '' when they agree: 06 ranks the runs made; 08 predicts every candidate from the fit."""
    if measured is None or planned is None or not _ok(measured.get("total_batch")) or not _ok(planned.get("total_batch")):
        return ""
    mb, pb = int(_f(measured["total_batch"])), int(_f(planned["total_batch"]))
    if mb == pb and int(_f(measured["n_prompts"])) == int(_f(planned["n_prompts"])):
        return ""
    return (f"At {target:g} the fastest run made (06: B = {count(mb)}) is not the plan's fastest batch (08: B = "
            f"{count(pb)}): 06 ranks the runs as they ran, each with its own seed's luck; 08 predicts every "
            "candidate from the fit over all runs, including batch sizes not run, so one lucky or unlucky run "
            "does not decide it.")


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
