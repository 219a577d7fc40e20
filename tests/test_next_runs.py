"""The next runs, closed loop (cbs_rlvr/nextruns.py): on generated sweeps with a known truth, run
the first suggestion (simulated from the generator's truth), refit, and compare what it bought
with what it promised and with the fixed rules a researcher might follow instead.

Sweeps: test_plan.py's formula generator (McCandlish S(B) with a per-run speed, Binomial eval
noise, step time a + b B), with the two smallest batch sizes stopped early in half of them (so
"extend run X" has something to extend). `closed_loop(sweeps)` takes any list of sweeps built by
`formula_sweep` (or of the same shape), so real-trainer sweeps can join the list.
The even sweeps decide at the top target (as params `decision_target` would), where the stopped
runs are censored, so "extend" competes there.
Cost: 40 sweeps x (5 fits at 200 bootstrap tables + one next_runs at 200 tables x 10 outcomes):
about 45 s on a quiet core, 150 s on the shared 2-core machine. Measured (40 sweeps): realised
narrowing per GPU-hour 0.49 for the first suggestion against 0.04 (repeat the sampled batch
nearest B_noise) and 0.04 (one octave beyond); 0.89 against 0.56 for extending the longest
stopped run where there is one; inside the predicted 80% band in 29 of 40 sweeps (72.5%).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_plan import METRIC, N_VAL, THRESHOLDS, draw_model, make_run, make_sweep

from cbs_rlvr.bootstrap import fit_phase
from cbs_rlvr.nextruns import (
    NEXT_RUNS_COLUMNS,
    _extension_rows,
    decision_target,
    fixed_rule_actions,
    next_runs,
    step_budget,
)
from cbs_rlvr.wallclock import step_time_model, step_time_table, wall_clock_table

N_LOOP = 40
K = 200
TARGET = max(THRESHOLDS)


def formula_sweep(seed: int) -> dict:
    """A sweep, as runs + full histories (each run's whole future: a run stopped early is its
    history cut at `last`), and the truth to simulate new runs from. Another class of sweep
    (a real trainer's) joins `closed_loop` as a dict of the same keys, plus `new_run(n_prompts,
    rng, run_id) -> (run, history)` that runs one more run of that trainer; its histories must
    reach as far as an extension may ask (runs + full + last as here)."""
    m = draw_model(seed)
    runs, history = make_sweep(m, 1000 + seed)
    rng = np.random.default_rng([7, seed])
    last = history.groupby("run_id")["step"].max().to_dict()
    if seed % 2 == 0:  # the smallest batch sizes stopped before reaching the top target
        for rid in runs.sort_values("total_batch")["run_id"].iloc[:2]:
            last[rid] = int(last[rid] * rng.uniform(0.35, 0.7))
    return {"seed": seed, "model": m, "runs": runs, "full": history, "last": last}


def _visible(sw: dict, last: dict) -> pd.DataFrame:
    h = sw["full"]
    return h[h["step"] <= h["run_id"].map(last)]


def _fit(runs, history, seed=0):
    sb, fit, draws = fit_phase(runs, history, METRIC, THRESHOLDS, N_VAL, n_bootstrap=K, seed=seed, return_draws=True)
    return sb, fit, draws


def _log_width(fit, t) -> float:
    """The log width of the 1/B fit's B_noise interval: what next_runs predicts (its refits are
    alpha = 1 refits; the reported interval also spans the general form's where the data cannot
    tell the shape, issue 16, and that part is not simulated)."""
    row = fit[fit["threshold"] == t].iloc[0]
    return (math.log(row["B_noise_mccandlish_hi"] / row["B_noise_mccandlish_lo"])
            if row["status"] in ("ok", "extrapolated") else np.nan)


def _realise(sw: dict, action: str, n_p: int, run_name: str, to_step: float, budget: float, t: float, w0: float):
    """Run the action in the generator's world, refit; (narrowing of the log width, GPU-hours)."""
    runs, last = sw["runs"], dict(sw["last"])
    full = sw["full"]
    if action == "new":
        rid = f"new{n_p}"
        # a sweep of another class (a real trainer) brings its own way to run one more run
        new_run = sw.get("new_run") or (lambda n, rng, run_id: make_run(sw["model"], n, rng, run_id))
        run, hist = new_run(n_p, np.random.default_rng([5, sw["seed"], n_p]), rid)
        # the new run goes on to its step budget (longer than the generator's own stop when needed)
        runs = pd.concat([runs, pd.DataFrame([run])], ignore_index=True)
        full = pd.concat([full, hist], ignore_index=True)
        last[rid] = int(budget)
    else:
        rid = runs.loc[runs["name"] == run_name, "run_id"].iloc[0]
        last[rid] = int(to_step)
    h = full[full["step"] <= full["run_id"].map(last)]
    sb, fit, _ = _fit(runs, h)
    w1 = _log_width(fit, t)
    row = sb[(sb["run_id"] == rid) & (sb["threshold"] == t)].iloc[0]
    end = row["S_B"] if not row["censored"] else last[rid]
    start = 0 if action == "new" else sw["last"][rid]
    ht = h[(h["run_id"] == rid) & (h["step"] > start) & (h["step"] <= end)]
    gpu_h = float(ht["perf/time_per_step"].sum()) / 3600 * 8
    return 1 - w1 / w0, gpu_h


def closed_loop(sweeps: list[dict]) -> pd.DataFrame:
    rows = []
    for sw in sweeps:
        hist = _visible(sw, sw["last"])
        sb, fit, draws = _fit(sw["runs"], hist)
        # the even sweeps decide at the top target (params decision_target), where runs stopped early
        t = decision_target(fit, sb, TARGET if sw["seed"] % 2 == 0 else None)
        if t is None or fit.loc[fit["threshold"] == t, "status"].iloc[0] not in ("ok", "extrapolated"):
            continue
        wall = wall_clock_table(sw["runs"], hist, METRIC, THRESHOLDS)
        budget = step_budget(hist)
        nxt = next_runs(draws, fit, sb, step_time_model(wall), step_time_table(wall), target=t,
                        budget_steps=budget, n_simulations=K, max_runs=1, seed=sw["seed"])
        w0 = _log_width(fit, t)
        if not len(nxt) or not np.isfinite(w0):
            continue
        first = nxt.iloc[0]
        kind = "new" if first["action"] == "new" else "extend"
        got, cost = _realise(sw, kind, int(first["n_prompts"]), first["run_name"], first["to_step"], budget, t, w0)
        row = {"seed": sw["seed"], "t": t, "action": first["action"], "B": int(first["total_batch"]),
               "predicted": first["expected_narrowing"], "lo": first["narrowing_lo"], "hi": first["narrowing_hi"],
               "realised": got, "cost": cost, "predicted_cost": first["cost"]}
        for rule, (n_p, _n_r, name) in fixed_rule_actions(sb, draws, fit, t).items():
            if name:
                to = 2 * sw["last"][sw["runs"].loc[sw["runs"]["name"] == name, "run_id"].iloc[0]]
                g, c = _realise(sw, "extend", n_p, name, to, budget, t, w0)
            else:
                g, c = _realise(sw, "new", n_p, "", 0, budget, t, w0)
            row[f"{rule}_realised"], row[f"{rule}_cost"] = g, c
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def loop():
    return closed_loop([formula_sweep(s) for s in range(N_LOOP)])


def test_the_first_suggestion_buys_more_narrowing_per_gpu_hour_than_each_fixed_rule(loop):
    assert len(loop) >= 0.9 * N_LOOP
    ours = (loop["realised"] / loop["cost"]).mean()
    for rule in ("repeat", "octave_beyond", "extend_longest"):
        sub = loop[loop[f"{rule}_realised"].notna()]
        theirs = (sub[f"{rule}_realised"] / sub[f"{rule}_cost"]).mean()
        mine = (sub["realised"] / sub["cost"]).mean()
        assert mine >= theirs, (rule, mine, theirs, ours)


def test_the_realised_narrowing_lies_in_its_predicted_80pct_band_in_70_to_90pct_of_sweeps(loop):
    inside = ((loop["realised"] >= loop["lo"]) & (loop["realised"] <= loop["hi"])).mean()
    assert 0.70 <= inside <= 0.90, loop[["seed", "action", "B", "lo", "predicted", "hi", "realised"]]


def test_next_runs_lists_at_most_three_actions_at_the_decision_target():
    sw = formula_sweep(0)
    hist = _visible(sw, sw["last"])
    sb, fit, draws = _fit(sw["runs"], hist)
    wall = wall_clock_table(sw["runs"], hist, METRIC, THRESHOLDS)
    nxt = next_runs(draws, fit, sb, step_time_model(wall), step_time_table(wall), budget_steps=step_budget(hist),
                    n_simulations=K)
    assert list(nxt.columns) == NEXT_RUNS_COLUMNS
    assert 1 <= len(nxt) <= 3 and nxt["threshold"].nunique() == 1
    assert nxt["threshold"].iloc[0] == decision_target(fit, sb)
    assert list(nxt["rank"]) == list(range(1, len(nxt) + 1))
    assert nxt["narrowing_per_cost"].is_monotonic_decreasing
    assert (nxt["narrowing_lo"] <= nxt["narrowing_hi"]).all() and nxt["p_reach"].between(0, 1).all()
    assert (nxt["cost_unit"] == "GPU-hours").all()  # every run's config gives 8 GPUs
    # a new run below the sweep is never assumed to reach the target within the budget for free
    budget = step_budget(hist)
    below = nxt[(nxt["action"] == "new") & (nxt["predicted_steps"] > budget)]
    assert (below["p_reach"] < 0.5).all()


def test_a_run_stopped_before_the_target_can_be_extended_and_a_new_run_below_the_sweep_costs_its_budget():
    """Sweep 0 stops its two smallest batch sizes early: at the top target the list offers to
    extend one of them (to a later step than it reached, with a chance below 1 to get there),
    and a new run's cost never assumes more steps than the phase's budget."""
    sw = formula_sweep(0)
    hist = _visible(sw, sw["last"])
    sb, fit, draws = _fit(sw["runs"], hist)
    wall = wall_clock_table(sw["runs"], hist, METRIC, THRESHOLDS)
    budget = step_budget(hist)
    nxt = next_runs(draws, fit, sb, step_time_model(wall), step_time_table(wall), target=TARGET,
                    budget_steps=budget, n_simulations=K, max_runs=3, min_gain=-1.0)
    ext = nxt[nxt["action"].str.startswith("extend ")]
    assert len(ext), nxt[["action", "total_batch", "expected_narrowing", "cost"]]
    stopped = {r["name"]: sw["last"][r["run_id"]] for _, r in sw["runs"].iterrows()}
    for r in ext.itertuples():
        assert r.action == f"extend {r.run_name}" and r.from_step <= stopped[r.run_name]
        assert r.to_step > r.from_step and 0 < r.p_reach < 1
    new = nxt[nxt["action"] == "new"]
    assert (new["to_step"] == budget).all()


def test_extensions_are_weighed_for_the_furthest_run_at_the_batch_sizes_nearest_b_noise():
    """Thousands of censored runs cost a few refits: one run per batch size (the one that came
    furthest), at the `limit` batch sizes nearest B_noise, in the fit's row order."""
    B = np.array([16, 16, 32, 64, 64, 128, 1024], dtype=float)
    rows = [(0, "a16", 300.0), (1, "b16", 500.0), (2, "c32", 200.0), (3, "d64", 100.0), (4, "e64", 90.0),
            (5, "f128", 80.0), (6, "g1024", 40.0)]
    assert _extension_rows(rows, B, math.log(60), 3) == [(2, "c32", 200.0), (3, "d64", 100.0), (5, "f128", 80.0)]
    assert _extension_rows(rows, B, math.log(10), 2) == [(1, "b16", 500.0), (2, "c32", 200.0)]
    assert [r[1] for r in _extension_rows(rows, B, math.log(60), 10)] == ["b16", "c32", "d64", "f128", "g1024"]
    assert _extension_rows(rows, B, math.log(60), 0) == []
