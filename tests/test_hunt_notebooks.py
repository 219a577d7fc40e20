"""Every section notebook over generated sweeps with verl's habits (issue 9's hunt, through the
real notebooks): the cells run in-process as `make report` runs them (tests/notebook_exec.py), on
sweeps chosen out of the generator's 200 so that every kind of trouble is met twice and every
habit three times (`sweeps.generated.notebook_hunt_seeds`; CBS_HUNT_SWEEPS=200 runs all of them)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from sweeps.generated import notebook_hunt_seeds, sweep_features
from testkit import in_two_processes

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

N_HUNT = int(os.environ.get("CBS_HUNT_SWEEPS", "10"))
DRAW_EVERY = 4  # every 4th sweep renders its figures to PNG (the others skip the draw)
HABITS = ("habit:lr_sweep", "habit:resumed", "habit:updates_per_step", "habit:dynamic_sampling",
          "habit:timers", "habit:select_by_tag")


def _hunt_notebooks(job: tuple[int, bool]) -> list[str]:
    from notebook_exec import hunt_sweep

    seed, draw = job
    return hunt_sweep(seed, n_bootstrap=20, draw=draw)


def test_every_notebook_cell_runs_on_generated_sweeps_with_verl_habits():
    """The real section notebooks (01-08 and the summary) over generated sweeps that meet every
    kind of trouble twice and every verl habit (learning-rate sweeps, resumed runs, updates per
    step, dynamic sampling, timers, tag selection) three times: no cell raises, no project code
    warns, every input run is accounted for, every written interval holds its estimate, statuses
    and plan bases are from the documented sets."""
    seeds = list(range(200)) if N_HUNT >= 200 else notebook_hunt_seeds(N_HUNT)
    jobs = [(seed, i % DRAW_EVERY == 0) for i, seed in enumerate(seeds)]
    problems = [line for lines in in_two_processes(_hunt_notebooks, jobs) for line in lines]
    assert not problems, "\n".join(problems[:20])
    habits = Counter(f for s in seeds for f in sweep_features(s) if f.startswith("habit:"))
    assert all(habits[h] >= 3 for h in HABITS), habits
