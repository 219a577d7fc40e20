"""The reports read as one story (issue 27): numbers as a reader writes them (no e-notation, counts
as integers, one unit of time per card, the same share worded the same way), plain names, the answer
box (the margin first, each objective's batch and how it relates, the learning-rate context, the
line to paste in a chat, why a phase with runs has no answer), figures that say what they show
and tick labels in decimal units, and pages that link their neighbours and the files they wrote.
Pure functions: fast."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cbs_rlvr.plan.decide import decide
from cbs_rlvr.report.html import downloads_html, page_nav, render_index
from cbs_rlvr.report.style import _plain_label, describe_figure, set_log_axis
from cbs_rlvr.words import numbers as fmt
from cbs_rlvr.words.decision import decision_sentences
from cbs_rlvr.words.sentences import fastest_run_lines, figure_alt, lr_label, step_model_sentence

E_NOTATION = re.compile(r"\d[eE][+-]?\d")


def test_small_numbers_and_config_values_are_written_without_e_notation():
    assert fmt.scientific(1e-6) == "1×10⁻⁶" and fmt.scientific(8.9e-5) == "8.9×10⁻⁵"
    assert fmt.scientific(9.96e-5) == "1×10⁻⁴" and fmt.scientific(np.nan) == "–"
    assert fmt.small(0.04491) == "0.045" and fmt.small(8.9e-5, "s") == "8.9×10⁻⁵ s"
    assert fmt.plain_text("lr=1e-06; lr=5e-07") == "learning rate 1×10⁻⁶; learning rate 5×10⁻⁷"
    assert fmt.plain_text("cbs_p1_np8_nr8") == "cbs_p1_np8_nr8"  # run names are left as they are


def test_counts_are_integers_whatever_their_dtype():
    t = fmt.reader_table(pd.DataFrame({"replicate": [0, 1.0, np.nan], "n_segments": [1.0, 2.0, 1.0],
                                       "n_eval": [81.0, 65.0, 40.0], "updates": [1.0, 1.0, 2.0],
                                       "lr": [1e-6, 1e-6, 2e-6], "configurations": ["lr=1e-06", "a", "b"]}))
    assert list(t.columns) == ["replicate", "segments", "evaluations", "updates", "learning rate", "configurations"]
    assert t.iloc[1].tolist() == ["1", "2", "65", "1", "1×10⁻⁶", "a"] and t.iloc[2, 0] == "–"
    assert t.iloc[0, 5] == "learning rate 1×10⁻⁶"
    assert not E_NOTATION.search(" ".join(t.astype(str).to_numpy().ravel()))
    for raw in ("B_noise_mccandlish", "time_to_target_with_overhead_h", "overhead_in_step_time", "n_eval"):
        assert fmt.header(raw) != raw
    assert fmt.header("n_points") == "runs"  # it counts runs (replicates too), not batch sizes


def test_one_share_is_worded_one_way_and_one_card_has_one_unit():
    assert [fmt.percent(x) for x in (0.253, 0.998, 1.0, 0.002, 0.0)] == ["25%", "over 99%", "100%", "under 1%", "0%"]
    assert fmt.duration(0.37) == "22 min" and fmt.duration(0.45, unit="h") == "0.45 h"
    assert fmt.duration(1.2, 1.1, 1.3, unit="min") == "72 min [66, 78]"


def test_the_next_runs_line_never_says_a_zero_loss():
    """08's line over its next-runs table comes from the same words as the decision card: a
    decision that is the fastest in every draw loses nothing, which reads as such, never '0 s'."""
    from cbs_rlvr.words.decision import next_runs_line

    assert next_runs_line(2, 0.5, 0.0016) == ("2 suggested run(s) at accuracy 0.5; the decision is expected to "
                                              "lose 5.8 s against the truly fastest choice today.")
    assert next_runs_line(1, 0.5, 0.0) == ("1 suggested run(s) at accuracy 0.5; the decision is not expected "
                                           "to lose time today.")
    assert next_runs_line(0, 0.5, 1.5) == ("No run is worth its cost: the decision is expected to lose 1.5 h "
                                           "against the truly fastest choice, and no run is expected to cut "
                                           "that by 1% of its hours. next_runs.csv is written with its header only.")
    for regret in (0.0, float("nan"), None):
        assert next_runs_line(0, 0.5, regret) == ("No run is worth its cost: no run is expected to change the "
                                                  "decision. next_runs.csv is written with its header only.")
    assert "0 s" not in next_runs_line(3, 0.3, 0.0)


def test_a_short_time_reads_in_minutes_or_seconds_whatever_its_cards_unit():
    """'0.0016 h' is not a time a reader reads: under a tenth of an hour a time keeps its own unit."""
    assert fmt.duration(0.0016, unit="h") == "5.8 s" and fmt.duration(0.007, unit="min") == "25 s"
    assert fmt.duration(0.05, unit="h") == "3.0 min" and fmt.duration(0.0) == "0 s"
    assert fmt.duration(0.0054, 0.0016, 0.0085, unit="min") == "19 s [5.8, 31]"
    assert fmt.duration(0.45, unit="h") == "0.45 h" and fmt.duration(0.2, unit="min") == "12 min"
    row = decide("p1", 0.5, _plan(), None, None, _fit())
    row.update(next_action="", regret_now_h=0.0016)
    assert ("the decision is expected to lose 5.8 s against the truly fastest choice"
            in " ".join(decision_sentences(row)))
    row.update(regret_now_h=0.0)  # the fastest in every draw: nothing to lose, not '0 s'
    assert decision_sentences(row)[-1] == "Next run: none is worth its cost: no run is expected to change the decision."
    row.update(next_action="new", next_n_prompts=16, next_n_rollouts=8, next_cost=4.0, next_cost_unit="GPU-hours",
               next_reduction_h=0.0054, next_reduction_lo_h=0.0016, next_reduction_hi_h=0.0085)
    assert "by 19 s [5.8, 31] (80% band)." in decision_sentences(row)[-1]
    text = " ".join(fastest_run_lines(pd.DataFrame([{"threshold": 0.3, "n_configs": 1, "undetermined": False,
                                                     "gpu_hours": 0.5, "n_prompts": 16, "n_rollouts": 8,
                                                     "total_batch": 128, "time_to_target_h": 0.07, "S_B": 12.0}]),
                                      pd.DataFrame(), False))
    assert "(16×8): 4.2 min of training" in text


def test_the_step_time_model_reads_without_e_notation():
    model = {"status": "ok", "formula": "T_step = a + b_B·B", "terms": ["a", "b_B"],
             "coef": {"a": 15.13, "b_B": 0.04491}, "se": {"a": 0.13, "b_B": 8.9e-5}, "r2": 0.9996,
             "resid_sd_s": 0.34, "rel_resid_sd": 0.006, "n_runs": 11, "B_range": (64, 4096), "reason": ""}
    text = step_model_sentence(model)
    assert text == ("T_step = a + b_B·B: a = 15.1 ± 0.13 s, b_B = 0.0449 ± 8.9×10⁻⁵ s per sample; R² = 1.000, "
                    "residual sd 0.34 s (0.6% of the mean step), 11 runs, B = 64 to 4,096.")
    assert step_model_sentence({"status": "insufficient", "reason": "1 run"}) == "No step-time model (1 run)."


def test_the_learning_rate_context_names_fixed_and_its_value():
    assert lr_label({"policy": "constant", "lr": 1e-6}) == ("fixed: one learning rate, 1×10⁻⁶, at every batch size "
                                                           "(not tuned per batch size)")
    assert lr_label({"policy": "sqrt(B)"}) == "learning rate scaled with sqrt(B)"
    assert lr_label(None, tuned=True) == "learning rate tuned at each batch size"


def _plan(fast=(64, 8), cheap=(16, 8)):
    base = {"threshold": 0.5, "predicted_steps": 100.0, "predicted_hours_lo": 1.8, "predicted_hours_hi": 2.3,
            "predicted_gpu_hours": 16.0, "n_gpus": 8.0, "basis": "measured", "note": "",
            "predicted_samples": 25600.0, "expected_hours": 2.0}
    return pd.DataFrame([
        dict(base, objective="wall_clock", n_prompts=fast[0], n_rollouts=fast[1], total_batch=fast[0] * fast[1],
             predicted_hours=2.0),
        dict(base, objective="samples", n_prompts=cheap[0], n_rollouts=cheap[1], total_batch=cheap[0] * cheap[1],
             predicted_hours=3.5)])


def _fit():
    return pd.DataFrame([{"threshold": 0.5, "B_noise": 400.0, "B_noise_lo": 350.0, "B_noise_hi": 460.0,
                          "status": "ok", "model": "mccandlish", "alpha": 0.95}])


def test_the_answer_box_says_each_objectives_batch_and_how_it_relates():
    row = decide("p1", 0.5, _plan(), None, None, _fit(), lr_context=lr_label({"policy": "constant", "lr": 1e-6}))
    row.update({"margin": 0.1, "margin_batch_lo": 256.0, "margin_batch_hi": 1024.0, "margin_n": 3, "p_best": 0.998})
    lines = decision_sentences(row)
    text = " ".join(lines)
    assert lines[1].startswith("How sure: anything from B = 256 to 1,024 is within 10% of the fastest; "
                               "it is the fastest in over 99% of the fit's draws")
    assert "Learning rate: fixed: one learning rate, 1×10⁻⁶, at every batch size" in text
    assert "Fewest samples (within 10%): 16 prompts × 8 rollouts (B = 128), but about 3.5 h" in text
    assert "; the batch to train with is 1.3 times B_noise: " in text
    assert " min" not in text and not E_NOTATION.search(text)
    same = decide("p1", 0.5, _plan(cheap=(64, 8)), None, None, _fit())
    assert "Fewest samples: the same batch" in " ".join(decision_sentences(same))
    assert row["summary"] == "p1 at accuracy 0.5: train 64 × 8 (B = 512), 2.0 h [1.8, 2.3]; B_noise 400 [350, 460] samples"


def test_the_index_shows_the_chat_line_and_why_a_phase_with_runs_has_no_answer(tmp_path):
    row = decide("p1", 0.5, _plan(), None, None, _fit(), title="Phase 1")
    pd.DataFrame([row]).to_csv(tmp_path / "decisions.csv", index=False)
    params = {"p1": {"title": "Phase 1", "sections": ["01_load_runs", "08_plan"]},
              "p2c": {"title": "Iso-batch", "sections": ["01_load_runs", "04_two_axis"]}}
    page = render_index(tmp_path, params, {"p1": 5, "p2c": 4}, {"source": "x", "n_runs": 9}, "now")
    assert "To paste in a chat: <code>p1 at accuracy 0.5: train 64 × 8 (B = 512)" in page
    assert "p2c · Iso-batch.</strong> No batch to recommend: this phase has no plan section" in page


def test_figures_say_what_they_show_and_tick_in_decimal_units():
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([64, 4096], [300, 90])
    ax1.set(xlabel="batch size B", ylabel="steps to target", xscale="log")
    ax2.plot([0.3, 0.7], [2e5, 2e6])
    ax2.set(xlabel="target accuracy", ylabel="B_noise (samples)")
    set_log_axis(ax2, "y")
    fig.suptitle("Phase 1")
    assert describe_figure(fig) == ("Figure: Phase 1. Left panel: steps to target against batch size B (log scale). "
                                    "Right panel: B_noise (samples) (log scale) against target accuracy.")
    assert figure_alt("", []) == "Figure."
    labels = [_plain_label(x, binary=True) for x in (16384, 2 ** 19, 2 ** 20, 2 ** 21)]
    assert labels == ["16K", "512K", "1.05M", "2.1M"] and not any("1024K" in x for x in labels)
    ticks = [ax2.yaxis.get_major_formatter()(v) for v in ax2.yaxis.get_major_locator()()]
    assert ticks and all(not re.search(r"\d{4}K", t) for t in ticks)


def test_the_headline_figure_keeps_its_title_whole_beside_a_long_task_name():
    """A real sweep's task is its whole metric name: a legend of such names beside the axes squeezed
    them until the title ran off the figure's left edge ('oise (the batch ...' on the index)."""
    import matplotlib

    from cbs_rlvr.report.figures import plot_cross_phase

    rows = pd.DataFrame([{"phase": "p2b", "axis": "rollouts", "task": "val-core/openai/gsm8k/reward/mean@1",
                          "threshold": t, "B_noise": b, "B_noise_lo": 0.8 * b, "B_noise_hi": 1.2 * b, "status": "ok"}
                         for t, b in ((0.3, 35.0), (0.4, 34.0), (0.5, 31.0))])
    with matplotlib.rc_context({"figure.constrained_layout.use": True}):
        fig = plot_cross_phase(rows)
        fig.draw_without_rendering()
        title = fig.axes[0].title.get_window_extent()
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width, (title, fig.bbox)


def test_a_section_page_links_its_neighbours_its_phase_and_its_files():
    nav = page_nav("p1", "02_steps_to_target", ["01_load_runs", "02_steps_to_target", "08_plan"])
    assert "rel='prev' href='01_load_runs.html'" in nav and "rel='next' href='08_plan.html'" in nav
    assert "<strong>steps to target</strong>" in nav and "href='../index.html'" in nav
    first = page_nav("p1", "01_load_runs", ["01_load_runs", "08_plan"])
    assert "rel='prev'" not in first and "rel='next'" in first
    files = downloads_html(["figures/sb.png", "figures/sb.pdf", "figures/sb.csv", "tables/cbs_fit.csv",
                            "tables/cbs_fit.tex", "02_steps_to_target.ipynb"])
    assert files.index("tables/cbs_fit.csv") < files.index("figures/sb.csv")
    assert "sb.png" not in files and ".ipynb" not in files and "(4)" in files
    assert downloads_html([]) == ""


def _shape_rows():
    """cbs_fit rows where words and table could disagree: alpha near 1, interval ends that round
    to 1.00, both forms chosen, the held-out weight on either side."""
    rows = []
    for model in ("mccandlish", "general"):
        for alpha, lo, hi in ((0.88, 0.81, 0.96), (0.88, 0.81, 0.996), (0.97, 0.9, 1.004), (1.02, 1.004, 1.1),
                              (1.02, 0.995, 1.1), (0.6, 0.5, 0.7), (1.4, 1.2, 1.6), (0.999, 0.95, 1.05)):
            for w in (0.3, 0.7):
                rows.append({"threshold": 0.5, "model": model, "alpha": alpha, "alpha_lo": lo, "alpha_hi": hi,
                             "weight_general": w, "B_noise": 500.0, "B_noise_mccandlish": 450.0})
    return pd.DataFrame(rows)


def test_the_shape_sentence_says_what_the_alpha_column_beside_it_shows():
    from cbs_rlvr.report.tables import with_intervals
    from cbs_rlvr.words.sentences import shape_sentence

    rows = _shape_rows()
    table = with_intervals(rows, {"alpha": 2})
    for (_, row), cell in zip(rows.iterrows(), table["alpha [95% CI]"], strict=True):
        text = shape_sentence(row)
        a, lo, hi = re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", cell).groups()
        shown_holds_one = float(lo) <= 1 <= float(hi)
        assert f"{a}" in text and f"{lo}-{hi}" in text, (cell, text)  # the same numbers as the table
        says_one_fits = "consistent with 1" in text or "not ruled out" in text
        says_one_out = "excludes 1" in text
        assert says_one_fits == (shown_holds_one and not says_one_out), (cell, text)
        if row["model"] == "mccandlish" and not shown_holds_one:
            assert says_one_out, (cell, text)
        assert f"{round(100 * row['weight_general'])}%" in text
        assert not E_NOTATION.search(text)


def test_a_run_that_never_reached_the_target_shows_a_lower_bound_in_every_table():
    from cbs_rlvr.report.tables import with_censored_marks

    t = pd.DataFrame({"run_name": ["a", "b"], "time_to_target_h": [3.4512, 1.2], "censored": [True, False]})
    shown = fmt.reader_table(with_censored_marks(t, ["time_to_target_h"]))
    assert shown["hours to target"].tolist() == ["≥3.45", "1.20"]
    assert fmt.cell("B_simple_over_B_noise", 0.09) == "0.09" and fmt.cell("error_ratio", 0.5) == "0.50"
    assert fmt.cell("B_simple_over_B_noise", 1.2641) == "1.26"  # as 05's lines say it ('B_simple / B_noise = 1.26')


def _comparison(ratio: float, growth_s: float = 1.0, growth_n: float = 1.0):
    B_noise = np.array([400.0, 400.0 * growth_n ** 0.5, 400.0 * growth_n])
    B_simple = ratio * B_noise[0] * np.array([1.0, growth_s ** 0.5, growth_s])
    return pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "B_simple": B_simple, "B_simple_lo": 0.9 * B_simple,
                         "B_simple_hi": 1.1 * B_simple, "B_noise": B_noise, "B_noise_lo": 0.9 * B_noise,
                         "B_noise_hi": 1.1 * B_noise, "B_simple_over_B_noise": B_simple / B_noise,
                         "status": "ok", "reason": ""})


def test_the_gradient_noise_answer_says_what_b_simple_can_tell_and_names_the_first_suspect():
    from cbs_rlvr.words.claims import logged_noise_claim, noise_scale_lines

    fit = pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "B_noise": [400.0, 400.0, 400.0], "model": "mccandlish"})
    far = " ".join(noise_scale_lines(_comparison(1 / 9), pd.DataFrame(), fit, logged=False))
    assert "about 9x too low" in far and "correlated rollouts" in far and "n rollouts of one prompt" in far
    assert "there is no trend to compare" in far and "follows the trend" not in far  # a flat pair is no trend
    assert "misses even the order of magnitude" not in far  # 9x is still within one order of magnitude
    assert "misses even the order of magnitude" in " ".join(noise_scale_lines(_comparison(0.05), pd.DataFrame(),
                                                                                   fit, logged=False))
    close = " ".join(noise_scale_lines(_comparison(1.05, 3.0, 3.0), pd.DataFrame(), fit, logged=False))
    assert "Yes, within its uncertainty" in close and "correlated rollouts" not in close
    assert "the noise scale follows the trend" in close
    assert close.count("median ratio") == 1  # one median ratio per estimate, named
    at = pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "B_simple_ema": [430.0, 380.0, 400.0]})
    assert "it agrees with it within 15%" in logged_noise_claim(at, fit)
    assert "it overestimates it" in logged_noise_claim(at.assign(B_simple_ema=[600.0] * 3), fit)
    assert logged_noise_claim(pd.DataFrame(), fit, logged=False) == ""


def test_the_cross_phase_findings_reach_the_index(tmp_path):
    from cbs_rlvr.words.claims import cross_phase_findings

    long = pd.DataFrame({"phase": ["p1"] * 3, "axis": "prompts", "task": "gsm8k", "threshold": [0.3, 0.5, 0.7],
                         "B_noise": [200.0, 400.0, 800.0], "B_noise_lo": [180.0, 360.0, 720.0],
                         "B_noise_hi": [220.0, 440.0, 880.0], "status": "ok"})
    two = pd.DataFrame({"threshold": [0.5], "rho": [0.09], "rho_lo": [0.05], "rho_hi": [0.13], "r2_log": [0.98],
                        "status": ["ok"]})
    found = cross_phase_findings(long, {"p2b": two})
    assert found["topic"].tolist() == ["B_noise against the target (prompts axis, gsm8k)", "prompts against rollouts"]
    assert "the second rollout of a prompt is worth 0.83 of a new prompt" in found["finding"].iloc[1]
    # the claim, then its numbers: the subject is said once
    assert found["finding"].iloc[0].startswith("B_noise grows with the target accuracy: from 200 at 0.3 to 800 at 0.7")
    (tmp_path / "summary" / "tables").mkdir(parents=True)
    found.to_csv(tmp_path / "summary" / "tables" / "findings.csv", index=False)
    page = render_index(tmp_path, {}, {}, {"source": "x", "n_runs": 0}, "now")
    assert page.index("<h2>Across phases</h2>") < page.index("prompts against rollouts")
    assert page.index("prompts against rollouts") < page.index("B_noise against the target (prompts axis")


def test_lower_bounds_of_several_targets_at_one_point_are_drawn_side_by_side():
    from cbs_rlvr.report.style import fan_out

    xs = [float(fan_out([1024.0], k, 3)[0]) for k in range(3)]
    assert xs[0] < xs[1] == 1024.0 < xs[2] and xs[2] / xs[0] < 1.25  # apart, and still at their batch size


def test_the_learning_rate_context_of_a_sweep_comes_from_its_runs_configs():
    from cbs_rlvr.measure.envelope import sweep_lr_policy

    sb = pd.DataFrame({"run_id": ["a", "a", "b", "c", "d"], "total_batch": [64, 64, 128, 256, 256],
                       "lr": [1e-6, 1e-6, 1e-6, 1e-6, 2e-6]})
    policy, tuned = sweep_lr_policy(sb)
    assert tuned and lr_label(policy, tuned) == "learning rate tuned at each batch size"
    policy, tuned = sweep_lr_policy(sb[sb["run_id"] != "d"])
    assert not tuned and lr_label(policy, tuned).startswith("fixed: one learning rate, 1×10⁻⁶")
    assert "1e-06" not in policy["describe"]
    assert sweep_lr_policy(sb.iloc[:0])[1] is False


def test_a_missing_alpha_is_explained_by_what_the_table_shows():
    from cbs_rlvr.words.sentences import shape_sentence

    lost = {"model": "mccandlish", "alpha": np.nan, "alpha_lo": np.nan, "alpha_hi": np.nan, "weight_general": 0.0}
    assert "gives the bent form no weight (0%)" in shape_sentence(lost).replace("give ", "gives ")
    assert "too few batch sizes" in shape_sentence(dict(lost, weight_general=np.nan))


def test_the_notebooks_sentences_moved_into_words_read_as_before():
    from cbs_rlvr.words.claims import envelope_lines, two_axis_answer
    from cbs_rlvr.words.sentences import (
        curves_answer,
        fastest_run_lines,
        fit_answer_lines,
        generated_samples_line,
        overhead_lines,
        sweep_facts,
        updates_lines,
    )

    configs = pd.DataFrame({"total_batch": [64, 2048], "n_configs": [1, 2]})
    facts = sweep_facts(configs, [1, 1, np.nan], dynamic=False, from_config=2, mismatch=0)
    assert facts[0] == "1 of 2 batch sizes have several configurations (B = 2,048)."
    assert facts[1] == "Optimizer updates per rollout step: 1 for every run; unknown for 1 run(s)."
    assert len(facts) == 4 and "taken from the config" in facts[3]
    assert updates_lines([2, 2], pd.DataFrame())[0].startswith("Every run makes 2 optimizer updates")
    assert "unknown" in updates_lines([], pd.DataFrame())[0]
    assert generated_samples_line(pd.DataFrame()).startswith("No run logs train/num_gen_batches")
    fit = pd.DataFrame([{"threshold": 0.5, "status": "ok", "reason": "", "B_noise": 1759.4, "B_noise_lo": 1456.0,
                         "B_noise_hi": 2321.0, "B_crit_20pct": np.nan, "model": "general", "alpha": 0.62,
                         "S_min": 12.34, "r2_log": 0.98, "n_points": 11.0, "n_censored": 1.0},
                        {"threshold": 0.7, "status": "insufficient", "reason": "2 batch sizes reach it"}])
    answer = fit_answer_lines(fit, 0)
    assert answer[1] == ("acc ≥ 0.5: B_noise = 1,759 [1,456, 2,321] samples/step, S ∝ B^-0.62 at small B (general "
                         "form), S_min = 12 steps, no samples minimum (no batch at 20% extra samples), R²(log) = "
                         "0.980, 11 runs (1 stopped before the target), status ok")
    assert answer[2] == "acc ≥ 0.7: no B_noise, insufficient: 2 batch sizes reach it"
    final = pd.DataFrame({"accuracy": [0.61, 0.74], "total_batch": [64, 512], "n_prompts": [8, 64],
                          "n_rollouts": [8, 8], "step": [400.0, 1200.0], "winner": [True, True]})
    assert curves_answer(final, [0.5, 0.7]).endswith("(best: B = 512, 64×8, at step 1,200); 1 of 2 runs end "
                                                     "above the highest target 0.7.")
    two = pd.DataFrame({"threshold": [0.5], "rho": [0.09], "rho_lo": [0.05], "rho_hi": [0.13], "B0": [120.0],
                        "B0_lo": [100.0], "B0_hi": [140.0], "r2_log": [0.98], "status": ["ok"], "reason": [""]})
    text = "\n".join(two_axis_answer(two, pd.DataFrame(), validated=False, check_reason="one phase"))
    assert "ρ = 0.09 [0.05, 0.13], B0 = 120 [100, 140] prompts" in text and "not checked on this sweep (one phase)" in text
    per_run = pd.DataFrame({"time_key": ["perf/time_per_step", None], "overhead_in_step_time": ["none", "none"]})
    at_mid = pd.DataFrame({"time_to_target_with_overhead_h": [1.2], "time_to_target_h": [1.0]})
    lines = overhead_lines(per_run, {"validation": True, "checkpoint": False}, at_mid, 0.6, True)
    assert lines[:2] == ["validation time: logged", "checkpoint time: not logged"]
    assert "1 run(s) log no step time at all." in lines and lines[-1].endswith("add 20% to 20% to the training time of the runs.")
    fastest = pd.DataFrame([{"threshold": 0.6, "n_configs": 1, "undetermined": False, "gpu_hours": np.nan,
                             "n_prompts": 64, "n_rollouts": 8, "total_batch": 512, "time_to_target_h": 1.04, "S_B": 99.4}])
    assert fastest_run_lines(fastest, pd.DataFrame(), False) == [
        "acc ≥ 0.6: fastest run made is B = 512 (64×8): 1.04 h of training, 99 steps."]
    winners = pd.DataFrame({"n_configs": [2], "undetermined": [True], "total_batch": [2048], "n_prompts": [256],
                            "n_rollouts": [8], "tried": ["lr=2.5e-07, lr=5e-07"], "won_by_target": ["0.5: lr=5e-07"]})
    env = envelope_lines(winners, {"describe": "constant"}, one_rate=False)
    assert env[0].startswith("B = 2,048 (256×8): tried learning rate 2.5×10⁻⁷, learning rate 5×10⁻⁷; best: 0.5: "
                             "learning rate 5×10⁻⁷") and "not certain" in env[0]
    for line in facts + answer + lines + env:
        assert not E_NOTATION.search(line)


def test_an_index_without_decisions_links_no_decisions_csv(tmp_path):
    """Generated sweep 424 (a plan-less phase with runs, no decisions.csv written): the index said
    "Every number here is in decisions.csv" and linked a file that is not there."""
    params = {"p2c": {"title": "Iso-batch", "sections": ["01_load_runs", "04_two_axis"]}}
    page = render_index(tmp_path, params, {"p2c": 4}, {"source": "x", "n_runs": 4}, "now")
    assert "No batch to recommend" in page and "decisions.csv" not in page
