"""What a user runs in the checkout of a `make report` of the demo (conftest.demo_build, the build
test_notebooks.py reads): the same build again, which runs and rewrites nothing; a build with one
notebook made to fail, named in one line while the other phases still build; and the committed
notebooks run by hand through papermill's command line, which leave that build's outputs/ as they
were. These write in the checkout, so they sit in one file and run one after the other."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from testkit import LazyModule, make_report

jupytext = LazyModule("jupytext")
nbformat = LazyModule("nbformat")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(demo_build):
    return demo_build


def test_noop_rebuild_runs_nothing(report):
    out = report["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = make_report(out, cwd=report["checkout"])
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
    proc = make_report(out, f"PARAMS={params}", "PHASES=p2c p4_rpp", cwd=report["checkout"])
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
