"""A large verl-style sweep as an export directory, for `make report` at scale (issue 20).

    python tests/sweeps scale DEST --runs 2000 --steps 2000 [--keys 40] [--one-run-rows N]

DEST/runs.csv and DEST/history/<run_id>.parquet: p1-style runs (n_rollouts 8, n_prompts on a
log grid, two or more seeds each), each logging `--keys` training keys at every step as verl does
(actor/*, critic/*, response_length/*, timing_s/*, perf/*: most of them not used by the
analysis) and the gsm8k validation key every 10 steps, from make_demo's model. `--one-run-rows`
writes instead one run with that many history rows (the 10^6-row case).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

N_VAL = 1319
VAL = "val-core/openai/gsm8k/reward/mean@1"
_USED = ["actor/grad_norm", "actor/entropy", "critic/score/mean", "perf/time_per_step",
         "perf/throughput", "perf/total_num_tokens", "timing_s/step"]
_UNUSED = ["actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/lr", "actor/kl_loss",
           "actor/kl_coef", "actor/pg_clipfrac_lower", "critic/score/max", "critic/score/min",
           "critic/rewards/mean", "critic/rewards/max", "critic/rewards/min",
           "critic/advantages/mean", "critic/advantages/max", "critic/advantages/min",
           "critic/returns/mean", "critic/returns/max", "critic/returns/min",
           "response_length/mean", "response_length/max", "response_length/min",
           "response_length/clip_ratio", "prompt_length/mean", "prompt_length/max",
           "prompt_length/min", "prompt_length/clip_ratio", "timing_s/gen", "timing_s/ref",
           "timing_s/adv", "timing_s/update_actor", "timing_s/old_log_prob",
           "timing_per_token_ms/gen", "timing_per_token_ms/update_actor", "perf/max_memory_allocated_gb",
           "perf/max_memory_reserved_gb", "perf/cpu_memory_used_gb", "perf/mfu/actor",
           "global_seqlen/mean", "global_seqlen/max", "global_seqlen/min", "global_seqlen/balanced_max",
           "mfu/actor", "response/aborted_ratio"]


def _model():
    from testkit import load_make_demo

    return load_make_demo("make_demo_for_scale")  # the demo's own simulation model


def _history(md, n_prompts: int, n_steps: int, n_keys: int, rng) -> pd.DataFrame:
    task = md.TASKS["gsm8k"]
    steps = np.arange(n_steps + 1, dtype=np.int64)
    tau = md.tau_after_steps(task, n_prompts, 8, steps, r=float(rng.lognormal(0, md.SPEED_SIGMA)))
    acc = np.full(steps.size, np.nan)
    evals = steps % 10 == 0
    acc[evals] = rng.binomial(N_VAL, md.accuracy(task, tau[evals])) / N_VAL
    columns = {"_step": steps, "training/global_step": steps, VAL: acc}
    for key in (_USED + _UNUSED)[:max(n_keys - 2, 1)]:
        values = rng.normal(1.0, 0.1, steps.size)
        if key in ("perf/time_per_step", "timing_s/step"):
            values = md.STEP_TIME_BASE_S + md.STEP_TIME_PER_SAMPLE_S * n_prompts * 8 * rng.lognormal(0, 0.05, steps.size)
        values[0] = np.nan  # step 0 is the validation before training
        columns[key] = values
    return pd.DataFrame(columns)


def write_sweep(dest: Path, n_runs: int, n_steps: int, n_keys: int = 40, one_run_rows: int = 0) -> Path:
    md = _model()
    (dest / "history").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if one_run_rows:
        specs = [(64, 0)]
        n_steps = one_run_rows - 1
    else:
        grid = np.unique(np.round(np.geomspace(4, 4096, max(n_runs // 2, 1))).astype(int))
        seeds = -(-n_runs // grid.size)  # at least two per batch size, more where the grid is short
        specs = sorted([(int(n), s) for s in range(max(seeds, 2)) for n in grid][:n_runs])
    rows = []
    for i, (n_prompts, seed) in enumerate(specs):
        run_id = f"scale{i:05d}"
        name = f"cbs_p1_np{n_prompts}_nr8"
        config = {"data": {"train_batch_size": n_prompts}, "actor_rollout_ref": {
            "rollout": {"n": 8}, "actor": {"optim": {"lr": 1e-6}}},
            "trainer": {"n_gpus_per_node": 8, "nnodes": 1, "test_freq": 10, "total_training_steps": n_steps},
            "seed": seed}
        rows.append({"run_id": run_id, "name": name, "state": "finished",
                     "start_time": f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "config": json.dumps(config)})
        _history(md, n_prompts, n_steps, n_keys, rng).to_parquet(dest / "history" / f"{run_id}.parquet", index=False)
    pd.DataFrame(rows).to_csv(dest / "runs.csv", index=False)
    return dest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--one-run-rows", type=int, default=0)
    args = parser.parse_args(argv)
    write_sweep(args.dest, args.runs, args.steps, args.keys, args.one_run_rows)
    return 0

