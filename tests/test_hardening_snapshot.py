"""The snapshot over test_hardening.py's corpus of real W&B offline files (tests/hardening_kit.py:
corpus, project copy and build made once per run for both files, only read here): a missing or an
unreachable source is one line and keeps the snapshot; a corrupt earlier snapshot is rebuilt;
`make snapshot` killed (SIGKILL to make and its python) at several moments while it writes leaves
the snapshot readable, the old set or the new one whole, and the next run completes; the offline
reader groups files by run whatever the head of a file shows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import hardening_kit as kit
import pytest
from sweeps import hardening as hc

from cbs_rlvr.__main__ import main
from cbs_rlvr.errors import SnapshotError
from cbs_rlvr.sources.snapshot import build_snapshot, read_snapshot
from cbs_rlvr.sources.wandb_file import load_offline_runs

pytestmark = pytest.mark.slow  # the corpus is written by the wandb SDK; each snapshot is a process


@pytest.fixture(scope="module")
def report(hardening_build) -> dict:
    return hardening_build


@pytest.fixture(scope="module")
def corpus(hardening_build) -> dict:
    return hardening_build


@pytest.fixture(scope="module")
def project(report) -> Path:
    return report["project"]


def _segments(runs, run_id: str) -> str:
    """The number of segments in a run's flags ('segments:2;...')."""
    flags = str(runs.loc[runs["run_id"] == run_id, "flags"].iloc[0] or "")
    return dict((f.split(":", 1) + [""])[:2] for f in flags.split(";") if f).get("segments", "")


def test_missing_source_is_one_line_and_keeps_the_snapshot(report, project, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(report["out"] / "data", out / "data")
    before = read_snapshot(out)[2]["content_hash"]
    proc = kit.run_make(project, report, "snapshot", f"SOURCE={tmp_path / 'no_such_dir'}", f"OUT={out}")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "source not found" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert read_snapshot(out)[2]["content_hash"] == before


def test_unreachable_wandb_source_is_one_line_and_keeps_the_snapshot(report, tmp_path, monkeypatch, capsys,
                                                                     wandb_endpoint):
    out = tmp_path / "out"
    shutil.copytree(report["out"] / "data", out / "data")
    before = read_snapshot(out)[2]["content_hash"]
    server = wandb_endpoint(api_key=kit.SENTINEL)
    monkeypatch.setenv("WANDB_API_KEY", kit.SENTINEL)
    server.stop()  # the real client meets a refused connection
    assert main(["snapshot", "--source", "wandb:ent/proj", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreachable" in err and "connection refused" in err and kit.SENTINEL not in err
    assert read_snapshot(out)[2]["content_hash"] == before


def test_corrupt_earlier_snapshot_is_rebuilt(report, project, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(report["out"] / "data", out / "data")
    expected = read_snapshot(out)[2]["content_hash"]
    (out / "data" / "runs.parquet").write_bytes(b"PAR1 not really")
    (out / "data" / "manifest.json").write_text("{truncated")
    with pytest.raises(SnapshotError):
        read_snapshot(out)
    proc = kit.run_make(project, report, "snapshot", f"SOURCE={report['root']}", f"OUT={out}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert read_snapshot(out)[2]["content_hash"] == expected


def _snapshot_command(source: Path, out: Path) -> list[str]:
    return ["make", "--no-print-directory", "snapshot", f"SOURCE={source}", f"OUT={out}"]


def test_killed_snapshot_leaves_the_previous_one_readable(corpus, project, tmp_path):
    """SIGKILL `make snapshot` (make and its python) while it writes, at several moments: the
    snapshot in OUT stays readable (the old set or the new one, whole), and the next run completes."""
    small, large = tmp_path / "small", tmp_path / "large"
    for target, ids in ((small, ("hA008", "hA032")), (large, ("hA008", "hA032", "hA128", "hA512", "dupA",
                                                              "dupB", "crash1", "nan1", "str1"))):
        for run_id in ids:
            src = hc.run_file(corpus["root"], run_id)
            (target / src.parent.name).mkdir(parents=True)
            shutil.copy2(src, target / src.parent.name / src.name)
    out = tmp_path / "out"

    def make_snapshot(source: Path) -> subprocess.CompletedProcess:
        return kit.run_make(project, corpus, "snapshot", f"SOURCE={source}", f"OUT={out}")

    hashes = {}
    for source in (small, large):
        proc = make_snapshot(source)
        assert proc.returncode == 0, proc.stderr
        hashes[source] = read_snapshot(out)[2]["content_hash"]
    data = out / "data"
    # kill once a temporary file of the write appears, plus a delay; then at fixed times
    plans = [("write", 0.0), ("write", 0.003), ("write", 0.01), ("write", 0.03), ("time", 1.0), ("time", 2.0)]
    current = large
    killed_in_write = 0
    for how, delay in plans:
        other = small if current == large else large
        proc = subprocess.Popen(_snapshot_command(other, out), cwd=project, env=kit.make_env(corpus),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        t0 = time.monotonic()
        if how == "write":
            while proc.poll() is None and not any(p.name.endswith(".tmp") for p in data.iterdir()):
                if time.monotonic() - t0 > 120:
                    break
            time.sleep(delay)
        else:
            time.sleep(delay)
        still_running = proc.poll() is None
        if still_running:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_in_write += how == "write"
        proc.communicate(timeout=60)
        _runs, _history, manifest = read_snapshot(out)
        assert manifest["content_hash"] in (hashes[current], hashes[other]), (how, delay)
        if manifest["content_hash"] == hashes[other]:
            current = other
        # the next run completes and leaves the other source's snapshot
        nxt = small if current == large else large
        done = make_snapshot(nxt)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert read_snapshot(out)[2]["content_hash"] == hashes[nxt]
        current = nxt
    assert killed_in_write >= 2, "the kills never landed during a write"


# --------------------------------------------------------------------------------------------
# Offline reader: files are grouped by the run id in their head; a file whose head does not
# show it (or shows another) is still merged with the rest of its run
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("peek", ["none", "misleading"])
def test_offline_grouping_does_not_depend_on_the_head_of_the_file(report, monkeypatch, peek):
    expected = json.loads((report["out"] / "data" / "manifest.json").read_text())["content_hash"]
    real = load_offline_runs.__globals__["_peek_run_id"]

    def fake(path, *args, **kwargs):
        if peek == "none":
            return None
        run_id = real(path, *args, **kwargs)
        # the second segment of the resumed run, and every clone, look like another run
        return "clone0001" if (run_id == "resume1" and "nodeB" in path.parts) or (
            run_id or "").startswith("clone") else run_id

    monkeypatch.setitem(load_offline_runs.__globals__, "_peek_run_id", fake)
    snap = build_snapshot(str(report["root"]))
    assert snap["manifest"]["content_hash"] == expected
    assert _segments(snap["runs"], "resume1") == "2"
