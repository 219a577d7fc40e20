"""The benchmarks' sweeps (benchmarks/run.py), all from make_demo's model.

- `write_sweep`: a large verl-style sweep as an export directory, for `make report` at scale
  (issue 20; the command line below);
- `write_offline_p1`: p1-style runs of a fixed length written by the wandb SDK (the snapshot bench);
- `synthetic_phase`: runs + history frames in the snapshot schema (the analysis and progress-model
  benches);
- `served_runs`: runs for the local W&B endpoint, rows computed on request (the fetch bench).

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


# --------------------------------------------------------------------------------------------
# The benchmarks' other sweeps: SDK files, snapshot frames, runs served by the local endpoint
# --------------------------------------------------------------------------------------------
def write_offline_p1(dest: Path, n_runs: int, n_steps: int) -> list[Path]:
    """n_runs p1-style runs of exactly n_steps steps, written by the wandb SDK (make_demo's model and
    writer; run it in a subprocess with a clean WANDB_* environment)."""
    md = _model()
    md.PHASES["p1"]["cap"] = n_steps  # make every run exactly n_steps long
    md.MAX_STEPS_FACTOR, md.MAX_STEPS_EXTRA = 0.0, n_steps
    sizes = (8, 16, 32, 64, 128, 256, 512, 1024)
    specs = [md.RunSpec("p1", sizes[i % len(sizes)], 8, i // len(sizes), md.SWEEP_START + i * 3600)
             for i in range(n_runs)]
    return md.write_runs([md.simulate_run(s) for s in specs], Path(dest))


def synthetic_phase(n_runs: int, n_evals: int, seed: int = 0, test_freq: int = 5):
    """runs + history frames in the snapshot schema: n_runs prompt-axis runs (n_rollouts 8, every
    run its own batch size, so every run goes through the eval-noise bootstrap), each with
    n_evals validation points of make_demo's gsm8k model observed as Binomial(1319, acc)/1319."""
    import numpy as np
    import pandas as pd

    md = _model()
    task = md.TASKS["gsm8k"]
    rng = np.random.default_rng(seed)
    n_prompts = np.unique(np.round(np.geomspace(4, 4096, 4 * n_runs)).astype(int))
    n_prompts = np.sort(rng.choice(n_prompts, size=n_runs, replace=False))
    steps = np.arange(n_evals, dtype=np.int64) * test_freq
    run_ids = [f"syn{i:05d}" for i in range(n_runs)]
    frames = []
    for rid, n_p in zip(run_ids, n_prompts, strict=True):
        tau = md.tau_after_steps(task, n_p, 8, steps, r=float(rng.lognormal(0, md.SPEED_SIGMA)))
        acc = rng.binomial(N_VAL, md.accuracy(task, tau)) / N_VAL
        frames.append(pd.DataFrame({"run_id": rid, "step": steps, VAL: acc}))
    history = pd.concat(frames, ignore_index=True)
    runs = pd.DataFrame({
        "run_id": run_ids, "name": [f"cbs_p1_np{n}_nr8" for n in n_prompts], "phase": "p1",
        "n_prompts": pd.array(n_prompts, dtype="Int64"), "n_rollouts": pd.array([8] * n_runs, dtype="Int64"),
        "total_batch": pd.array(n_prompts * 8, dtype="Int64"), "replicate": 0, "n_replicates": 1,
        "state": "finished", "flags": "",
    })
    return runs, history


def _extra_keys(n: int) -> list[str]:
    """Names like verl's other logged keys, none matched by the analysis' key patterns."""
    stems = ["actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/lr", "actor/kl_loss",
             "critic/rewards/mean", "critic/rewards/max", "critic/advantages/mean", "critic/returns/mean",
             "response_length/mean", "response_length/max", "response_length/clip_ratio",
             "prompt_length/mean", "timing_s/gen", "timing_s/old_log_prob", "timing_s/ref",
             "timing_s/adv", "timing_s/update_actor", "timing_per_token_ms/gen", "mfu/actor"]
    return [stems[i] if i < len(stems) else f"{stems[i % len(stems)]}_{i // len(stems)}" for i in range(n)]


def served_runs(n_runs: int, n_steps: int, n_extra_keys: int = 100) -> list:
    """The served sweep: p1-style runs logging ~112 keys per step, history generated on request."""
    import numpy as np
    from wandb_server import ServedRun

    extra = _extra_keys(n_extra_keys)

    class BenchRun(ServedRun):
        """A ServedRun whose rows are computed from a few arrays when asked for (not stored)."""

        def _row(self, step: int) -> dict:
            row = {"_step": step, "_timestamp": 1.7e9 + 30.0 * step, "_runtime": 30.0 * step}
            if step % 5 == 0:
                row[VAL] = float(self.acc[step])
                row["val-aux/openai/gsm8k/reward/std@1"] = 0.3
            if step > 0:
                x = float(self.noise[step])
                row.update({"training/global_step": step, "critic/score/mean": float(self.acc[step]) + 0.05,
                            "actor/entropy": 0.5 * x, "actor/grad_norm": 0.3 * x, "perf/time_per_step": 30.0 * x,
                            "perf/throughput": 1000.0 * x, "perf/total_num_tokens": 300000,
                            "timing_s/step": 30.0 * x, "grad_noise/B_noise_estimate": 150.0 * x,
                            "grad_noise/grad_norm": 0.3 * x})
                for i, key in enumerate(extra):
                    row[key] = i + x
            return row

        @property
        def last_step(self) -> int:
            return self.n_steps

        @property
        def n_rows(self) -> int:
            return self.n_steps + 1

        def live_rows(self) -> list[dict]:
            return [self._row(s) for s in range(self.n_steps + 1)]

        def history_keys(self) -> dict:
            keys = set(self._row(self.n_steps)) | set(self._row(self.n_steps - self.n_steps % 5))
            counts = {k: self.n_steps // 5 + 1 if k.startswith("val-") else self.n_steps for k in keys}
            return {"keys": {k: {"typeCounts": [{"type": "number", "count": c}]} for k, c in sorted(counts.items())},
                    "lastStep": self.n_steps}

        def summary_metrics(self) -> dict:
            return {**self._row(self.n_steps - self.n_steps % 5), **self._row(self.n_steps)}

    sizes = (8, 16, 32, 64, 128, 256, 512, 1024)
    runs = []
    for index in range(n_runs):
        n_p = sizes[index % len(sizes)]
        run = BenchRun(run_id=f"run{index:04d}", name=f"cbs_p1_np{n_p}_nr8", rows=[],
                       config={"data": {"train_batch_size": n_p, "max_prompt_length": 512},
                               "actor_rollout_ref": {"rollout": {"n": 8}},
                               "trainer": {"n_gpus_per_node": 8, "nnodes": 1}},
                       created_at=f"2026-01-01T{index // 60 % 24:02d}:{index % 60:02d}:00Z",
                       heartbeat_at=f"2026-01-02T{index // 60 % 24:02d}:{index % 60:02d}:00Z")
        rng = np.random.default_rng(index)
        tau = np.arange(n_steps + 1) * (n_p / (n_p + 96.0))
        run.n_steps = n_steps
        run.acc = np.round(0.12 + 0.68 * (1 - np.exp(-tau / 30.0)) + rng.normal(0, 0.01, n_steps + 1), 4)
        run.noise = np.round(rng.lognormal(0, 0.05, n_steps + 1), 5)
        runs.append(run)
    return runs


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

