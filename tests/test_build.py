"""The report build is always right: one `make report` after any change to the source reflects
it everywhere (decided on content, not file times), partial sweeps build, leftovers go, and
every problem that stops the build says so in one line. (Partial, tiny and live sweeps:
test_build_sweeps.py.)

These run the real `make report` on small sources cut from the demo sweep (real W&B offline
files) with a params directory whose phases run only the quick 01_load_runs section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from testkit import copy_runs, demo_run_dirs, make_here, phase_params

ROOT = Path(__file__).resolve().parents[1]


def _runs_table(out: Path, phase: str) -> pd.DataFrame:
    return pd.read_csv(out / phase / "tables" / "runs.csv")


@pytest.fixture(scope="module")
def one_phase(tmp_path_factory):
    """A source with 5 of p1's runs, params with p1 only (01_load_runs), and a first build."""
    base = tmp_path_factory.mktemp("build")
    source = base / "source"
    copy_runs(demo_run_dirs("p1")[:5], source)
    params = phase_params(base / "params", {"p1": ["01_load_runs"]})
    out = base / "out"
    proc = make_here(f"SOURCE={source}", f"OUT={out}", f"PARAMS={params}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(_runs_table(out, "p1")) == 5
    return {"base": base, "source": source, "params": params, "out": out}


def _build(ctx) -> subprocess.CompletedProcess:
    proc = make_here(f"SOURCE={ctx['source']}", f"OUT={ctx['out']}", f"PARAMS={ctx['params']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_a_noop_build_runs_nothing_and_rewrites_nothing(one_phase):
    out = one_phase["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = _build(one_phase)
    assert "ok:" not in proc.stdout and "0 notebook(s) run" in proc.stdout
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_runs_copied_in_with_old_timestamps_are_seen_at_once(one_phase):
    """`cp -p` / `rsync -a` keep file times older than OUT: one build still reflects them; the
    index says which runs the build added."""
    new = demo_run_dirs("p1")[5:7]
    names_before = set(_runs_table(one_phase["out"], "p1")["name"])
    copy_runs(new, one_phase["source"], preserve_times=True)
    proc = _build(one_phase)
    assert "ok: p1/01_load_runs" in proc.stdout
    table = _runs_table(one_phase["out"], "p1")
    assert len(table) == 7
    manifest = json.loads((one_phase["out"] / "data" / "manifest.json").read_text())
    assert manifest["n_runs"] == 7
    index = (one_phase["out"] / "index.html").read_text()
    assert "7 runs" in index
    added = sorted(set(table["name"]) - names_before)
    assert f"<li>p1: 2 runs added ({', '.join(added)}).</li>" in index


@pytest.mark.slow
def test_a_removed_run_folder_is_seen_at_once(one_phase):
    victim = sorted(one_phase["source"].iterdir())[0]
    shutil.rmtree(victim)
    _build(one_phase)
    manifest = json.loads((one_phase["out"] / "data" / "manifest.json").read_text())
    assert manifest["n_runs"] == len(list(one_phase["source"].iterdir()))
    assert len(_runs_table(one_phase["out"], "p1")) == manifest["n_runs"]


@pytest.mark.slow
def test_a_run_changed_in_place_with_its_old_timestamp_is_seen(one_phase):
    """Same file name, same mtime, other content (a re-synced run): the content decides."""
    runs_now = sorted(one_phase["source"].iterdir())
    target = next(runs_now[0].glob("*.wandb"))
    stat = target.stat()
    replacement = next(d for d in demo_run_dirs("p1") if d.name not in {r.name for r in runs_now})
    shutil.copyfile(next(replacement.glob("*.wandb")), target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = _runs_table(one_phase["out"], "p1")
    proc = _build(one_phase)
    assert "ok: p1/01_load_runs" in proc.stdout
    after = _runs_table(one_phase["out"], "p1")
    assert sorted(after["name"]) != sorted(before["name"]) or not after.equals(before)


@pytest.mark.slow
def test_a_params_error_is_reported_first_naming_the_file_and_the_rest_builds(tmp_path, one_phase):
    params = phase_params(tmp_path / "params", {"p1": ["01_load_runs"], "p2a": ["01_load_runs"]})
    path = params / "p2a.yaml"
    path.write_text(path.read_text().replace("n_val: 1319", "n_val: many"))
    out = tmp_path / "out"
    proc = make_here(f"SOURCE={one_phase['source']}", f"OUT={out}", f"PARAMS={params}")
    assert proc.returncode != 0
    first = proc.stderr.splitlines()[0]
    assert first == f"error: {path}: n_val must be int, got 'many'", proc.stderr
    assert "FAILED" not in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "p1" / "01_load_runs.html").is_file()  # the valid phase still built
    assert "params file invalid" in (out / "index.html").read_text()


def test_an_unreadable_source_stops_the_build_in_one_line_and_keeps_the_last_reports(one_phase):
    out = one_phase["out"]
    index_before = (out / "index.html").read_bytes()
    manifest_before = (out / "data" / "manifest.json").read_bytes()
    proc = make_here(f"SOURCE={one_phase['base'] / 'no_such_dir'}", f"OUT={out}",
                 f"PARAMS={one_phase['params']}")
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("make")]
    assert len(errors) == 1 and errors[0].startswith("error: source not found"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (out / "index.html").read_bytes() == index_before
    assert (out / "data" / "manifest.json").read_bytes() == manifest_before


def test_make_help_lists_every_target_and_variable():
    proc = make_here(target="help")
    assert proc.returncode == 0
    makefile = (ROOT / "Makefile").read_text()
    targets = [t for t in makefile.split(".PHONY:", 1)[1].splitlines()[0].split()]
    for target in targets:
        assert f"make {target}" in proc.stdout, target
    for variable in ("SOURCE", "OUT", "PARAMS", "PHASES", "JOBS", "N_BOOTSTRAP"):
        assert f"{variable}=" in proc.stdout, variable


def test_every_cli_command_and_option_has_help_text():
    from cbs_rlvr.__main__ import parser

    top = parser()
    commands = next(a for a in top._actions if a.dest == "command")
    assert set(commands.choices) == {"report", "snapshot", "screenshots"}
    for name, sub in commands.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
        proc = subprocess.run([sys.executable, "-m", "cbs_rlvr", name, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_a_noop_build_loads_nothing_heavy(one_phase):
    """Why a no-op build is cheap enough to call always (the benchmark times it): with nothing
    to do, the driver decides from hashes and keys alone, without importing the analysis,
    papermill or a kernel."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cbs_rlvr", "report", "--source",
         str(one_phase["source"]), "--out", str(one_phase["out"]), "--params-dir",
         str(one_phase["params"]), "--n-bootstrap", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "report: 0 notebook(s) run" in proc.stdout, proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "cbs_rlvr.build.builder" in imported  # the measurement works
    heavy = {"pandas", "numpy", "matplotlib", "scipy", "wandb", "papermill", "nbconvert",
             "jupyter_client", "cbs_rlvr.measure.crossings", "cbs_rlvr.fit"}
    assert not heavy & imported, sorted(heavy & imported)


def test_index_page_escapes_names_and_errors(tmp_path):
    from cbs_rlvr.report.html import render_index

    evil = "<script>alert(1)</script>"
    (tmp_path / "pa").mkdir()
    (tmp_path / "pa" / "01_load_runs.html").write_text("x")
    (tmp_path / "pa" / "02_steps_to_target.error.txt").write_text(f"FAILED: ValueError: {evil}\n")
    params = {"pa": {"title": evil, "sections": ["01_load_runs", "02_steps_to_target"]},
              "pb": f"params/pb.yaml: bad {evil}", "pc": {"title": "later", "sections": []}}
    page = render_index(tmp_path, params, {"pa": 3}, {"source": f"wandb:{evil}", "n_runs": 3},
                        "2026-01-01")
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "href='pa/01_load_runs.html'" in page
    assert "failed &mdash; ValueError" in page and "no runs yet" in page
    assert "params file invalid" in page and "<script" not in page and "http:" not in page and "https:" not in page


def test_plan_runs_the_sections_of_phases_with_runs_in_report_order(tmp_path):
    from cbs_rlvr.build.jobs import plan_jobs

    params = {"pa": {"sections": ["02_steps_to_target", "01_load_runs"], "two_axis_phases": []},
              "pb": {"sections": ["01_load_runs"], "two_axis_phases": []}}
    jobs, skipped = plan_jobs(params, {"pa": 4}, tmp_path, "sha256:x", "code", 100)
    assert [j.name for j in jobs] == ["pa/01_load_runs", "pa/02_steps_to_target"]
    assert skipped == ["pb"]
    again, _ = plan_jobs(params, {"pa": 4}, tmp_path, "sha256:x", "code", 100)
    assert [j.key for j in again] == [j.key for j in jobs]  # keys are deterministic
    other, _ = plan_jobs(params, {"pa": 4}, tmp_path, "sha256:y", "code", 100)
    assert all(a.key != b.key for a, b in zip(jobs, other, strict=True))  # data change: all stale
