"""The bundled demo sweep (data/demo/): its ground truth is exact and its runs are reproducible."""

from __future__ import annotations

import getpass
import json
import math
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from testkit import load_make_demo

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
GT_PATH = DEMO / "ground_truth.json"
RUNS_PER_PHASE = {"p1": 11, "p2a": 7, "p2b": 6, "p2c": 5, "p4_math": 7, "p4_rpp": 7}


md = load_make_demo("cbs_make_demo")


@pytest.fixture(scope="module")
def gt() -> dict:
    return json.loads(GT_PATH.read_text())


@pytest.fixture(scope="module")
def sims() -> list:
    return [md.simulate_run(s) for s in md.sweep()]


def _crossing_by_bisection(task, n_p, n_r, tau_thr, hi=1e5):
    """Continuous step at which the noiseless simulated tau(s) (r = 1) reaches tau_thr."""
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if md.tau_after_steps(task, n_p, n_r, mid) < tau_thr:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# -- ground truth ----------------------------------------------------------------------
def test_committed_ground_truth_is_what_the_script_writes(gt, sims):
    assert gt == json.loads(json.dumps(md.ground_truth(sims)))


def test_numerical_check_of_the_script_passes(gt):
    md.check_ground_truth(gt)


def test_closed_form_S_is_where_noiseless_tau_crosses_the_target(gt):
    for phase, entry in gt["phases"].items():
        task = md.TASKS[entry["task"]]
        for key, by_config in entry["S_by_config"].items():
            tau_thr = md.tau_at_accuracy(task, float(key))
            assert math.isclose(float(md.accuracy(task, tau_thr)), float(key), rel_tol=1e-12)
            for cfg, s_closed in by_config.items():
                n_p, n_r = map(int, cfg.split("x"))
                s_sim = _crossing_by_bisection(task, n_p, n_r, tau_thr)
                assert s_sim == pytest.approx(s_closed, rel=1e-9), (phase, key, cfg)
                # on the integer step grid the simulation uses, the crossing is bracketed
                below, above = md.tau_after_steps(task, n_p, n_r, [math.floor(s_closed),
                                                                   math.ceil(s_closed)])
                assert below <= tau_thr <= above


def test_S_of_B_is_exactly_mccandlish_along_prompt_and_rollout_axes(gt):
    for phase, entry in gt["phases"].items():
        if entry["axis"] == "iso_batch":
            continue
        for key, truth in entry["thresholds"].items():
            B = np.array([g["total_batch"] for g in entry["grid"]], dtype=float)
            S = np.array([entry["S_by_config"][key][f"{g['n_prompts']}x{g['n_rollouts']}"]
                          for g in entry["grid"]])
            predicted = truth["S_min"] * (1.0 + truth["B_noise"] / B)
            np.testing.assert_allclose(S, predicted, rtol=1e-12, err_msg=f"{phase} {key}")
            assert truth["E_min"] == pytest.approx(truth["S_min"] * truth["B_noise"], rel=1e-12)


def _tau_thr(t: dict, thr: float) -> float:
    return -t["tau0"] * math.log(1.0 - (thr - t["a0"]) / (t["amax"] - t["a0"]))


def test_prompt_axis_formulas_from_the_model_parameters(gt):
    """p1/p2a/p4_*: S_min = tau_thr, B_noise = Bbar (1 + (R - 1) rho), from the JSON's model."""
    for entry in gt["phases"].values():
        if entry["axis"] != "prompts":
            continue
        t = gt["model"]["tasks"][entry["task"]]
        R = entry["fixed"]["n_rollouts"]
        assert all(g["n_rollouts"] == R for g in entry["grid"])
        for key, truth in entry["thresholds"].items():
            tau = _tau_thr(t, float(key))
            b_bar = t["B00"] * (1.0 + tau / (2.0 * t["taub"]))
            assert truth["S_min"] == pytest.approx(tau, rel=1e-12)
            assert truth["B_bar_independent"] == pytest.approx(b_bar, rel=1e-12)
            assert truth["B_noise"] == pytest.approx(b_bar * (1 + (R - 1) * t["rho"]), rel=1e-12)
            b_loc = t["B00"] * (1.0 + tau / t["taub"])
            assert truth["B_simple_at_target"] == pytest.approx(
                b_loc * (1 + (R - 1) * t["rho"]), rel=1e-12)


def test_rollout_axis_formulas_from_the_model_parameters(gt):
    """p2b: S_min = tau_thr (1 + Bbar rho / P), B_noise = Bbar (1 - rho) / (1 + Bbar rho / P)."""
    entry = gt["phases"]["p2b"]
    assert entry["axis"] == "rollouts"
    t = gt["model"]["tasks"]["gsm8k"]
    P = entry["fixed"]["n_prompts"]
    assert all(g["n_prompts"] == P for g in entry["grid"])
    for key, truth in entry["thresholds"].items():
        tau = _tau_thr(t, float(key))
        b_bar = t["B00"] * (1.0 + tau / (2.0 * t["taub"]))
        shrink = 1.0 + b_bar * t["rho"] / P
        assert truth["S_min"] == pytest.approx(tau * shrink, rel=1e-12)
        assert truth["B_noise"] == pytest.approx(b_bar * (1 - t["rho"]) / shrink, rel=1e-12)
        # correlated rollouts: per sample, the rollout axis has a smaller noise scale
        assert truth["B_noise"] < gt["phases"]["p1"]["thresholds"][key]["B_noise"]


def test_iso_batch_steps_grow_with_rollouts_per_prompt(gt):
    entry = gt["phases"]["p2c"]
    assert all(g["total_batch"] == 2048 for g in entry["grid"])
    for key, by_split in entry["iso_batch_S"].items():
        ordered = sorted(by_split.items(), key=lambda kv: int(kv[0].split("x")[1]))
        steps = [s for _, s in ordered]
        assert steps == sorted(steps), key  # fewer distinct prompts -> fewer effective samples


def test_B_noise_grows_with_the_target(gt):
    for phase, entry in gt["phases"].items():
        if entry["axis"] == "iso_batch":
            continue
        values = [entry["thresholds"][k]["B_noise"] for k in sorted(entry["thresholds"], key=float)]
        assert values == sorted(values), phase


# -- the sweep ---------------------------------------------------------------------------
def test_runs_per_phase_names_and_replicates(gt):
    runs = gt["runs"]
    counts: dict[str, int] = {}
    for r in runs.values():
        counts[r["phase"]] = counts.get(r["phase"], 0) + 1
        assert r["name"] == f"cbs_{r['phase']}_np{r['n_prompts']}_nr{r['n_rollouts']}"
        assert r["total_batch"] == r["n_prompts"] * r["n_rollouts"]
    assert counts == RUNS_PER_PHASE
    by_name: dict[str, list] = {}
    for rid, r in runs.items():
        by_name.setdefault(r["name"], []).append((r["seed"], rid))
    replicated = {name: v for name, v in by_name.items() if len(v) > 1}
    assert set(replicated) == {"cbs_p1_np32_nr8", "cbs_p1_np128_nr8"}
    for v in replicated.values():
        assert sorted(seed for seed, _ in v) == [0, 1, 2]
        assert len({rid for _, rid in v}) == 3


def test_failing_run_and_censored_small_batches(gt):
    runs = gt["runs"].values()
    failed = [r for r in runs if r["state"] == "failed"]
    assert [r["name"] for r in failed] == ["cbs_p4_rpp_np16_nr8"]
    assert failed[0]["last_step"] == int(0.6 * failed[0]["total_training_steps"])
    finished = [r for r in runs if r["state"] == "finished"]
    assert all(r["last_step"] == r["total_training_steps"] for r in finished)
    p1_np8 = next(r for r in runs if r["name"] == "cbs_p1_np8_nr8")
    assert not p1_np8["reached"]["0.7"] and p1_np8["reached"]["0.65"]


def test_per_run_true_steps_include_the_run_speed(gt):
    for r in gt["runs"].values():
        by_config = gt["phases"][r["phase"]]["S_by_config"]
        for key, s_true in r["S_true"].items():
            s_r1 = by_config[key][f"{r['n_prompts']}x{r['n_rollouts']}"]
            assert s_true == pytest.approx(s_r1 / r["speed_r"], rel=1e-12)
            assert r["reached"][key] == (s_true <= r["last_eval_step"])


def test_simulated_logging_pattern(sims):
    for sim in sims:
        task, ph = sim.spec.task, md.PHASES[sim.spec.phase]
        steps = [step for step, _ in sim.rows]
        assert steps == list(range(sim.last_step + 1))
        step0 = sim.rows[0][1]
        assert task["metric"] in step0 and "training/global_step" not in step0
        evals = [step for step, m in sim.rows if task["metric"] in m]
        expected = sorted({0, *range(5, sim.last_step + 1, 5)} | (
            {sim.total_steps} if sim.last_step == sim.total_steps else set()))
        assert evals == expected
        for step, m in sim.rows[1:]:
            assert m["training/global_step"] == step
            assert m["perf/time_per_step"] == m["timing_s/step"]
            assert ("grad_noise/B_noise_estimate" in m) == bool(ph.get("grad_noise"))
            if "grad_noise/grad_norm" in m:
                assert m["grad_noise/grad_norm"] == m["actor/grad_norm"]
        for _, m in sim.rows:
            for key, value in m.items():
                if key.startswith("val-core/"):
                    n_val = next(t["n_val"] for t in md.TASKS.values() if t["metric"] == key)
                    assert value * n_val == pytest.approx(round(value * n_val), abs=1e-9)
        if sim.spec.phase == "p4_math":
            assert md.TASKS["gsm8k"]["metric"] in step0


def test_simulation_is_deterministic_and_per_run():
    spec = md.sweep()[3]
    a, b = md.simulate_run(spec), md.simulate_run(spec)
    assert a.rows == b.rows and a.speed == b.speed
    ids = [s.run_id for s in md.sweep()]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-z]{8}", i) for i in ids)


# -- the committed files -------------------------------------------------------------------
def test_committed_layout_and_size(gt):
    files = sorted(p for p in (DEMO / "wandb").rglob("*") if p.is_file())
    expected = sorted(DEMO / r["path"] for r in gt["runs"].values())
    assert files == expected  # nothing but offline-run-<ts>-<id>/run-<id>.wandb
    for rid, r in gt["runs"].items():
        assert re.fullmatch(rf"wandb/offline-run-\d{{8}}_\d{{6}}-{rid}/run-{rid}\.wandb", r["path"])
    total = sum(f.stat().st_size for f in files)
    assert total < 10_000_000, f"demo runs take {total / 1e6:.1f} MB (limit 10 MB)"


def test_committed_files_are_complete_and_private(gt):
    needles = [b"/root", b"/home/", b"/work/", b"/tmp/", b"/Users/", str(ROOT).encode()]
    # short host/user names (e.g. 'vm') occur by chance inside random ids: check long ones only
    for name in (socket.gethostname(), getpass.getuser()):
        if len(name) >= 5:
            needles.append(name.encode())
    for r in gt["runs"].values():
        path = DEMO / r["path"]
        data = path.read_bytes()
        assert data.startswith(b":W&B")
        assert md._last_record_type(path) == "exit", f"{path.name} is truncated"
        assert md.HOST.encode() in data  # the placeholder replaced the real host name
        for needle in needles:
            assert needle not in data, f"{path.name} contains {needle!r}"


def _history_frame(result):
    """History DataFrame of what read_wandb_file returns (rows as dicts)."""
    import pandas as pd

    return pd.DataFrame(result["history"])


def test_regenerating_a_run_reproduces_the_committed_history(gt, tmp_path):
    from cbs_rlvr.sources.wandb_file import read_wandb_file

    # the failing run: short, and covers the exit_code=1 path
    spec = next(s for s in md.sweep() if s.fails)
    new_path = md.write_run(md.simulate_run(spec), tmp_path)
    old_path = DEMO / gt["runs"][spec.run_id]["path"]
    assert new_path.relative_to(tmp_path) == old_path.relative_to(DEMO)
    old = _history_frame(read_wandb_file(old_path))
    new = _history_frame(read_wandb_file(new_path))
    # _runtime is the wall time of the generation itself, the one value that must differ
    keep = sorted(c for c in old.columns if "_runtime" not in str(c))
    assert "actor/grad_norm" in keep and md.TASKS["rpp"]["metric"] in keep
    import pandas as pd

    pd.testing.assert_frame_equal(old[keep].reset_index(drop=True),
                                  new[sorted(c for c in new.columns if "_runtime" not in str(c))]
                                  .reset_index(drop=True))
