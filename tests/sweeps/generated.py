"""A seeded generator of plausible CBS sweeps, to hunt crash classes (issue 9).

`generate_sweep(seed)` draws one sweep the way real projects leave them: grids along either
axis (or an iso-batch split), 1-3 replicates, runs censored at any target or still running,
missing, NaN, infinite or percent accuracies, irregular eval cadence, missing optional metrics
(step time, grad norm, grad noise), missing or contradicting config keys, unparseable names,
single- and two-batch-size phases, and phases with a params file but no runs; and verl's habits
(`_verl_habits`, drawn from a random stream of their own so the other draws of a seed stay as
they were): learning-rate sweeps at the large batch sizes, a run crashed and resumed as a new
run of the same name, updates per step varying with the batch, dynamic sampling, validation and
checkpoint timers, free-form names selected by W&B tags.

A sweep is in the one form of sweeps/form.py (raw runs plus one params dict per phase), which
turns it into snapshot tables, an export directory, W&B offline runs or params files.

The accuracy model is the demo's (data/demo/README.md): McCandlish steps to target with a
per-run speed, Binomial eval noise.

    python tests/sweeps generated describe SEED        # what a seed draws
    python tests/sweeps generated offline SEED DEST    # write the sweep as W&B offline runs
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from testkit import load_make_demo

from sweeps import form

VAL_KEY = "val-core/{source}/reward/mean@1"
SOURCES = ("openai/gsm8k", "HuggingFaceH4/MATH-500", "rpp")
STATES = ("finished", "failed", "crashed", "running", "killed")
MAX_STEPS = 100  # keeps the in-memory suite fast; real runs are longer, the logic is the same


_DEMO = load_make_demo("make_demo")  # the demo's model functions and its SDK writer


@dataclass
class GeneratedSweep:
    seed: int
    runs: list[dict]  # raw runs: run_id, name, config, state, rows, start_time (+ phase, kind)
    params: dict[str, dict]  # phase -> params dict (as validate_phase_params returns it)
    features: list[str] = field(default_factory=list)  # what was drawn, for failure messages

    def describe(self) -> str:
        by_phase: dict[str, int] = {}
        for r in self.runs:
            by_phase[r["phase"]] = by_phase.get(r["phase"], 0) + 1
        phases = ", ".join(f"{p} ({self.params[p]['axis']}, {by_phase.get(p, 0)} runs)"
                           for p in self.params)
        return f"sweep seed {self.seed}: {phases}; {'; '.join(sorted(set(self.features)))}"


# --------------------------------------------------------------------------------------------
# Drawing a sweep
# --------------------------------------------------------------------------------------------
def _task(rng) -> dict:
    a0 = float(rng.uniform(0.02, 0.3))
    return {"a0": a0, "amax": float(min(0.97, a0 + rng.uniform(0.2, 0.7))),
            "tau0": float(rng.uniform(8, 40)), "B00": float(np.exp(rng.uniform(np.log(4), np.log(600)))),
            "taub": float(rng.uniform(15, 80)), "rho": float(rng.uniform(0.0, 0.5))}


def _pow2_grid(rng, lo_exp: int, hi_exp: int, n: int) -> list[int]:
    exps = np.arange(lo_exp, hi_exp + 1)
    n = min(n, len(exps))
    if rng.random() < 0.7:  # contiguous
        start = int(rng.integers(0, len(exps) - n + 1))
        return [int(2 ** e) for e in exps[start:start + n]]
    return sorted(int(2 ** e) for e in rng.choice(exps, size=n, replace=False))


def _irregular_grid(rng, lo: int, n: int) -> list[int]:
    out, v = [], lo
    for _ in range(n):
        out.append(int(v))
        v = max(int(v) + 1, int(round(v * rng.uniform(1.3, 3.0))))
    return out


def _grid(rng, axis: str, n_sizes: int) -> tuple[list[tuple[int, int]], dict]:
    if axis == "prompts":
        n_r = int(rng.choice([1, 2, 4, 8, 16]))
        n_ps = (_pow2_grid(rng, 1, 10, n_sizes) if rng.random() < 0.8
                else _irregular_grid(rng, int(rng.integers(3, 40)), n_sizes))
        return [(p, n_r) for p in n_ps], {"n_rollouts": n_r}
    if axis == "rollouts":
        n_p = int(rng.choice([4, 8, 16, 32, 64]))
        n_rs = _pow2_grid(rng, 0, 7, n_sizes)
        return [(n_p, r) for r in n_rs], {"n_prompts": n_p}
    B = int(rng.choice([128, 256, 1024, 2048]))
    rs = _pow2_grid(rng, 0, int(math.log2(B)) - 1, n_sizes)
    return [(B // r, r) for r in rs], {"total_batch": B}


def _config(rng, n_p: int, n_r: int, name: str, features: list[str]) -> dict:
    kind = rng.choice(["full", "full", "full", "no_rollout_n", "no_batch", "no_gpus", "empty",
                       "mismatch", "strings", "dotted"])
    features.append(f"config:{kind}")
    cfg = {"data": {"train_batch_size": n_p}, "actor_rollout_ref": {"rollout": {"n": n_r}},
           "trainer": {"n_gpus_per_node": int(rng.choice([1, 4, 8])), "nnodes": int(rng.choice([1, 2])),
                       "experiment_name": name}}
    if kind == "no_rollout_n":
        del cfg["actor_rollout_ref"]
    elif kind == "no_batch":
        del cfg["data"]
    elif kind == "no_gpus":
        del cfg["trainer"]["n_gpus_per_node"]
    elif kind == "empty":
        cfg = {}
    elif kind == "mismatch":  # the trainer ran with another batch than the name says
        cfg["data"]["train_batch_size"] = n_p * 2
    elif kind == "strings":
        cfg["data"]["train_batch_size"] = str(n_p)
        cfg["trainer"]["nnodes"] = "1"
    elif kind == "dotted":
        cfg = {"data.train_batch_size": n_p, "actor_rollout_ref.rollout.n": n_r}
    return cfg


def _eval_steps(rng, last: int, features: list[str]) -> np.ndarray:
    mode = rng.choice(["regular", "regular", "irregular", "sparse"])
    features.append(f"eval:{mode}")
    if mode == "regular":
        k = int(rng.choice([1, 2, 3, 5, 10, 25]))
        steps = set(range(k, last + 1, k))
    elif mode == "irregular":
        p = rng.uniform(0.05, 0.5)
        steps = {s for s in range(1, last + 1) if rng.random() < p}
    else:
        steps = {int(s) for s in rng.integers(1, max(last, 1) + 1, size=int(rng.integers(1, 4)))}
    if rng.random() < 0.7:
        steps.add(0)
    if rng.random() < 0.6:
        steps.add(last)
    return np.array(sorted(s for s in steps if 0 <= s <= last), dtype=int)


def _run(rng, phase: str, n_p: int, n_r: int, task: dict, source: str, n_val: int, ph: dict,
         seed_index: int, start: float, features: list[str]) -> dict:
    name = f"cbs_{phase}_np{n_p}_nr{n_r}"
    r = float(rng.lognormal(0.0, 0.05))
    tau_top = _DEMO.tau_at_accuracy(task, task["a0"] + 0.9 * (task["amax"] - task["a0"]))
    s_top = float(_DEMO.steps_for_tau(task, n_p, n_r, tau_top, r))
    planned = int(np.clip(round(s_top * rng.uniform(0.2, 1.6)), 2, MAX_STEPS))
    state = str(rng.choice(STATES, p=[0.7, 0.07, 0.07, 0.11, 0.05]))
    last = planned if state == "finished" else max(1, int(planned * rng.uniform(0.05, 0.95)))
    features.append(f"state:{state}")
    evals = _eval_steps(rng, last, features)
    acc_mode = rng.choice(["clean"] * 12 + ["percent", "nan_points", "inf_points", "none_points",
                                            "all_nan", "no_val", "string_nan"])
    features.append(f"acc:{acc_mode}")
    time_keys = [["perf/time_per_step"], ["timing_s/step"], ["perf/time_per_step", "timing_s/step"],
                 []][int(rng.choice(4, p=[0.5, 0.15, 0.15, 0.2]))]
    grad_norm = rng.random() < 0.7
    grad_noise = ph["grad_noise"] and rng.random() < 0.85
    if not time_keys:
        features.append("no_step_time")
    if not grad_norm:
        features.append("no_grad_norm")
    decoy = ph["decoy"]
    B = n_p * n_r
    rows: list[dict] = []
    step_time = (10.0 + 0.03 * B) * rng.lognormal(0.0, 0.1)
    eval_set = set(evals.tolist())
    for step in range(0, last + 1):
        row: dict = {"_step": step}
        if step > 0:
            row["training/global_step"] = step
            tau_prev = float(_DEMO.tau_after_steps(task, n_p, n_r, step - 1, r))
            row["critic/score/mean"] = float(_DEMO.accuracy(task, tau_prev))
            for k in time_keys:
                row[k] = float(step_time * rng.lognormal(0.0, 0.05)) if rng.random() > 0.05 else math.nan
            g2 = math.exp(-tau_prev / 60.0)
            b_simple = task["B00"] * (1 + tau_prev / task["taub"]) * (1 + (n_r - 1) * task["rho"])
            gn = math.sqrt(g2 + b_simple * g2 / B) * float(rng.lognormal(0.0, 0.1))
            if grad_norm:
                row["actor/grad_norm"] = gn
            if grad_noise:
                row["grad_noise/B_noise_estimate"] = float(b_simple * rng.lognormal(0.0, 0.5))
                row["grad_noise/grad_norm"] = gn
        if step in eval_set and acc_mode != "no_val":
            tau = float(_DEMO.tau_after_steps(task, n_p, n_r, step, r))
            acc = rng.binomial(n_val, float(_DEMO.accuracy(task, tau))) / n_val
            value: object = acc
            if acc_mode == "percent":
                value = 100.0 * acc
            elif acc_mode == "all_nan" or (acc_mode == "nan_points" and rng.random() < 0.3):
                value = math.nan
            elif acc_mode == "inf_points" and rng.random() < 0.2:
                value = math.inf
            elif acc_mode == "none_points" and rng.random() < 0.3:
                value = None
            elif acc_mode == "string_nan" and rng.random() < 0.3:
                value = "NaN"
            row[VAL_KEY.format(source=source)] = value
            if decoy:
                row[VAL_KEY.format(source=decoy)] = float(rng.uniform(0, 1))
        if len(row) > 1:
            rows.append(row)
    name_mode = rng.choice(["plain"] * 30 + ["suffix", "unparseable"])
    if name_mode == "suffix":
        name = f"{name}_s{seed_index}"
    elif name_mode == "unparseable":
        name = f"cbs-{phase}-{B}"
    features.append(f"name:{name_mode}")
    run_id = form.run_id(f"{phase}/{n_p}/{n_r}/{seed_index}/{start}")
    return {"run_id": run_id, "name": name, "config": _config(rng, n_p, n_r, name, features),
            "state": state, "rows": rows, "start_time": start, "phase": phase,
            "n_prompts": n_p, "n_rollouts": n_r}


def generate_sweep(seed: int, habits: bool = True) -> GeneratedSweep:
    """One plausible sweep, deterministic in `seed`. habits=False leaves verl's habits out (the
    sweep as drawn before they were added; regression tests pinned to a seed use it)."""
    rng = np.random.default_rng([9, seed])
    features: list[str] = []
    shared_task = _task(rng)
    n_phases = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.35, 0.17, 0.08]))
    names = ["p1", "p2a", "p2b", "p2c", "p4_math", "x_y_z", "q"]
    chosen = [str(n) for n in rng.choice(names, size=n_phases, replace=False)]
    runs: list[dict] = []
    params: dict[str, dict] = {}
    start = 1.7e9 + seed * 1e5
    specs = {}
    for phase in chosen:
        axis = str(rng.choice(["prompts", "rollouts", "iso_batch"], p=[0.5, 0.3, 0.2]))
        kind = str(rng.choice(["normal", "two", "one", "empty"], p=[0.62, 0.12, 0.12, 0.14]))
        features.append(f"{axis}:{kind}")
        n_sizes = {"normal": int(rng.integers(3, 7)), "two": 2, "one": 1, "empty": 0}[kind]
        task = shared_task if rng.random() < 0.7 else _task(rng)
        source = str(rng.choice(SOURCES))
        decoy = str(rng.choice([s for s in SOURCES if s != source])) if rng.random() < 0.25 else None
        n_val = int(rng.choice([100, 500, 1319]))
        grid, _fixed = _grid(rng, axis, max(n_sizes, 1))
        grid = grid[:n_sizes]
        spread = task["amax"] - task["a0"]
        n_thr = int(rng.integers(1, 5))
        thr = sorted({round(float(np.clip(rng.uniform(task["a0"] - 0.1 * spread, task["amax"] + 0.05),
                                          0.01, 0.99)), 2) for _ in range(n_thr)})
        sections = {"prompts": ["01_load_runs", "02_steps_to_target", "03_training_curves",
                                "05_gradient_noise", "06_wall_clock", "08_plan"],
                    "rollouts": ["01_load_runs", "02_steps_to_target", "03_training_curves",
                                 "04_two_axis", "06_wall_clock", "08_plan"],
                    "iso_batch": ["01_load_runs", "03_training_curves", "04_two_axis",
                                  "06_wall_clock"]}[axis]
        params[phase] = {"phase": phase, "title": f"Generated {phase} ({axis}, {kind})",
                         "axis": axis,
                         "metric": (VAL_KEY.format(source=source) if rng.random() < 0.3
                                    else "val-core/*/reward/mean@*"),
                         "prefer_source": source.split("/")[-1] if decoy or rng.random() < 0.3 else None,
                         "n_val": n_val, "thresholds": thr, "sections": sections,
                         "two_axis_phases": []}
        specs[phase] = {"grid": grid, "task": task, "source": source, "n_val": n_val,
                        "grad_noise": rng.random() < 0.4, "decoy": decoy}
        if specs[phase]["grad_noise"] and grid:
            features.append("grad_noise")
        if decoy and grid:
            features.append("second_val_key")
    joint = [p for p in chosen if params[p]["axis"] in ("prompts", "rollouts")]
    for phase in chosen:
        if params[phase]["axis"] in ("rollouts", "iso_batch"):
            params[phase]["two_axis_phases"] = sorted(set(joint) | ({phase} if params[phase]["axis"] == "rollouts" else set()))
    for phase in chosen:
        ph = specs[phase]
        for n_p, n_r in ph["grid"]:
            n_rep = int(rng.choice([1, 2, 3], p=[0.7, 0.22, 0.08]))
            for k in range(n_rep):
                start += 3600
                runs.append(_run(rng, phase, n_p, n_r, ph["task"], ph["source"], ph["n_val"], ph,
                                 k, start, features))
    # a run of a phase that has no params file (it must still be accounted for)
    if rng.random() < 0.15:
        ph = specs[chosen[0]]
        runs.append(_run(rng, "orphan", 8, 4, ph["task"], ph["source"], ph["n_val"], ph, 0,
                         start + 3600, features))
        features.append("orphan_phase")
    if habits:
        _verl_habits(np.random.default_rng([11, seed]), runs, params, features)
    seen: set[str] = set()
    for r in runs:  # run ids unique within the sweep
        while r["run_id"] in seen:
            r["run_id"] = r["run_id"][::-1][:7] + "z"
        seen.add(r["run_id"])
    return GeneratedSweep(seed, runs, params, features)


def _config_set(cfg: dict, dotted: str, value) -> None:
    """Set a dotted key in a nested config (or in a dotted one, as written)."""
    if any("." in k for k in cfg):
        cfg[dotted] = value
        return
    node = cfg
    for part in dotted.split(".")[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[dotted.split(".")[-1]] = value


def _verl_habits(rng, runs: list[dict], params: dict, features: list[str]) -> None:
    """verl's habits on top of a drawn sweep, in place (see the module doc)."""
    by_phase: dict[str, list[dict]] = {}
    for r in runs:
        by_phase.setdefault(r["phase"], []).append(r)
    extra: list[dict] = []
    for phase, members in by_phase.items():
        if phase not in params or not members:
            continue
        sizes = sorted({r["n_prompts"] * r["n_rollouts"] for r in members})
        # a learning-rate sweep: at the largest batch sizes a too-small rate runs beside the
        # good one (its progress per step slower); the good rate grows like sqrt(B)
        if len(sizes) >= 3 and rng.random() < 0.3:
            features.append("habit:lr_sweep")
            for r in members:
                B = r["n_prompts"] * r["n_rollouts"]
                _config_set(r["config"], "actor_rollout_ref.actor.optim.lr", 1e-6 * math.sqrt(B / 64))
            for r in [m for m in members if m["n_prompts"] * m["n_rollouts"] in sizes[-2:]]:
                slow = {**r, "run_id": r["run_id"][:6] + "lr", "config": json.loads(json.dumps(r["config"])),
                        "start_time": r["start_time"] + 60}
                _config_set(slow["config"], "actor_rollout_ref.actor.optim.lr", 2.5e-7)
                val = [k for row in r["rows"] for k in row if k.startswith("val-core/")]
                slow["rows"] = [{**row, **{k: (row[k] * 0.8 if isinstance(row.get(k), float) else row.get(k))
                                            for k in set(val) if k in row}} for row in r["rows"]]
                extra.append(slow)
        # optimizer updates per rollout step varying with the batch (ppo_mini_batch_size capped)
        if rng.random() < 0.3:
            features.append("habit:updates_per_step")
            cap = int(rng.choice([8, 16, 32]))
            for r in members:
                _config_set(r["config"], "actor_rollout_ref.actor.ppo_mini_batch_size", min(r["n_prompts"], cap))
                _config_set(r["config"], "actor_rollout_ref.actor.ppo_epochs", int(rng.choice([1, 2])))
        # DAPO dynamic sampling: more generated than trained
        if rng.random() < 0.2:
            features.append("habit:dynamic_sampling")
            for r in members:
                _config_set(r["config"], "data.gen_batch_size", r["n_prompts"] * 3)
                for row in r["rows"]:
                    if row.get("training/global_step"):
                        row["train/num_gen_batches"] = float(rng.integers(1, 4))
        # validation and checkpoint timers, inside the step time (verl <= 0.5) or not
        if rng.random() < 0.3:
            features.append("habit:timers")
            inside = rng.random() < 0.5
            for r in members:
                for row in r["rows"]:
                    s = row.get("training/global_step") or 0
                    if s and s % 5 == 0:
                        row["timing_s/testing"] = 30.0
                        if inside:
                            for k in ("timing_s/step", "perf/time_per_step"):
                                if isinstance(row.get(k), float):
                                    row[k] += 30.0
                    if s and s % 20 == 0:
                        row["timing_s/save_checkpoint"] = 45.0
        # free-form verl experiment names, the phase selected by its W&B tag
        if rng.random() < 0.12 and all(isinstance(r["config"], dict) and r["config"] for r in members):
            features.append("habit:select_by_tag")
            params[phase]["select"] = {"tags": [phase]}
            for r in members:
                r["tags"] = [phase, "grpo"]
                r["name"] = f"qwen-grpo-{phase}-{r['n_prompts']}x{r['n_rollouts']}-{r['run_id'][:3]}"
                _config_set(r["config"], "data.train_batch_size", r["n_prompts"])
                _config_set(r["config"], "actor_rollout_ref.rollout.n", r["n_rollouts"])
    # a run crashed after its checkpoint and resumed as a NEW run of the same name, which
    # validates at the checkpoint step and trains on from there (verl's behaviour)
    finished = [r for r in runs if r["state"] == "finished" and len(r["rows"]) > 30
                and r["phase"] in params and not r.get("tags")]
    if finished and rng.random() < 0.3:
        features.append("habit:resumed")
        r = finished[int(rng.integers(len(finished)))]
        steps = [row["_step"] for row in r["rows"]]
        k = int(steps[len(steps) // 2])
        crash = k + int(rng.integers(1, 6))
        val = next((key for row in r["rows"] for key in row if key.startswith("val-core/")), None)
        restart = {**r, "run_id": r["run_id"][:5] + "res", "start_time": r["start_time"] + 1800,
                   "config": json.loads(json.dumps(r["config"])),
                   "rows": [row for row in r["rows"] if row["_step"] >= k]}
        if val and not any(val in row for row in restart["rows"] if row["_step"] == k):
            restart["rows"] = [{"_step": k, val: 0.5}] + restart["rows"][1:]
        r["rows"] = [row for row in r["rows"] if row["_step"] <= crash]
        r["state"] = "crashed"
        extra.append(restart)
    runs.extend(extra)


# --------------------------------------------------------------------------------------------
# Turning a sweep into inputs
# --------------------------------------------------------------------------------------------
@cache
def sweep_features(seed: int, habits: bool = True) -> frozenset[str]:
    """The features of sweep `seed` (what `generate_sweep(seed, habits).features` holds), kept:
    the hunts and their checks ask for the whole pool's several times."""
    return frozenset(generate_sweep(seed, habits).features)


def covering_seeds(n: int, pool: int = 200, min_count: int = 2, prefix: str = "",
                   habits: bool = True, exclude: tuple[int, ...] | list[int] = ()) -> list[int]:
    """`n` seeds out of range(pool) (less `exclude`), chosen so that every feature drawn in the pool
    (those starting with `prefix`) appears in at least `min_count` of them where the pool has that
    many (greedy, rarest feature first; every feature once before any twice, so a hunt too short
    for `min_count` still meets each once), the rest filled in seed order: a short hunt that still
    meets every kind of trouble the generator draws. Deterministic."""
    feats = {seed: {f for f in sweep_features(seed, habits) if f.startswith(prefix)}
             for seed in range(pool) if seed not in set(exclude)}
    totals: dict[str, int] = {}
    for fs in feats.values():
        for f in fs:
            totals[f] = totals.get(f, 0) + 1
    chosen: list[int] = []
    have = dict.fromkeys(totals, 0)
    for level in range(1, min_count + 1):  # every feature once before any twice
        while len(chosen) < n:
            short = {f for f, c in have.items() if c < min(level, totals[f])}
            if not short:
                break
            rarest = min(short, key=lambda f: (totals[f], f))
            seed = max((s for s in feats if s not in chosen and rarest in feats[s]),
                       key=lambda s: (len(feats[s] & short), -s))
            chosen.append(seed)
            for f in feats[seed]:
                have[f] += 1
    chosen += [s for s in feats if s not in chosen][: n - len(chosen)]
    return sorted(chosen)


def notebook_hunt_seeds(n: int = 10) -> list[int]:
    """The sweeps the notebook hunt runs (tests/test_hunt_notebooks.py): every feature of the pool
    at least twice, every verl habit at least three times; the analysis hunt takes others."""
    return covering_seeds(n, 200, min_count=2)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "describe":
        print(generate_sweep(int(argv[1])).describe())
        return 0
    if len(argv) == 3 and argv[0] == "offline":
        sweep = generate_sweep(int(argv[1]))
        paths = form.write_offline_runs(sweep, Path(argv[2]))
        print(f"{len(paths)} offline runs written")
        return 0
    print(__doc__)
    return 2

