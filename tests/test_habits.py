"""verl's habits (issue 10), on sweeps written as real W&B offline runs by the wandb SDK
(tests/sweeps/habits.py, the demo's model with a known B_noise): resumed runs stitched once,
learning-rate envelopes, updates per step, dynamic sampling, validation/checkpoint time,
phases selected by tag; and the report of such a sweep, read as a collaborator would."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # until pytest's pythonpath is set in pyproject.toml
    sys.path.insert(0, str(REPO))

from sweeps import habits as hs  # noqa: E402 (tests/ is on sys.path)
from testkit import SWEEPS_CLI, offline_wandb_env, venv_env  # noqa: E402

from cbs_rlvr.data.runs import assemble_snapshot_frames
from cbs_rlvr.data.select import select_runs
from cbs_rlvr.fit.phase import fit_phase
from cbs_rlvr.measure.crossings import (
    generated_samples_table,
    joint_phase_runs,
    phase_runs,
    sb_eb_table,
)
from cbs_rlvr.measure.envelope import configuration_table, envelope_winners, lr_policy
from cbs_rlvr.measure.wallclock import (
    fastest_batch,
    predict_step_time,
    step_time_model,
    wall_clock_table,
)
from cbs_rlvr.params import ParamsError, load_phase_params, validate_phase_params
from cbs_rlvr.report.figures_habits import plot_envelope
from cbs_rlvr.sources.snapshot import build_snapshot

SEEDS = (0, 1, 2, 3, 4)  # even seeds: verl >= 0.6 step timer, odd: verl <= 0.5
METRIC = "val-core/openai/gsm8k/reward/mean@1"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    """OUT/seed<k>/ (offline runs + truth.json) for every seed, OUT/params/, written by the SDK."""
    out = tmp_path_factory.mktemp("habits")
    proc = subprocess.run([sys.executable, SWEEPS_CLI, "habits", str(out), "--seeds", *map(str, SEEDS)],
                          cwd=out, env=offline_wandb_env(out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def snapshots(sweeps) -> dict:
    return {seed: build_snapshot(str(sweeps / f"seed{seed}"), params_dir=sweeps / "params") for seed in SEEDS}


def _truth(sweeps: Path, seed: int) -> dict:
    return json.loads((sweeps / f"seed{seed}" / "truth.json").read_text())


def _phase(sweeps: Path, snap: dict, phase: str = "h1"):
    params = load_phase_params(sweeps / "params", phase)
    return (*phase_runs(snap["runs"], snap["history"], params), params)


# --------------------------------------------------------------------------------------------
# Resumed runs
# --------------------------------------------------------------------------------------------
def test_resumed_run_is_one_run_joined_at_its_checkpoint(sweeps, snapshots):
    truth, snap = _truth(sweeps, 0), snapshots[0]
    info = truth["resumed"]
    rows = snap["runs"][snap["runs"]["name"] == info["name"]]
    assert len(rows) == 1  # counted once, not as two replicates
    run = rows.iloc[0]
    assert run["run_id"] == info["run_ids"][0] and run["segment_run_ids"] == ";".join(info["run_ids"])
    assert (run["n_segments"], run["resumed_at"], run["resume_lost_steps"]) == (2, "40", info["lost_steps"])
    assert "resumed:1" in run["flags"].split(";") and run["state"] == "finished"
    hist = snap["history"][snap["history"]["run_id"] == run["run_id"]].set_index("step")
    assert hist.index.is_unique and hist.index.tolist() == list(range(run["last_step"] + 1))
    # the restart's steps replace the lost ones (the crashed run logged a score of 2.0 there)
    assert (hist.loc[41:47, "critic/score/mean"] < 1.0).all()
    # at the checkpoint step: the crashed run's training metrics stay, the restart's validation wins
    restart = next(r for r in hs.habit_sweep(hs.load_make_demo(), 0)[0] if r.run_id == info["run_ids"][1])
    logged = dict(restart.rows)
    assert hist.loc[40, METRIC] == pytest.approx(logged[40][METRIC])
    assert np.isfinite(hist.loc[40, "critic/score/mean"])
    # the lost time is the step time of the 7 steps trained again (v0.6 timer: step = train time)
    train = truth["runs"][info["run_ids"][0]]["train_time"]
    assert run["resume_lost_time_s"] == pytest.approx(sum(train[40:47]), rel=1e-5)


def test_stitching_is_the_same_from_an_export_directory(sweeps, snapshots, tmp_path):
    md = hs.load_make_demo()
    runs, _ = hs.habit_sweep(md, 0)
    hs.write_export(runs, tmp_path / "export")
    export = build_snapshot(str(tmp_path / "export"), params_dir=sweeps / "params")
    offline = snapshots[0]
    assert sorted(export["runs"]["name"]) == sorted(offline["runs"]["name"])
    name = _truth(sweeps, 0)["resumed"]["name"]
    a = export["runs"].set_index("name").loc[name]
    b = offline["runs"].set_index("name").loc[name]
    assert (a["n_segments"], a["resumed_at"], a["resume_lost_steps"]) == (b["n_segments"], b["resumed_at"],
                                                                          b["resume_lost_steps"])
    ha = export["history"][export["history"]["run_id"] == a["run_id"]].set_index("step")[METRIC]
    hb = offline["history"][offline["history"]["run_id"] == b["run_id"]].set_index("step")[METRIC]
    pd.testing.assert_series_equal(ha, hb, check_names=False)
    assert json.loads(a["tags"]) == ["h1", "grpo"] and a["group"] == "cbs-h1"


def test_stitching_an_already_stitched_run_again_changes_nothing(snapshots):
    """W&B's incremental fetch reuses the stitched run and re-reads the restart segment."""
    snap = snapshots[0]
    stitched = snap["runs"][snap["runs"]["n_segments"] > 1].iloc[0].to_dict()
    hist = snap["history"][snap["history"]["run_id"] == stitched["run_id"]].drop(columns="run_id")
    hist = hist.dropna(axis=1, how="all").reset_index(drop=True)
    second = stitched["segment_run_ids"].split(";")[1]
    segment = hist[hist["step"] >= 40].reset_index(drop=True)
    seg_row = {**stitched, "run_id": second, "segment_run_ids": second, "n_segments": 1, "first_step": 40,
               "resumed_at": None, "resume_lost_steps": 0, "resume_lost_time_s": 0.0,
               "start_time": "2099-01-01T00:00:00.000000+00:00"}
    frames = assemble_snapshot_frames([{"kind": "run", "row": stitched, "history": hist},
                                       {"kind": "run", "row": seg_row, "history": segment}])
    again = frames["runs"].iloc[0]
    assert len(frames["runs"]) == 1 and again["n_segments"] == 2 and again["resumed_at"] == "40"
    assert again["resume_lost_steps"] == stitched["resume_lost_steps"]
    np.testing.assert_array_equal(frames["history"][METRIC].to_numpy(), hist[METRIC].to_numpy())


def test_a_segment_without_its_start_is_excluded_with_its_reason(sweeps, tmp_path):
    truth = _truth(sweeps, 0)
    first = truth["resumed"]["run_ids"][0]
    shutil.copytree(sweeps / "seed0", tmp_path / "seed0", ignore=shutil.ignore_patterns(f"*{first}*"))
    snap = build_snapshot(str(tmp_path / "seed0"), params_dir=sweeps / "params")
    reason = snap["excluded"].set_index("run_id").loc[truth["resumed"]["run_ids"][1], "reason"]
    assert reason.startswith("resumed segment without its start: its history begins at step 40")
    assert truth["resumed"]["name"] not in set(snap["runs"]["name"])


def test_two_fresh_starts_are_replicates_and_a_late_start_joins_the_latest(snapshots):
    def entry(run_id, first, last, start, seed=1):
        steps = np.arange(first, last + 1)
        hist = pd.DataFrame({"step": steps, METRIC: np.linspace(0.1, 0.5, len(steps))})
        row = {"run_id": run_id, "name": "x", "source": run_id, "phase": "p", "n_prompts": 8,
               "n_rollouts": 8, "total_batch": 64, "lr": 1e-6, "updates_per_step": 1, "state": "finished",
               "config": json.dumps({"seed": seed}), "flags": "", "first_step": first, "last_step": last,
               "start_time": start, "n_history_rows": len(steps), "n_segments": 1, "segment_run_ids": run_id}
        return {"kind": "run", "row": row, "history": hist}

    frames = assemble_snapshot_frames([entry("a", 0, 100, "2026-01-01", seed=1),
                                       entry("b", 0, 60, "2026-01-02", seed=2),
                                       entry("c", 40, 100, "2026-01-03", seed=2)])
    runs = frames["runs"].set_index("run_id")
    assert sorted(runs.index) == ["a", "b"] and list(runs["n_replicates"]) == [2, 2]
    assert runs.loc["b", "segment_run_ids"] == "b;c" and runs.loc["a", "n_segments"] == 1


# --------------------------------------------------------------------------------------------
# Phases selected by tag; runs no phase selects
# --------------------------------------------------------------------------------------------
def test_phase_selected_by_tag_and_the_unselected_run_says_how_to_include_it(sweeps, snapshots):
    snap = snapshots[0]
    runs, _, _, _ = _phase(sweeps, snap)
    assert len(runs) == 10 and (runs["phases"] == "h1").all() and (runs["phase"] == "h1").all()
    assert not runs["name"].str.startswith("cbs_").any()  # free-form names, batch sizes from the config
    h2 = snap["runs"][snap["runs"]["phase"] == "h2"]
    assert sorted(h2["total_batch"]) == [128, 512]
    reason = snap["excluded"].set_index("name").loc["debug-run", "reason"]
    assert "no phase in run name 'debug-run'" in reason and "rename it cbs_<phase>_np16_nr4" in reason
    assert "select" in reason and "['debug']" in reason


def test_select_criteria_and_their_validation():
    runs = pd.DataFrame({
        "run_id": ["a", "b", "c"], "name": ["grpo-bs64", "grpo-bs128", "ppo-bs64"], "phase": [None, None, "p1"],
        "tags": ['["p1", "grpo"]', '["p1"]', "p1;grpo"], "group": ["g1", "g2", None],
        "config": [json.dumps({"algorithm": {"adv_estimator": "grpo"}, "data": {"train_batch_size": 64}}),
                   json.dumps({"algorithm": {"adv_estimator": "grpo"}, "data": {"train_batch_size": 128}}),
                   json.dumps({"algorithm": {"adv_estimator": "gae"}})]})

    def picked(select):
        return list(runs.loc[select_runs(runs, {"phase": "p1", "select": select}), "run_id"])

    assert list(runs.loc[select_runs(runs, {"phase": "p1"}), "run_id"]) == ["c"]  # by name
    assert picked({"tags": ["p1", "grpo"]}) == ["a", "c"]
    assert picked({"group": "g*"}) == ["a", "b"] and picked({"name": "grpo-*"}) == ["a", "b"]
    assert picked({"config": {"algorithm.adv_estimator": "grpo", "data.train_batch_size": [64, 256]}}) == ["a"]
    assert picked({"tags": ["p1"], "name": "*bs64"}) == ["a", "c"]
    base = {"phase": "p1", "title": "t", "axis": "prompts", "metric": "m", "n_val": 10, "thresholds": [0.5],
            "sections": ["01_load_runs"]}
    assert validate_phase_params({**base, "select": {"tags": ["p1"]}})["select"] == {"tags": ["p1"]}
    assert validate_phase_params(base)["metaparameters"] == ["actor_rollout_ref.actor.optim.lr"]
    for bad, message in (({"tag": ["p1"]}, "unknown key"), ({}, "select is empty"),
                         ({"tags": "p1"}, "list of tag strings"), ({"group": 3}, "must be a string")):
        with pytest.raises(ParamsError, match=message):
            validate_phase_params({**base, "select": bad})


# --------------------------------------------------------------------------------------------
# Learning-rate sweeps: the envelope
# --------------------------------------------------------------------------------------------
def test_the_envelope_takes_the_good_learning_rate_at_every_batch_size(sweeps, snapshots):
    for seed in SEEDS:
        runs, history, metric, params = _phase(sweeps, snapshots[seed])
        sb = sb_eb_table(runs, history, metric, params["thresholds"])
        good = np.isclose(sb["lr"], [hs.good_lr(b) for b in sb["total_batch"]])
        assert (sb["in_envelope"] == good).all(), seed
        configs = configuration_table(sb)
        assert len(configs) == 6 * 10 and configs["chosen"].sum() == 6 * 7
        winners = envelope_winners(configs)
        assert list(winners["n_configs"]) == [1, 1, 1, 1, 2, 2, 2]
        policy = lr_policy(winners["total_batch"], winners["lr_won"])
        assert policy["policy"] == "sqrt(B)" and policy["slope"] == pytest.approx(0.5, abs=1e-9)


def test_envelope_rules_for_censored_and_missing_runs():
    rows = [  # (n_prompts, configuration, S_B, censored)
        (8, "lr=a", 50.0, False), (8, "lr=b", 30.0, True),      # reached beats a bound, but unsure
        (16, "lr=a", 40.0, True), (16, "lr=b", 80.0, True),     # none reached: the smallest bound
        (32, "lr=a", np.nan, False), (32, "lr=b", 20.0, False),  # a run without evals is no candidate
        (64, "lr=a", np.nan, False), (64, "lr=b", np.nan, False),
        (128, "lr=a", 10.0, False), (128, "lr=a", 14.0, False), (128, "lr=b", 11.0, False)]  # replicates
    sb = pd.DataFrame(rows, columns=["n_prompts", "configuration", "S_B", "censored"]).assign(
        threshold=0.5, n_rollouts=8, run_id=[f"r{i}" for i in range(len(rows))])
    sb["total_batch"] = sb["n_prompts"] * 8
    table = configuration_table(sb).set_index(["n_prompts", "configuration"])
    chosen = table.loc[table["chosen"]].index.tolist()
    assert chosen == [(8, "lr=a"), (16, "lr=a"), (32, "lr=b"), (64, "lr=a"), (128, "lr=b")]
    assert table.loc[(8, "lr=a"), "undetermined"] and not table.loc[(32, "lr=b"), "undetermined"]
    assert table.loc[(128, "lr=a"), "S_B"] == 12.0 and table.loc[(128, "lr=a"), "n_runs"] == 2
    from cbs_rlvr.measure.envelope import in_envelope
    assert list(sb.loc[in_envelope(sb), "run_id"]) == ["r0", "r2", "r5", "r6", "r10"]
    # a batch size where nothing reached the target has a bound there, not a winning rate
    sb["lr"] = sb["configuration"].map({"lr=a": 1e-6, "lr=b": 2e-6})
    winners = envelope_winners(configuration_table(sb)).set_index("n_prompts")
    assert winners["won_by_target"].to_dict() == {
        8: "0.5: lr=a", 16: "0.5: none reached", 32: "0.5: lr=b", 64: "0.5: none reached",
        128: "0.5: lr=b"}
    assert winners["lr_won"].isna().tolist() == [False, True, False, True, False]
    assert winners.loc[128, "lr_won"] == 2e-6 and winners.loc[8, "lr_won"] == 1e-6
    # the figure's "won" line is the same winners, and every other configuration is "tried"
    fig = plot_envelope(configuration_table(sb))
    won_line = next(ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("won"))
    assert list(won_line.get_xdata()) == [64, 256, 1024] and list(won_line.get_ydata()) == [1e-6, 2e-6, 2e-6]
    tried = next(c for c in fig.axes[1].collections if c.get_label() == "tried").get_offsets()
    assert sorted(map(tuple, tried.tolist())) == [(64, 2e-6), (128, 1e-6), (128, 2e-6), (256, 1e-6),
                                                  (512, 1e-6), (512, 2e-6), (1024, 1e-6)]


def test_lr_policy_names_the_usual_rules():
    B = np.array([64, 128, 256, 512, 1024])
    assert lr_policy(B, np.full(5, 1e-6))["policy"] == "constant"
    assert lr_policy(B, 1e-6 * np.sqrt(B / 64))["policy"] == "sqrt(B)"
    assert lr_policy(B, 1e-6 * B / 64)["policy"] == "linear"
    assert lr_policy(B, [1e-6, 4e-6, 1e-6, 4e-6, 1e-6])["policy"] == "mixed"
    assert lr_policy([64], [1e-6])["policy"] == "undetermined"


@pytest.mark.slow
def test_b_noise_recovered_within_10_percent_with_every_habit_present(sweeps, snapshots):
    """Acceptance: over five realisations (30 fits), with the resumed run, the learning-rate
    sweep, varying updates, dynamic sampling and tag selection all present. The same runs
    analysed with every run at a batch size pooled as replicates are far off."""
    errors, pooled, covered = [], [], []
    for seed in SEEDS:
        truth = _truth(sweeps, seed)
        runs, history, metric, params = _phase(sweeps, snapshots[seed])
        fit = fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=100, seed=seed).table
        naive = fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=0,
                          metaparameters=[]).table
        assert (fit["n_envelope_dropped"] == 3).all() and (fit["status"] == "ok").all()
        for f, n in zip(fit.itertuples(), naive.itertuples(), strict=True):
            true = truth["B_noise"][repr(f.threshold)]
            errors.append(abs(f.B_noise / true - 1))
            pooled.append(abs(n.B_noise / true - 1))
            covered.append(f.B_noise_lo <= true <= f.B_noise_hi)
            assert f.B_noise_lo <= f.B_noise <= f.B_noise_hi
    median, worst = float(np.median(errors)), float(np.max(errors))
    print(f"\nhabit sweeps: |rel err| of B_noise median {median:.3f}, worst {worst:.3f} over {len(errors)} "
          f"fits; pooled as replicates: median {np.median(pooled):.3f}; CI coverage {np.mean(covered):.2f}")
    assert len(errors) == 30 and median <= 0.10 and worst <= 0.25
    assert np.median(pooled) > 0.4 and np.mean(covered) >= 0.8


# --------------------------------------------------------------------------------------------
# Updates per step, dynamic sampling
# --------------------------------------------------------------------------------------------
def test_updates_per_step_from_the_config_and_s_in_updates(sweeps, snapshots):
    runs, history, metric, params = _phase(sweeps, snapshots[0])
    assert (runs["updates_per_step"] == np.ceil(runs["n_prompts"] / hs.MINI_CAP)).all()
    res = fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=0)
    sb, fit_steps = res.sb_eb, res.table
    assert np.allclose(sb["S_updates"], sb["S_B"] * sb["updates_per_step"].astype(float))
    fit_updates = fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=0,
                            units="updates").table
    assert set(fit_updates["units"]) == {"optimizer updates"} and fit_updates["B_noise"].notna().all()
    # with the same updates per step everywhere, the fit in updates is the fit in steps rescaled
    constant = runs.assign(updates_per_step=4)
    a = fit_phase(constant, history, metric, params["thresholds"], params["n_val"], n_bootstrap=0).table
    b = fit_phase(constant, history, metric, params["thresholds"], params["n_val"], n_bootstrap=0,
                  units="updates").table
    np.testing.assert_allclose(b["B_noise"], a["B_noise"] / 4, rtol=1e-5)
    np.testing.assert_allclose(b["S_min"], a["S_min"] * 4, rtol=1e-5)
    np.testing.assert_allclose(a["B_noise"], fit_steps["B_noise"], rtol=1e-12)


def test_generated_samples_sum_the_logged_generation_batches(sweeps, snapshots):
    truth = _truth(sweeps, 0)
    runs, history, metric, params = _phase(sweeps, snapshots[0])
    sb = sb_eb_table(runs, history, metric, params["thresholds"])
    gen = generated_samples_table(runs, history, sb)
    assert len(gen) == len(sb)
    for row in gen[gen["n_prompts"] == 64].itertuples():
        batches = truth["runs"][row.run_id]["gen_batches"]  # steps 1..T
        k = int(math.floor(row.S_B))
        expected = sum(batches[:k]) + (row.S_B - k) * batches[k]
        assert row.E_generated == pytest.approx(expected * 64 * 8, rel=1e-9)
        assert row.E_B == pytest.approx(row.S_B * 512)
    assert gen.empty is False and generated_samples_table(runs, history.drop(columns="train/num_gen_batches"),
                                                          sb).empty


# --------------------------------------------------------------------------------------------
# Wall clock: validation and checkpoint time, the step-time model, pandas' NA
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,inside", [(0, "none"), (1, "testing+save_checkpoint")])
def test_validation_and_checkpoint_time_are_counted_apart(sweeps, snapshots, seed, inside):
    truth = _truth(sweeps, seed)
    runs, history, metric, params = _phase(sweeps, snapshots[seed])
    wall = wall_clock_table(runs, history, metric, params["thresholds"])
    assert set(wall["overhead_in_step_time"]) == {inside}
    one = wall[(wall["n_prompts"] == 64) & (wall["threshold"] == 0.5)].iloc[0]
    train = truth["runs"][one["run_id"]]["train_time"]
    k = int(math.floor(one["S_B"]))
    expected = sum(train[:k]) + (one["S_B"] - k) * train[k]
    assert one["time_to_target_s"] == pytest.approx(expected, rel=1e-4)
    assert one["time_to_target_with_overhead_h"] > one["time_to_target_h"] + one["testing_h"] * 0.99
    n_evals = k // hs.TEST_FREQ
    assert one["testing_h"] * 3600 == pytest.approx(n_evals * hs.TESTING_S, rel=0.1)


def test_step_time_model_recovers_both_axes_and_says_when_it_cannot():
    rng = np.random.default_rng(3)
    grid = [(p, r) for p in (16, 32, 64, 128) for r in (4, 8, 16)]
    table = pd.DataFrame(grid, columns=["n_prompts", "n_rollouts"])
    table["run_id"] = [f"r{i}" for i in range(len(table))]
    table["mean_step_time_s"] = (10 + 0.04 * table["n_prompts"] * table["n_rollouts"] + 0.2 * table["n_prompts"]) \
        * rng.lognormal(0, 0.01, len(table))
    model = step_time_model(table)
    assert model["status"] == "ok" and model["terms"] == ["a", "b_B", "b_p"]
    for key, true in (("a", 10), ("b_B", 0.04), ("b_p", 0.2)):
        assert abs(model["coef"][key] - true) < 4 * model["se"][key] + 1e-12, key
    assert model["r2"] > 0.99
    pred, se = predict_step_time(model, [64, 256], [8, 2])
    assert pred[0] == pytest.approx(10 + 0.04 * 512 + 0.2 * 64, rel=0.02) and (se > 0).all()
    one_axis = step_time_model(table[table["n_rollouts"] == 8])
    assert one_axis["terms"] == ["a", "b_B"] and one_axis["status"] == "ok"
    two_points = step_time_model(table[(table["n_rollouts"] == 8) & (table["n_prompts"] <= 32)])
    assert two_points["status"] == "insufficient" and "too few" in two_points["reason"]
    assert np.isnan(predict_step_time(two_points, 64, 8)[0])
    iso = table[table["n_prompts"] * table["n_rollouts"] == 512]  # 128x4, 64x8, 32x16: one B, split varies
    iso_model = step_time_model(iso)
    assert iso_model["terms"] == ["a", "b_p"] and iso_model["B_fixed"] == 512
    assert iso_model["coef"]["b_p"] == pytest.approx(0.2, rel=0.2)
    assert np.isfinite(predict_step_time(iso_model, 256, 2)[0]) and np.isnan(predict_step_time(iso_model, 64, 4)[0])


def test_wall_clock_survives_runs_without_gpu_counts(sweeps, snapshots):
    runs, history, metric, params = _phase(sweeps, snapshots[0])
    runs = runs.assign(n_gpus=pd.array([pd.NA] * len(runs), dtype="Int64"))
    fastest = fastest_batch(wall_clock_table(runs, history, metric, params["thresholds"]))
    for row in fastest.itertuples():
        assert not (row.gpu_hours == row.gpu_hours)  # NaN, not pd.NA (whose truth value raises)
        assert isinstance(row.time_to_target_h, float)


# --------------------------------------------------------------------------------------------
# The report of a habit sweep, read as a collaborator would
# --------------------------------------------------------------------------------------------
def _text(html: str) -> str:
    import html as html_lib

    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.mark.slow
def test_the_report_says_what_was_stitched_which_rate_won_and_the_units(sweeps, tmp_path):
    out = tmp_path / "out"
    env = venv_env()
    proc = subprocess.run(["make", "--no-print-directory", "report", f"SOURCE={sweeps / 'seed1'}", f"OUT={out}",
                           f"PARAMS={sweeps / 'params'}", "N_BOOTSTRAP=40"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = {p.relative_to(out).as_posix(): _text(p.read_text()) for p in out.glob("*/*.html")}
    assert {"h1/01_load_runs.html", "h1/02_steps_to_target.html", "h1/06_wall_clock.html",
            "h2/02_steps_to_target.html", "h2/06_wall_clock.html"} <= set(html)
    for name, text in html.items():
        assert "Traceback" not in text and not re.search(r"\b[A-Z][A-Za-z]*Error\b: ", text), name
    truth = _truth(sweeps, 1)
    ids = truth["resumed"]["run_ids"]
    load = html["h1/01_load_runs.html"]
    assert f"2 W&B runs ({ids[0]}, {ids[1]}) are one training run" in load
    assert "restarted from the checkpoint at step 40" in load and "trained 7 step(s) past its checkpoint" in load
    assert "Runs are selected by W&B tags h1" in load and "debug-run" in load
    steps = html["h1/02_steps_to_target.html"]
    assert "S is counted in rollout steps" in steps
    assert ("B = 4,096 (512×8): tried learning rate 1×10⁻⁶; learning rate 4×10⁻⁶; best: 0.3: learning rate 4×10⁻⁶"
            in steps)  # config values as a reader writes them, never 1e-06
    assert ("The learning-rate policy of the winners: the learning rate grows like sqrt(B) (log learning rate against "
            "log B: slope 0.50") in steps
    assert "Updates per rollout step vary within this phase (1 to 8), so S is fitted in both units" in steps
    assert "times the samples they trained on" in steps
    assert "samples per rollout step" in steps and "samples per optimizer update" in steps
    assert "no B_noise, insufficient: 2 batch size(s) reach the target, 3 needed" in html["h2/02_steps_to_target.html"]
    wall = html["h1/06_wall_clock.html"]
    assert "the logged step time contains testing and save_checkpoint" in wall
    assert "T_step = a + b_B·B: a = 15" in wall and "R² = 1.000" in wall
    assert "No step-time model (" in html["h2/06_wall_clock.html"]
    fits = pd.read_csv(out / "h1" / "tables" / "cbs_fit.csv")
    assert (fits["status"] == "ok").all() and (out / "h1" / "tables" / "cbs_fit_updates.csv").is_file()
    sb = pd.read_csv(out / "h1" / "tables" / "sb_eb.csv")
    assert list(sb.columns[:8]) == ["run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
                                    "E_B", "censored"]
    losers = sb[~sb["in_envelope"]]
    assert len(losers) == 3 * 6 and (losers["lr"] == hs.LR_BASE).all() and (losers["n_prompts"] >= 128).all()


def test_a_resumed_run_from_the_wandb_api_is_stitched_and_stays_so_incrementally(tmp_path, wandb_endpoint):
    """The W&B source (the real wandb client against the local endpoint, tests/wandb_server.py):
    a crashed run and its restart are one run, also when the next snapshot reuses the stitched
    run and fetches only what changed."""
    from wandb_server import verl_run

    from cbs_rlvr.sources.snapshot import write_snapshot

    crashed = verl_run("a1", n_steps=47, state="crashed", created_at="2026-01-01T00:00:00Z")
    restart = verl_run("b2", n_steps=80, created_at="2026-01-01T05:00:00Z")
    for row in crashed.rows + restart.rows:
        if METRIC in row:
            row[METRIC] = 0.1 + 0.005 * row["_step"]
    for row in crashed.rows:
        if row["_step"] > 40:
            row["critic/score/mean"] = 2.0  # the lost steps
    restart.rows = [{"_step": 40, METRIC: 0.5}] + [r for r in restart.rows if r["_step"] > 40]
    wandb_endpoint([crashed, restart])
    snap = build_snapshot("wandb:ent/proj", progress=False)
    run = snap["runs"].iloc[0]
    assert len(snap["runs"]) == 1 and run["segment_run_ids"] == "a1;b2" and run["resume_lost_steps"] == 7
    hist = snap["history"].set_index("step")
    assert hist.index.tolist() == list(range(81)) and (hist.loc[41:, "critic/score/mean"] != 2.0).all()
    assert hist.loc[40, METRIC] == 0.5
    write_snapshot(snap, tmp_path)
    again = build_snapshot("wandb:ent/proj", progress=False, previous_dir=tmp_path)
    pd.testing.assert_frame_equal(again["runs"].drop(columns="updated_at"), snap["runs"].drop(columns="updated_at"))
    pd.testing.assert_frame_equal(again["history"], snap["history"])


def test_a_joint_fit_pools_only_phases_of_this_phases_task(tmp_path):
    """two_axis_phases naming a phase of another task, a phase without params and a phase
    without runs: each is left out with its reason, the rest pooled (p1, p2a, p2b of the demo
    measure gsm8k; p4_math measures math)."""
    snap = build_snapshot(str(hs.DEMO))
    runs_all, history_all = snap["runs"], snap["history"]
    params_dir = tmp_path / "params"
    shutil.copytree(REPO / "params", params_dir)
    text = (params_dir / "p2b.yaml").read_text()
    assert "two_axis_phases: [p1, p2a, p2b, p2c]\n" in text
    (params_dir / "p2b.yaml").write_text(text.replace(
        "two_axis_phases: [p1, p2a, p2b, p2c]", "two_axis_phases: [p1, p2a, p2b, p4_math, p9, p3, p2c]"))
    (params_dir / "p3.yaml").write_text((params_dir / "p2c.yaml").read_text().replace("phase: p2c", "phase: p3"))
    params = load_phase_params(params_dir, "p2b")
    members, left_out = joint_phase_runs(runs_all, history_all, params, params_dir)
    assert [m["phase"] for m in members] == ["p1", "p2a", "p2b", "p2c"]
    assert {m["metric"] for m in members} == {METRIC}
    assert [len(m["runs"]) for m in members] == [11, 7, 6, 5]
    assert len(left_out) == 3
    assert left_out[0].startswith("p4_math (another task: val-core/") and f"not {METRIC}" in left_out[0]
    assert left_out[1].startswith("p9 (") and "p9" in left_out[1][4:]
    assert left_out[2].startswith("p3 (no runs of phase 'p3'")
    # without two_axis_phases: the phase alone
    alone, none_left = joint_phase_runs(runs_all, history_all, {**params, "two_axis_phases": []}, params_dir)
    assert [m["phase"] for m in alone] == ["p2b"] and none_left == []
