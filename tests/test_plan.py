"""Planning the next runs (cbs_rlvr/plan.py): recover the fastest batch size and the most useful
next run from generated sweeps with a known model.

The sweeps are built in memory in the snapshot schema (runs + history): validation accuracy
follows the demo's model (data/demo/README.md), so S(B) = S_min (1 + B_noise / B) exactly at
every target, with Binomial(n_val, acc)/n_val eval noise and a per-run speed (seed effect);
the step time is (a + b B) x lognormal(0, 0.05) per step. Each sweep draws its own B_noise,
step-time coefficients and range of batch sizes, so the true optimum B* = sqrt(a B_noise / b)
falls inside the sampled range in most sweeps and beyond it in some.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cbs_rlvr.axes import two_axis_fit
from cbs_rlvr.bootstrap import fit_phase
from cbs_rlvr.nextruns import NEXT_RUNS_COLUMNS, next_runs
from cbs_rlvr.plan import (
    PLAN_COLUMNS,
    candidate_configs,
    choose_models,
    mccandlish_models,
    plan_summary,
    predict_plan,
    recommend,
    two_axis_models,
)
from cbs_rlvr.wallclock import fastest_batch, step_time_model, step_time_table, wall_clock_table

METRIC = "val-core/openai/gsm8k/reward/mean@1"
THRESHOLDS = [0.4, 0.5, 0.6]
A0, AMAX, TAU0, N_VAL, RHO, EVAL_EVERY = 0.12, 0.80, 30.0, 1319, 0.15, 5
N_SWEEPS = 40
K_BOOT = 200


# ------------------------------------------------------------------------------------------
# Generated sweeps with a known model
# ------------------------------------------------------------------------------------------
def draw_model(seed: int) -> dict:
    """Noise scale, step-time coefficients and the sampled range of one sweep."""
    rng = np.random.default_rng(seed)
    return {"B00": float(np.exp(rng.uniform(np.log(24), np.log(240)))), "taub": float(rng.uniform(20, 60)),
            "a": float(rng.uniform(5, 30)), "b": float(np.exp(rng.uniform(np.log(0.01), np.log(0.08)))),
            "k0": int(rng.integers(1, 5)), "n_sizes": 6, "n_r": 8, "time_sd": 0.05, "speed_sd": 0.03}


def truth(m: dict, thr: float) -> tuple[float, float]:
    """(S_min, B_noise in samples) at a target, along n_prompts at n_rollouts = m['n_r']."""
    tau = -TAU0 * math.log1p(-(thr - A0) / (AMAX - A0))
    bbar = m["B00"] * (1 + tau / (2 * m["taub"]))
    return tau, bbar * (1 + (m["n_r"] - 1) * RHO)


def true_hours(m: dict, thr: float, B) -> np.ndarray:
    S_min, b_noise = truth(m, thr)
    B = np.asarray(B, dtype=float)
    return S_min * (1 + b_noise / B) * (m["a"] + m["b"] * B) * math.exp(m["time_sd"] ** 2 / 2) / 3600


def true_optimum(m: dict, thr: float) -> tuple[float, float]:
    """(B*, hours at B*) over continuous B: S_min (1 + Bn/B)(a + bB) is least at sqrt(a Bn / b)."""
    B = math.sqrt(m["a"] * truth(m, thr)[1] / m["b"])
    return B, float(true_hours(m, thr, B))


def make_run(m: dict, n_p: int, rng, run_id: str) -> tuple[dict, pd.DataFrame]:
    """One run in the snapshot schema, evaluated every 5 steps until 1.3 x S(top target) + 10."""
    n_r = m["n_r"]
    B = n_p * n_r
    speed = rng.lognormal(0, m["speed_sd"])
    S_min, b_noise = truth(m, max(THRESHOLDS))
    last = int(math.ceil(1.3 * S_min * (1 + b_noise / B) / speed) + 10)
    steps = np.arange(last + 1)
    k = m["B00"] * (1 + (n_r - 1) * RHO) / B
    qa, qb = k / (2 * m["taub"]), 1 + k
    tau = 2 * speed * steps / (qb + np.sqrt(qb * qb + 4 * qa * speed * steps))  # progress in S_min steps
    evals = (steps % EVAL_EVERY == 0) | (steps == last)
    acc = np.full(last + 1, np.nan)
    acc[evals] = rng.binomial(N_VAL, A0 + (AMAX - A0) * (1 - np.exp(-tau[evals] / TAU0))) / N_VAL
    step_time = (m["a"] + m["b"] * B) * rng.lognormal(0, m["time_sd"], last + 1)
    step_time[0] = np.nan
    run = {"run_id": run_id, "name": f"cbs_p1_np{n_p}_nr{n_r}", "phase": "p1", "n_prompts": n_p,
           "n_rollouts": n_r, "total_batch": B, "replicate": 0, "n_replicates": 1, "state": "finished",
           "n_gpus": 8, "flags": ""}
    return run, pd.DataFrame({"run_id": run_id, "step": steps, METRIC: acc, "perf/time_per_step": step_time})


def make_sweep(m: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    pairs = [make_run(m, 2 ** (m["k0"] + i), rng, f"r{2 ** (m['k0'] + i)}") for i in range(m["n_sizes"])]
    return pd.DataFrame([p[0] for p in pairs]), pd.concat([p[1] for p in pairs], ignore_index=True)


def add_run(runs, history, run, run_history):
    return (pd.concat([runs, pd.DataFrame([run])], ignore_index=True),
            pd.concat([history, run_history], ignore_index=True))


@pytest.fixture(scope="module")
def sweeps():
    """N_SWEEPS generated sweeps, each fitted and planned as 08_plan does."""
    out = []
    for s in range(N_SWEEPS):
        m = draw_model(s)
        runs, history = make_sweep(m, 1000 + s)
        sb, fit, draws = fit_phase(runs, history, METRIC, THRESHOLDS, N_VAL, n_bootstrap=K_BOOT, seed=0,
                                   return_draws=True)
        wall = wall_clock_table(runs, history, METRIC, THRESHOLDS)
        model = step_time_model(wall)
        predictions = predict_plan(mccandlish_models(sb, fit, draws), model, step_time_table(wall))
        out.append({"seed": s, "model": m, "runs": runs, "history": history, "sb": sb, "fit": fit,
                    "draws": draws, "wall": wall, "step_model": model, "predictions": predictions,
                    "plan": recommend(predictions)})
    return out


# ------------------------------------------------------------------------------------------
# Acceptance
# ------------------------------------------------------------------------------------------
def test_recommended_batch_is_near_the_true_optimum_and_its_time_is_predicted(sweeps):
    """Over 40 sweeps x 3 targets (120 recommendations): the recommended batch's TRUE time to
    target is within 5% of the true optimum over continuous B (measured: at most 4.0%; over
    150 sweeps, 449 of 450 within 5%, worst 6.4%) and the predicted time within 15% of the
    true one (measured: at most 12.6%, median 2%)."""
    rows = []
    for sw in sweeps:
        m = sw["model"]
        for r in sw["plan"][sw["plan"]["objective"] == "wall_clock"].itertuples():
            _, best = true_optimum(m, r.threshold)
            true = float(true_hours(m, r.threshold, r.total_batch))
            rows.append({"excess": true / best - 1, "error": r.predicted_hours / true - 1})
    res = pd.DataFrame(rows)
    assert len(res) == N_SWEEPS * len(THRESHOLDS)
    assert res["excess"].max() <= 0.05, res.sort_values("excess").tail()
    assert res["error"].abs().max() <= 0.15, res.sort_values("error").tail()


def test_recommendations_outside_the_sampled_range_say_extrapolated(sweeps):
    n_outside = 0
    for sw in sweeps:
        sb = sw["sb"]
        for r in sw["plan"].itertuples():
            reached = sb[(sb["threshold"] == r.threshold) & ~sb["censored"]]["total_batch"]
            outside = not reached.min() <= r.total_batch <= reached.max()
            n_outside += outside
            if outside or r.fit_status != "ok":
                assert r.basis == "extrapolated", r
            else:
                assert r.basis == "interpolated", r
    assert n_outside >= 10  # the samples objective and the sweeps whose optimum lies beyond


def test_every_predicted_interval_holds_its_estimate(sweeps):
    for sw in sweeps:
        p = sw["predictions"]
        for col in ("predicted_steps", "predicted_hours", "predicted_gpu_hours", "predicted_samples"):
            lo, est, hi = p[f"{col}_lo"], p[col], p[f"{col}_hi"]
            assert ((lo <= est) & (est <= hi)).all(), (sw["seed"], col)


# The next runs are tested in closed loop in test_next_runs.py (their ranking is per GPU-hour).


# ------------------------------------------------------------------------------------------
# The pieces
# ------------------------------------------------------------------------------------------
def test_fit_phase_draws_leave_the_default_output_alone_and_reproduce_its_intervals(sweeps):
    sw = sweeps[0]
    sb, fit = fit_phase(sw["runs"], sw["history"], METRIC, THRESHOLDS, N_VAL, n_bootstrap=K_BOOT, seed=0)
    pd.testing.assert_frame_equal(fit, sw["fit"])
    pd.testing.assert_frame_equal(sb, sw["sb"])
    for row in fit.itertuples():
        d = sw["draws"][row.threshold]
        assert d["log_B_noise"].shape == (K_BOOT,) and d["tables"][0].shape == (K_BOOT, len(d["B"]))
        b = np.exp(d["log_B_noise"][np.isfinite(d["log_B_noise"])])
        lo, hi = np.quantile(b, [0.025, 0.975], method="inverted_cdf")
        assert lo == pytest.approx(row.B_noise_lo, rel=1e-9) and hi == pytest.approx(row.B_noise_hi, rel=1e-9)
        assert 0.005 < d["eval_sd_log"] < 0.3


def test_candidates_are_powers_of_two_along_the_axis_or_both():
    along_prompts = candidate_configs(pd.DataFrame({"n_prompts": [8, 16, 48, 512], "n_rollouts": 8}))
    assert list(along_prompts["n_prompts"]) == [2, 4, 8, 16, 32, 48, 64, 128, 256, 512, 1024, 2048]  # and 48, sampled
    assert (along_prompts["n_rollouts"] == 8).all()
    along_rollouts = candidate_configs(pd.DataFrame({"n_prompts": 32, "n_rollouts": [2, 4, 16, 64]}), octaves=1)
    assert list(along_rollouts["n_rollouts"]) == [2, 4, 8, 16, 32, 64, 128]  # GRPO needs 2 rollouts
    both = candidate_configs(pd.DataFrame({"n_prompts": [8, 512, 32, 32], "n_rollouts": [8, 8, 2, 64]}),
                             both_axes=True, octaves=1)
    assert both["n_prompts"].min() == 4 and both["n_prompts"].max() == 1024
    assert both["n_rollouts"].min() == 2 and both["n_rollouts"].max() == 128
    assert both["total_batch"].min() >= 64 / 2 and both["total_batch"].max() <= 4096 * 2
    assert both["n_rollouts"].nunique() > 1 and both["n_prompts"].nunique() > 1


def _exact_model(S_min=20.0, B0=300.0, rho=0.0, kind="mccandlish", status="ok", K=100):
    configs = pd.DataFrame({"n_prompts": [8, 16, 32, 64, 128], "n_rollouts": 8})
    draws = (np.full(K, S_min), np.full(K, B0), np.full(K, rho))
    return {"kind": kind, "threshold": 0.5, "status": status, "reason": "", "S_min": S_min, "B0": B0,
            "rho": rho, "draws": draws, "configs": configs, "reached": configs}


STEP_MODEL = {"status": "ok", "terms": ["a", "b_B"], "coef": {"a": 12.0, "b_B": 0.05},
              "cov": [[0.0, 0.0], [0.0, 0.0]], "reason": ""}


def test_predictions_follow_the_models_exactly():
    step_times = pd.DataFrame({"total_batch": [64.0, 1024.0], "n_gpus": [8.0, 8.0]})
    p = predict_plan({0.5: _exact_model()}, STEP_MODEL, step_times)
    B = p["total_batch"].to_numpy(dtype=float)
    S = 20.0 * (1 + 300.0 / B)
    T = 12.0 + 0.05 * B
    np.testing.assert_allclose(p["predicted_steps"], S)
    np.testing.assert_allclose(p["predicted_hours"], S * T / 3600)
    np.testing.assert_allclose(p["predicted_gpu_hours"], 8 * S * T / 3600)
    np.testing.assert_allclose(p["predicted_samples"], S * B)
    np.testing.assert_allclose(p["predicted_hours_lo"], p["predicted_hours"])  # no uncertainty given
    assert set(p.loc[(B < 64) | (B > 1024), "basis"]) == {"extrapolated"}
    assert set(p.loc[(B >= 64) & (B <= 1024), "basis"]) == {"interpolated"}
    plan = recommend(p)
    assert list(plan.columns[:len(PLAN_COLUMNS)]) == PLAN_COLUMNS
    wall = plan.set_index("objective").loc["wall_clock"]
    assert wall["total_batch"] == B[np.argmin(S * T)]  # B* = sqrt(12 x 300 / 0.05) = 268 -> 256
    assert wall["total_batch"] == 256
    samples = plan.set_index("objective").loc["samples"]
    within = p[p["predicted_samples"] <= 1.1 * p["predicted_samples"].min()]
    assert samples["total_batch"] == within.loc[within["predicted_hours"].idxmin(), "total_batch"]
    # a fit whose status is not ok makes every prediction extrapolated
    p2 = predict_plan({0.5: _exact_model(status="extrapolated")}, STEP_MODEL, step_times)
    assert set(p2["basis"]) == {"extrapolated"}


def test_two_axis_model_prices_the_split():
    """rho = 1: every rollout of a prompt is the same sample, so at fixed B fewer rollouts take
    fewer steps; the two-axis candidates vary both axes."""
    m = _exact_model(rho=1.0, kind="two_axis", B0=40.0)
    m["configs"] = m["reached"] = pd.DataFrame({"n_prompts": [8, 64, 32, 32], "n_rollouts": [8, 8, 2, 16]})
    p = predict_plan({0.5: m}, STEP_MODEL, pd.DataFrame({"total_batch": [64.0], "n_gpus": [np.nan]}), octaves=1)
    at_256 = p[p["total_batch"] == 256].sort_values("n_rollouts")
    assert at_256["predicted_steps"].is_monotonic_increasing and len(at_256) >= 3
    np.testing.assert_allclose(at_256["predicted_steps"], 20 * (1 + 40 / at_256["n_prompts"]))
    assert p["predicted_gpu_hours"].isna().all()
    plan = recommend(p)
    assert "gpu_hours" not in set(plan["objective"])  # no GPU counts: no row for it


def test_no_step_times_and_insufficient_fits_write_what_they_can():
    m = _exact_model()
    p = predict_plan({0.5: m}, {"status": "insufficient", "reason": "no step time"}, pd.DataFrame(
        {"total_batch": [], "n_gpus": []}))
    plan = recommend(p)
    assert list(plan["objective"]) == ["samples"] and plan["predicted_hours"].isna().all()
    within = p[p["predicted_samples"] <= 1.1 * p["predicted_samples"].min()]
    assert plan["total_batch"].iloc[0] == within["total_batch"].max()  # no hours: the fewest steps among them
    bad = _exact_model(status="insufficient")
    bad["draws"] = None
    p = predict_plan({0.5: bad}, STEP_MODEL, pd.DataFrame({"total_batch": [64.0], "n_gpus": [8.0]}))
    plan = recommend(p)
    assert plan.empty and list(plan.columns[:len(PLAN_COLUMNS)]) == PLAN_COLUMNS
    assert recommend(predict_plan({}, STEP_MODEL, pd.DataFrame())).empty


def test_a_phase_with_two_batch_sizes_gets_empty_tables_with_their_header():
    m = draw_model(3)
    runs, history = make_sweep(dict(m, n_sizes=2), 7)
    sb, fit, draws = fit_phase(runs, history, METRIC, THRESHOLDS, N_VAL, n_bootstrap=40, return_draws=True)
    assert set(fit["status"]) == {"insufficient"}
    wall = wall_clock_table(runs, history, METRIC, THRESHOLDS)
    p = predict_plan(mccandlish_models(sb, fit, draws), step_time_model(wall), step_time_table(wall))
    assert p["predicted_steps"].isna().all()
    assert recommend(p).empty
    nxt = next_runs(draws, fit, sb)
    assert nxt.empty and list(nxt.columns) == NEXT_RUNS_COLUMNS
    lines = plan_summary(recommend(p), None, nxt, fit[["threshold", "status", "reason"]])
    assert len(lines) == len(THRESHOLDS) and all("no plan (fit insufficient: " in ln for ln in lines)


def test_next_runs_without_bootstrap_tables_suggest_nothing(sweeps):
    """Without fit_phase's bootstrap tables there is no interval to narrow: no suggestion, and
    the table keeps its header."""
    sw = sweeps[1]
    sb, fit, draws = fit_phase(sw["runs"], sw["history"], METRIC, [0.5], N_VAL, n_bootstrap=0, return_draws=True)
    nxt = next_runs(draws, fit, sb, n_simulations=100)
    assert nxt.empty and list(nxt.columns) == NEXT_RUNS_COLUMNS


def test_two_axis_draws_are_the_bootstrap_of_two_axis_fit():
    """two_axis_models draws the same bootstrap as axes.two_axis_fit: the percentiles of its rho
    draws are two_axis_fit's rho interval."""
    rows = []
    rng = np.random.default_rng(4)
    for phase, grid in (("a", [(p, 8) for p in (8, 16, 32, 64, 128, 256)]),
                        ("b", [(32, r) for r in (2, 4, 8, 16, 32, 64)])):
        for n_p, n_r in grid:
            for t in (0.5,):
                S = 30 * (1 + 50 * (1 + (n_r - 1) * 0.2) / (n_p * n_r)) * rng.lognormal(0, 0.04)
                rows.append({"phase": phase, "threshold": t, "n_prompts": n_p, "n_rollouts": n_r,
                             "total_batch": n_p * n_r, "S_B": S, "censored": False})
    sb_all = pd.DataFrame(rows)
    models = two_axis_models(sb_all, n_bootstrap=300, seed=2)
    fit = two_axis_fit(sb_all, n_bootstrap=300, seed=2)["fit"].iloc[0]
    m = models[0.5]
    assert m["status"] == "ok" and m["rho"] == pytest.approx(fit["rho"]) and m["B0"] == pytest.approx(fit["B0"])
    rho = m["draws"][2][np.isfinite(m["draws"][2])]
    lo, hi = np.quantile(rho, [0.025, 0.975], method="inverted_cdf")
    assert lo == pytest.approx(fit["rho_lo"], abs=1e-12) and hi == pytest.approx(fit["rho_hi"], abs=1e-12)
    chosen = choose_models({0.5: _exact_model(), 0.6: _exact_model()}, models)
    assert chosen[0.5]["kind"] == "two_axis" and chosen[0.6]["kind"] == "mccandlish"


def test_plan_summary_states_the_answer_from_the_tables(sweeps):
    sw = sweeps[0]
    fastest = fastest_batch(sw["wall"])
    lines = plan_summary(sw["plan"], fastest)
    r = sw["plan"].set_index(["threshold", "objective"]).loc[(0.5, "wall_clock")]
    line = next(ln for ln in lines if ln.startswith("To reach 0.5 fastest"))
    assert f"{int(r['n_prompts'])} prompts × 8 rollouts" in line and "on 8 GPUs" in line
    assert "your fastest run so far" in line
