"""Outputs you can trust (issue 18), the quick parts: one writer per OUT, snapshot temp files of
concurrent writers, outputs verified by their recorded hashes, odd data flagged instead of
rescaled, the API key redacted in every form, paths with spaces/quotes/`$` passed by make as
data, the YAML error on one line. The slow part (kill -9, concurrent builds, damaged outputs
on real builds) is tests/test_faults.py."""

from __future__ import annotations

import base64
import html
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pytest
import yaml
from testkit import venv_env

from cbs_rlvr.build import jobs as build
from cbs_rlvr.build.outlock import OutputBusyError, OutputLock
from cbs_rlvr.data.runs import normalise_raw_run
from cbs_rlvr.errors import redact_secrets
from cbs_rlvr.measure.crossings import steps_to_target
from cbs_rlvr.params import ParamsError, load_phase_params
from cbs_rlvr.report.tables import FLAG_MEANINGS, explain_flags

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
VAL = "val-core/openai/gsm8k/reward/mean@1"


def _holder(out: Path, seconds: float) -> subprocess.Popen:
    """Another process holding OUT's lock for `seconds` (prints 'held' once it has it)."""
    code = ("import sys, time\nfrom cbs_rlvr.build.outlock import OutputLock\n"
            f"with OutputLock({str(out)!r}):\n    print('held', flush=True); time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --------------------------------------------------------------------------------------------
# One writer per OUT
# --------------------------------------------------------------------------------------------
def test_a_second_writer_waits_saying_for_whom_or_exits_1_with_no_wait(tmp_path, capsys):
    out = tmp_path / "out dir"
    holder = _holder(out, 2.5)
    try:
        with pytest.raises(OutputBusyError, match=f"being written by the build of pid {holder.pid}"):
            with OutputLock(out, wait=False):
                pass
        # the command line: exit 1 at once, one line
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "cbs_rlvr", "snapshot", "--no-wait",
                               "--source", str(DEMO), "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and time.monotonic() - t0 < 20
        assert proc.stderr.splitlines() == [
            f"error: {out} is being written by the build of pid {holder.pid}; not waiting (--no-wait)"]
        t0 = time.monotonic()
        with OutputLock(out):  # waits for the holder, saying so once
            waited = time.monotonic() - t0
        assert holder.wait(10) == 0 and waited > 0.5
        assert capsys.readouterr().err == f"waiting for the build of pid {holder.pid} writing {out}\n"
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_build_never_blocks(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert list(out.iterdir()) == []  # the lock was OUT's own descriptor: it went with the process
    t0 = time.monotonic()
    with OutputLock(out, wait=False):
        pass
    assert time.monotonic() - t0 < 1


def _write_snapshots(out: str, n: int) -> None:
    from cbs_rlvr.sources.snapshot import build_snapshot, write_snapshot

    snap = build_snapshot(str(DEMO))
    for _ in range(n):
        write_snapshot(snap, out)


@pytest.mark.slow
def test_concurrent_snapshot_writers_never_delete_each_others_temp_files(tmp_path):
    """write_snapshot used to delete every .*.tmp in data/, the other writer's included
    (FileNotFoundError on its rename); now only those of writers that are gone."""
    from cbs_rlvr.sources.manifest import verify_snapshot_files

    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (data / f".runs.parquet.{dead}.abc123.tmp").write_bytes(b"left by a killed writer")
    (data / f".prev.{dead}.xyz.tmp").mkdir()
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_snapshots, args=(str(tmp_path / "out"), 6))
               for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    manifest = verify_snapshot_files(data)
    assert manifest["n_runs"] == 43
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(".")) == []


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    from cbs_rlvr.sources.manifest import remove_stale_temps

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = tmp_path / f".runs.parquet.{sleeper.pid}.q1w2e3.tmp"
        theirs.write_bytes(b"being written")
        gone = tmp_path / ".runs.parquet.tmp"  # an older naming, no writer to wait for
        gone.write_bytes(b"x")
        remove_stale_temps(tmp_path)
        assert theirs.exists() and not gone.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    remove_stale_temps(tmp_path)
    assert not theirs.exists()


# --------------------------------------------------------------------------------------------
# Outputs verified by the hashes the build recorded
# --------------------------------------------------------------------------------------------
def _recorded_job(out: Path) -> tuple[build.Job, dict]:
    job = build.Job("p1", "02_steps_to_target", key="k")
    files = {"p1/02_steps_to_target.ipynb": b'{"cells": []}', "p1/02_steps_to_target.html": b"<html>" * 50,
             "p1/tables/cbs_fit.csv": b"threshold,B_noise\n0.5,260.54\n", "p1/figures/sb_eb.png": b"\x89PNG" * 99}
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    state = {"keys": {job.name: "k"}}
    written = [str(out / "p1/tables/cbs_fit.csv"), str(out / "p1/figures/sb_eb.png"),
               str(out / "data/runs.parquet"), "/elsewhere/cache.json", str(out / "p1/.tmp.partial")]
    build.record_outputs(job, out, state, written)
    return job, state


def test_every_file_a_job_wrote_is_recorded_and_any_damage_named(tmp_path):
    out = tmp_path
    job, state = _recorded_job(out)
    assert sorted(state["outputs"][job.name]) == [
        "p1/02_steps_to_target.html", "p1/02_steps_to_target.ipynb", "p1/figures/sb_eb.png",
        "p1/tables/cbs_fit.csv"]
    assert build.is_current(job, out, state)
    damage = [
        (lambda: (out / "p1/figures/sb_eb.png").unlink(), "p1/figures/sb_eb.png is missing"),
        (lambda: os.truncate(out / "p1/02_steps_to_target.html", 100),
         "p1/02_steps_to_target.html was truncated (100 bytes, written with 300)"),
        (lambda: (out / "p1/tables/cbs_fit.csv").write_bytes(b"threshold,B_noise\n0.5,999.99\n"),
         "p1/tables/cbs_fit.csv was changed since the build wrote it"),  # same size, new content
    ]
    for spoil, message in damage:
        job, state = _recorded_job(out)
        spoil()
        assert build.damaged_output(job, out, state) == message
        assert not build.is_current(job, out, state)
    job, state = _recorded_job(out)
    state["keys"][job.name] = "an older key"
    assert not build.is_current(job, out, state)


def test_a_file_belongs_to_the_job_that_wrote_it_last(tmp_path):
    out = tmp_path
    job, state = _recorded_job(out)
    other = build.Job("p1", "08_plan", key="k8")
    for rel in ("p1/08_plan.ipynb", "p1/08_plan.html"):
        (out / rel).write_text("x")
    (out / "p1/tables/cbs_fit.csv").write_text("rewritten by 08\n")
    build.record_outputs(other, out, state, [str(out / "p1/tables/cbs_fit.csv")])
    assert "p1/tables/cbs_fit.csv" not in state["outputs"][job.name]
    assert build.damaged_output(job, out, state) is None
    assert build.damaged_output(other, out, state) is None


# --------------------------------------------------------------------------------------------
# Odd data: flagged and handled, never silently rescaled
# --------------------------------------------------------------------------------------------
def _normalise(rows):
    return normalise_raw_run({"source": "t", "run_id": "r", "name": "cbs_p1_np32_nr8",
                              "config": {}, "state": "finished", "rows": rows})


def test_a_few_glitches_above_1_are_dropped_not_a_reason_to_rescale_the_run():
    acc = np.linspace(0.15, 0.82, 60)
    rows = [{"_step": 10 * i, VAL: float(a)} for i, a in enumerate(acc)]
    for i in (3, 9, 15, 21, 27, 33):
        rows[i][VAL] = 1.7
    entry = _normalise(rows)
    assert entry["row"]["flags"] == "accuracy_above_1:6"
    series = entry["history"].set_index("step")[VAL]
    assert series.isna().sum() == 6 and series.max() == pytest.approx(0.82)
    S, censored = steps_to_target(series.index.to_numpy(), series.to_numpy(), 0.2)
    assert not censored and 0 < S < 60  # truly about 45 steps, not censored at every target


def test_a_whole_series_in_percent_is_still_rescaled():
    rows = [{"_step": 10 * i, VAL: 100 * a} for i, a in enumerate(np.linspace(0.005, 0.8, 40))]
    entry = _normalise(rows)
    assert entry["row"]["flags"] == "percent_accuracy"
    assert entry["history"][VAL].max() == pytest.approx(0.8)


def test_fractional_steps_are_excluded_with_the_true_reason():
    entry = _normalise([{"_step": i + 0.5, VAL: 0.1 * i} for i in range(8)])
    assert entry["kind"] == "excluded"
    assert entry["row"]["reason"].startswith("no usable validation metric: 8 row(s) with fractional "
                                             "(e.g. 1.5) step numbers were dropped")
    mixed = _normalise([{"_step": s, VAL: 0.05 * s} for s in (0, 1, 1.5, 2, 3)])
    assert mixed["row"]["flags"] == "fractional_steps:1" and list(mixed["history"]["step"]) == [0, 1, 2, 3]


def test_negative_steps_and_accuracy_below_0_are_flagged_and_S_is_never_negative():
    rows = [{"_step": s, VAL: 0.2 + 0.002 * (s + 100)} for s in range(-100, 200)]
    rows[150][VAL] = -0.3
    entry = _normalise(rows)
    assert entry["row"]["flags"] == "negative_steps:100;accuracy_below_0:1"
    history = entry["history"]
    assert history["step"].min() == 0 and entry["row"]["first_step"] == 0
    S, _ = steps_to_target(history["step"].to_numpy(), history[VAL].to_numpy(), 0.3)
    assert S >= 0
    text = explain_flags(entry["row"]["flags"])
    assert "100 logged row(s) had a negative step number" in text and "1 accuracy value(s) below 0" in text
    for flag in ("fractional_steps", "negative_steps", "accuracy_below_0", "accuracy_above_1"):
        assert flag in FLAG_MEANINGS


# --------------------------------------------------------------------------------------------
# Secrets in every form
# --------------------------------------------------------------------------------------------
KEY = "cbstest0" + "0123456789abcdef" * 2


def _forms(key: str) -> list[str]:
    b64 = base64.b64encode
    return [key, quote(key, safe=""), quote_plus(f"api:{key}"), b64(key.encode()).decode(),
            b64(f"api:{key}".encode()).decode(), b64(f"api:{key}".encode()).decode().rstrip("="),
            base64.urlsafe_b64encode(f"user:api:{key}".encode()).decode(),
            b64(f"x{key}".encode()).decode(), b64(f"xy{key}".encode()).decode()]


def test_the_key_is_redacted_in_every_encoding_and_header_values_go(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    for form in _forms(KEY):
        text = redact_secrets(f"HTTP 400: bad header {form} in request")
        assert form not in text and "***" in text, form
        assert text.startswith("HTTP 400: bad header ") and text.endswith(" in request")
    assert redact_secrets("Authorization: Bearer other.token-value") == "Authorization: ***"
    assert redact_secrets("{'authorization': 'Basic Zm9vOmJhcg=='}") == "{'authorization': '***'}"
    assert redact_secrets("run r1: 12 steps at lr 1e-6") == "run r1: 12 steps at lr 1e-6"


def test_the_key_from_netrc_is_redacted_too(monkeypatch, tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(netrc))
    assert redact_secrets(f"key {KEY} and {base64.b64encode(f'api:{KEY}'.encode()).decode()}") == "key *** and ***"


def test_a_server_echoing_auth_headers_leaks_no_form_of_the_key_and_counts_match(
        wandb_endpoint, tmp_path, caplog):
    from wandb_server import verl_run

    from cbs_rlvr.sources.snapshot import build_snapshot, write_snapshot

    server = wandb_endpoint([verl_run(f"r{i}", n_prompts=8 * 2 ** i) for i in range(4)])
    key = server.api_key
    basic = base64.b64encode(f"api:{key}".encode()).decode()
    server.fail("CbsRunHistory", run="r1", status=400, message=f"bad header Authorization: Basic {basic}")
    server.fail("CbsRunHistory", run="r2", status=400,
                message=f"bad request ?api_key={quote(key)}&k={base64.b64encode(key.encode()).decode()}")
    with caplog.at_level("WARNING", logger="cbs_rlvr.data"):
        snap = build_snapshot("wandb:ent/proj", progress=False)
    out = tmp_path / "out"
    write_snapshot(snap, out)
    excluded = snap["excluded"].set_index("run_id")["reason"]
    assert sorted(excluded.index) == ["r1", "r2"] and excluded.str.contains("HTTP 400").all()
    ours = [r.getMessage() for r in caplog.records if r.name == "cbs_rlvr.data"]
    assert len(ours) == 1 and "2 of 4 runs could not be fetched" in ours[0], ours
    texts = [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    texts += ours + [json.dumps(snap["manifest"])]
    for form in _forms(key):
        assert not any(form in t for t in texts), form


# --------------------------------------------------------------------------------------------
# Paths as data; the YAML error in one line
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_make_passes_paths_with_spaces_quotes_and_dollars_as_data(tmp_path):
    runs = sorted((DEMO / "wandb").iterdir())[:3]
    source = tmp_path / "exp a\"b $HOME 'c'"
    for run in runs:
        shutil.copytree(run, source / run.name)
    out = tmp_path / "out $x \"y\""
    params = tmp_path / "params 'p'"
    params.mkdir()
    p1 = yaml.safe_load((ROOT / "params" / "p1.yaml").read_text())
    p1["sections"] = ["01_load_runs"]
    (params / "p1.yaml").write_text(yaml.safe_dump(p1, sort_keys=False))
    proc = subprocess.run(["make", "--no-print-directory", "report", "N_BOOTSTRAP=20", f"SOURCE={source}",
                           f"OUT={out}", f"PARAMS={params}"], cwd=ROOT, env=venv_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"snapshot: 3 runs, 0 excluded, from {source}" and lines[1].startswith("ok: p1/01_load_runs")
    assert json.loads((out / "data" / "manifest.json").read_text())["n_runs"] == 3
    assert f"Source: {source}" in html.unescape((out / "index.html").read_text())
    missing = tmp_path / 'exp_a"b'
    proc = subprocess.run(["make", "--no-print-directory", "snapshot", f"SOURCE={missing}", f"OUT={out}"],
                          cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=300)
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("make")]
    assert proc.returncode != 0 and errors == [
        f"error: source not found: {missing} (expected an offline-runs directory, an export directory "
        "with runs.csv, or wandb:<entity>/<project>)"], proc.stderr


def test_an_unsafe_yaml_tag_is_rejected_in_one_line(tmp_path):
    path = tmp_path / "p1.yaml"
    path.write_text((ROOT / "params" / "p1.yaml").read_text()
                    + 'x: !!python/object/apply:os.system ["echo owned"]\n')
    with pytest.raises(ParamsError) as caught:
        load_phase_params(tmp_path, "p1")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid YAML (could not determine a "
                                                      "constructor for the tag")
    assert message.endswith(f"at line {len(path.read_text().splitlines())}, column 4)")
