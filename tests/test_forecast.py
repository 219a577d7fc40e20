"""Early answers (issue 26): the progress model of every evaluation (fit/allevals.py), the crossing
forecasts of running runs (plan/forecast.py), the fit with them (fit/imputed.py), the stop list
(plan/stop.py), against known truth: formula sweeps of tests/synth.py (McCandlish in the effective
batch, a known S_min and B_noise at every target) cut as they ran, and a real-trainer sweep
(tests/pg_trainer.py) cut with sweep_at. tests/forecast_acceptance.py measures the issue's numbers
over every optimiser class."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import synth

import cbs_helpers as ch
from cbs_rlvr.fit.allevals import fit_all_evals, fit_progress
from cbs_rlvr.fit.imputed import fit_with_forecasts
from cbs_rlvr.plan.forecast import FORECAST_COLUMNS, forecast_phase, run_budgets
from cbs_rlvr.plan.stop import STOP_COLUMNS, answer, running_sentence, same_answer, stop_runs

THR = [0.4, 0.5, 0.6]
K = 200


def _formula_sweep(seed: int = 1):
    """A prompts-axis formula sweep (n_prompts 4-512 x 8 rollouts, 2 seeds) with verl's step budget
    in the config, and its truth per target: S_min and B_noise of S = S_min (1 + B_noise / B)."""
    m = synth.model(seed, b00=120.0, a=20.0, b=0.02)
    runs, hist = synth.grpo_sweep(m, {"p1": [(2 ** k, 8) for k in range(2, 10)]}, seed, THR, n_seeds=2)
    budget = int(hist["step"].max())
    runs["config"] = json.dumps({"trainer": {"total_training_steps": budget, "n_gpus_per_node": 8, "nnodes": 1}})
    runs["last_step"] = budget
    s_min = np.array([float(synth.true_steps(m, t, 1e12, 8)) for t in THR])
    b_noise = np.array([512.0 * (float(synth.true_steps(m, t, 64, 8)) / s - 1.0) for t, s in zip(THR, s_min, strict=True)])
    return {"m": m, "runs": runs, "history": hist, "budget": budget, "S_min": s_min, "B_noise": b_noise}


def cut_at(sw: dict, share: float):
    """The sweep as it stood when `share` of its GPU-hours were spent, every run started together:
    each run's history up to the steps its step time allowed, the unfinished ones running."""
    runs, hist, m = sw["runs"], sw["history"], sw["m"]
    step_s = m["a"] + m["b"] * runs["total_batch"].to_numpy(float)
    last = hist.groupby("run_id")["step"].max().reindex(runs["run_id"]).to_numpy(float)
    lo, hi = 0.0, float((last * step_s).max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.minimum(mid, last * step_s).sum() < share * (last * step_s).sum() else (lo, mid)
    steps = np.minimum(np.floor(hi / step_s), last)
    keep = hist["step"] <= hist["run_id"].map(dict(zip(runs["run_id"], steps, strict=True)))
    cut = runs.copy()
    cut["state"] = np.where(steps < last, "running", "finished")
    cut["last_step"] = steps
    return cut, hist[keep]


def _fit(runs, hist, n_bootstrap=K):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ch.fit_phase(runs, hist, synth.METRIC, THR, synth.N_VAL, n_bootstrap=n_bootstrap, seed=0)


@pytest.fixture(scope="module")
def formula():
    sw = _formula_sweep()
    sw["fit"] = _fit(sw["runs"], sw["history"])
    sw["progress"] = fit_all_evals(sw["runs"], sw["history"], synth.METRIC, THR, synth.N_VAL, form="mccandlish",
                                   n_draws=40)
    return sw


@pytest.fixture(scope="module")
def running(formula):
    """The formula sweep at 10% of its GPU-hours (every run running, 19 crossings to come), its fit,
    forecasts and step-time model."""
    runs, hist = cut_at(formula, 0.10)
    fit = _fit(runs, hist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = forecast_phase(runs, hist, synth.METRIC, THR, synth.N_VAL, fit, n_draws=40, n_bootstrap=K)
        wall = ch.wall_clock_table(runs, hist, synth.METRIC, THR)
    return {"runs": runs, "history": hist, "fit": fit, "fc": fc, "step_model": ch.step_time_model(wall),
            "step_times": ch.step_time_table(wall)}


def test_the_progress_model_recovers_the_formulas_s_min_and_b_noise(formula):
    t = formula["progress"].table
    assert list(t["status"]) == ["ok"] * 3
    # the truth within 15% (the crossing fit's own error on this sweep is 6-11%)
    assert np.all(np.abs(t["B_noise"].to_numpy() / formula["B_noise"] - 1) < 0.15), t["B_noise"].tolist()
    assert np.all(np.abs(t["S_min"].to_numpy() / formula["S_min"] - 1) < 0.10), t["S_min"].tolist()
    assert (t["B_noise_lo"] <= t["B_noise"]).all() and (t["B_noise"] <= t["B_noise_hi"]).all()
    # binomial eval noise on 1,319 problems: the dispersion of the evaluations about the shared curve is near 1
    assert 1.0 <= formula["progress"].phi < 1.5


def test_on_a_finished_sweep_the_progress_model_agrees_with_the_crossing_fit_within_its_intervals(formula):
    crossing, progress = formula["fit"].table, formula["progress"].table
    for c, p in zip(crossing.itertuples(), progress.itertuples(), strict=True):
        assert c.B_noise_lo <= p.B_noise <= c.B_noise_hi, (c.threshold, p.B_noise, c.B_noise_lo, c.B_noise_hi)
        assert p.B_noise_lo <= c.B_noise <= p.B_noise_hi, (c.threshold, c.B_noise, p.B_noise_lo, p.B_noise_hi)
        assert c.S_min_lo <= p.S_min <= c.S_min_hi


def test_without_n_val_the_dispersion_is_estimated_and_the_answer_stays():
    sw = _formula_sweep(2)
    from cbs_rlvr.measure.crossings import eval_series, run_meta

    meta, ser = run_meta(sw["runs"]), eval_series(sw["history"], synth.METRIC)
    series = [ser[r][:2] for r in meta["run_id"]]
    B = meta["total_batch"].to_numpy(float)
    known = fit_progress(series, B, THR, synth.N_VAL, form="mccandlish", n_draws=0)
    unknown = fit_progress(series, B, THR, None, form="mccandlish", n_draws=0)
    # n = 1 per evaluation and phi estimated: phi ~ 1 / n_val
    assert 0.5 / synth.N_VAL < unknown.phi < 2.0 / synth.N_VAL
    for t in THR:
        assert unknown.params(t)["B_noise"] == pytest.approx(known.params(t)["B_noise"], rel=0.02)


def test_forecast_table_columns_budgets_and_the_running_runs_rows(formula, running):
    t, fc = running["fc"].table, running["fc"]
    assert list(t.columns[:len(FORECAST_COLUMNS)]) == FORECAST_COLUMNS
    assert run_budgets(running["runs"]).eq(formula["budget"]).all()
    runs = running["runs"]
    n_running = int((runs["state"] == "running").sum())
    assert n_running >= 4 and set(t["run_id"]) >= set(runs.loc[runs["state"] == "running", "run_id"])
    seen = t[t["observed"]]
    assert (seen["step_lo"] == seen["step"]).all() and (seen["p_reach"] == 1).all()
    cast = t[~t["observed"] & t["step"].notna()]
    assert len(cast) >= 12
    assert ((cast["step_lo"] <= cast["step"]) & (cast["step"] <= cast["step_hi"])).all()
    assert (cast["step_lo"] >= cast["last_step"]).all()  # it had not crossed by its last evaluation
    assert cast["p_reach"].between(0, 1).all()
    # budget 1.3 x the slowest configuration's steps to 0.6: every run crosses every target in it
    assert cast["p_reach"].mean() > 0.9
    assert fc.noise.n_pairs >= 50 and 0 < fc.noise.rms < 0.2


def test_forecasts_hold_the_crossings_the_runs_then_made(formula, running):
    full = formula["fit"].sb_eb.set_index(["run_id", "threshold"])
    t = running["fc"].table
    cast = t[~t["observed"] & t["step"].notna()]
    later = np.array([full.at[(r.run_id, r.threshold), "S_B"] for r in cast.itertuples()])
    covered = (cast["step_lo"].to_numpy() <= later) & (later <= cast["step_hi"].to_numpy())
    assert covered.mean() >= 0.8, list(zip(cast["step"], later, strict=True))
    assert np.median(np.abs(np.log(later / cast["step"].to_numpy()))) < 0.08


def test_the_fit_with_forecasts_covers_the_full_sweep_and_a_finished_sweep_is_unchanged(formula, running):
    fc = running["fc"]
    assert fc.fit is not running["fit"] and int(fc.fit.table["n_forecast"].sum()) >= 3
    full = formula["fit"].table.set_index("threshold")
    for r in fc.fit.table.itertuples():
        if r.status in ("ok", "extrapolated"):
            assert r.B_noise_lo <= full.at[r.threshold, "B_noise"] <= r.B_noise_hi
            assert r.B_noise_lo <= r.B_noise <= r.B_noise_hi
    # the measured table stays: what a configuration's runs reached is what the plan calls measured
    assert (fc.fit.data.C == running["fit"].data.C).all()
    # a finished sweep: no running run, no imputation, the same object
    assert fit_with_forecasts(formula["fit"], {}) is formula["fit"]
    done = forecast_phase(formula["runs"], formula["history"], synth.METRIC, THR, synth.N_VAL, formula["fit"])
    assert done.fit is formula["fit"] and not len(done.table) and done.progress is None


@pytest.mark.slow
def test_stopping_the_stop_list_keeps_the_decision_and_saves_gpu_hours(formula, running):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = stop_runs(running["fc"], running["fit"], "p1", running["runs"], running["step_model"],
                         running["step_times"], THR, n_bootstrap=100, n_imputations=2)
    t = plan.table
    assert list(t.columns[:3]) == STOP_COLUMNS and len(t) >= 1
    assert (t["gpu_hours_saved"] > 0).all() and (t["unit"] == "GPU-hours").all()
    assert set(t["rule"]) <= {"crossed", "frontier", "replicate"}
    # the sweep with those runs stopped now and the others finished: the same decision as the full sweep
    stopped = set(t["run_id"])
    hist = pd.concat([running["history"][running["history"]["run_id"].isin(stopped)],
                      formula["history"][~formula["history"]["run_id"].isin(stopped)]])
    after = _fit(formula["runs"], hist, n_bootstrap=100)
    full = _fit(formula["runs"], formula["history"], n_bootstrap=100)
    sm, st = running["step_model"], running["step_times"]
    a_after = answer(after, "p1", sm, st, THR, plan.answer["threshold"])
    a_full = answer(full, "p1", sm, st, THR, plan.answer["threshold"])
    assert a_after["total_batch"] == a_full["total_batch"]
    sentence = running_sentence(plan)
    assert sentence.startswith("This sweep is ") and "% done" in sentence and "GPU-hours" in sentence
    assert "stop runs " in sentence


def test_same_answer_is_relative_to_the_interval_width():
    a = {"total_batch": 512, "n_prompts": 64, "n_rollouts": 8, "B_noise": 400.0, "B_noise_lo": 200.0, "B_noise_hi": 800.0}
    width = math.log(4.0)
    near = {**a, "B_noise_hi": 800.0 * math.exp(0.2 * width)}
    far = {**a, "B_noise_lo": 200.0 * math.exp(-0.3 * width)}
    assert same_answer(a, near) and not same_answer(a, far)
    assert not same_answer(a, {**a, "total_batch": 256, "n_prompts": 32})
    assert running_sentence(type("P", (), {"progress": {"n_running": 0}, "answer": {}, "table": pd.DataFrame()})()) == ""


@pytest.fixture(scope="module")
def trainer():
    """A real-trainer sweep (Adam at one learning rate, prompts axis, 2 seeds, every run finished)
    and the same sweep at 50% of its GPU-hours (forecast_acceptance.cut_hours, sweep_at)."""
    import forecast_acceptance as fa
    import pg_trainer as pg

    sw = pg.trainer_sweep(5, "adam_fixed", "prompts", n_running=0)
    return {"full": fa.analyse(sw, K, with_forecasts=False), "cut": fa.analyse(pg.sweep_at(sw, fa.cut_hours(sw, 0.5)), K)}


@pytest.mark.slow
def test_on_a_real_trainer_sweep_forecasts_hold_the_later_crossings(trainer):
    import forecast_acceptance as fa

    full, cut = trainer["full"], trainer["cut"]
    assert int((cut["runs"]["state"] == "running").sum()) >= 8
    rows = pd.DataFrame(fa.forecast_rows(cut["fc"], full["fit"]))
    later = rows[rows["forecast"] & rows["crossed"]]
    assert len(later) >= 10
    assert 0.75 <= later["covered"].mean() <= 1.0, later[["threshold", "step", "lo", "hi", "full_step"]]
    assert later["log_error"].abs().median() < 0.1
    # the chance to cross within budget against what happened: no run forecast sure fails, none sure to miss crosses
    made = rows[rows["forecast"]]
    assert not ((made["p_reach"] > 0.95) & ~made["crossed"]).any()
    assert not ((made["p_reach"] < 0.05) & made["crossed"] & (made["full_step"] < 0.95 * cut["fc"].table["budget"].max())).any()


@pytest.mark.slow
def test_on_a_real_trainer_sweep_the_progress_model_agrees_with_the_crossing_fit(trainer):
    full = trainer["full"]
    fit = full["fit"]
    pf = fit_all_evals(full["runs"], full["history"], full["metric"], full["params"]["thresholds"],
                       full["params"]["n_val"], form="mccandlish" if fit.chosen == "mccandlish" else "general",
                       n_draws=40)
    crossing = fit.table.set_index("threshold")
    for p in pf.table.itertuples():
        c = crossing.loc[p.threshold]
        if c["status"] in ("ok", "extrapolated") and p.status == "ok":
            assert c["B_noise_lo"] <= p.B_noise <= c["B_noise_hi"], (p.threshold, p.B_noise, c["B_noise_lo"], c["B_noise_hi"])
    # the real trainer's evaluations about the shared curve: binomial noise and a little more
    assert 1.0 <= pf.phi < 2.0


def test_the_levels_crossings_are_the_crossing_fits_own(formula):
    from cbs_rlvr.fit.allevals import smoothed, smoothed_crossings
    from cbs_rlvr.measure.crossings import crossings, eval_series, run_meta

    meta, ser = run_meta(formula["runs"]), eval_series(formula["history"], synth.METRIC)
    series = [ser[r][:2] for r in meta["run_id"]]
    levels = np.array([0.2, 0.35, 0.5, 0.65, 0.8])
    mine = smoothed_crossings(series, smoothed(series), levels)
    for r, (s, y) in enumerate(series):
        S, c = crossings(s, y, levels, "isotonic")
        np.testing.assert_array_equal(np.isnan(mine[r]), c)
        np.testing.assert_allclose(mine[r][~c], S[~c])


def test_the_targets_sentence_says_which_targets_are_answered_and_why_not():
    from cbs_rlvr.plan.forecast import targets_sentence

    fit = pd.DataFrame({"threshold": [0.3, 0.4, 0.5, 0.6], "status": ["ok", "extrapolated", "insufficient",
                                                                       "insufficient"], "n_reached": [8, 6, 2, 0]})
    fc = pd.DataFrame({"threshold": [0.5, 0.5, 0.5, 0.6], "observed": [False] * 4, "state": ["running"] * 4,
                       "p_reach": [0.9, 0.8, 0.1, np.nan], "step": [410.0, 380.0, 900.0, np.nan],
                       "n_prompts": [64, 128, 4, 64], "n_rollouts": [8] * 4})
    text = targets_sentence(fit, fc)
    assert text == ("Answers at 0.3 and 0.4 (3 or more batch sizes reached each); not yet at 0.5 (2 batch sizes "
                    "reached it; 2 more batch sizes are forecast to, by step 410) and 0.6 (no run has reached it yet: "
                    "no forecast (beyond the accuracy any run has reached)).")
    assert targets_sentence(fit.assign(status="ok")) == "Answers at 0.3, 0.4, 0.5 and 0.6 (3 or more batch sizes reached each)."
