"""The decision's sentences: which batch to train with at the phase's decision target, how sure,
and the one next run to make, said from decisions.csv's row alone, so that the index (which reads
decisions.csv) and 08_plan print the same sentences; and the plan's summary around it.
`gpu_claim` and `why_fastest_differs` are the computed claims around the decision.
"""

from __future__ import annotations

import math

from .numbers import as_float as _f
from .numbers import count, duration, duration_unit, interval, number, percent, sentence

BASIS_WORDS = {
    "measured": "it was run, and its runs reached the target",
    "on_axis": "it was not run, but lies on the phase's axis between batch sizes that reached the target",
    "cross_axis": "a split off the sampled axes, priced by the cross-axis model that predicted held-out runs "
                  "within their scatter",
    "extrapolated": "extrapolated: beyond the batch sizes that reached the target, or from a fit that is not 'ok'",
}


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
        return "no run config gives a GPU count (GPUs per node times nodes): hours only, no GPU-hours"
    which = ", ".join(str(k) for k in known[:-1]) + (" or " if len(known) > 1 else "") + str(known[-1])
    if unknown:
        return (f"GPU counts unknown for {unknown} of {len(values)} runs (their configs give no GPUs per node and"
                f" nodes); the others used {which} GPUs; GPU-hours only where the count is known")
    if len(known) == 1:
        return f"every run used {known[0]} GPUs"
    return f"the runs used {which} GPUs"


def _split(n_p, n_r, B) -> str:
    return f"{count(n_p)} prompts × {count(n_r)} rollouts (B = {count(B)})"


def decision_summary(row: dict) -> str:
    """One line to paste in a chat: 'p1 at accuracy 0.7: train 64 × 8 (B = 512), 1.0 h [1.0, 1.1];
    B_noise 420 [374, 518] samples'."""
    phase, t = row.get("phase", ""), _f(row.get("threshold"))
    if not _ok(t):
        return f"{phase}: no decision yet (no target has a fit)"
    if not _ok(row.get("total_batch")):
        return f"{phase} at accuracy {t:g}: no batch to recommend"
    what = f"train {count(row['n_prompts'])} × {count(row['n_rollouts'])} (B = {count(row['total_batch'])})"
    if _ok(row.get("predicted_hours")):
        what += f", {duration(row['predicted_hours'], row.get('predicted_hours_lo'), row.get('predicted_hours_hi'))}"
    bn = interval(row.get("B_noise"), row.get("B_noise_lo"), row.get("B_noise_hi"), "samples")
    return f"{phase} at accuracy {t:g}: {what}; B_noise {bn}"


def _model_words(row: dict) -> str:
    if row.get("model") == "cross_axis":
        return "the cross-axis model of prompts against rollouts"
    if row.get("model") == "general" and _ok(row.get("alpha")):
        a = f"{_f(row['alpha']):.2g}"
        return f"the fitted S(B) bends like B^-{a} at small B, not like 1/B"
    return "the fitted S(B) follows McCandlish's 1/B form"


def _objectives(row: dict, unit: str) -> list[str]:
    """How the other objectives' batches relate to the one to train with, one sentence each:
    fewest samples, fewest GPU-hours (B_noise: `_b_noise_line`)."""
    lines, B = [], _f(row.get("total_batch"))
    fs = row.get("fewest_samples_batch")
    if isinstance(fs, str) and "x" in fs:
        p_, r_ = (_f(v) for v in fs.split("x"))
        if p_ * r_ == B and (p_, r_) == (_f(row.get("n_prompts")), _f(row.get("n_rollouts"))):
            lines.append("Fewest samples: the same batch (within 10% of the fewest).")
        else:
            hours = _f(row.get("fewest_samples_hours"))
            took = f", but about {duration(hours, unit=unit)}" if math.isfinite(hours) else ""
            lines.append(f"Fewest samples (within 10%): {_split(p_, r_, p_ * r_)}{took}: a smaller batch wastes fewer "
                         "samples per step and needs more steps.")
    if isinstance(row.get("fewest_gpu_hours"), str) and row["fewest_gpu_hours"]:
        lines.append(f"Fewest GPU-hours: {row['fewest_gpu_hours']}.")
    return lines


def _b_noise_line(row: dict, goal: str) -> str:
    """B_noise, what it means, and how the batch to train with relates to it, in one sentence."""
    bn = interval(row.get("B_noise"), row.get("B_noise_lo"), row.get("B_noise_hi"), "samples")
    text = (f"B_noise = {bn} (95% interval) at {goal}, the batch at which a step is worth half of what an "
            "infinitely large one would be (S = 2 S_min)")
    B = _f(row.get("total_batch"))
    if _ok(row.get("B_noise")) and _ok(B) and _f(row["B_noise"]) > 0:
        ratio = B / _f(row["B_noise"])
        rel = f"{number(ratio)} times B_noise" if abs(ratio - 1) >= 0.05 else "about B_noise"
        text += (f"; the batch to train with is {rel}: B_noise says where more samples per step start to buy less "
                 "progress, the choice also weighs the time a step takes")
    return text + "."


def _how_sure(row: dict) -> str:
    """The margin first (anything within 10% of the fastest, from plan.csv's band), then the share of
    the fit's draws where the choice is the fastest, then what it rests on."""
    how = []
    if _ok(row.get("margin_batch_lo")) and _ok(row.get("margin_n")):
        lo, hi = _f(row["margin_batch_lo"]), _f(row["margin_batch_hi"])
        span = f"B = {count(lo)}" if lo == hi else f"anything from B = {count(lo)} to {count(hi)}"
        how.append(f"{span} is within {percent(row.get('margin'))} of the fastest" if lo != hi else
                   f"no other batch is within {percent(row.get('margin'))} of the fastest")
    if _ok(row.get("p_best")):
        how.append(f"it is the fastest in {percent(row['p_best'])} of the fit's draws")
    how.append(BASIS_WORDS.get(str(row.get("basis")), str(row.get("basis"))))
    return "How sure: " + "; ".join(how) + f"; {_model_words(row)}."


def _expected_loss(regret_h, unit: str | None = None) -> str | None:
    """'the decision is expected to lose 32 s against the truly fastest choice' (the fit's draws);
    None when it loses nothing or the loss is unknown (never 'lose 0 s')."""
    regret = _f(regret_h)
    if not (math.isfinite(regret) and regret > 0):
        return None
    return f"the decision is expected to lose {duration(regret, unit=unit)} against the truly fastest choice"


def _why_no_run(regret_h, unit: str | None = None) -> str:
    """Why no run is suggested: what the decision is expected to lose and that no run would cut it
    by 1% of its hours; or, when it loses nothing, that no run would change it."""
    loss = _expected_loss(regret_h, unit)
    return (f"{loss}, and no run is expected to cut that by 1% of its hours." if loss
            else "no run is expected to change the decision.")


def next_runs_line(n_suggested: int, target: float, regret_h) -> str:
    """08's line over its next-runs table: how many runs are suggested and what the decision is
    expected to lose today, or why none is."""
    if n_suggested:
        loss = _expected_loss(regret_h) or "the decision is not expected to lose time"
        return f"{count(n_suggested)} suggested run(s) at accuracy {target:g}; {loss} today."
    return f"No run is worth its cost: {_why_no_run(regret_h)} next_runs.csv is written with its header only."


def _next_run(row: dict, t: float, unit: str) -> str:
    act = row.get("next_action")
    act = act if isinstance(act, str) else ""  # NaN when read back by pandas
    if not act:
        return "Next run: none is worth its cost: " + _why_no_run(row.get("regret_now_h"), unit)
    cost = (f"{number(row['next_cost'])} {row['next_cost_unit']}" if _ok(row.get("next_cost")) else "cost unknown")
    p = _f(row.get("next_p_reach"))
    chance = ("" if not math.isfinite(p) else f"{percent(p)} chance to reach {t:g}")
    if act.startswith("extend "):
        first = f"Next run: extend {act.removeprefix('extend ')} to step {count(row.get('next_to_step'))}"
    else:
        B = _f(row["next_n_prompts"]) * _f(row["next_n_rollouts"])
        first = (f"Next run: a new run with {count(row['next_n_prompts'])} prompts × "
                 f"{count(row['next_n_rollouts'])} rollouts, B = {count(B)}")
    why = row.get("next_why") if isinstance(row.get("next_why"), str) else ""
    parts = [x for x in (f"about {cost}", chance) if x]
    banded = _ok(row.get("next_reduction_lo_h")) and _ok(row.get("next_reduction_hi_h"))
    gain = duration(row.get("next_reduction_h"), row.get("next_reduction_lo_h"), row.get("next_reduction_hi_h"), unit)
    reason = ("it tests the split that could prove the recommendation wrong" if why == "worth testing" else
              f"expected to cut the time lost to a wrong choice by {gain}{' (80% band)' if banded else ''}")
    return f"{first}: {', '.join(parts)}; {reason}."


def decision_sentences(row: dict) -> list[str]:
    """The decision in words, from one row of decisions.csv (values may be strings, as read back from
    the CSV), the answer first: the configuration and its time; how sure (the margin: the batch sizes
    within 10% of the fastest; the share of draws where it is the fastest; what it rests on); how the
    other objectives' batches relate to it, one sentence each; the learning-rate context; B_noise; a
    split worth testing; the next run. One unit of time per card. Every number from the row; missing
    parts are said, not printed as NaN."""
    phase, t = row.get("phase", ""), _f(row.get("threshold"))
    name = f"{phase} · {row['title']}" if isinstance(row.get("title"), str) and row["title"] else f"{phase}"
    if not _ok(t):
        return [f"{name}. No decision yet: no target has a fit (3 batch sizes must reach a target)."]
    lines, unit = [], duration_unit(row.get("predicted_hours"))
    goal = f"accuracy {t:g}"
    if _ok(row.get("total_batch")):
        what = _split(row["n_prompts"], row["n_rollouts"], row["total_batch"])
        if row.get("objective") == "wall_clock" and _ok(row.get("predicted_hours")):
            gpu = ""
            if _ok(row.get("predicted_gpu_hours")) and _ok(row.get("n_gpus")):
                gpu = f", {number(row['predicted_gpu_hours'])} GPU-hours on {count(row['n_gpus'])} GPUs"
            lines.append(f"{name}. To reach {goal} in the least training time, train with {what}: about "
                         f"{duration(row['predicted_hours'], row.get('predicted_hours_lo'), row.get('predicted_hours_hi'), unit)}"
                         f" (95% band){gpu}.")
        else:
            lines.append(f"{name}. To reach {goal} with the fewest samples without giving up speed, train with "
                         f"{what} (no step times were logged, so no hours).")
        lines.append(_how_sure(row))
        if isinstance(row.get("lr_context"), str) and row["lr_context"]:
            lines.append(sentence(f"Learning rate: {row['lr_context']}"))
        lines += _objectives(row, unit)
        lines.append(_b_noise_line(row, goal))
    else:
        status = row.get("fit_status")
        lines.append(f"{name}. No batch to recommend at {goal}: the fit there is "
                     f"{status if isinstance(status, str) and status else 'missing'}.")
    test = row.get("worth_testing")
    if isinstance(test, str) and test:
        p_, r_ = test.split("x")
        lines.append(f"Worth testing: {count(p_)} prompts × {count(r_)} rollouts could be faster, but no run "
                     "checks the model that prices it; it is not recommended until a run does.")
    if _ok(row.get("total_batch")) or (isinstance(row.get("next_action"), str) and row["next_action"]):
        lines.append(_next_run(row, t, unit))
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


def _vs_fastest_run(r, f) -> str:
    """The recommendation against the fastest run made: never a configuration against itself."""
    ran = f"{count(f['n_prompts'])} × {count(f['n_rollouts'])}, {duration(f['time_to_target_h'])}"
    if int(f["n_prompts"]) == int(r["n_prompts"]) and int(f["n_rollouts"]) == int(r["n_rollouts"]):
        return f"; it is the batch of your fastest run so far ({ran})"
    ratio = f["time_to_target_h"] / r["predicted_hours"]
    if ratio >= 1.05:
        return f", {ratio:.1f}x faster than your fastest run so far ({ran})"
    if ratio > 0.95:
        return f", about as fast as your fastest run so far ({ran})"
    return (f"; your fastest run so far ({ran}) took {100 * (1 - ratio):.0f}% less than this prediction "
            "(runs scatter around the fit)")


def plan_summary(plan, fastest=None, next_table=None, fits=None) -> list[str]:
    """The plan in sentences, every number from the tables: per target the fastest configuration a
    recommendation may rest on, with its band and basis, against the fastest measured run
    (wallclock.fastest_batch; why they differ where they do), the cheapest in GPU-hours and in
    samples; the targets without a plan and why (`fits`: threshold, status, reason); and the next
    runs (next_runs.csv)."""
    lines = []
    fast = {}
    if fastest is not None and len(fastest):
        fast = {float(r["threshold"]): r for _, r in fastest.iterrows()}
    planned = set()
    if plan is not None and len(plan):
        for t, rows in plan.groupby("threshold", sort=True):
            planned.add(float(t))
            by = {r["objective"]: r for _, r in rows.iterrows()}
            parts = []
            if "wall_clock" in by:
                r = by["wall_clock"]
                gpus = f" on {count(r['n_gpus'])} GPUs" if _ok(r["n_gpus"]) else ""
                text = (f"To reach {t:g} fastest, train with {_split(r['n_prompts'], r['n_rollouts'], r['total_batch'])}: "
                        f"about {duration(r['predicted_hours'], r['predicted_hours_lo'], r['predicted_hours_hi'])}{gpus} "
                        f"({str(r['basis']).replace('_', ' ')})")
                why = ""
                f = fast.get(float(t))
                if f is not None and _ok(f.get("time_to_target_h")):
                    text += _vs_fastest_run(r, f)
                    why = why_fastest_differs(f, r, t)
                parts.append(text + ".")
                if why:
                    parts.append(why)
                if "gpu_hours" in by:
                    g = by["gpu_hours"]
                    same = (int(g["n_prompts"]), int(g["n_rollouts"])) == (int(r["n_prompts"]), int(r["n_rollouts"]))
                    parts.append(f"It is also the cheapest in GPU-hours ({number(g['predicted_gpu_hours'])} GPU-hours)."
                                 if same else
                                 f"Fewest GPU-hours: {_split(g['n_prompts'], g['n_rollouts'], g['total_batch'])}, "
                                 f"{number(g['predicted_gpu_hours'])} GPU-hours in {duration(g['predicted_hours'])}.")
            elif "samples" in by:
                parts.append(f"To reach {t:g}: no step times, so no prediction of hours.")
            if "samples" in by:
                s = by["samples"]
                hours = f" in {duration(s['predicted_hours'])}" if _ok(s["predicted_hours"]) else ""
                parts.append(f"Fewest samples (within 10%): {_split(s['n_prompts'], s['n_rollouts'], s['total_batch'])}, "
                             f"{number(s['predicted_samples'])} samples{hours}.")
            lines.append(" ".join(parts))
    if fits is not None and len(fits):
        for _, f in fits.iterrows():
            if float(f["threshold"]) not in planned:
                why = f["reason"] if isinstance(f["reason"], str) and f["reason"] else ""
                lines.append(f"{float(f['threshold']):g}: no plan (fit {f['status']}" + (f": {why})." if why else ")."))
    if next_table is not None and len(next_table):
        t = float(next_table["threshold"].iloc[0])
        runs = []
        for _, r in next_table.sort_values("rank").iterrows():
            what = (f"extend {r['run_name']} to step {count(r['to_step'])}" if str(r["action"]).startswith("extend ")
                    else f"a new run at B = {count(r['total_batch'])} ({count(r['n_prompts'])} × {count(r['n_rollouts'])})")
            gain = ("it tests a split that could beat the decision" if r["why"] == "worth testing" else
                    f"cuts the expected hours lost to a wrong choice by {duration(r['expected_reduction_h'])}")
            runs.append(f"{int(r['rank'])}. {what}: {gain}, for {number(r['cost'])} {r['cost_unit']}, "
                        f"{percent(r['p_reach'])} chance to reach {t:g}")
        lines.append(f"The next runs at {t:g}, by value to the decision per {str(next_table['cost_unit'].iloc[0]).removesuffix('s')}: "
                     + "; ".join(runs) + ".")
    return lines


