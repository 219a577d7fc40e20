"""The notebooks: paired and clean in git, one literal, typed parameters cell, and the whole
report built headless on the demo data through `make report` in a fresh checkout, asserting on
what it wrote; then every committed notebook run by hand through papermill's command line, which
leaves that build's outputs/ as it was."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from testkit import LazyModule

from cbs_rlvr.params import SECTIONS, SUMMARY_SECTION, load_phase_params
from cbs_rlvr.words.decision import decision_sentences

jupytext = LazyModule("jupytext")
nbformat = LazyModule("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
DEMO_TRUTH = json.loads((ROOT / "data" / "demo" / "ground_truth.json").read_text())


def test_every_section_has_a_notebook():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted([*SECTIONS, SUMMARY_SECTION])


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_py_and_ipynb_twins_agree_and_ipynb_has_no_outputs(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync-notebooks`"
    text_nb = jupytext.read(py)
    json_nb = nbformat.read(ipynb, as_version=4)
    pairs = list(zip([(c.cell_type, c.source) for c in text_nb.cells],
                     [(c.cell_type, c.source) for c in json_nb.cells], strict=False))
    assert len(text_nb.cells) == len(json_nb.cells), f"{py.name} and {ipynb.name} differ in cells"
    for i, (a, b) in enumerate(pairs):
        assert a == b, f"{py.name} and {ipynb.name} differ at cell {i}: run `make sync-notebooks`"
    # papermill runs a committed .ipynb by hand as it is: it needs the kernel named
    assert json_nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{ipynb.name}: no kernelspec"
    for cell in json_nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{ipynb.name} carries outputs"
            assert cell.get("execution_count") is None, f"{ipynb.name} carries execution counts"


#: A notebook narrates and calls: a code cell of more than this many lines (blank lines and comments
#: aside) holds logic that belongs in a tested function of cbs_rlvr/ (issue 29).
MAX_CELL_LINES = 15


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_is_longer_than_fifteen_lines(py):
    for i, cell in enumerate(jupytext.read(py).cells):
        if cell.cell_type != "code":
            continue
        lines = [x for x in cell.source.splitlines() if x.strip() and not x.strip().startswith("#")]
        assert len(lines) <= MAX_CELL_LINES, (f"{py.name}, cell {i}: {len(lines)} lines of code (at most "
                                              f"{MAX_CELL_LINES}): move the logic into a tested function")


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_literal_parameters_cell_right_after_the_title(py):
    nb = jupytext.read(py)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], f"{py.name}: the parameters cell must be the one right after the title"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert nb.cells[0].source.splitlines()[0].rstrip().endswith("?"), "the title states the question"
    names = {}
    for node in ast.parse(nb.cells[1].source).body:
        # typed, so that `papermill --help-notebook` shows the types
        assert isinstance(node, ast.AnnAssign), f"{py.name}: only annotated assignments in the parameters cell"
        names[node.target.id] = ast.unparse(node.annotation)
        assert type(ast.literal_eval(node.value)).__name__ == names[node.target.id]  # a literal of its type
    assert {"phase", "out_dir", "params_dir", "n_bootstrap"} <= set(names)
    # the first cell says how to look at another phase (07: how to open it in Lab)
    assert f"make notebook NB={py.stem[:2]}" in nb.cells[0].source
    assert nb.cells[-1].cell_type == "code", f"{py.name}: ends with the answer printed from variables"


@pytest.mark.slow
def test_papermill_infers_every_parameter_with_its_type_and_help():
    from papermill.inspection import inspect_notebook

    for py in NOTEBOOKS:
        inferred = inspect_notebook(str(py.with_suffix(".ipynb")))
        cell = jupytext.read(py).cells[1].source
        assert list(inferred) == [n.target.id for n in ast.parse(cell).body], py.name
        for name, parameter in inferred.items():
            assert parameter["inferred_type_name"] in ("str", "int"), (py.name, name, parameter)
            assert parameter["help"], (py.name, name)
    help_text = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook",
                                str(ROOT / "notebooks" / "02_steps_to_target.ipynb")],
                               capture_output=True, text=True, timeout=300)
    assert "n_bootstrap: int (default 1000)" in help_text.stdout and "Unknown type" not in help_text.stdout


# ---------------------------------------------------------------------------------------------
# The report, built once for the module
# ---------------------------------------------------------------------------------------------

# this environment's stamps: make counts it as installed (-o), never reinstalls from a checkout
STAMPS = [Path(sys.prefix) / f".cbs-rlvr{s}-installed" for s in ("", "-lab", "-lint", "-test")]


def _make(out: Path, *args, cwd: Path = ROOT, env_extra=None):
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix, **(env_extra or {}))
    env.pop("CONDA_PREFIX", None)
    return subprocess.run(["make", "--no-print-directory", *[f"-o{s}" for s in STAMPS], "report",
                           f"OUT={out}", "N_BOOTSTRAP=40", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1500)


def _fresh_checkout(dest: Path) -> Path:
    """The committed files of the project (what a fresh clone holds), without outputs."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split("\n")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """`make report` in a fresh checkout, into its own outputs/ (as a user's first build)."""
    checkout = _fresh_checkout(tmp_path_factory.mktemp("report") / "checkout")
    out = checkout / "outputs"
    t0 = time.perf_counter()
    proc = _make(out, cwd=checkout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "checkout": checkout, "proc": proc, "seconds": time.perf_counter() - t0}


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


def test_noop_rebuild_runs_nothing(report):
    out = report["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = _make(out, cwd=report["checkout"])
    assert proc.returncode == 0, proc.stderr
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert before == after, "a no-op rebuild rewrote files"
    assert "ok:" not in proc.stdout and "report: 0 notebook(s) run" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_a_failing_notebook_is_named_and_the_others_still_build(report, tmp_path):
    """A notebook that stops (here: p4_rpp's metric pattern matches no logged column) prints one
    FAILED line naming notebook, phase and cell; the other phases still build; exit 1."""
    out = tmp_path / "out"
    shutil.copytree(report["out"], out, symlinks=True)
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    text = (params / "p4_rpp.yaml").read_text().replace(
        'metric: "val-core/*/reward/mean@*"', 'metric: "val-core/*/no_such_metric/mean@*"')
    (params / "p4_rpp.yaml").write_text(text)
    (params / "p2c.yaml").write_text((params / "p2c.yaml").read_text() + "# edited\n")
    proc = _make(out, f"PARAMS={params}", "PHASES=p2c p4_rpp", cwd=report["checkout"])
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED: ")]
    assert lines and all("[phase p4_rpp], cell" in ln and "no_such_metric" in ln for ln in lines), \
        proc.stderr[-2000:]
    assert any(ln.startswith("FAILED: notebooks/01_load_runs.py [phase p4_rpp], cell ")
               for ln in lines)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "ok: p2c/03_training_curves" in proc.stdout  # the other phase still built
    assert (out / "p4_rpp" / "01_load_runs.failed.ipynb").exists()
    assert not (out / "p4_rpp" / "01_load_runs.ipynb").exists()
    assert not (out / "p4_rpp" / "01_load_runs.html").exists()
    index = (out / "index.html").read_text()
    assert "no_such_metric" in index and "p2c/03_training_curves.html" in index


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


def _papermill(checkout: Path, cwd: Path, notebook: str, output: Path, *params: str):
    """papermill's own command line on a committed .ipynb, as a user types it."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    return subprocess.run([sys.executable, "-m", "papermill", notebook, str(output),
                           "--no-progress-bar", *params], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_hand_papermill_runs_after_make_report_leave_outputs_as_they_were(report, tmp_path):
    """After `make report`, committed .ipynb files run by hand through papermill's command line
    (kernel metadata committed), one from the project root, one from notebooks/, one from
    elsewhere, with other parameters than the build's (the phase its first cell suggests, fewer
    resamples): each says on papermill's console that it writes to scratch/ and reads the
    build's snapshot, writes there, and the build's outputs/ stays byte-identical. out_dir names
    another folder (relative to the project); it cannot name the build's. (Every notebook runs
    through papermill in the build; the kernel metadata of every .ipynb is checked above.)"""
    checkout, out = report["checkout"], report["out"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    chosen = {"02_steps_to_target": checkout, "03_training_curves": checkout / "notebooks", "07_summary": tmp_path}
    for stem, cwd in chosen.items():
        py = checkout / "notebooks" / f"{stem}.py"
        hint = re.search(r"make notebook NB=\d\d(?: PHASE=(\w+))?", jupytext.read(py).cells[0].source)
        phase = hint.group(1) or "summary"
        params = ["-p", "n_bootstrap", "10"] + (["-p", "phase", phase] if hint.group(1) else [])
        notebook = str(py.with_suffix(".ipynb").relative_to(cwd) if py.is_relative_to(cwd) else py.with_suffix(".ipynb"))
        proc = _papermill(checkout, cwd, notebook, tmp_path / f"{py.stem}.ipynb", *params)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (f"hand run of {py.stem} [{phase}]: writing to scratch/outputs/, not outputs/ (only make "
                "report writes there; out_dir names another folder); reading make report's snapshot "
                "(outputs/data/)") in proc.stderr, proc.stderr[-2000:]
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    scratch = checkout / "scratch" / "outputs"
    assert (scratch / "data" / "history.parquet").samefile(out / "data" / "history.parquet")
    assert pd.read_csv(scratch / "p2b" / "tables" / "cbs_fit.csv")["B_noise"].notna().any()
    printed = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
                      for c in nbformat.read(tmp_path / "07_summary.ipynb", 4).cells for o in c.get("outputs", []))
    # p2b's own, the build's others, each linked to its cbs_fit.csv
    assert "5 phase(s) with a fit: " + ", ".join(f"[{p}](../{p}/tables/cbs_fit.csv)" for p in
                                                 ("p1", "p2a", "p2b", "p4_math", "p4_rpp")) + "." in printed
    # out_dir: a folder of the user's, relative to the project; never the build's
    proc = _papermill(checkout, tmp_path, str(checkout / "notebooks" / "03_training_curves.ipynb"),
                      tmp_path / "c.ipynb", "-p", "phase", "p2a", "-p", "out_dir", "other_out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (checkout / "other_out" / "p2a" / "figures" / "training_curves.png").exists()
    assert not (tmp_path / "other_out").exists() and "hand run" not in proc.stderr
    proc = _papermill(checkout, checkout, "notebooks/03_training_curves.ipynb", tmp_path / "d.ipynb",
                      "-p", "out_dir", "outputs")
    assert proc.returncode != 0 and "out_dir outputs is a report build's output directory" in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


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
