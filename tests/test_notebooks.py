"""The whole report built headless on the demo data through `make report` in a fresh checkout
(conftest.demo_build, once per run), asserting on what it wrote. The notebooks' sources (paired and
clean in git, one literal, typed parameters cell): test_notebook_sources.py. What a user then runs in
that checkout (a no-op rebuild, a failing notebook, hand runs through papermill):
test_notebooks_hand.py."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbs_rlvr.params import load_phase_params
from cbs_rlvr.words.decision import decision_sentences

ROOT = Path(__file__).resolve().parents[1]
DEMO_TRUTH = json.loads((ROOT / "data" / "demo" / "ground_truth.json").read_text())


# ---------------------------------------------------------------------------------------------
# The report, built once per run (conftest.demo_build)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(demo_build):
    """The demo's `make report` in a fresh checkout (conftest.demo_build, once per run): read here,
    never written (test_notebooks_hand.py runs make and papermill in it)."""
    return demo_build


def test_report_builds_every_applicable_notebook_and_html(report):
    out = report["out"]
    for phase_file in sorted((ROOT / "params").glob("*.yaml")):
        params = load_phase_params(ROOT / "params", phase_file.stem)
        for section in params["sections"]:
            assert (out / params["phase"] / f"{section}.ipynb").exists(), (params["phase"], section)
            html = (out / params["phase"] / f"{section}.html").read_text()
            assert "Traceback" not in html
    assert (out / "summary" / "07_summary.html").exists()
    index = (out / "index.html").read_text()
    assert "p1/02_steps_to_target.html" in index and "summary/07_summary.html" in index
    assert "class='fail'" not in index


def test_html_reports_hide_code_and_show_no_traceback(report):
    for html_path in report["out"].glob("*/*.html"):
        text = html_path.read_text()
        assert "Traceback" not in text, html_path
        assert "import cbs_helpers" not in text, f"{html_path}: code is not hidden"
        assert "data:image/png;base64" in text or "01_load_runs" in html_path.name, html_path
        assert str(Path.home()) not in text, f"{html_path}: prints a home path"


def test_contract_tables_are_written_for_every_fitted_phase(report):
    out = report["out"]
    for phase in ("p1", "p2a", "p2b", "p4_math", "p4_rpp"):
        sb_eb = pd.read_csv(out / phase / "tables" / "sb_eb.csv")
        fit = pd.read_csv(out / phase / "tables" / "cbs_fit.csv")
        assert list(sb_eb.columns[:8]) == ["run_name", "n_prompts", "n_rollouts", "total_batch",
                                           "threshold", "S_B", "E_B", "censored"]
        assert list(fit.columns[:11]) == ["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min",
                                          "E_min", "B_crit_20pct", "r2_log", "n_points",
                                          "n_censored", "status"]
        truth = DEMO_TRUTH["phases"][phase]["thresholds"]
        assert sorted(fit["threshold"]) == sorted(float(t) for t in truth)
        assert (sb_eb["E_B"] == sb_eb["S_B"] * sb_eb["total_batch"]).all()
        # p2b's true B_noise sits at the low edge of its sampled B: 'extrapolated' is right there
        ok = fit[fit["status"].isin(["ok", "extrapolated"])]
        assert len(ok) == len(fit), fit
        # a demo fit lands within a factor 1.5 of the truth (accuracy proper: test_demo_accuracy)
        for row in ok.itertuples():
            true_b = truth[f"{row.threshold:g}"]["B_noise"]
            assert 1 / 1.5 < row.B_noise / true_b < 1.5, (phase, row.threshold, row.B_noise, true_b)
            assert row.B_noise_lo <= row.B_noise <= row.B_noise_hi


def test_plan_tables_are_written_for_every_fitted_phase(report):
    """08_plan writes plan.csv (design.md's columns first) and next_runs.csv; on the demo every
    target of p1 has a fastest batch near the true optimum of the demo's model
    (S_min (1 + B_noise / B) (15 + 0.045 B) s, least at B* = sqrt(15 B_noise / 0.045)); a
    recommendation rests on runs, or (p2b) on the cross-axis model that passed its check."""
    out = report["out"]
    for phase in ("p1", "p2a", "p2b", "p4_math", "p4_rpp"):
        plan = pd.read_csv(out / phase / "tables" / "plan.csv")
        assert list(plan.columns[:11]) == ["threshold", "objective", "n_prompts", "n_rollouts", "total_batch",
                                           "predicted_steps", "predicted_hours", "predicted_hours_lo",
                                           "predicted_hours_hi", "predicted_gpu_hours", "basis"]
        assert set(plan["objective"]) == {"wall_clock", "gpu_hours", "samples"}
        assert set(plan["basis"]) <= {"measured", "on_axis", "cross_axis"}
        assert ((plan["predicted_hours_lo"] <= plan["predicted_hours"])
                & (plan["predicted_hours"] <= plan["predicted_hours_hi"])).all()
        assert np.allclose(plan["predicted_gpu_hours"], 8 * plan["predicted_hours"])  # the demo runs on 8 GPUs
        nxt = pd.read_csv(out / phase / "tables" / "next_runs.csv")
        assert len(nxt) <= 3 and list(nxt["rank"]) == list(range(1, len(nxt) + 1))
        assert (nxt["expected_reduction_h"] > 0).all() and (nxt["p_reach"] >= 0.5).all()
        assert (nxt["cost_unit"] == "GPU-hours").all()  # every demo run gives its GPU count
    plan = pd.read_csv(out / "p1" / "tables" / "plan.csv")
    for row in plan[plan["objective"] == "wall_clock"].itertuples():
        b_noise = DEMO_TRUTH["phases"]["p1"]["thresholds"][f"{row.threshold:g}"]["B_noise"]
        best = (15 * b_noise / 0.045) ** 0.5
        assert best / 2 <= row.total_batch <= best * 2, (row.threshold, row.total_batch, best)
    html = (out / "p1" / "08_plan.html").read_text()
    assert "To reach 0.6 fastest, train with" in html and "Which run would change the decision" in html
    # the decision opens 08 and the index with the same sentences (decisions.csv)
    decisions = pd.read_csv(out / "decisions.csv")
    assert set(decisions["phase"]) == {"p1", "p2a", "p2b", "p4_math", "p4_rpp"}
    first = decision_sentences(decisions[decisions["phase"] == "p1"].iloc[0].to_dict())[0]
    said = first[first.index("To reach"):first.index("(B =")]  # 'To reach accuracy 0.65 ... 32 prompts × 8 rollouts'
    assert said in html and said in (out / "index.html").read_text()
    assert html.index("The decision") < html.index("What prices each candidate")


def test_figures_come_as_pdf_png_and_csv(report):
    figs = list((report["out"] / "p1" / "figures").glob("*.png"))
    assert len(figs) >= 5
    for png in figs:
        assert png.with_suffix(".pdf").exists() and png.with_suffix(".csv").exists()


def test_summary_table_in_csv_and_latex(report):
    tables = report["out"] / "summary" / "tables"
    summary = pd.read_csv(tables / "cbs_summary.csv")
    assert {"p1", "p2a", "p2b", "p4_math", "p4_rpp"} <= set(summary["phase"])
    tex = (tables / "cbs_summary.tex").read_text()
    assert r"\toprule" in tex and "p4\\_math" in tex


def test_reports_stand_alone_offline_in_a_browser(report):
    """Every HTML report and the index, opened in headless Chromium with the network off, make
    no request (everything is embedded) and log nothing to the console. CI installs Chromium
    (.ci/run sets CBS_REQUIRE_CHROMIUM=1); elsewhere the test skips without it."""
    from cbs_rlvr.report.browser import find_chromium, offline_problems

    if find_chromium() is None:
        if os.environ.get("CBS_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (CBS_REQUIRE_CHROMIUM is set) but not found")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    pages = sorted(report["out"].glob("*/*.html")) + [report["out"] / "index.html"]
    assert len(pages) == 33
    assert offline_problems(pages) == []


def test_the_readme_screenshots_show_what_a_fresh_demo_build_shows(report):
    """docs/index.png and the report beside it come with docs/screenshots.json (`make screenshots`:
    what they show, and each picture's sha256). This build of the committed demo must show the same
    answers, B_noise and data (bands aside: it draws 40 bootstrap resamples, the pictures 1000), so
    pictures left stale by a change fail here: `make report && make screenshots` renews them."""
    from cbs_rlvr.report.browser import screenshot_differences, screenshot_record
    from cbs_rlvr.sources.manifest import file_sha256

    shown = json.loads((ROOT / "docs" / "screenshots.json").read_text(encoding="utf-8"))
    assert set(shown["files"]) == {"index.png", "report_" + shown["section"].replace("/", "_").replace(".html", ".png")}
    for name, digest in shown["files"].items():  # the pictures are the ones the record was written with
        assert file_sha256(ROOT / "docs" / name) == digest, f"docs/{name} is not the picture screenshots.json describes"
    assert "(docs/index.png)" in (ROOT / "README.md").read_text()
    assert shown["answers"] and shown["b_noise"]
    assert screenshot_differences(shown, screenshot_record(report["out"], shown["section"])) == []


@pytest.mark.slow
def test_the_demo_pages_read_on_a_phone_and_a_laptop(report):
    """The index, p1's reports and the summary as a reader sees them (browser.reader_problems):
    no 'NaN', no raw column name, no e-notation, counts as integers, alt text on every image,
    previous/next links on section pages, no link to a missing file, no page wider than a 390 px
    phone or a 1280 px window, titles that name the phase and the section. (Every page of
    generated sweeps: test_generated_reports.py.)"""
    from cbs_rlvr.report.browser import find_chromium, reader_problems

    if find_chromium() is None:
        if os.environ.get("CBS_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (CBS_REQUIRE_CHROMIUM is set) but not found")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    out = report["out"]
    pages = [out / "index.html", *sorted((out / "p1").glob("*.html")), out / "summary" / "07_summary.html"]
    assert reader_problems(pages) == []
