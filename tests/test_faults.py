"""Fault injection on real builds (issue 18): kill -9 and Ctrl-C at seeded points of a build,
two builds with different sources on one OUT, and damage to each kind of output. Every case
ends, after one more `make report`, with tables equal to a clean build's, and the index, the
manifest and the report naming the same source and run count; no kernel connection file, temp
file or partial notebook is left.

Kept quick: sources of 3 and 6 runs cut from the demo sweep (real W&B offline files), one
phase, the 01_load_runs section only (each build a few seconds), kill points from seeded
random numbers (the same every run)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testkit import demo_run_dirs, venv_env

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

ROOT = Path(__file__).resolve().parents[1]
P1_DIRS = demo_run_dirs("p1")
N_SMALL, N_BIG = 3, 6


def _make(ctx, source: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "report", "N_BOOTSTRAP=20", f"SOURCE={source}",
                           f"OUT={ctx['out']}", f"PARAMS={ctx['params']}", *extra],
                          cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=600)


def _start(ctx, source: Path, out: Path | None = None) -> subprocess.Popen:
    """A build in its own process group (so kill -9 reaches make's whole command)."""
    return subprocess.Popen([sys.executable, "-m", "cbs_rlvr", "report", "--n-bootstrap", "20",
                             "--source", str(source), "--out", str(out or ctx["out"]),
                             "--params-dir", str(ctx["params"])],
                            cwd=ROOT, env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): _sha(p) for p in sorted((out / "p1" / "tables").glob("*"))}


def _assert_consistent(ctx, source: Path, n_runs: int) -> None:
    """OUT as a clean build of `source` leaves it: the same tables; the manifest, the index and
    the report name the same source and run count; nothing half-written left behind."""
    out = ctx["out"]
    if source == ctx["big"]:
        assert _tables(out) == ctx["clean_tables"]
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert (manifest["source"], manifest["n_runs"]) == (str(source), n_runs)
    index = (out / "index.html").read_text()
    assert f"Source: {source}" in index and f"{n_runs} runs analysed" in index
    report = (out / "p1" / "01_load_runs.html").read_text()
    assert f"{n_runs} runs in the snapshot of" in report and str(source) in report
    assert sum(1 for _ in open(out / "p1" / "tables" / "runs.csv")) == n_runs + 1
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial.ipynb", ".failed.ipynb"))]
    leftovers += list((out / ".build" / "kernels").glob("*.json"))
    assert leftovers == []


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    import yaml

    base = tmp_path_factory.mktemp("faults")
    sources = {}
    for name, n in (("small", N_SMALL), ("big", N_BIG)):
        for d in P1_DIRS[:n]:
            shutil.copytree(d, base / name / d.name)
        sources[name] = base / name
    params = base / "params"
    params.mkdir()
    p1 = yaml.safe_load((ROOT / "params" / "p1.yaml").read_text())
    p1["sections"] = ["01_load_runs"]
    (params / "p1.yaml").write_text(yaml.safe_dump(p1, sort_keys=False))
    clean = base / "clean"
    t0 = time.monotonic()
    proc = _start({"params": params}, sources["big"], clean)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    return {"base": base, "params": params, "out": base / "out", "clean_tables": _tables(clean),
            "seconds": time.monotonic() - t0, **sources}


def test_kill_9_or_ctrl_c_at_seeded_points_then_one_build_is_a_clean_build(ctx):
    """Six builds killed with SIGKILL at seeded points (sources alternating, so the snapshot is
    rewritten too), two interrupted with SIGINT; then one `make report` equals a clean build,
    and the one after it has nothing to do."""
    outcomes = []
    for seed in range(8):
        rng = random.Random(seed)
        source = ctx["big"] if seed % 2 else ctx["small"]
        proc = _start(ctx, source)
        time.sleep(rng.uniform(0.0, 1.0) * ctx["seconds"])
        sig = signal.SIGINT if seed in (4, 7) else signal.SIGKILL
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=300)
        outcomes.append(proc.returncode)
        assert "Traceback" not in stderr, stderr
        if sig == signal.SIGINT and proc.returncode == 130:  # interrupted: its kernels' files gone
            assert list((ctx["out"] / ".build" / "kernels").glob("*.json")) == []
    assert -signal.SIGKILL in outcomes  # the sweep did kill builds midway
    proc = _make(ctx, ctx["big"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_consistent(ctx, ctx["big"], N_BIG)
    proc = _make(ctx, ctx["big"])
    assert proc.returncode == 0 and "0 notebook(s) run" in proc.stdout, proc.stdout + proc.stderr


def test_two_builds_on_one_out_run_one_after_the_other(ctx):
    """The second build waits for the first (one line saying so), a third with WAIT=0 exits 1
    at once; OUT ends as the last build made it, whole."""
    from cbs_rlvr.build.outlock import OutputBusyError, OutputLock

    first = _start(ctx, ctx["small"])
    deadline = time.monotonic() + 60
    while True:  # until the first build holds OUT's lock
        try:
            with OutputLock(ctx["out"], wait=False):
                pass
        except OutputBusyError:
            break
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second = subprocess.Popen(["make", "--no-print-directory", "report", "N_BOOTSTRAP=20",
                               f"SOURCE={ctx['big']}", f"OUT={ctx['out']}", f"PARAMS={ctx['params']}"],
                              cwd=ROOT, env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    waiting = second.stderr.readline()
    first_out, first_err = first.communicate(timeout=300)
    second_out, second_err = second.communicate(timeout=300)
    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 0, second_out + second_err
    assert waiting == f"waiting for the build of pid {first.pid} writing {ctx['out']}\n"
    assert "ok: p1/01_load_runs" in second_out  # it saw the first build's outputs as stale
    _assert_consistent(ctx, ctx["big"], N_BIG)
    again = _make(ctx, ctx["big"])
    assert "0 notebook(s) run" in again.stdout
    # WAIT=0 while a build writes OUT: exit 1 at once, one line
    with OutputLock(ctx["out"]):
        busy = _make(ctx, ctx["small"], "WAIT=0")
    assert busy.returncode != 0
    assert [ln for ln in busy.stderr.splitlines() if not ln.startswith("make")] == [
        f"error: {ctx['out']} is being written by the build of pid {os.getpid()}; not waiting (--no-wait)"]
    _assert_consistent(ctx, ctx["big"], N_BIG)


def test_damage_to_each_kind_of_output_is_rebuilt(ctx):
    out = ctx["out"]
    if not (out / "index.html").is_file():
        assert _make(ctx, ctx["big"]).returncode == 0
    table = out / "p1" / "tables" / "runs.csv"
    # a hand-edited table, an edited index, a truncated snapshot file
    table.write_text(table.read_text().replace("8", "9", 1))  # same size, new content
    (out / "index.html").write_text((out / "index.html").read_text().replace(f"{N_BIG} runs", "999 runs"))
    os.truncate(out / "data" / "runs.parquet", 100)
    proc = _make(ctx, ctx["big"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rebuild: p1/01_load_runs: p1/tables/runs.csv was changed since the build wrote it" in proc.stdout
    _assert_consistent(ctx, ctx["big"], N_BIG)
    # a removed table, a truncated report and executed notebook, a removed manifest
    table.unlink()
    os.truncate(out / "p1" / "01_load_runs.html", 100)
    os.truncate(out / "p1" / "01_load_runs.ipynb", 50)
    (out / "data" / "manifest.json").unlink()
    proc = _make(ctx, ctx["big"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: p1/01_load_runs" in proc.stdout
    _assert_consistent(ctx, ctx["big"], N_BIG)
