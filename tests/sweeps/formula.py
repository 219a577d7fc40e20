"""Synthetic sweeps with a known truth, for the fit and plan tests.

Two kinds:
- `pooled_arrays(...)`: the arrays a fit takes (fit_arrays) drawn straight from the general form
  S_j(B) = S_min,j (1 + (B_noise,j / B)^alpha) with log B_noise linear in the target, a per-run
  effect shared across its targets and cell noise, runs censored at a step budget: fast, for the
  engine's recovery and coverage tests.
- `grpo_sweep(...)`: runs and histories in the snapshot schema, along any set of (n_prompts,
  n_rollouts), from the demo's progress model (data/demo/README.md): steps follow McCandlish at
  every target with the effective batch B_eff = n_p n_r / (1 + (n_r - 1) rho), optionally slowed
  at few rollouts (`penalty`: a group of n_r rollouts makes (1 - penalty / n_r) of a step's
  progress, the share GRPO's group baseline and all-equal groups leave), Binomial eval noise, a per-run
  speed, step times (a + b B) x lognormal. `true_steps` / `true_hours` give its truth anywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

METRIC = "val-core/openai/gsm8k/reward/mean@1"
A0, AMAX, TAU0, N_VAL, EVAL_EVERY = 0.12, 0.80, 30.0, 1319, 5


def pooled_arrays(seed: int, alpha: float = 1.0, b_noise: float = 300.0, rise: float = 1.0, n_seeds: int = 2,
                  sizes=(32, 64, 128, 256, 512, 1024, 2048), thresholds=(0.3, 0.4, 0.5, 0.6, 0.7),
                  sd: float = 0.06, run_sd: float = 0.04, budget_factor: float | None = 1.2) -> dict:
    """Arrays for fit_arrays and their truth: B_noise at the middle target `b_noise`, rising by the
    factor `rise` from the lowest target to the highest; S_min from 20 to 200 steps; each run's log S
    = curve + its own effect (sd run_sd, shared by its targets) + cell noise (sd sd); runs stopped at
    budget_factor x the truth's S at the top target and middle batch (None: never)."""
    rng = np.random.default_rng(seed)
    thr = np.asarray(thresholds, dtype=float)
    z = thr - thr.mean()
    span = thr.max() - thr.min()
    bn = b_noise * rise ** (z / span)
    s_min = np.geomspace(20, 200, len(thr))
    B = np.repeat(np.asarray(sizes, dtype=float), n_seeds)
    mu = np.log(s_min)[None, :] + np.log1p((bn[None, :] / B[:, None]) ** alpha)
    Y = mu + run_sd * rng.standard_normal((len(B), 1)) + sd * rng.standard_normal(mu.shape)
    if budget_factor is None:
        bounds = np.full(len(B), np.inf)
    else:
        mid = np.asarray(sizes, dtype=float)[len(sizes) // 2]
        top = math.log(s_min[-1]) + math.log1p((bn[-1] / mid) ** alpha)
        bounds = np.full(len(B), top + math.log(budget_factor))
    C = Y > bounds[:, None]
    Y = np.where(C, bounds[:, None], Y)
    W = np.full(Y.shape, 1.0 / n_seeds)
    groups = np.array([f"{b:g}" for b in B])
    return {"B": B, "Y": Y, "C": C, "W": W, "groups": groups, "bounds": bounds, "thresholds": list(thr),
            "truth": {"B_noise": bn, "S_min": s_min, "alpha": alpha, "rise": rise}}


# ------------------------------------------------------------------------------------------
# Runs in the snapshot schema
# ------------------------------------------------------------------------------------------
def model(seed: int, rho: float = 0.15, penalty: float = 0.0, b00: float | None = None, taub: float = 40.0,
          a: float | None = None, b: float | None = None) -> dict:
    rng = np.random.default_rng([11, seed])
    return {"B00": float(b00 if b00 is not None else np.exp(rng.uniform(np.log(24), np.log(240)))), "taub": taub,
            "rho": rho, "penalty": penalty, "a": float(a if a is not None else rng.uniform(5, 30)),
            "b": float(b if b is not None else np.exp(rng.uniform(np.log(0.01), np.log(0.08)))),
            "time_sd": 0.05, "speed_sd": 0.03}


def _tau(thr: float) -> float:
    return -TAU0 * math.log1p(-(thr - A0) / (AMAX - A0))


def _rate(m: dict, n_r) -> np.ndarray:
    return 1.0 - m["penalty"] / np.asarray(n_r, dtype=float)


def true_steps(m: dict, thr: float, n_p, n_r) -> np.ndarray:
    """The noise-free steps to `thr` at (n_prompts, n_rollouts): McCandlish in the effective batch,
    slowed by the few-rollout penalty."""
    n_p, n_r = np.asarray(n_p, dtype=float), np.asarray(n_r, dtype=float)
    tau = _tau(thr)
    k = m["B00"] * (1 + (n_r - 1) * m["rho"]) / (n_p * n_r)
    return (tau + k * (tau + tau * tau / (2 * m["taub"]))) / _rate(m, n_r)


def true_hours(m: dict, thr: float, n_p, n_r) -> np.ndarray:
    B = np.asarray(n_p, dtype=float) * np.asarray(n_r, dtype=float)
    return true_steps(m, thr, n_p, n_r) * (m["a"] + m["b"] * B) * math.exp(m["time_sd"] ** 2 / 2) / 3600


def run(m: dict, phase: str, n_p: int, n_r: int, seed, run_id: str, last: int) -> tuple[dict, pd.DataFrame]:
    """One run evaluated every EVAL_EVERY steps up to step `last`; `seed` fixes it, so the same seed
    with a larger `last` is the same run trained further."""
    rng = np.random.default_rng([17, *np.atleast_1d(seed)])
    B = n_p * n_r
    speed = rng.lognormal(0, m["speed_sd"]) * float(_rate(m, n_r))
    steps = np.arange(last + 1)
    k = m["B00"] * (1 + (n_r - 1) * m["rho"]) / B
    qa, qb = k / (2 * m["taub"]), 1 + k
    tau = 2 * speed * steps / (qb + np.sqrt(qb * qb + 4 * qa * speed * steps))
    evals = (steps % EVAL_EVERY == 0) | (steps == last)
    acc = np.full(last + 1, np.nan)
    acc[evals] = rng.binomial(N_VAL, A0 + (AMAX - A0) * (1 - np.exp(-tau[evals] / TAU0))) / N_VAL
    step_time = (m["a"] + m["b"] * B) * np.random.default_rng([19, *np.atleast_1d(seed)]).lognormal(
        0, m["time_sd"], last + 1)
    step_time[0] = np.nan
    meta = {"run_id": run_id, "name": f"cbs_{phase}_np{n_p}_nr{n_r}", "phase": phase, "n_prompts": n_p,
            "n_rollouts": n_r, "total_batch": B, "replicate": 0, "n_replicates": 1, "state": "finished",
            "n_gpus": 8, "flags": ""}
    return meta, pd.DataFrame({"run_id": run_id, "step": steps, METRIC: acc, "perf/time_per_step": step_time})


def grpo_sweep(m: dict, configs: dict, seed: int, thresholds=(0.4, 0.5, 0.6), n_seeds: int = 1,
               budget: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """configs: {phase: [(n_prompts, n_rollouts), ...]}; every run goes on to `budget` steps (default:
    1.3 x the slowest configuration's steps to the top target, so every run reaches it). Run k of a
    configuration has seed (seed, n_prompts, n_rollouts, k): `run` with it and a later stop extends it."""
    top = max(thresholds)
    if budget is None:
        budget = int(1.3 * max(float(true_steps(m, top, p, r)) for cs in configs.values() for p, r in cs)) + 10
    metas, hists = [], []
    for phase, cs in configs.items():
        for p, r in cs:
            for k in range(n_seeds):
                meta, h = run(m, phase, p, r, (seed, p, r, k), f"{phase}_{p}x{r}_{k}", budget)
                meta["replicate"] = k
                metas.append(meta)
                hists.append(h)
    return pd.DataFrame(metas), pd.concat(hists, ignore_index=True)
