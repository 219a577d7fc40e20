"""Generate the bundled demo sweep: real W&B offline runs of a simulated CBS experiment.

    python data/demo/make_demo.py                 # all runs + ground_truth.json (~30 s)
    python data/demo/make_demo.py --only ID ...   # regenerate some runs (by id or name)
    python data/demo/make_demo.py --check         # only verify the ground truth numerically

The simulation model is described in data/demo/README.md ("The model").
Training progress is a variable tau measured in "S_min steps"; one optimizer step at an
effective batch of B_eff independent prompts advances tau by r / (1 + B0(tau) / B_eff), so
the steps to a target follow the McCandlish et al. (2018) law exactly and the ground truth
(S_min, B_noise per phase and threshold) is known in closed form.

Every run draws its noise from its own numpy Generator seeded from (run name, seed index),
so regenerating or adding one run never shifts the values of another.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

DEMO_DIR = Path(__file__).resolve().parent
PROJECT = "cbs_rlvr_demo"
MODEL_PATH = "Qwen/Qwen2.5-1.5B-Instruct"
HOST = "demo-node"  # written instead of the real host name
SWEEP_START = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()

N_GPUS_PER_NODE = 8
N_NODES = 1
TEST_FREQ = 5
SPEED_SIGMA = 0.03  # per-run speed r ~ lognormal(0, SPEED_SIGMA): the seed effect
STEP_TIME_BASE_S = 15.0
STEP_TIME_PER_SAMPLE_S = 0.045
STEP_TIME_SIGMA = 0.05
EVAL_TIME_S = 30.0  # validation wall time, only used for _timestamp
GRAD_SQ_DECAY_TAU = 60.0  # |G(tau)|^2 = exp(-tau / 60)
GRAD_NORM_SIGMA = 0.1
B_NOISE_ESTIMATE_SIGMA = 0.5
FAIL_FRACTION = 0.6  # the failing p4_rpp run stops after this fraction of its steps
MAX_STEPS_FACTOR = 1.3
MAX_STEPS_EXTRA = 10

TASKS: dict[str, dict] = {
    "gsm8k": {
        "metric": "val-core/openai/gsm8k/reward/mean@1",
        "n_val": 1319,
        "a0": 0.12, "amax": 0.80, "tau0": 30.0, "B00": 96.0, "taub": 30.0, "rho": 0.15,
        "thresholds": [0.3, 0.4, 0.5, 0.6, 0.65, 0.7],
        "train_files": "gsm8k/train.parquet", "val_files": "gsm8k/test.parquet",
        "prompt_tokens": 110, "response_tokens": 260,
    },
    "math": {
        "metric": "val-core/HuggingFaceH4/MATH-500/reward/mean@1",
        "n_val": 500,
        "a0": 0.10, "amax": 0.55, "tau0": 40.0, "B00": 160.0, "taub": 40.0, "rho": 0.2,
        "thresholds": [0.2, 0.3, 0.35, 0.4, 0.45],
        "train_files": "math/train.parquet", "val_files": "math500/test.parquet",
        "prompt_tokens": 140, "response_tokens": 480,
    },
    "rpp": {
        "metric": "val-core/rpp/reward/mean@1",
        "n_val": 1000,
        "a0": 0.05, "amax": 0.90, "tau0": 25.0, "B00": 32.0, "taub": 50.0, "rho": 0.1,
        "thresholds": [0.3, 0.5, 0.6, 0.7, 0.8],
        "train_files": "rpp/train.parquet", "val_files": "rpp/test.parquet",
        "prompt_tokens": 180, "response_tokens": 200,
    },
}
# p4_math runs also validate on GSM8K (a decoy key: metric selection must prefer 'math');
# its progress is the MATH progress scaled by this factor, on the gsm8k accuracy curve.
P4_MATH_GSM8K_TAU_SCALE = 0.6

PHASES: dict[str, dict] = {
    "p1": {"task": "gsm8k", "axis": "prompts", "fixed": {"n_rollouts": 8}, "cap": 400,
           "grid": [(p, 8) for p in (8, 16, 32, 64, 128, 256, 512)],
           "replicates": {(32, 8): 3, (128, 8): 3}, "grad_noise": True},
    "p2a": {"task": "gsm8k", "axis": "prompts", "fixed": {"n_rollouts": 4}, "cap": 400,
            "grid": [(p, 4) for p in (16, 32, 64, 128, 256, 512, 1024)]},
    "p2b": {"task": "gsm8k", "axis": "rollouts", "fixed": {"n_prompts": 32}, "cap": 400,
            "grid": [(32, r) for r in (2, 4, 8, 16, 32, 64)]},
    "p2c": {"task": "gsm8k", "axis": "iso_batch", "fixed": {"total_batch": 2048}, "cap": 300,
            "grid": [(1024, 2), (512, 4), (256, 8), (128, 16), (64, 32)]},
    "p4_math": {"task": "math", "axis": "prompts", "fixed": {"n_rollouts": 8}, "cap": 400,
                "grid": [(p, 8) for p in (8, 16, 32, 64, 128, 256, 512)],
                "extra_val": ["gsm8k"]},
    "p4_rpp": {"task": "rpp", "axis": "prompts", "fixed": {"n_rollouts": 8}, "cap": 400,
               "grid": [(p, 8) for p in (4, 8, 16, 32, 64, 128, 256)],
               "failing": {(16, 8)}},
}


# ----------------------------------------------------------------------------------------
# The model (pure functions; tests import these)
# ----------------------------------------------------------------------------------------
def accuracy(task: dict, tau):
    """Noiseless validation accuracy after progress tau."""
    gain = 1.0 - np.exp(-np.asarray(tau) / task["tau0"])
    return task["a0"] + (task["amax"] - task["a0"]) * gain


def tau_at_accuracy(task: dict, acc: float) -> float:
    """Progress tau at which the noiseless accuracy equals acc (inverse of `accuracy`)."""
    frac = (acc - task["a0"]) / (task["amax"] - task["a0"])
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"accuracy {acc} outside [a0, amax) of the task")
    return -task["tau0"] * math.log1p(-frac)


def noise_scale(task: dict, tau):
    """B0(tau): gradient noise scale in units of independent prompts."""
    return task["B00"] * (1.0 + np.asarray(tau) / task["taub"])


def effective_batch(task: dict, n_prompts, n_rollouts):
    """Independent-prompt equivalent of n_prompts x n_rollouts correlated samples."""
    n_rollouts = np.asarray(n_rollouts, dtype=float)
    correlation = 1.0 + (n_rollouts - 1.0) * task["rho"]
    return np.asarray(n_prompts, dtype=float) * n_rollouts / correlation


def steps_for_tau(task: dict, n_prompts, n_rollouts, tau, r=1.0):
    """Steps s needed to reach progress tau: r s = tau + (B00/B_eff)(tau + tau^2/(2 taub))."""
    tau = np.asarray(tau, dtype=float)
    b_eff = effective_batch(task, n_prompts, n_rollouts)
    return (tau + task["B00"] / b_eff * (tau + tau**2 / (2.0 * task["taub"]))) / r


def tau_after_steps(task: dict, n_prompts, n_rollouts, steps, r=1.0):
    """Progress after `steps` optimizer steps: the positive root of the quadratic."""
    s = np.asarray(steps, dtype=float)
    k = task["B00"] / effective_batch(task, n_prompts, n_rollouts)
    a = k / (2.0 * task["taub"])
    b = 1.0 + k
    # 2c / (b + sqrt(b^2 + 4ac)) form: no cancellation at small s
    return 2.0 * r * s / (b + np.sqrt(b * b + 4.0 * a * r * s))


def mean_noise_scale(task: dict, tau_thr: float) -> float:
    """Bbar: mean of B0(tau) over [0, tau_thr] (independent-prompt units)."""
    return task["B00"] * (1.0 + tau_thr / (2.0 * task["taub"]))


def true_steps(task: dict, n_prompts, n_rollouts, threshold: float, r=1.0):
    """Exact steps to the threshold: S = tau_thr (1 + Bbar / B_eff) / r."""
    tau_thr = tau_at_accuracy(task, threshold)
    b_eff = effective_batch(task, n_prompts, n_rollouts)
    return tau_thr * (1.0 + mean_noise_scale(task, tau_thr) / b_eff) / r


def mccandlish_truth(task: dict, axis: str, fixed: dict, threshold: float) -> dict:
    """Exact S_min, B_noise (total samples), E_min of a phase, plus the noise scales at target.

    prompt axis (n_r = R fixed):  S_min = tau_thr, B_noise = Bbar (1 + (R-1) rho)
    rollout axis (n_p = P fixed): S_min = tau_thr (1 + Bbar rho / P),
                                  B_noise = Bbar (1 - rho) / (1 + Bbar rho / P)
    B_simple_at_target is the same expression with the local B0(tau_thr) in place of Bbar
    (what a gradient-noise measurement at the target accuracy sees).
    """
    rho = task["rho"]
    tau_thr = tau_at_accuracy(task, threshold)
    b_bar = mean_noise_scale(task, tau_thr)
    b_loc = float(noise_scale(task, tau_thr))
    if axis == "prompts":
        R = fixed["n_rollouts"]
        s_min = tau_thr
        b_noise = b_bar * (1.0 + (R - 1) * rho)
        b_simple = b_loc * (1.0 + (R - 1) * rho)
    elif axis == "rollouts":
        P = fixed["n_prompts"]
        s_min = tau_thr * (1.0 + b_bar * rho / P)
        b_noise = b_bar * (1.0 - rho) / (1.0 + b_bar * rho / P)
        b_simple = b_loc * (1.0 - rho) / (1.0 + b_loc * rho / P)
    else:  # iso-batch: no McCandlish fit along this slice
        return {"S_min": None, "B_noise": None, "E_min": None,
                "B_bar_independent": b_bar, "B_simple_at_target": None, "tau_target": tau_thr}
    return {"S_min": s_min, "B_noise": b_noise, "E_min": s_min * b_noise,
            "B_bar_independent": b_bar, "B_simple_at_target": b_simple, "tau_target": tau_thr}


def threshold_key(threshold: float) -> str:
    """JSON key of a threshold: '0.3', '0.65'."""
    return repr(float(threshold))


# ----------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    phase: str
    n_prompts: int
    n_rollouts: int
    seed_index: int
    start_time: float  # unix seconds (deterministic)
    fails: bool = False

    @property
    def name(self) -> str:
        return f"cbs_{self.phase}_np{self.n_prompts}_nr{self.n_rollouts}"

    @property
    def total_batch(self) -> int:
        return self.n_prompts * self.n_rollouts

    @property
    def task(self) -> dict:
        return TASKS[PHASES[self.phase]["task"]]

    @property
    def seed(self) -> int:
        return self.seed_index

    def _digest(self) -> bytes:
        return hashlib.sha256(f"{PROJECT}/{self.name}/seed{self.seed_index}".encode()).digest()

    @property
    def run_id(self) -> str:
        """8 lowercase base-36 characters, like W&B's own ids."""
        n = int.from_bytes(self._digest()[:8], "big")
        chars = "0123456789abcdefghijklmnopqrstuvwxyz"
        out = ""
        for _ in range(8):
            n, d = divmod(n, 36)
            out += chars[d]
        return out

    @property
    def rng_seed(self) -> int:
        return int.from_bytes(self._digest()[8:16], "big")

    @property
    def dir_name(self) -> str:
        ts = datetime.fromtimestamp(self.start_time, tz=timezone.utc).strftime("%Y%m%d_%H%M%S")
        return f"offline-run-{ts}-{self.run_id}"


def sweep() -> list[RunSpec]:
    """All runs of the demo, in generation order (replicates start one hour apart)."""
    specs = []
    for phase_index, (phase, ph) in enumerate(PHASES.items()):
        slot = 0
        for n_p, n_r in ph["grid"]:
            for seed_index in range(ph.get("replicates", {}).get((n_p, n_r), 1)):
                start = SWEEP_START + phase_index * 7 * 86400 + slot * 3600
                specs.append(RunSpec(phase, n_p, n_r, seed_index, start,
                                     fails=(n_p, n_r) in ph.get("failing", set())))
                slot += 1
    return specs


def run_config(spec: RunSpec, total_steps: int) -> dict:
    """verl-style nested config of one run."""
    task = spec.task
    return {
        "data": {
            "train_files": task["train_files"],
            "val_files": task["val_files"],
            "train_batch_size": spec.n_prompts,
            "max_prompt_length": 512,
            "max_response_length": 1024,
        },
        "actor_rollout_ref": {
            "model": {"path": MODEL_PATH},
            "actor": {"optim": {"lr": 1e-6}, "ppo_mini_batch_size": spec.n_prompts,
                      "use_kl_loss": True, "kl_loss_coef": 0.001, "entropy_coeff": 0.0},
            "rollout": {"name": "vllm", "n": spec.n_rollouts, "temperature": 1.0},
        },
        "algorithm": {"adv_estimator": "grpo", "use_kl_in_reward": False},
        "trainer": {
            "project_name": PROJECT,
            "experiment_name": spec.name,
            "logger": ["console", "wandb"],
            "n_gpus_per_node": N_GPUS_PER_NODE,
            "nnodes": N_NODES,
            "test_freq": TEST_FREQ,
            "save_freq": -1,
            "val_before_train": True,
            "total_training_steps": int(total_steps),
        },
        "seed": spec.seed,
    }


@dataclass
class SimulatedRun:
    spec: RunSpec
    speed: float  # r
    total_steps: int  # planned (config) steps
    last_step: int  # last logged step (< total_steps for the failing run)
    rows: list[tuple[int, dict]]  # (global_step, metrics dict as logged)
    config: dict

    @property
    def last_eval_step(self) -> int:
        return max(step for step, m in self.rows if self.spec.task["metric"] in m)

    @property
    def state(self) -> str:
        return "failed" if self.spec.fails else "finished"


def _round(x: float, digits: int) -> float:
    """Round to `digits` significant digits (keeps the .wandb files small)."""
    return float(f"{x:.{digits}g}")


def simulate_run(spec: RunSpec) -> SimulatedRun:
    """All metrics of one run, exactly as they are logged (deterministic in spec)."""
    ph, task = PHASES[spec.phase], spec.task
    rng = np.random.default_rng(spec.rng_seed)
    speed = float(rng.lognormal(0.0, SPEED_SIGMA))
    top = max(task["thresholds"])
    s_top = float(true_steps(task, spec.n_prompts, spec.n_rollouts, top, speed))
    total_steps = int(min(ph["cap"], math.ceil(MAX_STEPS_FACTOR * s_top) + MAX_STEPS_EXTRA))
    last_step = int(FAIL_FRACTION * total_steps) if spec.fails else total_steps
    B, n_r = spec.total_batch, spec.n_rollouts
    rho = task["rho"]
    val_tasks = [PHASES[spec.phase]["task"], *ph.get("extra_val", [])]

    def validation(tau: float) -> dict:
        out = {}
        for name in val_tasks:
            t = TASKS[name]
            tau_v = tau * P4_MATH_GSM8K_TAU_SCALE if name != ph["task"] else tau
            k = rng.binomial(t["n_val"], float(accuracy(t, tau_v)))
            out[t["metric"]] = k / t["n_val"]
        return out

    rows: list[tuple[int, dict]] = []
    clock = spec.start_time + EVAL_TIME_S
    rows.append((0, {**validation(0.0), "_timestamp": round(clock, 3)}))
    tau_prev = 0.0
    for step in range(1, last_step + 1):
        tau = float(tau_after_steps(task, spec.n_prompts, n_r, step, speed))
        # rollouts of step s are generated by the policy before its update (tau_prev)
        p_score = min(float(accuracy(task, tau_prev)) + 0.05, 1.0)
        score = _round(rng.binomial(B, p_score) / B, 6)
        entropy = (0.3 + 0.5 * math.exp(-tau_prev / 80.0)) * rng.lognormal(0.0, 0.03)
        grad_sq = math.exp(-tau_prev / GRAD_SQ_DECAY_TAU)
        b_simple = float(noise_scale(task, tau_prev)) * (1.0 + (n_r - 1) * rho)
        trace_sigma = b_simple * grad_sq
        grad_norm = math.sqrt(grad_sq + trace_sigma / B) * rng.lognormal(0.0, GRAD_NORM_SIGMA)
        step_time = (STEP_TIME_BASE_S + STEP_TIME_PER_SAMPLE_S * B) * rng.lognormal(
            0.0, STEP_TIME_SIGMA)
        response_len = task["response_tokens"] * (1.0 + 0.3 * (1.0 - math.exp(-tau_prev / 100.0)))
        response_len *= rng.lognormal(0.0, 0.02)
        n_tokens = int(round(B * (task["prompt_tokens"] + response_len)))
        step_time = _round(step_time, 6)
        metrics = {
            "training/global_step": step,
            "critic/score/mean": score,
            "actor/entropy": _round(entropy, 5),
            "actor/grad_norm": _round(grad_norm, 5),
            "perf/time_per_step": step_time,
            "timing_s/step": step_time,
            "perf/throughput": _round(n_tokens / (step_time * N_GPUS_PER_NODE * N_NODES), 6),
            "perf/total_num_tokens": n_tokens,
        }
        if ph.get("grad_noise"):
            metrics["grad_noise/B_noise_estimate"] = _round(
                b_simple * rng.lognormal(0.0, B_NOISE_ESTIMATE_SIGMA), 5)
            metrics["grad_noise/grad_norm"] = metrics["actor/grad_norm"]
        clock += step_time
        if step % TEST_FREQ == 0 or step == total_steps:
            metrics.update(validation(tau))
            clock += EVAL_TIME_S
        metrics["_timestamp"] = round(clock, 3)
        rows.append((step, metrics))
        tau_prev = tau
    return SimulatedRun(spec, speed, total_steps, last_step, rows, run_config(spec, total_steps))


# ----------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------
_NOT_MODEL_KEYS = ("train_files", "val_files", "prompt_tokens", "response_tokens")


def ground_truth(simulated: list[SimulatedRun] | None = None) -> dict:
    """The ground-truth JSON (schema in data/demo/README.md); `runs` if simulations given."""
    model = {
        "progress": "tau in S_min steps; acc(tau) = a0 + (amax - a0)(1 - exp(-tau/tau0)); "
                    "B0(tau) = B00 (1 + tau/taub); B_eff = n_p n_r / (1 + (n_r - 1) rho); "
                    "r s = tau + (B00/B_eff)(tau + tau^2/(2 taub))",
        "tasks": {name: {k: v for k, v in t.items() if k not in _NOT_MODEL_KEYS}
                  for name, t in TASKS.items()},
        "speed_sigma": SPEED_SIGMA,
        "eval": {"test_freq": TEST_FREQ, "at_step_0": True, "at_last_step": True,
                 "noise": "Binomial(n_val, acc(tau))/n_val"},
        "step_time_s": {"base": STEP_TIME_BASE_S, "per_sample": STEP_TIME_PER_SAMPLE_S,
                        "sigma": STEP_TIME_SIGMA},
        "grad_noise": {"grad_sq": f"exp(-tau/{GRAD_SQ_DECAY_TAU:g})",
                       "B_simple": "B0(tau) (1 + (n_r - 1) rho)",
                       "grad_norm_sigma": GRAD_NORM_SIGMA,
                       "B_noise_estimate_sigma": B_NOISE_ESTIMATE_SIGMA},
        "max_steps": {"caps": {p: ph["cap"] for p, ph in PHASES.items()},
                      "rule": f"min(cap, ceil({MAX_STEPS_FACTOR} * S_true(top threshold)) "
                              f"+ {MAX_STEPS_EXTRA})"},
        "failing_run_fraction": FAIL_FRACTION,
        "p4_math_gsm8k_tau_scale": P4_MATH_GSM8K_TAU_SCALE,
    }
    phases = {}
    for phase, ph in PHASES.items():
        task = TASKS[ph["task"]]
        entry = {
            "axis": ph["axis"], "task": ph["task"], "metric": task["metric"],
            "n_val": task["n_val"], "fixed": dict(ph["fixed"]),
            "grid": [{"n_prompts": p, "n_rollouts": r, "total_batch": p * r,
                      "replicates": ph.get("replicates", {}).get((p, r), 1)}
                     for p, r in ph["grid"]],
            "thresholds": {},
            # noiseless S at r = 1 for each grid point, keyed "<n_prompts>x<n_rollouts>"
            "S_by_config": {},
        }
        for thr in task["thresholds"]:
            key = threshold_key(thr)
            entry["thresholds"][key] = mccandlish_truth(task, ph["axis"], ph["fixed"], thr)
            entry["S_by_config"][key] = {
                f"{p}x{r}": float(true_steps(task, p, r, thr)) for p, r in ph["grid"]}
        if ph["axis"] == "iso_batch":
            entry["iso_batch_S"] = entry["S_by_config"]
        phases[phase] = entry
    gt = {"model": model, "phases": phases,
          "rho": {name: t["rho"] for name, t in TASKS.items()}}
    if simulated is not None:
        gt["runs"] = {}
        for sim in simulated:
            spec, task = sim.spec, sim.spec.task
            s_true = {threshold_key(thr): float(true_steps(task, spec.n_prompts, spec.n_rollouts,
                                                           thr, sim.speed))
                      for thr in task["thresholds"]}
            gt["runs"][spec.run_id] = {
                "name": spec.name, "phase": spec.phase, "seed": spec.seed,
                "n_prompts": spec.n_prompts, "n_rollouts": spec.n_rollouts,
                "total_batch": spec.total_batch, "speed_r": sim.speed,
                "total_training_steps": sim.total_steps, "last_step": sim.last_step,
                "state": sim.state, "path": f"wandb/{spec.dir_name}/run-{spec.run_id}.wandb",
                "S_true": s_true,
                "last_eval_step": sim.last_eval_step,
                # the noiseless curve crosses the target before the last evaluation
                "reached": {k: v <= sim.last_eval_step for k, v in s_true.items()},
            }
    return gt


def _rk4_crossing(task: dict, b_eff: float, tau_thr: float, h: float = 0.25) -> float:
    """Steps to tau_thr by integrating dtau/ds = 1 / (1 + B0(tau)/B_eff) numerically (r = 1).

    Independent of the closed form: fixed RK4 steps up to the crossing, then bisection on
    the length of the last RK4 step.
    """
    def f(t: float) -> float:
        return 1.0 / (1.0 + task["B00"] * (1.0 + t / task["taub"]) / b_eff)

    def rk4(t: float, dh: float) -> float:
        k1 = f(t)
        k2 = f(t + 0.5 * dh * k1)
        k3 = f(t + 0.5 * dh * k2)
        k4 = f(t + dh * k3)
        return t + dh / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    s, tau = 0.0, 0.0
    while (nxt := rk4(tau, h)) < tau_thr:
        s, tau = s + h, nxt
    lo, hi = 0.0, h
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rk4(tau, mid) < tau_thr else (lo, mid)
    return s + 0.5 * (lo + hi)


def check_ground_truth(gt: dict, rtol: float = 1e-6) -> None:
    """Re-derive the closed forms numerically; raise AssertionError on any mismatch.

    For every phase and threshold: the ODE crossing step (RK4, r = 1) equals the closed-form
    S of each grid point; along the prompt and rollout axes a straight-line fit of S on 1/B
    returns exactly S_min and S_min B_noise (S = S_min (1 + B_noise / B)).
    """
    for phase, entry in gt["phases"].items():
        task = TASKS[entry["task"]]
        for key, truth in entry["thresholds"].items():
            thr = float(key)
            tau_thr = tau_at_accuracy(task, thr)
            grid = [(g["n_prompts"], g["n_rollouts"]) for g in entry["grid"]]
            s_num = np.array([_rk4_crossing(task, float(effective_batch(task, p, r)), tau_thr)
                              for p, r in grid])
            s_cf = np.array([entry["S_by_config"][key][f"{p}x{r}"] for p, r in grid])
            assert np.allclose(s_num, s_cf, rtol=rtol), (phase, key, s_num, s_cf)
            # the inverse used by the simulation lands exactly on the target
            tau_back = tau_after_steps(task, np.array(grid)[:, 0], np.array(grid)[:, 1], s_cf)
            assert np.allclose(tau_back, tau_thr, rtol=1e-12), (phase, key)
            if entry["axis"] == "iso_batch":
                continue
            inv_b = 1.0 / np.array([p * r for p, r in grid], dtype=float)
            slope, intercept = np.polyfit(inv_b, s_num, 1)
            assert math.isclose(intercept, truth["S_min"], rel_tol=rtol), (phase, key, intercept)
            assert math.isclose(slope / intercept, truth["B_noise"], rel_tol=rtol), (phase, key)
            assert math.isclose(truth["E_min"], truth["S_min"] * truth["B_noise"], rel_tol=1e-12)


# ----------------------------------------------------------------------------------------
# Writing real W&B offline runs
# ----------------------------------------------------------------------------------------
def wandb_settings():
    """Settings that keep the file small and free of host, user and path information."""
    import wandb

    return wandb.Settings(
        x_disable_stats=True,  # no system metrics (GPU/CPU/disk) records
        x_disable_meta=True,  # no metadata record (host, user, program path, args, git)
        x_disable_machine_info=True,
        x_save_requirements=False,
        x_server_side_derived_summary=True,  # no per-step summary record (halves the size)
        console="off",
        save_code=False,
        disable_code=True,
        disable_git=True,
        disable_job_creation=True,
        host=HOST,  # the run record otherwise carries the real host name
        silent=True,
        quiet=True,
    )


@contextlib.contextmanager
def _fixed_start_time(start: float) -> Iterator[None]:
    """Make the run record carry `start` as start time (wandb always uses time.time()).

    Replicates are ordered by start time downstream, so it must not depend on when the
    demo was generated. If the private hook moved in a future wandb, runs keep the real
    start time (still in generation order).
    """
    try:
        from wandb.sdk.interface.interface import InterfaceBase

        original = InterfaceBase._make_run
    except (ImportError, AttributeError):
        yield
        return

    def _make_run(self, run):
        record = original(self, run)
        record.start_time.FromMicroseconds(int(round(start * 1e6)))
        return record

    InterfaceBase._make_run = _make_run
    try:
        yield
    finally:
        InterfaceBase._make_run = original


@contextlib.contextmanager
def _clean_wandb_env() -> Iterator[None]:
    """No WANDB_* variable of the caller (entity, user, dirs...) may leak into the runs."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    for k in saved:
        del os.environ[k]
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("WANDB_")]:
            del os.environ[k]
        os.environ.update(saved)


def _last_record_type(path: Path) -> str | None:
    """Type of the last whole record of a .wandb file (LevelDB-log framing), None if none.

    Only a completeness check for the files this script writes (the data layer has the
    real reader): a file is complete when its last record is the run's `exit` record.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if len(data) < 7 or data[:4] != b":W&B":
        return None
    block, pos, pending, last = 32768, 7, b"", None
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length:
            break
        pos += 7 + length
        if kind in (1, 2):  # FULL, FIRST
            pending = chunk
        elif kind in (3, 4):  # MIDDLE, LAST
            pending += chunk
        if kind in (1, 4) and pending:
            record = pb.Record()
            record.ParseFromString(pending)
            last, pending = record.WhichOneof("record_type"), b""
    return last


def write_runs(sims: list[SimulatedRun], dest: Path) -> list[Path]:
    """Log simulated runs with the wandb SDK (offline) and keep only their .wandb files.

    Returns dest/wandb/offline-run-<fixed ts>-<id>/run-<id>.wandb for each run. The runs are
    written sequentially in one process into a scratch directory; wandb.teardown() then stops
    the wandb service, because run.finish() can return before the service has flushed the
    last block of the file.
    """
    import wandb

    targets = []
    with tempfile.TemporaryDirectory(prefix="cbs_demo_") as tmp, _clean_wandb_env():
        for sim in sims:
            spec = sim.spec
            with _fixed_start_time(spec.start_time):
                run = wandb.init(mode="offline", dir=tmp, project=PROJECT, name=spec.name,
                                 id=spec.run_id, config=sim.config, settings=wandb_settings(),
                                 tags=list(getattr(spec, "tags", ()) or ()) or None,
                                 group=getattr(spec, "group", None))
            for step, metrics in sim.rows:
                run.log(metrics, step=step)  # one call per step, as verl does
            # what the client would have derived: the last value of every key
            last: dict = {}
            for _, metrics in sim.rows:
                last.update(metrics)
            run.summary.update({k: v for k, v in last.items() if not k.startswith("_")})
            run.finish(exit_code=1 if spec.fails else 0)
        wandb.teardown()
        for sim in sims:
            spec = sim.spec
            pattern = f"wandb/offline-run-*-{spec.run_id}/run-{spec.run_id}.wandb"
            produced = list(Path(tmp).glob(pattern))
            if len(produced) != 1:
                raise RuntimeError(f"expected one .wandb file for {spec.run_id}, found {produced}")
            if _last_record_type(produced[0]) != "exit":
                raise RuntimeError(f"{produced[0].name} is incomplete (no final exit record)")
            target_dir = Path(dest) / "wandb" / spec.dir_name
            if target_dir.exists():
                shutil.rmtree(target_dir)
            target_dir.mkdir(parents=True)
            target = target_dir / f"run-{spec.run_id}.wandb"
            shutil.copyfile(produced[0], target)
            targets.append(target)
    return targets


def write_run(sim: SimulatedRun, dest: Path) -> Path:
    """Write one simulated run (see write_runs)."""
    return write_runs([sim], dest)[0]


def _select(specs: list[RunSpec], only: list[str]) -> list[RunSpec]:
    chosen = [s for s in specs if s.run_id in only or s.name in only]
    unknown = set(only) - {s.run_id for s in chosen} - {s.name for s in chosen}
    if unknown:
        raise SystemExit(f"unknown run id or name: {', '.join(sorted(unknown))}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_DIR,
                        help="directory receiving wandb/ and ground_truth.json "
                             "(default: beside this script)")
    parser.add_argument("--only", nargs="+", metavar="RUN", default=None,
                        help="regenerate only these runs (id or name); others are left alone")
    parser.add_argument("--check", action="store_true", help="only verify the ground truth")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    specs = sweep()
    sims = [simulate_run(s) for s in specs]
    gt = ground_truth(sims)
    check_ground_truth(gt)
    if args.check:
        print(f"ground truth verified for {len(gt['phases'])} phases "
              f"({time.perf_counter() - t_start:.1f} s)")
        return 0

    out: Path = args.out
    todo = sims
    if args.only:
        chosen = {s.run_id for s in _select(specs, args.only)}
        todo = [s for s in sims if s.spec.run_id in chosen]
    else:
        shutil.rmtree(out / "wandb", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_runs(todo, out)
    (out / "ground_truth.json").write_text(json.dumps(gt, indent=1) + "\n")

    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    n_bytes = sum(f.stat().st_size for f in files)
    per_phase: dict[str, int] = {}
    for s in specs:
        per_phase[s.phase] = per_phase.get(s.phase, 0) + 1
    print(f"wrote {len(todo)} run(s); {len(files)} runs in {out / 'wandb'} "
          f"({', '.join(f'{p}: {n}' for p, n in per_phase.items())}); "
          f"{n_bytes} bytes ({n_bytes / 1e6:.2f} MB); {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
