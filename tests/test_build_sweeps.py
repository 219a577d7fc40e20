"""Sweeps as they are while they train, through the real `make report` on sources cut from the
demo sweep (real W&B offline files): a partial sweep (some phases without runs yet, then the same
OUT for another source), a phase with only one or two batch sizes, and a W&B project whose runs are
still running, built again as they log (the real wandb client against the local endpoint)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from testkit import DEMO_DIR, DEMO_RUNS, copy_runs, demo_run_dirs, make_here, phase_params


@pytest.mark.slow
def test_a_partial_sweep_builds_what_exists_and_says_no_runs_yet(tmp_path):
    """Only p1 runs so far, every phase's params: exit 0, one line per phase without runs,
    'no runs yet' in the index, a summary over the phases that exist."""
    source = tmp_path / "source"
    copy_runs(demo_run_dirs("p1"), source)
    params = phase_params(tmp_path / "params", {"p1": ["01_load_runs", "02_steps_to_target"],
                                          "p2a": ["01_load_runs"], "p2b": ["01_load_runs"]})
    out = tmp_path / "out"
    proc = make_here(f"SOURCE={source}", f"OUT={out}", f"PARAMS={params}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout + proc.stderr
    assert "skip: phase p2a has no runs yet" in proc.stdout
    assert "skip: phase p2b has no runs yet" in proc.stdout
    index = (out / "index.html").read_text()
    assert index.count("no runs yet") == 2 and "p1/02_steps_to_target.html" in index
    summary = pd.read_csv(out / "summary" / "tables" / "cbs_summary.csv")
    assert set(summary["phase"]) == {"p1"}
    assert not (out / "p2a").exists()

    # The same OUT reused for another source (p2a's runs only): no leftovers of p1.
    other = tmp_path / "other"
    copy_runs(demo_run_dirs("p2a"), other)
    proc = make_here(f"SOURCE={other}", f"OUT={out}", f"PARAMS={params}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (out / "p1").exists() and (out / "p2a" / "01_load_runs.html").exists()
    assert not (out / "summary").exists()  # no phase with a fit in this data
    index = (out / "index.html").read_text()
    assert "p1/" not in index and "no phase has a fit yet" in index



@pytest.mark.slow
def test_a_phase_with_one_or_two_batch_sizes_builds_without_failures(tmp_path):
    source = tmp_path / "source"
    by_batch: dict[int, Path] = {}
    for r in DEMO_RUNS.values():
        if r["phase"] == "p1" and r["n_prompts"] in (8, 16):
            by_batch.setdefault(r["n_prompts"], (DEMO_DIR / r["path"]).parent)
    copy_runs(list(by_batch.values()), source)
    params = phase_params(tmp_path / "params", {"p1": ["01_load_runs", "02_steps_to_target"]})
    out = tmp_path / "out"
    proc = make_here(f"SOURCE={source}", f"OUT={out}", f"PARAMS={params}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fit = pd.read_csv(out / "p1" / "tables" / "cbs_fit.csv")
    assert (fit["status"] == "insufficient").all()
    html = (out / "p1" / "02_steps_to_target.html").read_text()
    assert "insufficient" in html and "Traceback" not in html



@pytest.mark.slow
def test_a_live_wandb_sweep_rebuilds_only_what_its_running_runs_changed(wandb_endpoint, tmp_path):
    """`make report` on a W&B project while p1's runs run, then again once they have logged more,
    then with nothing new (the real wandb client against the local endpoint; p1's demo runs cut at
    step 120 and 240, p2b's finished). The second build fetches only the runs that logged, reruns
    only p1's notebooks (a job's key holds its phase's data, not the whole snapshot's), and its
    forecasts start where the runs now are; the third fetches no history and runs nothing. 02's
    figure names its forecasts in its alt text. About 90 s (three builds, two of p1's 02 and 08)."""
    import re

    from wandb_server import demo_runs

    served = [r for r in demo_runs(DEMO_DIR) if r.name.startswith(("cbs_p1_", "cbs_p2b_"))]
    running = {r.run_id: (r, r.rows) for r in served if r.name.startswith("cbs_p1_")}

    def logged_until(step: int, stamp: str) -> None:
        for run, rows in running.values():
            run.rows, run.state, run.heartbeat_at = [x for x in rows if x["_step"] <= step], "running", stamp

    logged_until(120, "2026-01-02T00:00:00Z")
    server = wandb_endpoint(served)
    params = phase_params(tmp_path / "params", {"p1": ["02_steps_to_target", "08_plan"], "p2b": ["01_load_runs"]})
    out = tmp_path / "out"

    def build() -> tuple[set, dict]:
        before = {r: server.count("CbsRunHistory", r) for r in server.runs}
        proc = make_here("SOURCE=wandb:ent/proj", f"OUT={out}", f"PARAMS={params}")
        assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        fetched = {r for r in server.runs if server.count("CbsRunHistory", r) > before[r]}
        return set(re.findall(r"^ok: (\S+)", proc.stdout, re.M)), fetched

    ran, fetched = build()
    assert {"p1/02_steps_to_target", "p1/08_plan", "p2b/01_load_runs"} <= ran and fetched == set(server.runs)
    first = pd.read_csv(out / "p1" / "tables" / "forecast.csv")
    assert first["last_step"].max() <= 120 and (~first["observed"] & first["step"].notna()).any()
    assert "forecasts, not measurements" in (out / "p1" / "02_steps_to_target.html").read_text()
    logged_until(240, "2026-01-03T00:00:00Z")
    ran, fetched = build()
    # p1's notebooks and the summary (it reads every phase's fit); p2b's data did not change
    assert fetched == set(running) and ran == {"p1/02_steps_to_target", "p1/08_plan", "summary/07_summary"}, ran
    second = pd.read_csv(out / "p1" / "tables" / "forecast.csv")
    assert 120 < second["last_step"].max() <= 240 and second["observed"].sum() > first["observed"].sum()
    ran, fetched = build()
    assert ran == set() and fetched == set()
