"""A CBS sweep with verl's habits, written as real W&B offline runs by the wandb SDK.

    python tests/sweeps habits OUT [--seeds 0 1 2] [--step-timer v0.6|v0.5] [--export]

writes OUT/seed<k>/wandb/offline-run-*/run-*.wandb (or, with --export, an export directory
OUT/seed<k>/export/{runs.csv,history/}), OUT/seed<k>/truth.json and OUT/params/{h1,h2}.yaml.
The model is the demo's (data/demo/make_demo.py: its accuracy curve, noise scale and the exact
McCandlish steps), so the true B_noise is known; the habits are:

- phase h1 (n_rollouts = 8, n_prompts 8 ... 512): free-form verl experiment names, selected by
  the W&B tag `h1` (params `select: {tags: [h1]}`); the learning rate follows sqrt(B) and, at the
  three largest batch sizes, a too-small constant rate runs beside it (progress per step scaled
  by the rate ratio); ppo_mini_batch_size = min(n_prompts, 64), so updates per step vary (1 to
  8); DAPO dynamic sampling logs `train/num_gen_batches`; validation every 5 steps with
  `timing_s/testing`, checkpoints every 20 with `timing_s/save_checkpoint`, which the step time
  includes (verl <= 0.5, --step-timer v0.5) or not (verl >= 0.6); the n_prompts = 32 run crashes
  7 steps after its step-40 checkpoint and is resumed as a NEW W&B run of the same name that
  validates at step 40 and trains on from 41 (verl's behaviour), while the crashed run's steps
  41..47 come from a trajectory that was lost (a deliberately misleading accuracy).
- phase h2: two batch sizes on the rollout axis, named cbs_h2_np32_nr<M> (selection by name).
- one run named `debug-run` that no phase selects (listed in excluded_runs.csv).
The progress of a rollout step does not depend on the updates per step here, so the truth is in
rollout steps; the fit in optimizer updates is only reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import testkit

from sweeps import form

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"

N_ROLLOUTS = 8
H1_PROMPTS = (8, 16, 32, 64, 128, 256, 512)
SWEPT_PROMPTS = (128, 256, 512)  # a too-small constant learning rate also runs here
H2_GRID = ((32, 4), (32, 16))
LR_BASE, LR_REF_B = 1e-6, 256
MINI_CAP = 64
TEST_FREQ, SAVE_FREQ = 5, 20
RESUME_PROMPTS, CHECKPOINT, CRASH_AFTER = 32, 40, 7
TESTING_S, SAVE_S = 40.0, 60.0
CAP = 400
START = 1_767_225_600.0  # 2026-01-01 UTC


def load_make_demo():
    return testkit.load_make_demo("make_demo_for_habits")


@dataclass
class HabitRun:
    run_id: str
    name: str
    config: dict
    rows: list  # (step, metrics) as logged
    start_time: float
    tags: list = field(default_factory=list)
    group: str | None = None
    exit_code: int = 0
    truth: dict = field(default_factory=dict)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def good_lr(B: int) -> float:
    return LR_BASE * math.sqrt(B / LR_REF_B)


def verl_config(md, n_p: int, n_r: int, lr: float, name: str, seed: int, total: int) -> dict:
    return {
        "data": {"train_batch_size": n_p, "gen_batch_size": n_p, "train_files": "gsm8k/train.parquet"},
        "actor_rollout_ref": {"model": {"path": md.MODEL_PATH},
                              "actor": {"optim": {"lr": lr}, "ppo_mini_batch_size": min(n_p, MINI_CAP),
                                        "ppo_epochs": 1},
                              "rollout": {"name": "vllm", "n": n_r}},
        "algorithm": {"adv_estimator": "grpo", "filter_groups": {"enable": True, "metric": "acc"}},
        "trainer": {"project_name": "habits", "experiment_name": name, "n_gpus_per_node": 8,
                    "nnodes": 1, "test_freq": TEST_FREQ, "save_freq": SAVE_FREQ,
                    "total_training_steps": total, "resume_mode": "auto"},
        "seed": seed,
    }


def simulate(md, key: str, n_p: int, n_r: int, speed_factor: float, step_timer: str):
    """(rows, speed r, total steps): one run as verl logs it, on the demo's model."""
    task = md.TASKS["gsm8k"]
    rng = np.random.default_rng(int.from_bytes(_digest(f"habits/{key}")[8:16], "big"))
    r = float(rng.lognormal(0.0, md.SPEED_SIGMA)) * speed_factor
    s_top = float(md.true_steps(task, n_p, n_r, max(task["thresholds"]), r))
    total = int(min(CAP, math.ceil(md.MAX_STEPS_FACTOR * s_top) + md.MAX_STEPS_EXTRA))
    B = n_p * n_r

    def val(tau):
        return rng.binomial(task["n_val"], float(md.accuracy(task, tau))) / task["n_val"]

    rows = [(0, {task["metric"]: val(0.0)})]
    tau_prev = 0.0
    for step in range(1, total + 1):
        tau = float(md.tau_after_steps(task, n_p, n_r, step, r))
        train_t = (md.STEP_TIME_BASE_S + md.STEP_TIME_PER_SAMPLE_S * B) * rng.lognormal(0.0, md.STEP_TIME_SIGMA)
        m = {"training/global_step": step,
             "critic/score/mean": md._round(float(md.accuracy(task, tau_prev)) + 0.05, 6),
             "actor/grad_norm": md._round(0.3 * rng.lognormal(0.0, 0.1), 5),
             "train/num_gen_batches": int(1 + rng.poisson(0.6))}
        overhead = 0.0
        if step % TEST_FREQ == 0 or step == total:
            m[task["metric"]] = val(tau)
            m["timing_s/testing"] = md._round(TESTING_S * rng.lognormal(0.0, 0.05), 6)
            overhead += m["timing_s/testing"]
        if step % SAVE_FREQ == 0 or step == total:
            m["timing_s/save_checkpoint"] = md._round(SAVE_S * rng.lognormal(0.0, 0.05), 6)
            overhead += m["timing_s/save_checkpoint"]
        logged = train_t + (overhead if step_timer == "v0.5" else 0.0)
        m["timing_s/step"] = m["perf/time_per_step"] = md._round(logged, 6)
        m["train_time_true"] = train_t  # not logged: the truth for the wall-clock test
        rows.append((step, m))
        tau_prev = tau
    return rows, r, total


def _truth(md, n_p, n_r, r, rows) -> dict:
    task = md.TASKS["gsm8k"]
    return {"S_true": {repr(t): float(md.true_steps(task, n_p, n_r, t, r)) for t in task["thresholds"]},
            "speed_r": r, "train_time": [m.pop("train_time_true") for _, m in rows[1:]],
            "gen_batches": [m["train/num_gen_batches"] for _, m in rows[1:]]}


def habit_sweep(md, seed: int, step_timer: str = "v0.6") -> tuple[list[HabitRun], dict]:
    """The runs of one realisation and its truth (see the module docstring)."""
    task = md.TASKS["gsm8k"]
    runs: list[HabitRun] = []
    slot = 0

    def add(key, name, n_p, n_r, lr, factor, tags, group):
        nonlocal slot
        rows, r, total = simulate(md, f"{seed}/{key}", n_p, n_r, factor, step_timer)
        run = HabitRun(form.run_id(f"{seed}/{key}"), name, verl_config(md, n_p, n_r, lr, name, seed, total),
                       rows, START + seed * 86400 * 7 + slot * 3600, tags, group)
        run.truth = {"key": key, "n_prompts": n_p, "n_rollouts": n_r, "lr": lr,
                     "speed_factor": factor, **_truth(md, n_p, n_r, r, rows)}
        slot += 1
        runs.append(run)
        return run

    for n_p in H1_PROMPTS:
        B = n_p * N_ROLLOUTS
        lr = good_lr(B)
        add(f"h1/{n_p}", f"qwen2.5-1.5b-grpo-gsm8k-bs{n_p}x{N_ROLLOUTS}-lr{lr:.2g}", n_p, N_ROLLOUTS,
            lr, 1.0, ["h1", "grpo"], "cbs-h1")
        if n_p in SWEPT_PROMPTS:  # progress per step scales with the (too small) rate
            add(f"h1/{n_p}/small", f"qwen2.5-1.5b-grpo-gsm8k-bs{n_p}x{N_ROLLOUTS}-lr{LR_BASE:.2g}",
                n_p, N_ROLLOUTS, LR_BASE, LR_BASE / lr, ["h1", "grpo"], "cbs-h1")
    # the crashed-and-resumed run: split the n_prompts = 32 run at its checkpoint
    full = next(r for r in runs if r.truth["key"] == f"h1/{RESUME_PROMPTS}")
    rng = np.random.default_rng(seed + 1000)
    crashed = [(s, dict(m)) for s, m in full.rows if s <= CHECKPOINT + CRASH_AFTER]
    for s, m in crashed:
        if s > CHECKPOINT:  # the lost trajectory: other values, a misleadingly high accuracy
            m["critic/score/mean"] = 2.0
            if task["metric"] in m:
                m[task["metric"]] = min(1.0, m[task["metric"]] + 0.2)
    restart = [(CHECKPOINT, {task["metric"]: rng.binomial(task["n_val"], float(md.accuracy(
        task, md.tau_after_steps(task, RESUME_PROMPTS, N_ROLLOUTS, CHECKPOINT, full.truth["speed_r"]))))
        / task["n_val"]})] + [(s, m) for s, m in full.rows if s > CHECKPOINT]
    seg1 = HabitRun(full.run_id, full.name, full.config, crashed, full.start_time, full.tags, full.group,
                    exit_code=1, truth={**full.truth, "segment": 1})
    seg2 = HabitRun(form.run_id(f"{seed}/h1/{RESUME_PROMPTS}/resumed"), full.name, full.config, restart,
                    full.start_time + 2 * 3600, full.tags, full.group, truth={**full.truth, "segment": 2})
    runs[runs.index(full)] = seg1
    runs.append(seg2)
    for n_p, n_r in H2_GRID:
        add(f"h2/{n_p}x{n_r}", f"cbs_h2_np{n_p}_nr{n_r}", n_p, n_r, good_lr(n_p * n_r), 1.0, ["h2"], None)
    add("debug", "debug-run", 16, 4, LR_BASE, 1.0, ["debug"], None)
    truth = {
        "seed": seed, "step_timer": step_timer, "metric": task["metric"], "n_val": task["n_val"],
        "thresholds": task["thresholds"],
        "B_noise": {repr(t): md.mccandlish_truth(task, "prompts", {"n_rollouts": N_ROLLOUTS}, t)["B_noise"]
                    for t in task["thresholds"]},
        "resumed": {"name": seg1.name, "run_ids": [seg1.run_id, seg2.run_id], "checkpoint": CHECKPOINT,
                    "lost_steps": CRASH_AFTER},
        "runs": {r.run_id: {**r.truth, "name": r.name} for r in runs},
    }
    return runs, truth


def params_files(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    common = ('axis: {axis}\nmetric: "val-core/*/reward/mean@*"\nprefer_source: gsm8k\nn_val: 1319\n'
              "thresholds: [0.3, 0.4, 0.5, 0.6, 0.65, 0.7]\n")
    (dest / "h1.yaml").write_text(
        'phase: h1\ntitle: "Habits: adding prompts (n_rollouts = 8)"\n' + common.format(axis="prompts")
        + "sections: [01_load_runs, 02_steps_to_target, 06_wall_clock]\nselect:\n  tags: [h1]\n")
    (dest / "h2.yaml").write_text(
        'phase: h2\ntitle: "Habits: two batch sizes"\n' + common.format(axis="rollouts")
        + "sections: [01_load_runs, 02_steps_to_target, 06_wall_clock]\n")


# ------------------------------------------------------------------------------------------
# Writers: the runs in the one form of sweeps/form.py, written by its writers
# ------------------------------------------------------------------------------------------
@dataclass
class HabitSweep:
    """habit_sweep's runs in the form sweeps/form.py writes (raw runs; no params: see params_files)."""
    runs: list[dict]
    params: dict = field(default_factory=dict)


def as_sweep(runs: list[HabitRun]) -> HabitSweep:
    return HabitSweep([{"run_id": r.run_id, "name": r.name, "config": r.config, "start_time": r.start_time,
                        "state": "finished" if r.exit_code == 0 else "failed", "tags": r.tags,
                        "group": r.group, "rows": [{"_step": s, **m} for s, m in r.rows]} for r in runs])


def write_offline(runs: list[HabitRun], dest: Path) -> None:
    """Log the runs with the wandb SDK in offline mode, one wandb.log per step as verl does."""
    form.write_offline_runs(as_sweep(runs), dest)


def write_export(runs: list[HabitRun], dest: Path) -> None:
    """The same runs as an export directory (runs.csv + history/<run_id>.csv)."""
    form.write_export_dir(as_sweep(runs), dest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--step-timer", choices=["v0.6", "v0.5"], default=None,
                        help="default: v0.6 for even seeds, v0.5 for odd ones")
    parser.add_argument("--export", action="store_true", help="write an export directory instead")
    args = parser.parse_args(argv)
    md = load_make_demo()
    params_files(args.out / "params")
    for seed in args.seeds:
        timer = args.step_timer or ("v0.6" if seed % 2 == 0 else "v0.5")
        runs, truth = habit_sweep(md, seed, timer)
        dest = args.out / f"seed{seed}"
        dest.mkdir(parents=True, exist_ok=True)
        if args.export:
            write_export(runs, dest / "export")
        else:
            write_offline(runs, dest)
        (dest / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return 0

