"""The decision and the words around it (cbs_rlvr/contracts.py, words/decision.py, words/numbers.py,
report_html's index): numbers as a reader reads them, claims counted rather than assumed, and
the index opening with the same sentences as 08_plan."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cbs_rlvr.contracts import DECISION_COLUMNS, read_decisions, write_decisions
from cbs_rlvr.params import ParamsError, validate_phase_params
from cbs_rlvr.plan.decide import decide
from cbs_rlvr.report.html import page_title, render_index
from cbs_rlvr.words import numbers as fmt
from cbs_rlvr.words.claims import noise_scale_answer
from cbs_rlvr.words.decision import (
    decision_sentences,
    gpu_claim,
    plan_summary,
    why_fastest_differs,
)


def test_numbers_read_with_units_separators_and_dashes():
    assert fmt.count(33600) == "33,600" and fmt.count(np.nan) == "–"
    assert fmt.number(2013.4) == "2,013" and fmt.number(31552.0) == "31,552"
    assert fmt.number(0.01234) == "0.012" and fmt.number(3.36e4, "samples") == "33,600 samples"
    assert fmt.duration(0.5) == "30 min" and fmt.duration(3.14, 2.8, 3.5) == "3.1 h [2.8, 3.5]"
    assert fmt.interval(2013, 1800, 2300, "samples") == "2,013 [1,800, 2,300] samples"
    assert fmt.percent(0.253) == "25%" and fmt.percent(None) == "–"
    assert fmt.sentence("every run used 8 GPUs") == "Every run used 8 GPUs." and fmt.sentence("") == ""
    t = fmt.reader_table(pd.DataFrame({"r2_log": [0.98765, np.nan], "total_batch": [2048.0, 64.0],
                                       "noise_sd_log": [0.0412, 0.1]}))
    assert list(t.columns) == ["R² of log S", "batch B", "noise (sd of log S)"]
    assert t.iloc[0].tolist() == ["0.99", "2,048", "0.0412"] and t.iloc[1, 0] == "–"
    assert "e+" not in " ".join(t.astype(str).to_numpy().ravel())
    assert fmt.cell("n_gpus", pd.NA) == "–" and fmt.cell("x", None) == "–" and fmt.cell("x", pd.NaT) == "–"
    assert fmt.cell("lr", 5e-7) == "5×10⁻⁷" and fmt.cell("n_points", 12.0) == "12" and fmt.cell("x", "nan") == "–"


def test_gpu_counts_are_counted_not_assumed():
    assert gpu_claim([8, 8, 8]) == "every run used 8 GPUs"
    claim = gpu_claim([8, np.nan, 8, np.nan, np.nan])
    assert claim.startswith("GPU counts unknown for 3 of 5 runs") and "8 GPUs" in claim
    assert claim.endswith("GPU-hours only where the count is known")
    assert "no run config gives a GPU count" in gpu_claim([np.nan, np.nan])
    assert gpu_claim([4, 8]) == "the runs used 4 or 8 GPUs"
    assert "; the others used 1, 4 or 8 GPUs;" in gpu_claim([1, 4, 8, np.nan])  # not '1 or 4 or 8'
    assert "(their configs give no GPUs per node and nodes)" in gpu_claim([8, np.nan])  # no config key in prose


def _plan(n_p=32, t=0.5):
    row = {"threshold": t, "objective": "wall_clock", "n_prompts": n_p, "n_rollouts": 8, "total_batch": n_p * 8,
           "predicted_steps": 100.0, "predicted_hours": 2.0, "predicted_hours_lo": 1.8, "predicted_hours_hi": 2.3,
           "predicted_gpu_hours": 16.0, "n_gpus": 8.0, "basis": "measured", "note": "",
           "predicted_samples": 25600.0, "expected_hours": 2.0}
    return pd.DataFrame([row, dict(row, objective="gpu_hours")])


def test_plan_summary_never_compares_a_batch_with_itself_and_says_why_06_and_08_differ():
    fastest = pd.DataFrame([{"threshold": 0.5, "n_prompts": 32, "n_rollouts": 8, "total_batch": 256,
                             "time_to_target_h": 2.2}])
    line = plan_summary(_plan(32), fastest)[0]
    assert "faster than your fastest run" not in line and "it is the batch of your fastest run so far" in line
    assert "06" not in line
    line = plan_summary(_plan(64), fastest)[0]
    assert "1.1x faster than your fastest run so far (32 × 8" in line
    assert "fastest run made (06: B = 256) is not the plan's fastest batch (08: B = 512)" in line
    assert why_fastest_differs(fastest.iloc[0], _plan(32).iloc[0], 0.5) == ""


def _fit_row(model="mccandlish", alpha=1.0):
    return pd.DataFrame([{"threshold": 0.5, "B_noise": 2013.0, "B_noise_lo": 1800.0, "B_noise_hi": 2300.0,
                          "status": "ok", "model": model, "alpha": alpha}])


def _next(action="new", run_name="", why=""):
    return pd.DataFrame([{"threshold": 0.5, "rank": 1, "action": action, "run_name": run_name, "n_prompts": 8,
                          "n_rollouts": 8, "total_batch": 64, "to_step": 1300.0, "p_reach": 0.7,
                          "expected_reduction_h": 0.25, "reduction_lo_h": 0.1, "reduction_hi_h": 0.4,
                          "predicted_hours": 2.1, "cost": 16.8, "cost_unit": "GPU-hours", "why": why}])


def test_the_decision_in_words_from_its_row_as_read_back_from_the_csv(tmp_path):
    row = decide("p1", 0.5, _plan(64), None, _next("extend cbs_p1_np8_nr8", "cbs_p1_np8_nr8"), _fit_row(),
                 gpu_note=gpu_claim([8, np.nan, np.nan, np.nan]), title="Phase 1")
    assert set(DECISION_COLUMNS) <= set(row) and row["next_action"] == "extend cbs_p1_np8_nr8"
    (tmp_path / "p1" / "tables").mkdir(parents=True)
    pd.DataFrame([row]).to_csv(tmp_path / "p1" / "tables" / "decision.csv", index=False)
    write_decisions(tmp_path, ["p1", "p2"])
    back = read_decisions(tmp_path)
    assert list(pd.read_csv(tmp_path / "decisions.csv").columns[:len(DECISION_COLUMNS)]) == DECISION_COLUMNS
    lines = decision_sentences(back[0])
    assert lines == decision_sentences(row)  # the index (from the CSV) and 08 (from the row) agree
    by_pandas = pd.read_csv(tmp_path / "decisions.csv").iloc[0].to_dict()  # NaN, not '', where empty
    assert decision_sentences(by_pandas) == lines
    text = " ".join(lines)
    assert lines[0].startswith("p1 · Phase 1. To reach accuracy 0.5 in the least training time, train with "
                               "64 prompts × 8 rollouts (B = 512): about 2.0 h [1.8, 2.3] (95% band), "
                               "16 GPU-hours on 8 GPUs.")
    assert "B_noise = 2,013 [1,800, 2,300] samples" in text and "S = 2 S_min" in text
    assert "Next run: extend cbs_p1_np8_nr8 to step 1,300: about 17 GPU-hours, 70% chance" in text
    # one unit of time per card: the headline's hours, so the next run's gain in hours too
    assert "cut the time lost to a wrong choice by 0.25 h [0.10, 0.40] (80% band)" in text
    assert " min" not in text
    assert "How sure: " in text and "it was run, and its runs reached the target" in text
    assert lines.index(next(x for x in lines if x.startswith("How sure"))) == 1  # the margin right after the answer
    assert "GPU counts unknown for 3 of 4 runs" in text
    assert "nan" not in text.lower()
    assert row["summary"] == "p1 at accuracy 0.5: train 64 × 8 (B = 512), 2.0 h [1.8, 2.3]; B_noise 2,013 [1,800, 2,300] samples"
    assert by_pandas["summary"] == row["summary"]


def test_a_general_form_decision_says_its_shape_and_a_phase_without_fit_says_so():
    row = decide("p2b", 0.5, _plan(64), None, _next(why="worth testing"), _fit_row("general", 0.6))
    text = " ".join(decision_sentences(row))
    assert "B^-0.6 at small B, not like 1/B" in text
    assert "a new run with 8 prompts × 8 rollouts, B = 64" in text
    assert "it tests the split that could prove the recommendation wrong" in text
    unfit = {**decide("p3", 0.5, pd.DataFrame(), None, None, None), "fit_status": np.nan}
    assert decision_sentences(unfit)[0] == "p3. No batch to recommend at accuracy 0.5: the fit there is missing."
    none = decision_sentences(decide("p9", None, pd.DataFrame(), None, None, None))
    assert none == ["p9. No decision yet: no target has a fit (3 batch sizes must reach a target)."]


def test_params_decision_target_must_be_one_of_the_thresholds():
    base = {"phase": "p1", "title": "t", "axis": "prompts", "metric": "m", "n_val": 10, "thresholds": [0.4, 0.6],
            "sections": ["08_plan"]}
    assert validate_phase_params(base)["decision_target"] is None
    assert validate_phase_params(dict(base, decision_target=0.6))["decision_target"] == 0.6
    with pytest.raises(ParamsError, match="decision_target 0.5 must be one of the thresholds"):
        validate_phase_params(dict(base, decision_target=0.5))


def test_the_index_opens_with_the_answer_and_titles_name_phase_and_section(tmp_path):
    row = decide("p1", 0.5, _plan(64), None, _next(), _fit_row(), title="Phase 1")
    pd.DataFrame([{"phase": "p1", "threshold": 0.5}]).to_csv(tmp_path / "decisions.csv", index=False)
    (tmp_path / "decisions.csv").unlink()
    (tmp_path / "p1" / "tables").mkdir(parents=True)
    pd.DataFrame([row]).to_csv(tmp_path / "p1" / "tables" / "decision.csv", index=False)
    write_decisions(tmp_path, ["p1"])
    page = render_index(tmp_path, {"p1": {"title": "Phase 1", "sections": ["08_plan"]}}, {"p1": 5},
                        {"source": "x"}, "now")
    first = decision_sentences(row)[0]
    assert first.replace("×", "&times;") in page or first in page
    assert page.index("The answer") < page.index("Reports by phase")
    assert "<title>all phases · decisions and reports · cbs-rlvr</title>" in page
    assert page_title("p1", "02_steps_to_target") == "p1 · steps to target · cbs-rlvr"
    assert page_title("summary", "07_summary") == "all phases · summary · cbs-rlvr"
    assert math.isfinite(float(read_decisions(tmp_path)[0]["predicted_hours"]))


def test_05_answers_its_question_in_words():
    def comp(ratio, width=0.1):
        bn = np.array([200.0, 300, 400, 500, 600, 700])
        bs = bn * ratio
        return pd.DataFrame({"threshold": np.arange(6) / 10, "status": "ok", "B_noise": bn,
                             "B_noise_lo": bn * (1 - width), "B_noise_hi": bn * (1 + width), "B_simple": bs,
                             "B_simple_lo": bs * (1 - width), "B_simple_hi": bs * (1 + width)})
    assert noise_scale_answer(comp(0.1)).startswith("Does the noise scale predict B_noise? No: it is about 10x too low "
                                                    "(median ratio B_simple / B_noise 0.1; the 95% intervals "
                                                    "overlap at 0 of 6 target(s))")
    assert "No: it is about 3x too high" in noise_scale_answer(comp(3.0))
    assert noise_scale_answer(comp(1.05)).startswith("Does the noise scale predict B_noise? Yes, within its uncertainty")
    assert "about 20% too low" in noise_scale_answer(comp(0.8, width=0.01))
    assert noise_scale_answer(comp(1.0).assign(status="insufficient")) == ""


def test_where_gpu_counts_differ_the_decision_names_the_batch_with_the_fewest_gpu_hours():
    plan = _plan(64)
    plan.loc[plan["objective"] == "gpu_hours", ["n_prompts", "total_batch", "predicted_gpu_hours",
                                                "predicted_hours"]] = [16, 128, 9.5, 2.4]
    text = " ".join(decision_sentences(decide("p1", 0.5, plan, None, None, _fit_row())))
    assert "Fewest GPU-hours: 16 prompts × 8 rollouts (B = 128), 9.5 GPU-hours." in text
    assert "Fewest GPU-hours" not in " ".join(decision_sentences(decide("p1", 0.5, _plan(64), None, None, _fit_row())))
