"""Early answers (issue 26): the progress model of every evaluation (fit/allevals.py), the crossing
forecasts of running runs (plan/forecast.py), the fit with them (fit/imputed.py), the stop list
(plan/stop.py), against known truth: formula sweeps of tests/sweeps/formula.py (McCandlish in the effective
batch, a known S_min and B_noise at every target) cut as they ran. Real-trainer sweeps
(tests/sweeps/trainer.py) are left to tests/forecast_acceptance.py (benchmarks/forecast_acceptance.md),
which measures the issue's numbers over every optimiser class: one costs more than this file's
time budget."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sweeps import formula as synth

import cbs_helpers as ch
from cbs_rlvr.fit.allevals import fit_all_evals, fit_progress
from cbs_rlvr.fit.imputed import fit_with_forecasts
from cbs_rlvr.plan.forecast import FORECAST_COLUMNS, forecast_phase, run_budgets
from cbs_rlvr.plan.running import early_answers, is_running
from cbs_rlvr.plan.stop import STOP_COLUMNS, answer, same_answer
from cbs_rlvr.words.early import PROGRESS_COLUMNS, running_sentence, targets_sentence

THR = [0.4, 0.5, 0.6]
K = 200


def _formula_sweep(seed: int = 1, drawn: bool = False):
    """A prompts-axis formula sweep (n_prompts 4-512 x 8 rollouts, 2 seeds) with verl's step budget
    in the config, and its truth per target: S_min and B_noise of S = S_min (1 + B_noise / B).
    drawn: the model's noise scale and step times drawn from the seed (else fixed)."""
    m = synth.model(seed) if drawn else synth.model(seed, b00=120.0, a=20.0, b=0.02)
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


def _one_run_per_batch(n_runs: int, n_evals: int, seed: int = 0):
    """benchmarks/run.py's synthetic phase, small: make_demo's gsm8k model, every run its own batch
    size (n_prompts 4-4,096 x 8 rollouts), an evaluation every 5 steps on 1,319 problems, runs much
    longer than the large batches need (most evaluations sit on the plateau); and the truth."""
    from testkit import load_make_demo

    md = load_make_demo("make_demo_forecast")
    task, rng = md.TASKS["gsm8k"], np.random.default_rng(seed)
    grid = np.unique(np.round(np.geomspace(4, 4096, 4 * n_runs)).astype(int))
    n_prompts, steps = np.sort(rng.choice(grid, size=n_runs, replace=False)), np.arange(n_evals) * 5.0
    series = [(steps, rng.binomial(1319, md.accuracy(task, md.tau_after_steps(
        task, n, 8, steps, r=float(rng.lognormal(0, md.SPEED_SIGMA))))) / 1319) for n in n_prompts]
    thr = [0.3, 0.4, 0.5, 0.6, 0.65, 0.7]  # the benchmark's targets
    truth = [md.mccandlish_truth(task, "prompts", {"n_rollouts": 8}, t)["B_noise"] for t in thr]
    return series, n_prompts * 8.0, thr, np.array(truth)


@pytest.mark.parametrize("n_runs, n_evals", [(30, 1000), (60, 400)])
def test_long_sweeps_with_one_run_per_batch_size_reach_the_right_optimum(n_runs, n_evals):
    """Until the start came from the crossings (and the subsample, stopping rule and levels were
    fixed), these stopped where the speeds stand in for the batch's effect: B_noise 2.3-2.4x and
    2.2-5x the truth (at 300 runs x 1,000 evaluations up to 10x). 0.3 s and 0.8 s."""
    series, B, thr, truth = _one_run_per_batch(n_runs, n_evals)
    pf = fit_progress(series, B, thr, 1319, form="mccandlish", n_draws=0)
    b_noise = np.array([pf.params(t)["B_noise"] for t in thr])
    assert np.all(np.abs(b_noise / truth - 1) < 0.06), (b_noise.round(1), truth.round(1))
    assert pf.converged and pf.phi < 1.5 and pf.sigma_u < 0.06, (pf.phi, pf.sigma_u)


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
        early = early_answers("p1", running["runs"], running["history"], synth.METRIC, THR, synth.N_VAL,
                              running["fit"], running["step_model"], running["step_times"], n_bootstrap=100)
    t, plan = early.stop, early.plan
    assert list(early.forecast.columns[:len(FORECAST_COLUMNS)]) == FORECAST_COLUMNS
    assert early.fit is early.forecasts.fit and int(early.fit.table["n_forecast"].sum()) >= 3
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
    # the index's row: how far the sweep is (10% of its GPU-hours), the answer, the stop list
    row = early.progress.iloc[0].to_dict()
    assert list(early.progress.columns) == PROGRESS_COLUMNS and row["unit"] == "GPU-hours"
    assert 0.05 < row["done"] < 0.2 and row["n_running"] == (running["runs"]["state"] == "running").sum()
    assert row["total_batch"] == plan.answer["total_batch"] and row["gpu_hours_saved"] == pytest.approx(t["gpu_hours_saved"].sum())
    assert len(row["stop_runs"].split("; ")) == len(t)
    sentence = running_sentence(row)
    assert sentence.startswith("This sweep is ") and "% done" in sentence and "stop run" in sentence


def test_a_finished_sweep_has_no_early_answers(formula):
    assert not is_running(formula["runs"]) and is_running(formula["runs"].assign(state="running"))
    assert early_answers("p1", formula["runs"], formula["history"], synth.METRIC, THR, synth.N_VAL, formula["fit"],
                         {}, pd.DataFrame()) is None


def test_same_answer_is_relative_to_the_interval_width():
    a = {"total_batch": 512, "n_prompts": 64, "n_rollouts": 8, "B_noise": 400.0, "B_noise_lo": 200.0, "B_noise_hi": 800.0}
    width = math.log(4.0)
    near = {**a, "B_noise_hi": 800.0 * math.exp(0.2 * width)}
    far = {**a, "B_noise_lo": 200.0 * math.exp(-0.3 * width)}
    assert same_answer(a, near) and not same_answer(a, far)
    assert not same_answer(a, {**a, "total_batch": 256, "n_prompts": 32})


def _open_circles(ax) -> np.ndarray:
    """(x, y) of the white-filled markers of a panel: draw_forecasts' marks, which no measured point has."""
    pts = [c.get_offsets() for c in ax.collections
           if len(c.get_facecolors()) and np.allclose(c.get_facecolors()[:, :3], 1.0) and len(c.get_offsets())]
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def test_the_figures_draw_forecasts_as_forecasts_and_say_so(running):
    """02's S(B) and 08's hours figures while runs run: an open circle at each running run's
    forecast (steps, samples = steps x B, hours = steps x its step time) with a bar over its 90%
    interval, a legend entry and alt text that name them; none once every run has ended."""
    from cbs_rlvr.report.style import describe_figure
    from cbs_rlvr.words.early import FORECAST_LABEL, forecast_alt

    fit, fc = running["fit"], running["fc"].table
    cast = fc[~fc["observed"] & fc["step"].notna() & (fc["state"] == "running")]
    env = fit.sb_eb[fit.sb_eb["in_envelope"]]
    fig = ch.plot_sb_eb(env, fit.table, forecast=fc)
    ax_s, ax_e = fig.axes[:2]
    B = (cast["n_prompts"] * cast["n_rollouts"]).to_numpy(float)
    np.testing.assert_allclose(np.sort(_open_circles(ax_s)[:, 1]), np.sort(cast["step"]))
    np.testing.assert_allclose(np.sort(_open_circles(ax_e)[:, 1]), np.sort(cast["step"] * B))
    bars = np.concatenate([c.get_segments() for c in ax_s.collections if hasattr(c, "get_segments")])
    np.testing.assert_allclose(np.sort(bars[:, :, 1].max(axis=1)), np.sort(cast["step_hi"]))
    assert FORECAST_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    assert describe_figure(fig).endswith(forecast_alt(cast["run_id"].nunique(), len(cast)))
    assert "forecasts" in forecast_alt(2, 3) and "1 running run has" in forecast_alt(1, 1)
    done = ch.plot_sb_eb(env, fit.table)
    assert not len(_open_circles(done.axes[0])) and "forecast" not in describe_figure(done)
    assert ch.with_forecasts(env, None) is env and len(ch.with_forecasts(env, fc)) == len(env) + len(cast)
    hours = ch.forecast_hours(fc, running["step_times"])
    per_step = running["step_times"].set_index("run_id")["step_time_s"]
    np.testing.assert_allclose(hours["hours_hi"], hours["step_hi"] * hours["run_id"].map(per_step) / 3600)
    t = float(cast["threshold"].iloc[0])
    grid = pd.DataFrame({"threshold": t, "total_batch": [32.0, 4096.0], "predicted_hours": 1.0,
                         "predicted_hours_lo": 0.5, "predicted_hours_hi": 2.0, "basis": "on_axis"})
    plan_fig = ch.plot_plan(grid, pd.DataFrame(columns=["threshold", "total_batch", "time_to_target_h", "censored"]),
                            pd.DataFrame(), forecast=hours)
    mine = hours[hours["run_id"].isin(cast["run_id"]) & ~hours["observed"] & (hours["threshold"] == t)]
    np.testing.assert_allclose(np.sort(_open_circles(plan_fig.axes[0])[:, 1]), np.sort(mine["hours"]))
    assert "forecasts, not measurements" in describe_figure(plan_fig)


def test_the_running_sentence_reads_a_sweep_progress_row():
    row = {"done": 0.5, "spent": 31.2, "left": 30.8, "unit": "GPU-hours", "n_running": 3, "threshold": 0.6,
           "n_prompts": 64, "n_rollouts": 8, "total_batch": 512, "predicted_hours": 3.1, "predicted_hours_lo": 2.8,
           "predicted_hours_hi": 3.5, "B_noise": 420.0, "B_noise_lo": 300.0, "B_noise_hi": 610.0,
           "stop_runs": "cbs_p1_np4_nr8 (a1); cbs_p1_np8_nr8", "gpu_hours_saved": 12.4}
    assert list(row) == PROGRESS_COLUMNS
    assert running_sentence(row) == (
        "This sweep is 50% done (31 of 62 GPU-hours to the runs' budgets); the answer is already 64 prompts × 8 "
        "rollouts (B = 512) to reach 0.6, 3.1 h [2.8, 3.5] of training, B_noise 420 [300, 610] samples; stop runs "
        "cbs_p1_np4_nr8 (a1) and cbs_p1_np8_nr8 to save 12 GPU-hours.")
    # as the index reads it back from sweep_progress.csv: every value a string
    as_read = {k: "" if k == "stop_runs" else str(v) for k, v in row.items()} | {"total_batch": "nan", "n_running": "1"}
    assert running_sentence(as_read).endswith("no target has an answer yet (3 batch sizes must reach one); no run can "
                                              "stop yet without moving the answer.")
    assert running_sentence({**row, "n_running": 0}) == "" and running_sentence({}) == ""


def _later_crossings(fc, full_fit) -> pd.DataFrame:
    """Every forecast of a running run that crossed later, with the crossing the full sweep measured."""
    sb = full_fit.sb_eb.set_index(["run_id", "threshold"])
    t = fc.table[~fc.table["observed"] & fc.table["step"].notna() & (fc.table["state"] == "running")]
    full = np.array([sb.at[(r.run_id, r.threshold), "S_B"] for r in t.itertuples()])
    crossed = ~np.array([bool(sb.at[(r.run_id, r.threshold), "censored"]) for r in t.itertuples()], dtype=bool)
    return t.assign(full_step=full)[crossed]


@pytest.mark.slow
def test_over_several_formula_sweeps_the_90_percent_intervals_hold_the_later_crossings():
    """Four sweeps with their noise scale and step times drawn, each cut at 15% of its GPU-hours."""
    rows = []
    for seed in (3, 4, 5, 6):
        sw = _formula_sweep(seed, drawn=True)
        runs, hist = cut_at(sw, 0.15)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = forecast_phase(runs, hist, synth.METRIC, THR, synth.N_VAL, _fit(runs, hist, 100), n_draws=30,
                                n_bootstrap=100)
        rows.append(_later_crossings(fc, _fit(sw["runs"], sw["history"], 100)))
    later = pd.concat(rows)
    assert len(later) >= 40
    covered = (later["step_lo"] <= later["full_step"]) & (later["full_step"] <= later["step_hi"])
    # at least the nominal 90% (these formula sweeps have little path noise: the intervals are wide for them)
    assert covered.mean() >= 0.85, later[["threshold", "step", "step_lo", "step_hi", "full_step"]]
    assert np.median(np.abs(np.log(later["full_step"] / later["step"]))) < 0.06
    assert np.median(later["step_hi"] / later["step_lo"]) < 1.6


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


def test_the_index_says_the_running_sentence_only_where_08_wrote_sweep_progress(tmp_path):
    from cbs_rlvr.report.html import _running_lines

    row = {"done": 0.3, "spent": 30.0, "left": 70.0, "unit": "hours", "n_running": 2, "threshold": 0.5,
           "n_prompts": 32, "n_rollouts": 8, "total_batch": 256, "predicted_hours": 2.0, "predicted_hours_lo": 1.5,
           "predicted_hours_hi": 2.5, "B_noise": 200.0, "B_noise_lo": 150.0, "B_noise_hi": 300.0, "stop_runs": "",
           "gpu_hours_saved": 0.0}
    assert _running_lines(tmp_path, "p1") == []
    (tmp_path / "p1" / "tables").mkdir(parents=True)
    pd.DataFrame([row], columns=PROGRESS_COLUMNS).to_csv(tmp_path / "p1" / "tables" / "sweep_progress.csv", index=False)
    assert _running_lines(tmp_path, "p1") == [running_sentence(row)]
    assert _running_lines(tmp_path, "p1")[0].startswith("This sweep is 30% done (30 of 100 hours")
