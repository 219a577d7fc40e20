"""The W&B source through the REAL wandb client (wandb 0.31 and its wandb-core sidecar) against a
local W&B-compatible endpoint (tests/wandb_server.py): live and exported history, errors,
outages and time bounds, the command line, and the demo sweep served over the API.

Bounds are set short (conftest.FAST_LIMITS) through the variables a user would set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import client_environ  # noqa: E402
from wandb_server import VAL, ServedRun, WandbServer, demo_runs, verl_run  # noqa: E402

from cbs_rlvr.errors import (
    DataSourceError,
    SourceUnreachableError,
    WandbCredentialsError,
    WandbNotFoundError,
)
from cbs_rlvr.sources import wandb_api  # noqa: E402
from cbs_rlvr.sources.snapshot import build_snapshot, read_snapshot, write_snapshot
from cbs_rlvr.sources.wandb_limits import (
    WandbLimits,
    classify_error,
    http_status,
    run_bounded,
    wandb_limits,
)

NEEDED = {VAL, "training/global_step", "critic/score/mean", "actor/entropy", "perf/throughput", "timing_s/step",
          "grad_noise/B_noise_estimate"}


def _snap(**kw) -> dict:
    return build_snapshot("wandb:ent/proj", progress=False, **kw)


def _run(snap: dict, run_id: str) -> dict:
    rows = snap["runs"][snap["runs"]["run_id"] == run_id]
    assert len(rows) == 1, run_id
    return rows.iloc[0].to_dict()


def _hist(snap: dict, run_id: str) -> pd.DataFrame:
    return snap["history"][snap["history"]["run_id"] == run_id].drop(columns="run_id").set_index("step")


def _reason(snap: dict, run_id: str) -> str:
    rows = snap["excluded"][snap["excluded"]["run_id"] == run_id]
    assert len(rows) == 1, run_id
    return rows.iloc[0]["reason"]


def _touch(server: WandbServer, stamp: str = "2026-01-02T00:00:00Z") -> None:
    """Every run wrote something since: a re-snapshot fetches them all again."""
    for run in server.runs.values():
        run.heartbeat_at = stamp


# --------------------------------------------------------------------------------------------
# Pure logic: the errors the real client raises, the limits, the bounded pool
# --------------------------------------------------------------------------------------------
def _wandb_error(message: str, status: int = 0):
    """The exception wandb 0.31 raises: CommError wrapping wandb-core's WandbApiFailedError."""
    from wandb.errors import CommError
    from wandb.proto.wandb_api_pb2 import ApiErrorResponse
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError

    inner = WandbApiFailedError(message, ApiErrorResponse(message=message, http_status=status))
    return CommError(message, inner)


@pytest.mark.parametrize("message, status, kind, found", [
    ("POST http://h/graphql giving up after 4 attempt(s)\nwhile retrying: HTTP 503: service unavailable", 0,
     "transient", 503),
    ("POST http://h/graphql giving up after 4 attempt(s)\nwhile retrying: HTTP 429: rate limit exceeded", 0,
     "transient", 429),
    ("POST http://h/graphql giving up after 4 attempt(s)\nwhile retrying: HTTP 500: boom", 0, "transient", 500),
    ('POST http://h/graphql giving up after 2 attempt(s): Post "http://h/graphql": dial tcp 127.0.0.1:9: '
     'connect: connection refused', 0, "transient", None),
    ("Failed to execute API request: the service process is busy and did not respond in time.", 0,
     "transient", None),
    ("failed to create reader for file: http://h/x.parquet: Failed to get file size: status 503 Service "
     "Unavailable", 0, "transient", 503),
    ("user is not logged in", 401, "auth", 401),
    ("permission denied", 403, "auth", 403),
    ("project not found", 404, "not_found", 404),
    ('returned error 404: {"data":null,"errors":[{"message":"run not found"}]}', 0, "not_found", 404),
    ("Cannot query field \"x\" on type \"Run\"", 400, "permanent", 400),
])
def test_errors_of_the_real_client_are_classified(message, status, kind, found):
    error = _wandb_error(message, status)
    assert (classify_error(error), http_status(error)) == (kind, found)
    assert (classify_error(error.exc), http_status(error.exc)) == (kind, found)  # raised unwrapped too


def test_authentication_error_keeps_the_status_of_its_cause():
    from wandb.errors import AuthenticationError

    for status, kind in ((401, "auth"), (0, "transient")):
        cause = _wandb_error("user is not logged in" if status else
                             "POST http://h/graphql giving up after 4 attempt(s)\nwhile retrying: HTTP 502: bad", status)
        try:
            try:
                raise cause.exc
            except Exception as exc:
                raise AuthenticationError(f"Failed to verify credentials with http://h: {exc}") from exc
        except AuthenticationError as error:
            assert classify_error(error) == kind


def test_limits_come_from_the_environment():
    assert wandb_limits({}) == WandbLimits()
    limits = wandb_limits({"WANDB__GRAPHQL_RETRY_MAX": "2", "WANDB_HTTP_TIMEOUT": "7", "CBS_WANDB_RUN_TIMEOUT": "30.5"})
    assert (limits.graphql_retry_max, limits.graphql_timeout, limits.run_timeout) == (2, 7, 30.5)
    assert wandb_limits({"WANDB__GRAPHQL_TIMEOUT_SECONDS": "5", "WANDB_HTTP_TIMEOUT": "7"}).graphql_timeout == 5
    with pytest.raises(DataSourceError, match="CBS_WANDB_RUN_TIMEOUT=.soon.: expected a number of seconds"):
        wandb_limits({"CBS_WANDB_RUN_TIMEOUT": "soon"})
    with pytest.raises(DataSourceError, match="wandb-core ignores 0"):
        wandb_limits({"WANDB__GRAPHQL_RETRY_MAX": "0"})
    assert WandbLimits().run_timeout == 120  # a server that hangs costs a run 2 minutes at most


def test_run_bounded_gives_up_on_slow_jobs_and_keeps_the_pool_full():
    started = []

    def job(seconds):
        def run():
            started.append(time.monotonic())
            time.sleep(seconds)
            return seconds
        return run

    t0 = time.monotonic()
    results = run_bounded([job(60), job(0.1), job(0.1), job(0.1)], max_workers=2, run_timeout=1.0,
                          total_timeout=30, timed_out=lambda i, why: ("gave up", i, why))
    elapsed = time.monotonic() - t0
    assert results[1:] == [0.1, 0.1, 0.1] and results[0][:2] == ("gave up", 0)
    assert "within 1 s (CBS_WANDB_RUN_TIMEOUT)" in results[0][2]
    assert elapsed < 3  # not 60: the stuck job is left behind (a daemon thread)
    t0 = time.monotonic()
    results = run_bounded([job(60)] * 3 + [job(0.1)], max_workers=2, run_timeout=30, total_timeout=1.0,
                          timed_out=lambda i, why: why)
    assert time.monotonic() - t0 < 3
    assert all("CBS_WANDB_TIMEOUT" in r for r in results)


# --------------------------------------------------------------------------------------------
# Fetching through the real client
# --------------------------------------------------------------------------------------------
def test_fetch_requests_only_needed_keys_unsampled_with_tags_and_group(wandb_endpoint, monkeypatch):
    server = wandb_endpoint([verl_run("r1", n_steps=10, tags=["lr-sweep", "p1"], group="p1-grpo")])
    raws = []
    real = wandb_api.normalise_raw_run
    monkeypatch.setattr(wandb_api, "normalise_raw_run", lambda raw, **kw: raws.append(raw) or real(raw, **kw))
    snap = _snap()
    specs = server.specs()
    assert {k for spec in specs for k in spec["keys"]} - {"_step"} == NEEDED
    # one spec per group of keys logged equally often: per step, every 5 steps, every 2 steps,
    # all in one request, after the listing (which carried config and historyKeys)
    assert sorted(len(set(spec["keys"]) - {"_step"}) for spec in specs) == [1, 1, 5]
    assert dict(server.per_run_requests()) == {"r1": 1} and server.count("CbsRuns") == 1
    run = _run(snap, "r1")
    assert (run["source"], run["state"], run["n_gpus"], run["wandb_last_step"]) == ("wandb:ent/proj/r1", "finished", 8, 10)
    assert "_wandb" not in json.loads(run["config"])
    hist = _hist(snap, "r1")
    assert hist[VAL].dropna().to_dict() == {0: 0.1, 5: 0.1 + 0.04 * 5, 10: 0.1 + 0.04 * 10}
    assert hist["grad_noise/B_noise_estimate"].dropna().index.tolist() == [2, 4, 6, 8, 10]
    assert hist.index.tolist() == list(range(11)) and "actor/pg_loss" not in hist.columns
    assert (raws[0]["tags"], raws[0]["group"]) == (["lr-sweep", "p1"], "p1-grpo")
    per_key = _snap(scan_each_key=True)
    pd.testing.assert_frame_equal(per_key["history"], snap["history"])


def test_history_comes_back_unsampled_every_step(wandb_endpoint, monkeypatch):
    """The endpoint samples sampledHistory as W&B does (at most `samples` rows per spec); a run
    of 2,500 steps, more than any spec's samples, still comes back whole, also when its specs
    fill several requests."""
    server = wandb_endpoint([verl_run("long", n_steps=2500, exported_until=1200)], sampled_serves_export=True)
    sampled = server._sampled(server.runs["long"], {"keys": ["_step", VAL], "samples": 500})
    assert len(sampled) == 500 < 501  # the endpoint does sample: one spec over all steps would lose rows
    snap = _snap()
    hist = _hist(snap, "long")
    assert hist.index.tolist() == list(range(2501))
    assert hist[VAL].dropna().index.tolist() == [0, *range(5, 2501, 5)]
    assert hist["grad_noise/B_noise_estimate"].dropna().index.tolist() == list(range(2, 2501, 2))
    assert hist["critic/score/mean"].to_numpy()[1:].tolist() == [0.2 + 0.01 * s for s in range(1, 2501)]
    specs = server.specs("long")
    assert all(spec["maxStep"] - spec["minStep"] + 1 == spec["samples"] == 1000 for spec in specs)
    assert (server.per_run_requests()["long"], server.count("parquet")) == (1, 0)
    # more specs than one request holds: several requests, the same rows
    monkeypatch.setattr(wandb_api.gq, "ROWS_PER_REQUEST", 2000)
    again = _snap(page_size=400)
    pd.testing.assert_frame_equal(again["history"], snap["history"])
    # 3 groups x 7 windows of 400 steps = 21 specs, 5 a request: CbsRunHistory and 4 more
    assert (server.count("CbsRunHistory", "long"), server.count("CbsRunHistorySpecs", "long")) == (2, 4)


def test_requests_per_run_at_the_floor_cold_and_warm(wandb_endpoint, tmp_path):
    """Cold: one request per live run, two per exported run (its file), plus the listing (50 runs
    a page); warm with nothing changed: the listing only, no request for any run."""
    runs = [verl_run(f"r{i:02d}", n_prompts=2 ** (3 + i % 7), n_rollouts=2 ** (i // 7 % 4), n_steps=30,
                     exported_until=(None, math.inf, 15)[i % 3]) for i in range(60)]
    server = wandb_endpoint(runs)
    out = tmp_path / "out"
    cold = _snap()
    write_snapshot(cold, out)
    assert cold["manifest"]["n_runs"] == 60
    per_run = server.per_run_requests()
    assert {r: n for r, n in per_run.items() if n != (1 if r in {f"r{i:02d}" for i in range(0, 60, 3)} else 2)} == {}
    assert server.count("CbsRuns") == 2 and server.count() == 1 + 2 + sum(per_run.values())  # + Viewer
    before = server.count()
    warm = _snap(previous_dir=out)
    assert server.count() - before == 1 + 2 and server.per_run_requests() == per_run  # Viewer, 2 listing pages
    assert (warm["manifest"]["n_reused"], warm["manifest"]["content_hash"]) == (60, cold["manifest"]["content_hash"])


def _alternating_rows() -> list[dict]:
    """actor/entropy at odd steps, perf/time_per_step at even steps: equal counts, never together."""
    rows = [{"_step": 0, VAL: 0.1}]
    for s in range(1, 21):
        row = {"_step": s, "training/global_step": s, ("actor/entropy" if s % 2 else "perf/time_per_step"): float(s)}
        if s % 5 == 0:
            row[VAL] = 0.1 + 0.02 * s
        rows.append(row)
    return rows


@pytest.mark.parametrize("serves_export", [False, True], ids=["sampled serves live steps", "sampled serves all"])
def test_live_exported_and_partly_exported_history_give_the_same_snapshot(wandb_endpoint, serves_export):
    """Exported (parquet) history returns every step with None for missing keys; live history
    drops rows lacking a key: the fetch gives the same table either way, losing no row, whether
    the server's sampledHistory serves the exported steps too or only the live ones."""
    runs = []
    for mode, exported in (("live", None), ("parquet", math.inf), ("split", 12)):
        runs.append(verl_run(f"v{mode}", n_steps=25, exported_until=exported))
        runs.append(verl_run(f"a{mode}", rows=_alternating_rows(), exported_until=exported))
    server = wandb_endpoint(runs, sampled_serves_export=serves_export)
    snap = _snap()
    # the files are read only when sampledHistory left their steps out
    assert server.count("parquet") == (0 if serves_export else 4) and server.count("CbsRunHistory") == 6
    # requests per run: <= 2 for live history, <= 3 for exported (its file, then keys one by one)
    per_run = server.per_run_requests()
    assert all(n <= (2 if run.endswith("live") else 3) for run, n in per_run.items()), per_run
    assert per_run["vlive"] == 1 and per_run["vparquet"] == (1 if serves_export else 2)
    for prefix in ("v", "a"):
        live = _hist(snap, f"{prefix}live")
        for mode in ("parquet", "split"):
            pd.testing.assert_frame_equal(_hist(snap, f"{prefix}{mode}"), live)
    alternating = _hist(snap, "alive")
    assert alternating["actor/entropy"].dropna().index.tolist() == list(range(1, 21, 2))
    assert alternating["perf/time_per_step"].dropna().index.tolist() == list(range(2, 21, 2))
    assert len(alternating) == 21 and len(_hist(snap, "vlive")) == 26
    # the joint scan of the live run lost rows and was redone key by key; the exported one was not
    scanned = [set(spec["keys"]) - {"_step"} for spec in server.specs("alive")]
    assert {"actor/entropy", "perf/time_per_step"} in scanned and {"actor/entropy"} in scanned
    # the live run: one request, then one key by key; the exported one: one request (+ its file)
    assert (server.count("CbsRunHistory", "alive"), server.count("CbsRunHistorySpecs", "alive")) == (1, 1)
    assert per_run["aparquet"] == 2  # its file, or (sampledHistory serving it) its keys one by one


def test_fetch_is_incremental_and_lists_afresh_with_a_reused_api(wandb_endpoint, tmp_path):
    import wandb

    server = wandb_endpoint([verl_run(f"r{i}", n_prompts=2 ** (i + 3), state="running") for i in range(3)])
    api = wandb.Api()
    out = tmp_path / "out"
    first = _snap(api=api)
    write_snapshot(first, out)
    assert server.count("CbsRunHistory") == 3
    before = server.count()
    second = _snap(api=api, previous_dir=out)
    assert server.count() - before == server.count("CbsRuns") - 1 == 1  # the listing only: 0 per run
    assert (second["manifest"]["n_reused"], second["manifest"]["content_hash"]) == (3, first["manifest"]["content_hash"])
    # a new run and a changed state: the same Api object must see both (wandb caches runs())
    server.add_run(verl_run("r9", n_prompts=512, n_steps=15, created_at="2026-01-03T00:00:00Z"))
    server.runs["r1"].state = "finished"
    before = {r: server.count("CbsRunHistory", r) for r in ("r0", "r1", "r2", "r9")}
    third = _snap(api=api, previous_dir=out)
    fetched = {r for r in before if server.count("CbsRunHistory", r) > before[r]}
    assert fetched == {"r1", "r9"}
    assert (third["manifest"]["n_fetched"], third["manifest"]["n_reused"]) == (2, 2)
    assert _run(third, "r1")["state"] == "finished" and _run(third, "r9")["last_step"] == 15


def test_parallelism_is_bounded(wandb_endpoint):
    server = wandb_endpoint([verl_run(f"r{i}") for i in range(9)], latency=0.05)
    snap = _snap(max_workers=3)
    assert 2 <= server.max_in_flight <= 3
    assert sorted(snap["runs"]["replicate"]) == list(range(9))


def test_transient_errors_keep_previous_data_stale_and_others_exclude(wandb_endpoint, tmp_path, caplog):
    # 8 runs and 2 new ones, 5 of the 10 failing: not most of them (then the source has failed)
    runs = [verl_run(f"r{i}", n_prompts=8 * 2 ** i) for i in range(8)]
    runs[4].exported_until = math.inf
    server = wandb_endpoint(runs)
    out = tmp_path / "out"
    first = _snap()
    write_snapshot(first, out)
    _touch(server)
    server.add_run(verl_run("new503", n_prompts=3072))
    server.add_run(verl_run("gone", n_prompts=4096))
    server.fail("CbsRunHistory", run="r0", status=503)                     # 5xx, every attempt
    server.fail("CbsRunHistory", run="r1", status=429, retry_after=1, times=1)  # recovers
    server.fail("CbsRunHistory", run="r2", status=None, drop=True)         # connection dropped
    server.fail("parquet", run="r4", status=503)                           # exported history
    server.fail("CbsRunHistory", run="new503", status=500)                 # no previous data
    server.fail("CbsRunHistory", run="gone", status=404, message="run not found")  # not transient
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="cbs_rlvr.data"):
        snap = _snap(previous_dir=out)
    assert time.monotonic() - t0 < 15
    assert server.count("CbsRunHistory", "r0") == 1 + 2  # WANDB__GRAPHQL_RETRY_MAX=1: two attempts, no retry on top
    assert server.count("parquet", "r4") == 1 + 2  # the file: the same retries (1), then given up
    for run_id in ("r0", "r2", "r4"):
        assert _run(snap, run_id)["flags"] == "stale", run_id
        pd.testing.assert_frame_equal(_hist(snap, run_id), _hist(first, run_id).dropna(axis=1, how="all"),
                                      check_like=True)
    assert all(_run(snap, r)["flags"] == "" for r in ("r1", "r3", "r5", "r6", "r7"))
    assert "HTTP 500" in _reason(snap, "new503") and "HTTP 404: run not found" in _reason(snap, "gone")
    warnings = snap["manifest"]["warnings"]
    assert len(warnings) == 3 and all("flagged stale" in w for w in warnings)
    assert any("HTTP 503: service unavailable (wandb gave up after 2 attempts)" in w for w in warnings)
    ours = [r.getMessage() for r in caplog.records if r.name == "cbs_rlvr.data"]
    assert len(ours) == 1 and "5 of 10 runs could not be fetched" in ours[0]  # gone (404) too
    # the next snapshot, with W&B healthy again, replaces the stale data
    server.clear_failures()
    again = _snap(previous_dir=out)
    assert not again["runs"]["flags"].str.contains("stale").any() and len(again["runs"]) == 10


def test_default_retries_reach_wandb_core(wandb_endpoint, monkeypatch, tmp_path):
    """With the project's defaults (the user set nothing) wandb-core makes 4 attempts with waits
    of about 1, 2 and 4 s, not its own 21 attempts with waits of 2 to 60 s."""
    server = wandb_endpoint([verl_run("r0"), verl_run("r1", n_prompts=64)])
    out = tmp_path / "out"
    write_snapshot(_snap(), out)
    for name in ("WANDB__GRAPHQL_RETRY_MAX", "WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS",
                 "WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS", "WANDB__GRAPHQL_TIMEOUT_SECONDS", "CBS_WANDB_RUN_TIMEOUT"):
        monkeypatch.delenv(name)
    _touch(server)
    server.fail("CbsRunHistory", run="r0", status=503)
    t0 = time.monotonic()
    snap = _snap(previous_dir=out)
    elapsed = time.monotonic() - t0
    assert server.count("CbsRunHistory", "r0") == 1 + 4 and 7 <= elapsed < 20, elapsed  # (1: the first snapshot)
    assert _run(snap, "r0")["flags"] == "stale" and _run(snap, "r1")["flags"] == ""


def test_each_run_is_bounded_in_time(wandb_endpoint, monkeypatch, tmp_path):
    server = wandb_endpoint([verl_run(f"r{i}", n_prompts=8 * 2 ** i) for i in range(4)])
    out = tmp_path / "out"
    write_snapshot(_snap(), out)
    _touch(server)
    monkeypatch.setenv("CBS_WANDB_RUN_TIMEOUT", "4")
    server.fail("CbsRunHistory", run="r0", status=429, retry_after=3600)  # wandb-core would wait 1 h
    server.fail("CbsRunHistory", run="r1", status=None, delay=60)        # a server that hangs
    t0 = time.monotonic()
    snap = _snap(previous_dir=out)
    elapsed = time.monotonic() - t0
    assert elapsed < 4 + 6, elapsed
    assert [_run(snap, r)["flags"] for r in ("r0", "r1", "r2", "r3")] == ["stale", "stale", "", ""]
    assert any("r0: W&B API: no answer within 4 s (CBS_WANDB_RUN_TIMEOUT)" in w for w in snap["manifest"]["warnings"])


# --------------------------------------------------------------------------------------------
# Connecting and listing: one clear error each
# --------------------------------------------------------------------------------------------
def test_listing_errors_say_what_is_wrong(wandb_endpoint, monkeypatch):
    server = wandb_endpoint([verl_run("r1")])
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with pytest.raises(WandbCredentialsError, match=r"rejected the API key \(HTTP 401\).*wandb login --relogin"):
        _snap()
    monkeypatch.setenv("WANDB_API_KEY", server.api_key)
    server.fail("CbsRuns", status=403, times=1)
    with pytest.raises(WandbCredentialsError, match="no access to entity 'ent'"):
        _snap()
    with pytest.raises(WandbNotFoundError, match="no W&B project ent/nope"):
        build_snapshot("wandb:ent/nope", progress=False)
    server.fail("CbsRuns", status=404, times=1)
    with pytest.raises(WandbNotFoundError, match=r"no W&B project ent/proj at http://127\.0\.0\.1:\d+ \(HTTP 404\)"):
        _snap()
    server.fail("Viewer", status=503, times=2)
    t0 = time.monotonic()
    with pytest.raises(SourceUnreachableError, match=r"unreachable while checking the API key \(HTTP 503: .*the "
                                                     "previous one is kept"):
        _snap()
    assert time.monotonic() - t0 < 10
    server.fail("CbsRuns", status=502)
    with pytest.raises(SourceUnreachableError, match="unreachable while listing the runs of wandb:ent/proj"):
        _snap()
    server.clear_failures()
    server.fail("CbsRunHistory", status=503)  # listing fine, every run failing: nothing to keep
    with pytest.raises(SourceUnreachableError, match="all 1 runs of wandb:ent/proj failed"):
        _snap()
    server.clear_failures()
    server.stop()
    with pytest.raises(SourceUnreachableError, match="connection refused"):
        _snap()


# --------------------------------------------------------------------------------------------
# The command line: the acceptance
# --------------------------------------------------------------------------------------------
def _cli(env: dict, out: Path) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cbs_rlvr", "snapshot", "--source", "wandb:ent/proj", "--out",
                           str(out), "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - t0


def _file_hashes(out: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").glob("*")) if p.is_file()}


def test_cli_outage_of_some_runs_then_of_all(wandb_endpoint, wandb_dirs, tmp_path):
    server = wandb_endpoint([verl_run(f"r{i}", n_prompts=8 * 2 ** i) for i in range(5)])
    env = client_environ(os.environ, server, wandb_dirs, CBS_WANDB_RUN_TIMEOUT="6")
    out = tmp_path / "out"
    proc, _ = _cli(env, out)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # some runs fail: within the bound, their previous data kept flagged stale, exit 0, one warning
    _touch(server)
    server.fail("CbsRunHistory", run="r1", status=503)
    server.fail("CbsRunHistory", run="r3", status=429, retry_after=3600)
    proc, seconds = _cli(env, out)
    assert proc.returncode == 0, proc.stderr
    assert seconds < 6 + 15, seconds
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: wandb:ent/proj: 2 of 5 runs could not be fetched")
    runs, _history, manifest = read_snapshot(out)
    assert runs.set_index("run_id")["flags"].to_dict() == {"r0": "", "r1": "stale", "r2": "", "r3": "stale", "r4": ""}
    assert len(manifest["warnings"]) == 2 and proc.stdout.startswith("snapshot: 5 runs in, 0 excluded")
    # W&B down: one line, exit non-zero, the snapshot untouched
    before = _file_hashes(out)
    server.stop()
    proc, seconds = _cli(env, out)
    assert proc.returncode == 2 and proc.stdout == "" and seconds < 20
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: W&B at http://127.0.0.1:")
    assert "unreachable" in proc.stderr and "connection refused" in proc.stderr and "previous one is kept" in proc.stderr
    assert _file_hashes(out) == before


def test_cli_without_an_api_key_says_so(wandb_endpoint, wandb_dirs, tmp_path):
    server = wandb_endpoint([verl_run("r1")])
    home = tmp_path / "home"
    home.mkdir()
    env = client_environ(os.environ, server, wandb_dirs, HOME=str(home), NETRC=str(home / ".netrc"))
    del env["WANDB_API_KEY"]
    proc, _ = _cli(env, tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: no W&B API key for {server.url}: set WANDB_API_KEY or run `wandb login")
    assert server.count() == 0  # nothing was asked of the server


def test_api_key_never_reaches_a_file_or_the_terminal(wandb_endpoint, tmp_path, capsys):
    server = wandb_endpoint([verl_run("ok"), verl_run("leaky", n_prompts=64)])
    server.fail("CbsRunHistory", run="leaky", status=404, message=f"no run here (key={server.api_key})")
    out = tmp_path / "out"
    snap = _snap()
    write_snapshot(snap, out)
    assert "***" in _reason(snap, "leaky") and server.api_key not in _reason(snap, "leaky")
    for path in out.rglob("*"):
        if path.is_file():
            assert server.api_key.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert server.api_key not in captured.out + captured.err


# --------------------------------------------------------------------------------------------
# The demo sweep served over the API gives the same snapshot and tables as the offline files
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("serves_export", [False, True], ids=["sampled serves live steps", "sampled serves all"])
def test_demo_sweep_served_by_the_endpoint_gives_the_same_tables(wandb_endpoint, serves_export):
    from cbs_rlvr.fit.phase import fit_phase
    from cbs_rlvr.measure.crossings import phase_runs
    from cbs_rlvr.params import load_phase_params

    offline = build_snapshot(str(REPO / "data" / "demo"))
    served: list[ServedRun] = demo_runs(REPO / "data" / "demo")
    for i, run in enumerate(served):  # a third of the runs live, a third exported, a third partly
        run.exported_until = (None, math.inf, run.last_step // 2)[i % 3]
    server = wandb_endpoint(served, project="cbs_rlvr_demo", sampled_serves_export=serves_export)
    snap = build_snapshot("wandb:ent/cbs_rlvr_demo", progress=False)
    assert (server.count("parquet") > 0) is not serves_export and server.count("CbsRunHistory") == 43
    assert max(server.per_run_requests().values()) <= 3
    assert (snap["manifest"]["n_runs"], snap["manifest"]["n_excluded"]) == (43, 0)
    ignore = ["source", "updated_at"]  # a W&B source and heartbeat instead of a file and its last write
    a = offline["runs"].drop(columns=ignore).sort_values("run_id").reset_index(drop=True)
    b = snap["runs"].drop(columns=ignore).sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(offline["history"].sort_values(["run_id", "step"]).reset_index(drop=True),
                                  snap["history"].sort_values(["run_id", "step"]).reset_index(drop=True))
    for path in sorted((REPO / "params").glob("*.yaml")):
        params = load_phase_params(REPO / "params", path.stem)
        tables = []
        for source in (offline, snap):
            runs, history, metric = phase_runs(source["runs"], source["history"], params)
            tables.append(fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=20, seed=0))
        pd.testing.assert_frame_equal(tables[0].sb_eb, tables[1].sb_eb)
        pd.testing.assert_frame_equal(tables[0].table, tables[1].table)  # cbs_fit
