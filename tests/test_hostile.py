"""Nothing lost, nothing leaked, nothing run (issue 25): a hostile tester's cases, each ending
with the previous good outputs kept or a clean build's, and one line naming the cause.

The main build is the full `make report` of a phase whose runs are served by the local W&B
endpoint (tests/wandb_server.py) to the REAL wandb client: every string field of every run
(name, tags, group, config keys and values, notes, a history key) holds HTML/JS, and the API key
sits in names, config, tags, group, notes and a history key, raw and encoded. It is built once
per module; the W&B faults (HTTP 400 and HTML pages where GraphQL was expected, sampled
history) are then played against it and the OUT it wrote. The other cases (lock, params typo,
a source changing while read, percent accuracy, state.json, a full disk, names) use small
sources cut from the demo sweep (real W&B offline files) or the normaliser directly.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import client_environ  # noqa: E402
from testkit import venv_env  # noqa: E402
from wandb_server import API_KEY, ServedRun, WandbServer  # noqa: E402

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

VAL = "val-core/openai/gsm8k/reward/mean@1"
XSS = {  # each, if it ran, would log its marker as a console error (offline_problems reports it)
    "img": "<img src=x onerror=\"console.error('CBS-XSS-img')\">",
    "script": "<script>console.error('CBS-XSS-script')</script>",
    "svg": "<svg onload=\"console.error('CBS-XSS-svg')\">",
    "iframe": "<iframe srcdoc=\"<script>console.error('CBS-XSS-iframe')</script>\"></iframe>",
    "link": "[details](javascript:console.error('CBS-XSS-link'))",
    "remote": "![x](http://cbs-xss.invalid/x.png)",
}
KEY = API_KEY


def key_forms(key: str = KEY) -> list[str]:
    """The key as it could leak: raw, URL-encoded, hex, base64 at each of 3 offsets (and as HTTP
    Basic `api:KEY`, either alphabet, padded or not)."""
    b64 = base64.b64encode
    forms = [key, quote(key, safe=""), quote_plus(f"api:{key}"), key.encode().hex(), key.encode().hex().upper(),
             f"api:{key}".encode().hex()]
    for prefix in ("", "x", "xy", "api:"):
        encoded = b64(f"{prefix}{key}".encode()).decode()
        forms += [encoded.rstrip("="), base64.urlsafe_b64encode(f"{prefix}{key}".encode()).decode().rstrip("=")]
    return forms


def _leaks(texts: dict[str, str]) -> list[str]:
    forms = key_forms()
    # base64 at an offset: its characters that only the key determines (the outer ones depend on
    # what surrounds the key), 8 characters in from each end of the plain encoding
    cores = {f[4:-4] for f in forms[-8:]}
    return [f"{name}: {form[:12]}..." for name, text in texts.items() for form in [*forms, *cores] if form in text]


def _curve_rows(n_prompts: int, n_rollouts: int, n_steps: int, extra_key: str | None = None) -> list[dict]:
    """verl-like history: accuracy 0.1 -> 0.9 with a time constant of 25 (1 + 256 / B) steps
    (McCandlish, B_noise = 256), validated every 5 steps; training keys every step."""
    tau = 25.0 * (1 + 256 / (n_prompts * n_rollouts))
    rows = []
    for s in range(n_steps + 1):
        row = {"_step": s, "training/global_step": s, "timing_s/step": 20.0 + 0.02 * n_prompts * n_rollouts,
               "critic/score/mean": 0.2, "actor/entropy": 1.0, "perf/throughput": 1000.0}
        if s % 5 == 0:
            row[VAL] = round(0.1 + 0.8 * (1 - math.exp(-s / tau)), 4)
            if extra_key:
                row[extra_key] = row[VAL]
        if s % 2 == 0 and s:
            row["grad_noise/B_noise_estimate"] = 250.0 + s % 7
        rows.append(row)
    return rows


def hostile_runs() -> list[ServedRun]:
    """Five p1 batch sizes (B_noise 256), the smallest stopped before 0.7 (so the plan says
    'extend run <its name>'), two p2a runs, one of an unknown phase; every string field of each
    holds a payload, and the key sits in every kind of field, raw or encoded."""
    x = list(XSS.values())
    forms = {"raw": KEY, "b64": base64.b64encode(KEY.encode()).decode(), "hex": KEY.encode().hex(),
             "url": quote(f"api:{KEY}", safe="")}
    runs = []
    for i, n_prompts in enumerate((8, 16, 32, 64, 128)):
        payload = x[i % len(x)]
        config = {"data": {"train_batch_size": n_prompts}, "actor_rollout_ref": {"rollout": {"n": 8}},
                  "trainer": {"n_gpus_per_node": 8, "nnodes": 1},
                  "note": f"{x[(i + 1) % len(x)]} {list(forms.values())[i % 4]}", f"{XSS['svg']}key": payload}
        runs.append(ServedRun(
            run_id=f"r{i}", name=f"cbs_p1_np{n_prompts}_nr8_{payload}" + (f"_{KEY}" if i == 2 else ""),
            config=config, rows=_curve_rows(n_prompts, 8, 120 if n_prompts == 8 else 240,
                                           extra_key=f"val-core/{XSS['img']}{KEY if i == 1 else ''}/acc/mean@1"),
            tags=["p1", payload, list(forms.values())[(i + 1) % 4]], group=f"{XSS['script']} {forms['hex'] if i == 3 else ''}",
            notes=f"{payload} {KEY}"))
    runs[4].name += "\n"  # a trailing newline: kept (stripped), flagged
    for i, n_prompts in enumerate((32, 64)):
        runs.append(ServedRun(
            run_id=f"q{i}", name=f"cbs_p2a_np{n_prompts}_nr16_{XSS['img']}",
            config={"data": {"train_batch_size": n_prompts}, "actor_rollout_ref": {"rollout": {"n": 16}}},
            rows=_curve_rows(n_prompts, 16, 100), tags=[XSS["svg"]], group=KEY, notes=XSS["iframe"]))
    runs.append(ServedRun(run_id="u0", name=f"cbs_{XSS['img']}_np8_nr8", config={}, rows=_curve_rows(8, 8, 40),
                          tags=[KEY], group=XSS["link"]))
    return runs


def _params(dest: Path, sections: dict[str, list[str]], **extra) -> Path:
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    for phase, wanted in sections.items():
        params = yaml.safe_load((ROOT / "params" / f"{phase}.yaml").read_text())
        params.update(sections=wanted, thresholds=[0.5, 0.7], **extra.get(phase, {}))
        params.pop("two_axis_phases", None)
        (dest / f"{phase}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def _env(server: WandbServer | None = None, dirs: dict | None = None, **extra: str) -> dict:
    env = venv_env()
    if server is not None:
        env = client_environ(env, server, dirs)
    env.update(extra)
    return env


def _report(source: str | Path, out: Path, params: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "report", "N_BOOTSTRAP=20", f"SOURCE={source}",
                           f"OUT={out}", f"PARAMS={params}", *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _use_client_env(monkeypatch, env: dict) -> None:
    """This process's wandb pointed as `env` says, as conftest.wandb_endpoint does: every other
    WANDB_* variable goes first (a WANDB_SERVICE left by an earlier test's wandb would point this
    process's client at a service that is gone)."""
    for key in [k for k in os.environ if k.startswith(("WANDB_", "CBS_WANDB_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("WANDB_", "CBS_WANDB_")):
            monkeypatch.setenv(key, value)


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("make")]


def _digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# The hostile build: every string field HTML/JS, the key everywhere
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory, wandb_dirs):
    base = tmp_path_factory.mktemp("hostile")
    server = WandbServer(hostile_runs(), lifetime=900).start()
    params = _params(base / "params", {
        "p1": ["01_load_runs", "02_steps_to_target", "06_wall_clock", "08_plan"],
        "p2a": ["01_load_runs"]}, p1={"decision_target": 0.7})
    out = base / "out"
    env = _env(server, wandb_dirs)
    t0 = time.monotonic()
    proc = _report("wandb:ent/proj", out, params, env)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield {"base": base, "server": server, "params": params, "out": out, "env": env, "proc": proc,
           "seconds": seconds}
    server.stop()


def test_no_form_of_the_key_reaches_any_output_or_line(hostile):
    """Key raw in names, config, tags, group, notes and a history key, base64/hex/URL-encoded in
    others: no form of it in any file of OUT (snapshot, tables, figure CSVs, PDFs, notebooks,
    reports) nor on the terminal."""
    out, proc = hostile["out"], hostile["proc"]
    texts = {p.relative_to(out).as_posix(): p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()}
    texts["stdout"], texts["stderr"] = proc.stdout, proc.stderr
    assert len(texts) > 40 and not _leaks(texts), _leaks(texts)
    runs = pd.read_parquet(out / "data" / "runs.parquet").set_index("run_id")
    assert runs.loc["r2", "name"] == f"cbs_p1_np32_nr8_{XSS['svg']}_***"  # redacted, the rest kept
    history = pd.read_parquet(out / "data" / "history.parquet", columns=None)
    assert f"val-core/{XSS['img']}***/acc/mean@1" in history.columns


def test_every_page_loads_in_chromium_and_no_script_runs(hostile):
    """Every report and the index in headless Chromium, offline: no request, no console
    message (a payload that ran, or markup the page's policy had to stop, would log one);
    every payload is shown as the text it is, none is markup."""
    from html.parser import HTMLParser

    from cbs_rlvr.report.browser import find_chromium, offline_problems

    out = hostile["out"]
    pages = [out / "index.html", *sorted(out.glob("*/*.html"))]
    assert len(pages) == 1 + 4 + 1 + 1  # index, p1's four sections, p2a's, the summary
    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    assert offline_problems(pages) == []

    class Markup(HTMLParser):
        found: list = []

        def handle_starttag(self, tag, attrs):
            values = {name: (value or "").strip().lower() for name, value in attrs}
            if (tag in ("script", "iframe", "svg", "object", "embed", "img") and not values.get("src", "").startswith(
                    "data:image/")) or any(name.startswith("on") for name in values) or any(
                    v.startswith("javascript:") for v in values.values()):
                self.found.append((tag, attrs))

    for page in pages:
        parser = Markup()
        parser.found = []
        text = page.read_text(encoding="utf-8")
        parser.feed(text)
        assert parser.found == [], (page.name, parser.found[:3])
    # the hostile run's name is shown, as the text it is (08 names it only where it suggests extending it)
    assert any("cbs_p1_np8_nr8_&lt;img src=x onerror=" in page.read_text(encoding="utf-8") for page in pages)


def test_a_trailing_newline_in_a_name_is_kept_stripped_and_flagged(hostile):
    runs = pd.read_parquet(hostile["out"] / "data" / "runs.parquet").set_index("run_id")
    assert runs.loc["r4", "name"] == f"cbs_p1_np128_nr8_{XSS['link']}"
    assert "name_whitespace" in runs.loc["r4", "flags"].split(";")


def test_a_typo_in_another_phases_params_keeps_that_phases_reports(hostile):
    """`n_val: 1319.0` in p2a.yaml, `make report PHASES=p1`: the typo said first in one line,
    exit 2, p2a's reports and the snapshot kept (they were removed, exit 0, no error line)."""
    out, params = hostile["out"], hostile["params"]
    before = _digests(out)
    path = params / "p2a.yaml"
    good = path.read_text()
    path.write_text(good.replace("n_val: 1319", "n_val: 1319.0"))
    try:
        proc = _report("wandb:ent/proj", out, params, hostile["env"], "PHASES=p1")
    finally:
        path.write_text(good)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert _errors(proc)[0] == f"error: {path}: n_val must be int, got 1319.0"
    assert "removed" not in proc.stdout and "0 notebook(s) run" in proc.stdout
    kept = (".build", "index.html")  # the build's state, and the index, which now says why
    assert {k: v for k, v in _digests(out).items() if not k.startswith(kept)} == \
        {k: v for k, v in before.items() if not k.startswith(kept)}
    assert "params file invalid: " in (out / "index.html").read_text()


@contextlib.contextmanager
def _changed_runs(server: WandbServer, **failure):
    """Every run wrote something since the last snapshot (a fetch asks for them all again) and
    the server fails as told; afterwards the runs and the server are as the build saw them."""
    heartbeats = {run.run_id: run.heartbeat_at for run in server.runs.values()}
    for run in server.runs.values():
        run.heartbeat_at = "2026-01-03T00:00:00Z"
    server.fail("CbsRunHistory", **failure)
    try:
        yield
    finally:
        server.clear_failures()
        for run in server.runs.values():
            run.heartbeat_at = heartbeats[run.run_id]


@pytest.mark.parametrize("fault", ["http_400", "html_page"])
def test_a_server_failing_every_history_request_changes_nothing(hostile, fault):
    """Every run changed since the last snapshot, and the server answers every history request
    with HTTP 400 (or with an HTML page and status 200): one error line, exit status 2, every
    file of OUT as it was (the issue: '0 runs ... removed outputs: p1, summary', exit 0)."""
    server, out = hostile["server"], hostile["out"]
    failure = (dict(status=400, message="bad request") if fault == "http_400" else
               dict(status=200, body=b"<html><body><h1>Sign in</h1></body></html>", content_type="text/html"))
    before = _digests(out)
    with _changed_runs(server, **failure):
        proc = _report("wandb:ent/proj", out, hostile["params"], hostile["env"], "PHASES=p1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = _errors(proc)
    assert len(errors) == 1 and errors[0].startswith("error: W&B at http://127.0.0.1:"), proc.stderr
    assert "answered with errors: all 8 runs of wandb:ent/proj failed" in errors[0]
    assert ("HTTP 400: bad request" if fault == "http_400" else "an HTML page where GraphQL was expected") in errors[0]
    assert "no snapshot written, the previous one is kept" in errors[0]
    assert "removed" not in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert _digests(out) == before


def test_one_run_answering_400_keeps_its_data_flagged_stale(hostile, monkeypatch):
    from cbs_rlvr.sources.snapshot import build_snapshot, read_snapshot

    server = hostile["server"]
    _use_client_env(monkeypatch, hostile["env"])
    with _changed_runs(server, run="r3", status=400, message="bad request"):
        snap = build_snapshot("wandb:ent/proj", previous_dir=hostile["out"], params_dir=hostile["params"],
                              progress=False)
    before, history, _ = read_snapshot(hostile["out"])
    runs = snap["runs"].set_index("run_id")
    assert sorted(runs.index) == sorted(before["run_id"])  # nothing lost
    assert "stale" in runs.loc["r3", "flags"].split(";")
    assert not any("stale" in str(f).split(";") for f in runs.drop(index="r3")["flags"])
    kept = snap["history"][snap["history"]["run_id"] == "r3"].dropna(axis=1, how="all").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, history[history["run_id"] == "r3"].dropna(axis=1, how="all")
                                  .reset_index(drop=True), check_like=True)
    assert any("r3: W&B API: HTTP 400: bad request; kept the previous snapshot's data" in w
               for w in snap["manifest"]["warnings"])


def test_history_the_server_samples_is_fetched_whole_or_flagged(wandb_endpoint):
    """A server that caps the samples a spec may ask (255 for windows of 1,000 steps) gives the
    whole history in smaller windows; one that samples every window (85% of its rows) leaves
    the run flagged history_incomplete with a warning naming the counts (the issue: 510 of 600
    rows accepted silently)."""
    from cbs_rlvr.sources.snapshot import build_snapshot

    rows = _curve_rows(64, 8, 600)
    runs = [ServedRun(run_id=f"s{i}", name=f"cbs_p1_np{64 * 2 ** i}_nr8", rows=rows,
                      config={"data": {"train_batch_size": 64 * 2 ** i}, "actor_rollout_ref": {"rollout": {"n": 8}}})
            for i in range(2)]
    server = wandb_endpoint(runs, max_samples=255)
    whole = build_snapshot("wandb:ent/proj", progress=False)
    assert (whole["runs"]["n_history_rows"] == 601).all() and (whole["runs"]["flags"] == "").all()
    assert whole["history"].groupby("run_id")[VAL].count().tolist() == [121, 121]
    server.sampled_share = 0.85
    sampled = build_snapshot("wandb:ent/proj", progress=False)
    flags = sampled["runs"].set_index("run_id")["flags"]
    assert all(f.startswith("history_incomplete:") and int(f.split(":")[1]) > 0 for f in flags), flags
    warnings = sampled["manifest"]["warnings"]
    assert len(warnings) == 2 and all(re.search(r"W&B served \d+ of the 601 logged values of ", w) for w in warnings)


def test_api_errors_name_no_password_of_the_base_url(wandb_dirs, tmp_path, capsys, monkeypatch):
    from cbs_rlvr.__main__ import main

    server = WandbServer([], lifetime=60).start()
    port = server.port
    server.stop()  # refused connections: the error line names the server
    _use_client_env(monkeypatch, client_environ({}, server, wandb_dirs))
    for password in ("pw", "s3cr3t-Passw0rd"):
        monkeypatch.setenv("WANDB_BASE_URL", f"http://user:{password}@127.0.0.1:{port}")
        assert main(["snapshot", "--source", "wandb:ent/proj", "--out", str(tmp_path / "out"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: W&B at http://user:***@127.0.0.1:") and \
            "unreachable" in err, err
        assert f"user:{password}@" not in err and (len(password) < 6 or password not in err), err


def test_a_wandb_service_of_a_process_that_is_gone_is_not_in_the_way(wandb_endpoint, wandb_dirs, tmp_path):
    """WANDB_SERVICE inherited from a process whose wandb-core is gone (a training script that
    called `make report`): the snapshot starts its own service (it failed with 'unexpected
    WandbServiceConnectionError')."""
    server = wandb_endpoint([ServedRun(run_id="r0", name="cbs_p1_np8_nr8", rows=_curve_rows(8, 8, 20), config={})])
    env = client_environ(_env(), server, wandb_dirs, WANDB_SERVICE="3-4242-unix-/tmp/cbs-gone/socket")
    proc = subprocess.run([sys.executable, "-m", "cbs_rlvr", "snapshot", "--source", "wandb:ent/proj", "--out",
                           str(tmp_path / "out"), "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("snapshot: 1 runs in, 0 excluded")


# --------------------------------------------------------------------------------------------
# Small builds from the demo's offline files: params, lock, state, disk, source changes
# --------------------------------------------------------------------------------------------
def _demo_dirs(phase: str, n: int) -> list[Path]:
    runs = json.loads((DEMO / "ground_truth.json").read_text())["runs"]
    return sorted((DEMO / r["path"]).parent for r in runs.values() if r["phase"] == phase)[:n]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """3 runs of p1 (real offline files), params with p1's 01_load_runs only."""
    base = tmp_path_factory.mktemp("small")
    source = base / "source"
    for d in _demo_dirs("p1", 3):
        shutil.copytree(d, source / d.name)
    return {"base": base, "source": source, "params": _params(base / "params", {"p1": ["01_load_runs"]})}


def test_a_second_writer_stays_out_whatever_is_removed_from_out(small, tmp_path):
    """A build holds OUT; someone deletes OUT/.lock (and every dot-file) meanwhile: a second
    build still finds OUT busy (the lock is OUT's own descriptor, not a file in it)."""
    from cbs_rlvr.build.outlock import OutputBusyError, OutputLock

    out = tmp_path / "out"
    code = ("import time\nfrom cbs_rlvr.build.outlock import OutputLock\n"
            f"with OutputLock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for path in out.glob(".*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            with OutputLock(out, wait=False):
                pass
        proc = _report(small["source"], out, small["params"], _env(), "WAIT=0")
        assert proc.returncode != 0 and _errors(proc) == [
            f"error: {out} is being written by the build of pid {holder.pid}; not waiting (--no-wait)"]
    finally:
        holder.kill()
        holder.wait()


def test_a_snapshot_replaced_under_a_build_is_not_recorded_as_current(small, tmp_path, monkeypatch, capsys):
    """Should a second writer get in anyway, the first build checks after each notebook that
    the snapshot is still the one it read: it records nothing as current and says so (the
    issue: '6 up to date' over tables of another snapshot)."""
    from cbs_rlvr.build import builder as build
    from cbs_rlvr.sources.snapshot import build_snapshot, write_snapshot

    out = tmp_path / "out"
    other = build_snapshot(str(_demo_dirs("p1", 1)[0]))

    def intruder(job, *args, **kwargs):
        write_snapshot(other, out)  # the other writer, mid-build
        return True, 0.1, []

    monkeypatch.setattr(build, "run_notebook", intruder)
    for name in ("PYTHONPATH", "MPLBACKEND", "PYDEVD_DISABLE_FILE_VALIDATION", "JUPYTER_PLATFORM_DIRS"):
        # what the build sets for its kernels: as it was after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)
    code = build.report(str(small["source"]), out, small["params"], phases=["p1"], n_bootstrap=20)
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines()[-1].startswith(f"error: the snapshot in {out / 'data'} was replaced "
                                                          "while this build ran"), err
    state = json.loads((out / ".build" / "state.json").read_text())
    assert state.get("keys", {}) == {} and "content_hash" not in state


def test_a_source_changed_during_the_read_is_read_again(small, tmp_path, monkeypatch):
    """A run copied into the source while the snapshot reads it: the fingerprint taken after
    the read differs, so the source is read again; the snapshot holds the new run and the next
    build, with nothing changed, is up to date (the issue: 'up to date' on data that no
    longer exist)."""
    from cbs_rlvr.build.builder import update_snapshot
    from cbs_rlvr.build.state import source_fingerprint
    from cbs_rlvr.sources import snapshot

    source = tmp_path / "source"
    shutil.copytree(small["source"], source)
    extra = _demo_dirs("p1", 4)[3]
    real = snapshot.build_snapshot
    reads = []

    def racing(*args, **kwargs):
        result = real(*args, **kwargs)
        reads.append(result["manifest"]["n_runs"])
        if len(reads) == 1:
            shutil.copytree(extra, source / extra.name)  # written while the first read ran
        return result

    monkeypatch.setattr(snapshot, "build_snapshot", racing)
    state: dict = {}
    manifest, phases, changed = update_snapshot(str(source), tmp_path / "out", state, small["params"])
    assert reads == [3, 4] and manifest["n_runs"] == 4 and changed
    assert state["source_fingerprint"] == source_fingerprint(str(source))
    _, _, changed = update_snapshot(str(source), tmp_path / "out", state, small["params"])
    assert not changed and reads == [3, 4]  # nothing changed since: not read again


def test_state_json_of_the_wrong_types_is_one_warning_and_a_rebuild(small, tmp_path):
    """Valid JSON of the wrong shape in OUT/.build/state.json (every build failed with a
    traceback until it was deleted): one warning line, what it recorded rebuilt, exit 0; the
    next build has nothing to do."""
    out = tmp_path / "out"
    state_path = out / ".build" / "state.json"
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps({"keys": [], "outputs": {"p1/01_load_runs": "x"}, "phases": {"p1": "3"},
                                      "seconds": None, "source": 3}))
    proc = _report(small["source"], out, small["params"], _env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _errors(proc) == [f"warning: {state_path} has entries of the wrong type (keys, outputs, phases, "
                             "seconds, source); rebuilding what they recorded"]
    assert "ok: p1/01_load_runs" in proc.stdout and "Traceback" not in proc.stderr
    again = _report(small["source"], out, small["params"], _env())
    assert "0 notebook(s) run" in again.stdout and _errors(again) == []
    assert set(json.loads(state_path.read_text())["keys"]) == {"p1/01_load_runs"}


def test_a_full_disk_is_one_line_and_keeps_the_previous_snapshot(small, tmp_path):
    """The snapshot's writes fail (a file size limit: the kernel refuses the write as a full
    disk would): one line naming the file, exit 2, the previous snapshot untouched."""
    from cbs_rlvr.sources.snapshot import build_snapshot, write_snapshot

    out = tmp_path / "out"
    write_snapshot(build_snapshot(str(small["source"]), params_dir=small["params"]), out)
    before = _digests(out)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    source = tmp_path / "source"
    shutil.copytree(small["source"], source)
    shutil.copytree(_demo_dirs("p1", 4)[3], source / "more")
    proc = subprocess.run([sys.executable, "-m", "cbs_rlvr", "snapshot", "--source", str(source), "--out", str(out),
                           "--params-dir", str(small["params"])], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=limit)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {out / 'data'}/") and "File too large" in proc.stderr
    assert proc.stderr.rstrip().endswith("the previous snapshot is unchanged")
    assert _digests(out) == before


def test_an_unusable_out_is_one_line(small, tmp_path):
    """OUT a file, OUT immutable (chattr +i, where the test may), OUT/.lock a directory."""
    target = tmp_path / "out"
    target.write_text("not a directory")
    proc = _report(small["source"], target, small["params"], _env())
    assert proc.returncode != 0 and _errors(proc) == [
        f"error: cannot use {target} as the output directory: a file is in the way (not a directory)"]
    out = tmp_path / "out2"
    (out / ".lock").mkdir(parents=True)  # where the lock file used to be: in nobody's way
    sealed = subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode == 0
    try:
        proc = _report(small["source"], out, small["params"], _env())
    finally:
        if sealed:
            subprocess.run(["chattr", "-i", str(out)], check=True)
    assert "Traceback" not in proc.stdout + proc.stderr
    if sealed:
        assert proc.returncode == 2 and len(_errors(proc)) == 1, proc.stderr
        assert _errors(proc)[0].startswith(f"error: {out}/") and "Operation not permitted" in _errors(proc)[0]
        assert _errors(proc)[0].endswith("finished reports are kept, the rest rebuild next time")
    else:
        assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------
# Percent accuracy below 1%
# --------------------------------------------------------------------------------------------
def test_a_percent_run_starting_below_one_percent_is_read_in_percent():
    """Logged in percent: 0.2 .. 0.95 for the first 60 steps, then 1.2 .. 3.0. Read as fractions,
    it crossed 0.7 at step 56.7 (it never reached 0.7%); decided from all its values, the whole
    run is in percent, flagged, censored at 0.7."""
    from cbs_rlvr.data.runs import normalise_raw_run
    from cbs_rlvr.measure.crossings import steps_to_target

    values = [*np.linspace(0.2, 0.95, 13), 1.2, 1.5, 1.9, 2.4, 3.0]
    rows = [{"_step": 5 * i, VAL: float(v)} for i, v in enumerate(values)]
    entry = normalise_raw_run({"source": "t", "run_id": "r", "name": "cbs_p1_np32_nr8", "config": {},
                               "state": "finished", "rows": rows})
    assert entry["row"]["flags"] == "percent_accuracy"
    series = entry["history"].set_index("step")[VAL]
    np.testing.assert_allclose(series.to_numpy(), np.array(values) / 100)
    s, censored = steps_to_target(series.index.to_numpy(), series.to_numpy(), 0.7)
    assert censored and s == 85
