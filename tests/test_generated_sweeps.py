"""Hunting crash classes with generated sweeps (issue 9): the analysis over generated sweeps in
memory, the modules the notebooks call step by step (tests/sweep_analysis.py), with every figure
drawn on some. The sweeps are chosen out of 200 so that every kind of trouble the generator draws
is met (`sweeps.generated.covering_seeds`), and none is one the notebook hunt (test_hunt_notebooks.py)
already runs; CBS_HUNT_SWEEPS=200 hunts over all of them.

The invariants: no exception, no warning from the project's code, every interval holding its
estimate, statuses from the documented set, every log axis with at least two tick labels. Each
crash class the hunt found has a minimal reproducer below, kept as a regression test. The whole
`make report` over generated sweeps: test_generated_reports.py.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sweep_analysis import analyse_sweep
from sweeps.form import snapshot_frames
from sweeps.generated import covering_seeds, generate_sweep, notebook_hunt_seeds, sweep_features
from testkit import in_two_processes

from cbs_rlvr.fit.phase import FIT_STATUSES

POOL = 200  # the sweeps the generator draws from; the hunts take a covering subset
N_HUNT = int(os.environ.get("CBS_HUNT_SWEEPS", "7"))
DRAW_EVERY = 2  # every 2nd hunted sweep also builds and renders every figure (checks the log axes)


def _hunt_seeds(n: int = N_HUNT) -> list[int]:
    """Every feature of the pool at least once, in sweeps the notebook hunt does not run."""
    if n >= POOL:
        return list(range(POOL))
    return covering_seeds(n, POOL, min_count=1, exclude=notebook_hunt_seeds())


# ------------------------------------------------------------------------------------------
# Sweeps in memory
# ------------------------------------------------------------------------------------------
def _analyse(job: tuple[int, bool]):
    seed, draw = job
    sweep = generate_sweep(seed)
    return sweep, analyse_sweep(sweep, snapshot_frames(sweep), n_bootstrap=20, seed=seed, draw=draw or None)


@pytest.fixture(scope="module")
def hunted():
    seeds = _hunt_seeds()
    done = in_two_processes(_analyse, [(seed, i % DRAW_EVERY == 0) for i, seed in enumerate(seeds)])
    return {"results": [r for _, r in done], "sweeps": [s for s, _ in done]}


@pytest.mark.slow
def test_the_generator_draws_every_kind_of_trouble():
    """What the issue lists, each drawn at least a few times over the 200 sweeps of the pool."""
    pool = [generate_sweep(seed) for seed in range(POOL)]
    seen = Counter(f for s in pool for f in set(s.features))
    wanted = ["prompts:normal", "rollouts:normal", "iso_batch:normal", "prompts:one", "rollouts:two",
              "prompts:empty", "state:running", "state:crashed", "state:failed", "state:killed",
              "acc:percent", "acc:nan_points", "acc:string_nan", "acc:none_points", "acc:inf_points",
              "acc:all_nan", "acc:no_val", "eval:irregular", "eval:sparse", "no_step_time",
              "no_grad_norm", "grad_noise", "config:no_batch", "config:no_rollout_n",
              "config:no_gpus", "config:empty", "config:mismatch", "config:strings", "config:dotted",
              "name:unparseable", "name:suffix", "orphan_phase", "second_val_key"]
    rare = {f: seen[f] for f in wanted if seen[f] < 3}
    assert not rare, rare
    replicates = Counter(len(s.runs) > len({(r["phase"], r["n_prompts"], r["n_rollouts"]) for r in s.runs})
                         for s in pool)
    assert replicates[True] >= 50  # sweeps with replicates


@pytest.mark.slow
def test_the_hunt_meets_every_kind_of_trouble_and_every_outcome(hunted):
    """The hunted subset: every feature of the pool at least once, runs censored at some target
    beside runs reaching it, and every fit status."""
    pool = Counter(f for seed in range(POOL) for f in sweep_features(seed))
    seen = Counter(f for s in hunted["sweeps"] for f in set(s.features))
    assert {f: seen[f] for f in pool if seen[f] < 1} == {}
    fits = [t for r in hunted["results"] for (_, name), t in r.tables.items() if name == "cbs_fit"]
    censored = sum(int(t["n_censored"].sum()) for t in fits)
    assert len(fits) >= len(hunted["sweeps"]) and censored >= len(hunted["sweeps"])
    statuses = Counter(s for t in fits for s in t["status"])
    assert all(statuses[s] >= 1 for s in FIT_STATUSES), statuses


def _problems(hunted) -> list[str]:
    return [p.line() for r in hunted["results"] for p in r.problems]


def test_no_crash_and_no_broken_invariant_in_the_analysis_of_the_hunted_sweeps(hunted):
    """No exception in any module the notebooks call, no warning from the project's code, and
    no broken invariant (intervals, statuses, accounting, log axes) over the hunted sweeps."""
    problems = _problems(hunted)
    assert not problems, "\n".join(problems[:20])
    assert sum(r.n_figures for r in hunted["results"]) >= 10  # the drawn subset did draw


# ------------------------------------------------------------------------------------------
# Minimal reproducers of crash classes the hunt found (regression tests)
# ------------------------------------------------------------------------------------------
def test_phase_runs_with_only_a_second_task_logged():
    """Generated sweeps 13 and 256: every run of a phase lost its GSM8K evals (NaN) but also
    validated on MATH. The run is valid data (it is in the snapshot), yet every notebook of
    the phase stops in its first cell with "no column matching 'val-core/*/reward/mean@*'
    contains 'gsm8k'"; the phase should say it has no run with its metric instead."""
    from cbs_rlvr.measure.crossings import phase_runs

    runs = pd.DataFrame({"run_id": ["a"], "phase": ["p1"]})
    history = pd.DataFrame({"run_id": ["a", "a"], "step": [0, 5],
                            "val-core/openai/gsm8k/reward/mean@1": [np.nan, np.nan],
                            "val-core/HuggingFaceH4/MATH-500/reward/mean@1": [0.2, 0.3]})
    params = {"phase": "p1", "metric": "val-core/*/reward/mean@*", "prefer_source": "gsm8k"}
    _, _, metric = phase_runs(runs, history, params)
    assert "gsm8k" in metric


def test_fastest_batch_without_gpu_counts():
    """Generated sweep 219 (one run's config lacks trainer.n_gpus_per_node): 06_wall_clock
    stops in its answer cell with "TypeError: boolean value of NA is ambiguous"."""
    from cbs_rlvr.measure.wallclock import fastest_batch, wall_clock_table

    metric = "val-core/x/reward/mean@1"
    runs = pd.DataFrame({"run_id": ["a", "b"], "name": ["cbs_p1_np8_nr4", "cbs_p1_np16_nr4"],
                         "n_prompts": pd.array([8, 16], dtype="Int64"),
                         "n_rollouts": pd.array([4, 4], dtype="Int64"),
                         "total_batch": pd.array([32, 64], dtype="Int64"),
                         "n_gpus": pd.array([8, None], dtype="Int64")})
    history = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "step": [0, 5, 10] * 2,
                            metric: [0.1, 0.4, 0.6, 0.1, 0.5, 0.7],
                            "perf/time_per_step": [np.nan, 10.0, 10.0] * 2})
    fastest = fastest_batch(wall_clock_table(runs, history, metric, [0.3]))
    row = next(fastest.itertuples())
    assert row.total_batch == 64  # b reaches 0.3 first
    assert fastest["gpu_hours"].dtype == float and not (row.gpu_hours == row.gpu_hours)
