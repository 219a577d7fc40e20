"""What changed since the last build, on the index (issue 27, point 7): per phase, the batch to train
with, its predicted time, B_noise, the decision target and the runs added or removed, in plain words
with units (words/changes.py); nothing on a first build or when nothing a reader sees changed. Two
index writes over the same output directory (report/html.write_index) show it end to end. Pure
functions and small files: fast."""

from __future__ import annotations

import csv

import pandas as pd

from cbs_rlvr.contracts import ANSWER_RECORD, read_answer_record, read_decisions
from cbs_rlvr.report.html import write_index
from cbs_rlvr.words.changes import answer_changes, run_changes


def _row(phase="p1", n_p=32, n_r=8, hours=0.87, b_noise=310.0, threshold=0.7, **extra) -> dict:
    return {"phase": phase, "threshold": threshold, "objective": "wall_clock", "n_prompts": n_p, "n_rollouts": n_r,
            "total_batch": n_p * n_r, "predicted_hours": hours, "predicted_hours_lo": 0.8 * hours,
            "predicted_hours_hi": 1.2 * hours, "B_noise": b_noise, **extra}


def test_a_new_batch_its_time_and_b_noise_are_said_with_units():
    before = pd.DataFrame([_row(), _row("p2b", 128, 2, 0.75, 92.0)])
    after = pd.DataFrame([_row(n_p=64, hours=1.04, b_noise=439.0), _row("p2b", 128, 2, 0.75, 92.0)])
    assert answer_changes(before, after) == [
        "p1: the batch to train with went from 32 × 8 (B = 256) to 64 × 8 (B = 512); the predicted time went "
        "from 0.87 h to 1.0 h; B_noise went from 310 to 439 samples."]


def test_nothing_is_said_on_a_first_build_or_when_what_a_reader_sees_is_the_same():
    rows = pd.DataFrame([_row(), _row("p2b", 128, 2, 0.75, 92.0)])
    assert answer_changes(None, rows) == []
    assert answer_changes(rows, rows.copy()) == []
    # a new bootstrap moves digits no reader sees: the index prints '52 min' and '310' either way
    wobble = pd.DataFrame([_row(hours=0.8701, b_noise=310.2), _row("p2b", 128, 2, 0.7502, 92.04)])
    assert answer_changes(rows, wobble) == []
    # values read back from decisions.csv are strings
    as_read = [{k: str(v) for k, v in r.items()} for r in rows.to_dict("records")]
    assert answer_changes(as_read, rows) == []


def test_a_short_time_reads_in_minutes_and_seconds_and_a_target_that_moved_is_said():
    before, after = [_row(hours=0.05)], [_row(hours=0.004, threshold=0.65)]
    assert answer_changes(before, after) == [
        "p1: the decision target went from accuracy 0.7 to 0.65; the predicted time went from 3.0 min to 14 s."]


def test_answers_that_appear_or_go_and_runs_added_or_removed_are_said():
    before = [_row(), _row("p4_rpp", 32, 8, 0.48, 71.0)]
    after = [_row(), _row("p2a", 64, 4, 0.89, 310.0)]
    runs_before = {"p1": ["a", "b", "c"], "p4_rpp": ["r1"], "p2c": ["s1", "s2"]}
    runs_after = {"p1": ["a", "b", "c", "d", "e"], "p2a": ["q1"], "p2c": ["s1"]}
    assert answer_changes(before, after, runs_before, runs_after) == [
        "p1: 2 runs added (d, e).",
        "p2a: a first answer: train with 64 × 4 (B = 256), about 53 min; 1 run added (q1).",
        "p2c: 1 run removed (s2).",
        "p4_rpp: no answer any more (it was 32 × 8 (B = 256))."]
    # a replicate is a run too; a long list is cut; an unknown list says nothing
    assert run_changes(["a"], ["a", "a"]) == ["1 run added (a)"]
    assert run_changes([], list("abcde")) == ["5 runs added (a, b, c and 2 more)"]
    assert run_changes(None, ["a"]) == [] and run_changes(["a"], None) == []


def _phase_tables(out, phase, row, runs):
    tables = out / phase / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(tables / "decision.csv", index=False)
    with open(tables / "runs.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["name", "replicate"], *[[n, 0] for n in runs]])


def test_the_index_says_what_changed_since_the_build_before_and_only_then(tmp_path):
    """Three index writes over one output directory, as three builds make them: the first says
    nothing (no build before), the second names what changed, the third (same answer) nothing."""
    params = {"p1": {"title": "Phase 1", "sections": ["01_load_runs", "08_plan"]}}
    manifest = {"source": "x", "n_runs": 3}
    _phase_tables(tmp_path, "p1", _row(summary="p1 at accuracy 0.7"), ["a", "b"])
    first = write_index(tmp_path, params, {"p1": 2}, manifest).read_text()
    assert "Changed since" not in first
    built = read_answer_record(tmp_path)["built"]
    assert (tmp_path / ANSWER_RECORD).is_file() and read_answer_record(tmp_path)["runs"] == {"p1": ["a", "b"]}
    _phase_tables(tmp_path, "p1", _row(n_p=64, hours=1.04, summary="p1 at accuracy 0.7"), ["a", "b", "<c>"])
    second = write_index(tmp_path, params, {"p1": 3}, manifest).read_text()
    assert (f"<strong>Changed since the build of {built}:</strong></p><ul><li>p1: the batch to train with went "
            "from 32 × 8 (B = 256) to 64 × 8 (B = 512); the predicted time went from 0.87 h to 1.0 h; "
            "1 run added (&lt;c&gt;).</li></ul>") in second
    assert second.index("<h2>The answer</h2>") < second.index("Changed since") < second.index("class='decision'")
    third = write_index(tmp_path, params, {"p1": 3}, manifest).read_text()
    assert "Changed since" not in third
    # a damaged record is a first build again, never a traceback
    (tmp_path / ANSWER_RECORD).write_text("{not json")
    assert "Changed since" not in write_index(tmp_path, params, {"p1": 3}, manifest).read_text()


def test_a_phase_whose_plan_failed_shows_no_stale_answer_and_loses_none(tmp_path):
    """08 failed in this build: its decision.csv is the build before's, on older data. The index
    does not show it as the answer (nor count it in decisions.csv); it says the plan failed and
    where the earlier answer stays; 'what changed' says the runs, not 'no answer any more'; and
    once the plan builds again, the change is said against the answer shown before it failed."""
    params = {"p1": {"title": "Phase 1", "sections": ["01_load_runs", "08_plan"]}}
    manifest = {"source": "x", "n_runs": 3}
    _phase_tables(tmp_path, "p1", _row(summary="p1 at accuracy 0.7"), ["a", "b"])
    write_index(tmp_path, params, {"p1": 2}, manifest)
    assert [r["phase"] for r in read_decisions(tmp_path)] == ["p1"]
    # the next build: a run added, and 08 fails (its old decision.csv stays on disk)
    _phase_tables(tmp_path, "p1", _row(summary="p1 at accuracy 0.7"), ["a", "b", "c"])
    (tmp_path / "p1" / "08_plan.error.txt").write_text("FAILED: notebooks/08_plan.py [phase p1], cell 3: boom\n")
    page = write_index(tmp_path, params, {"p1": 3}, manifest).read_text()
    assert read_decisions(tmp_path) == [] and not (tmp_path / "decisions.csv").exists()
    assert "To paste in a chat" not in page and "32 × 8" not in page.split("Changed since")[0]
    assert ("No batch to recommend: its plan notebook failed in this build (see its report below); the answer "
            "of an earlier build stays in p1/tables/decision.csv, from the data of then.") in page
    assert "<li>p1: 1 run added (c).</li>" in page and "no answer any more" not in page
    assert (tmp_path / "p1" / "tables" / "decision.csv").is_file()  # nothing lost
    # mended: compared with the answer the index showed before the failure
    (tmp_path / "p1" / "08_plan.error.txt").unlink()
    _phase_tables(tmp_path, "p1", _row(n_p=64, hours=1.04, summary="p1 at accuracy 0.7"), ["a", "b", "c"])
    page = write_index(tmp_path, params, {"p1": 3}, manifest).read_text()
    assert "p1: the batch to train with went from 32 × 8 (B = 256) to 64 × 8 (B = 512)" in page
    assert "a first answer" not in page
