"""The real policy-gradient trainer of the tests (tests/pg_trainer.py, issue 16): it learns, its
GRPO advantages and gradient statistics are right, its sweeps go through the real data layer
and the real wandb SDK, and its committed many-seed truth is current and shows what issue 16
describes (S(B) bends like B^-alpha with alpha < 1 at a fixed Adam rate, McCandlish's alpha = 1
with SGD tuned per batch size, another curvature along the rollouts axis)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pg_trainer as pg
import pytest
from testkit import offline_wandb_env

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"sizes": [[4, 8], [64, 8]], "n_seeds": 1, "budget": 40, "n_running": 1, "test_freq": 5}


@pytest.fixture(scope="module")
def truth():
    return pg.load_truth()


@pytest.fixture(scope="module")
def small_sweep():
    return pg.trainer_sweep(3, "adam_fixed", "prompts", **SMALL)


# ------------------------------------------------------------------------------------------
# The learner
# ------------------------------------------------------------------------------------------
def test_the_trainer_learns_from_its_start_past_the_top_target():
    trace = pg.train(pg.task(), 256, 8, "adam_fixed", seed=0, max_steps=400)
    assert abs(trace.acc[0] - 1 / pg.V ** pg.L) < 1e-9  # the zero policy guesses
    assert trace.acc[-1] > max(pg.TARGETS) + 0.03
    # and slower at a small batch: more steps to the lowest target, lower accuracy at the end
    small = pg.train(pg.task(), 4, 8, "adam_fixed", seed=0, max_steps=200)
    assert pg.steps_to(small.acc, 0.3) > 1.5 * pg.steps_to(trace.acc, 0.3)
    assert small.acc[-1] < trace.acc[200] - 0.1


def test_grpo_advantages_are_zero_mean_per_group_and_zero_for_equal_rewards():
    rng = np.random.default_rng(0)
    rewards = (rng.random((50, 6)) < 0.3).astype(float)
    rewards[0] = 0.0
    rewards[1] = 1.0
    adv = pg.group_advantages(rewards)
    assert np.allclose(adv.mean(axis=1), 0.0, atol=1e-12)
    assert not adv[:2].any()
    mixed = rewards.std(axis=1) > 0
    assert np.allclose(adv[mixed].std(axis=1), 1.0, atol=1e-4)
    assert ((adv > 0) == (rewards > rewards.mean(axis=1, keepdims=True))).all()


def _brute_log_prob_gradient(w, x, answer, h=1e-6):
    """d log pi(answer | x) / dW by central differences, one weight at a time."""
    grad = np.zeros(w.size)
    for i in range(w.size):
        for sign in (1, -1):
            w2 = w.copy().ravel()
            w2[i] += sign * h
            p = pg.policy_probs(w2.reshape(w.shape), x[None])[0]
            grad[i] += sign * sum(math.log(p[j, answer[j]]) for j in range(pg.L)) / (2 * h)
    return grad


def test_per_sample_gradients_and_batch_gradient_match_finite_differences():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, size=(pg.L, pg.V, pg.D))
    x = rng.normal(size=(2, pg.D)) / 4
    y = rng.integers(0, pg.V, size=(2, pg.L))
    probs, actions, rewards, adv = pg.rollout(rng, w, x, y, 3)
    adv = adv + rng.normal(size=adv.shape)  # any advantages: a group's sum need not be 0 here
    g = pg.per_sample_gradients(x, probs, actions, adv)
    brute = np.array([adv[i, r] * _brute_log_prob_gradient(w, x[i], actions[i, r])
                      for i, r in itertools.product(range(2), range(3))])
    assert np.allclose(g, brute, atol=1e-6)
    # batch_gradient drops the -pi part, which cancels only when a group's advantages sum to 0
    adv0 = pg.group_advantages(rewards)
    g0 = pg.per_sample_gradients(x, probs, actions, adv0)
    assert np.allclose(pg.batch_gradient(x, actions, adv0).ravel(), g0.mean(axis=0), atol=1e-12)


def test_noise_statistics_match_a_loop_over_samples():
    rng = np.random.default_rng(2)
    g = rng.normal(0.3, 1.0, size=(40, 7))
    mean = sum(g) / len(g)
    tr_sigma = sum(float((s - mean) @ (s - mean)) for s in g) / (len(g) - 1)
    g2 = float(mean @ mean) - tr_sigma / len(g)
    norm, b_simple = pg.noise_statistics(g)
    assert norm == pytest.approx(math.sqrt(g2)) and b_simple == pytest.approx(tr_sigma / g2)


def _exact_b_simple(w, x, y, n_rollouts):
    """tr(Sigma)/|G|^2 of the per-sample gradient A * grad log pi, by enumerating every joint
    outcome of a group's rollouts (with its probability) on every prompt of a tiny pool."""
    answers = list(itertools.product(range(pg.V), repeat=pg.L))
    first, second = np.zeros(w.size), 0.0
    for xi, yi in zip(x, y, strict=True):
        probs = pg.policy_probs(w, xi[None])[0]
        p_ans = [np.prod([probs[j, a[j]] for j in range(pg.L)]) for a in answers]
        for combo in itertools.product(range(len(answers)), repeat=n_rollouts):
            p = np.prod([p_ans[c] for c in combo])
            acts = np.array([[answers[c] for c in combo]])
            r = np.array([[float(tuple(answers[c]) == tuple(yi)) for c in combo]])
            g = pg.per_sample_gradients(xi[None], probs[None], acts, pg.group_advantages(r))
            first += p * g.mean(axis=0)
            second += p * float((g * g).sum(axis=1).mean())
    first, second = first / len(x), second / len(x)
    return (second - first @ first) / (first @ first)


def test_logged_b_simple_agrees_with_the_exact_value_on_a_tiny_pool():
    """The large-batch estimate against exact enumeration (3 prompts, 2 rollouts: 81 outcomes
    per group), the pool repeated so the estimate's draws without replacement are uniform."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, size=(pg.L, pg.V, pg.D))
    x = rng.normal(size=(3, pg.D)) / 3
    y = rng.integers(0, pg.V, size=(3, pg.L))
    exact = _exact_b_simple(w, x, y, 2)
    tiny = pg.Task(np.tile(x, (1000, 1)), np.tile(y, (1000, 1)), x, y)
    estimates = [pg.gradient_noise(rng, w, tiny, 2, n_prompts=3000)[1] for _ in range(8)]
    assert 1.0 < exact < 1e4
    assert float(np.mean(estimates)) == pytest.approx(exact, rel=0.1)


# ------------------------------------------------------------------------------------------
# Sweeps: verl's form, through the real data layer and the real wandb SDK
# ------------------------------------------------------------------------------------------
def test_sweep_runs_carry_verls_keys_names_and_config(small_sweep):
    from cbs_rlvr.params import validate_phase_params

    assert sorted(r["state"] for r in small_sweep.runs) == ["finished", "running"]
    assert sorted(r["name"] for r in small_sweep.runs) == ["cbs_p1_np4_nr8", "cbs_p1_np64_nr8"]
    for run in small_sweep.runs:
        cfg = run["config"]
        assert cfg["data"]["train_batch_size"] == run["n_prompts"]
        assert cfg["actor_rollout_ref"]["rollout"]["n"] == run["n_rollouts"] == 8
        assert cfg["actor_rollout_ref"]["actor"]["optim"]["lr"] == pg.LR_ADAM
        assert cfg["trainer"]["total_training_steps"] == 40 and cfg["trainer"]["test_freq"] == 5
        steps = [row["_step"] for row in run["rows"]]
        assert steps == list(range(len(steps))) and len(steps) == (41 if run["state"] == "finished" else len(steps))
        evals = [row for row in run["rows"] if pg.VAL_KEY in row]
        assert [row["_step"] for row in evals] == list(range(0, steps[-1] + 1, 5))
        assert all(row[pg.VAL_KEY] * pg.N_VAL == round(row[pg.VAL_KEY] * pg.N_VAL) for row in evals)
        train_rows = run["rows"][1:]
        for key in ("training/global_step", "critic/score/mean", "actor/entropy", "actor/grad_norm",
                    "perf/time_per_step", "timing_s/step"):
            assert all(math.isfinite(row[key]) for row in train_rows), key
        noise = [row for row in run["rows"] if "grad_noise/B_noise_estimate" in row]
        assert [row["_step"] for row in noise] == list(range(0, steps[-1] + 1, 20))
        assert all(row["grad_noise/B_noise_estimate"] > 0 for row in noise)
    validate_phase_params(small_sweep.params["p1"], "p1")
    # the step-time model: the median step time at each batch
    for run in small_sweep.runs:
        times = [row["timing_s/step"] for row in run["rows"][1:]]
        assert np.median(times) == pytest.approx(pg.step_time(run["n_prompts"] * 8), rel=0.15)


def test_a_sweep_converts_through_the_real_data_layer(small_sweep):
    from sweepgen import snapshot_frames

    frames = snapshot_frames(small_sweep)
    runs = frames["runs"].set_index("run_id")
    assert len(runs) == len(small_sweep.runs) and frames["excluded"].empty
    for raw in small_sweep.runs:
        row = runs.loc[raw["run_id"]]
        assert (row["phase"], row["n_prompts"], row["n_rollouts"], row["total_batch"]) == \
            ("p1", raw["n_prompts"], 8, raw["n_prompts"] * 8)
        assert row["state"] == raw["state"] and row["test_freq"] == 5 and row["lr"] == pg.LR_ADAM
        hist = frames["history"][frames["history"]["run_id"] == raw["run_id"]].dropna(subset=[pg.VAL_KEY])
        assert list(zip(hist["step"], hist[pg.VAL_KEY], strict=True)) == pg.accuracy_series(raw)


def test_a_sweep_written_by_the_wandb_sdk_reads_back_the_same(tmp_path, small_sweep):
    """One small sweep through `python tests/pg_trainer.py offline` (the real SDK, offline mode,
    in a subprocess) and back through cbs_rlvr.sources.wandb_file."""
    from cbs_rlvr.sources.wandb_file import find_wandb_files, read_wandb_file

    env = {**offline_wandb_env(tmp_path), "PG_SWEEP_ARGS": json.dumps(SMALL)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "pg_trainer.py"), "offline", "adam_fixed",
                           "prompts", "3", str(tmp_path / "src")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = {r["run_id"]: r for r in map(read_wandb_file, find_wandb_files(tmp_path / "src"))}
    assert set(read) == {r["run_id"] for r in small_sweep.runs}
    for raw in small_sweep.runs:
        back = read[raw["run_id"]]
        assert back["name"] == raw["name"] and back["config"]["data"] == raw["config"]["data"]
        assert back["state"] == ("finished" if raw["state"] == "finished" else "failed")
        assert pg.accuracy_series({"rows": back["history"]}) == pg.accuracy_series(raw)
        assert [r.get("grad_noise/B_noise_estimate") for r in back["history"]] == \
            [r.get("grad_noise/B_noise_estimate") for r in raw["rows"]]


# ------------------------------------------------------------------------------------------
# The committed many-seed truth
# ------------------------------------------------------------------------------------------
def test_the_truth_is_current_complete_and_small(truth):
    assert truth["code_version"] == pg.code_version(), (
        "tests/pg_trainer.py's learner changed since pg_truth.json was computed: run "
        "`python tests/pg_trainer.py truth` and commit the JSON")
    assert pg.TRUTH_PATH.stat().st_size < 200_000
    assert truth["targets"] == list(pg.TARGETS) and truth["n_seeds"] >= 8
    assert truth["step_time"]["a"] == pg.STEP_TIME_A and truth["step_time"]["b"] == pg.STEP_TIME_B
    for setting, axis in itertools.product(pg.SETTINGS, pg.AXES):
        block = truth["settings"][setting][axis]
        pairs = [(p["n_prompts"], p["n_rollouts"]) for p in block["points"]]
        assert pairs == pg.grid(axis, "truth") and set(pg.grid(axis)) < set(pairs)
        batch = [p["batch"] for p in block["points"]]
        for t in map(str, pg.TARGETS):
            seeds = np.array([p["S_seeds"][t] for p in block["points"]])
            assert seeds.shape[1] == truth["n_seeds"] and np.isfinite(seeds).all()  # none censored
            steps = [p["S"][t] for p in block["points"]]
            assert np.allclose(np.exp(np.log(seeds).mean(axis=1)), steps, rtol=2e-3)
            assert block["fits"][t] == pg.general_fit(batch, steps)
            hours = [s * pg.step_time(b) / 3600 for s, b in zip(steps, batch, strict=True)]
            assert block["wallclock_optimum"][t]["batch"] == batch[int(np.argmin(hours))]
            assert block["b_simple"][t] > 0


def test_sgd_tuned_rates_are_the_best_of_their_grid(truth):
    for axis in pg.AXES:
        for p in truth["settings"]["sgd_tuned"][axis]["points"]:
            scores = {float(k): v for k, v in p["sgd_lr_scores"].items()}
            assert p["lr"] == min(scores, key=scores.get) and set(scores) == set(pg.SGD_LR_GRID)
            assert pg.sgd_lr(p["n_prompts"], p["n_rollouts"], truth, axis) == p["lr"]


def test_the_truth_shows_what_issue_16_describes(truth):
    """At one Adam rate for every B, S(B) bends like B^-alpha with alpha clearly below 1 along
    the prompts axis: the general form fits it, McCandlish's alpha = 1 leaves several times the
    error and puts B_noise several times too low. SGD tuned per B is close to alpha = 1; the
    rollouts axis bends the other way (alpha > 1). The exact B_simple grows with the target."""
    def fits(setting, axis):
        return truth["settings"][setting][axis]["fits"].values()

    for f in fits("adam_fixed", "prompts"):
        assert 0.5 < f["alpha"] < 0.8
        assert f["log_rms"] < 0.03 and f["mccandlish_log_rms"] > 4 * f["log_rms"]
        assert f["B_noise"] > 2.5 * f["mccandlish_B_noise"]
    for f in fits("sgd_tuned", "prompts"):
        assert abs(f["alpha"] - 1) < 0.3 and f["log_rms"] < f["mccandlish_log_rms"]
    for f in fits("adam_fixed", "rollouts"):
        assert f["alpha"] > 1.3
    # the local log-slope of the true S at the lowest target: about -0.5 at small B, flat at large
    points = {p["batch"]: p["S"][str(pg.TARGETS[0])] for p in truth["settings"]["adam_fixed"]["prompts"]["points"]}
    assert -0.6 < math.log2(points[64] / points[32]) < -0.4
    assert -0.2 < math.log2(points[4096] / points[2048]) < 0
    for setting, axis in itertools.product(pg.SETTINGS, pg.AXES):
        block = truth["settings"][setting][axis]
        b_simple = [block["b_simple"][str(t)] for t in pg.TARGETS]
        assert all(np.diff(b_simple) > 0) and b_simple[-1] > 1.5 * b_simple[0], (setting, axis, b_simple)
        # B_noise inside the sweep's batch range, or within a factor 2 of its ends
        batches = [n_p * n_r for n_p, n_r in pg.grid(axis)]
        assert all(min(batches) / 2 <= f["B_noise"] <= 2 * max(batches) for f in block["fits"].values())


def test_a_default_sweep_budget_censors_the_small_batches_at_the_top_target(truth):
    """The drawn step budget (one total_training_steps for every run, 0.9-1.6 x the truth's S at
    the top target at the grid's middle batch): the smallest batch is right-censored at the top
    target whatever the draw, and the largest reaches the lowest target."""
    rng = np.random.default_rng(0)
    for setting, axis in pg.SWEEP_CLASSES:
        pts = {(p["n_prompts"], p["n_rollouts"]): p["S"] for p in truth["settings"][setting][axis]["points"]}
        pairs = pg.grid(axis)
        for _ in range(20):
            budget = pg._budget(rng, setting, axis, truth)
            assert pts[pairs[0]][str(pg.TARGETS[-1])] > budget, (setting, axis, budget)
            assert pts[pairs[-1]][str(pg.TARGETS[0])] < budget / 3, (setting, axis, budget)
