"""Data layer: real W&B offline files, damaged files, export dirs, snapshots, CLI (the W&B API
source through the real client: tests/test_wandb_api.py)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # until pytest's pythonpath is set in pyproject.toml
    sys.path.insert(0, str(REPO))

from sweeps.hardening import wait_until_stable  # noqa: E402 (tests/ is on sys.path)
from testkit import offline_wandb_env  # noqa: E402
from wandb_server import verl_run  # noqa: E402

from cbs_rlvr.__main__ import main  # noqa: E402
from cbs_rlvr.data.history import normalise_history
from cbs_rlvr.data.runs import (
    EXCLUDED_COLUMNS,
    REASON_NO_VALIDATION,
    RUNS_COLUMNS,
    parse_run_name,
    run_metadata,
)
from cbs_rlvr.errors import (
    DataSourceError,
    SnapshotError,
    SnapshotMissingError,
    WandbFileError,
)
from cbs_rlvr.sources import snapshot as snapshot_module  # noqa: E402
from cbs_rlvr.sources.manifest import SNAPSHOT_FILES
from cbs_rlvr.sources.snapshot import (
    build_snapshot,
    read_excluded_runs,
    read_snapshot,
    snapshot_content_hash,
    write_snapshot,
)
from cbs_rlvr.sources.wandb_file import read_wandb_file

VAL = "val-core/openai/gsm8k/reward/mean@1"
VAL_MATH = "val-core/HuggingFaceH4/MATH-500/reward/mean@1"

# --------------------------------------------------------------------------------------------
# A small corpus of REAL offline runs, written once per session by the wandb SDK in a
# subprocess (one process for all finished runs: one wandb service start).
# --------------------------------------------------------------------------------------------
_CORPUS_SCRIPT = textwrap.dedent(
    """
    import os, sys, wandb
    root = sys.argv[1]
    SETTINGS = dict(x_disable_stats=True, console="off", disable_git=True, disable_code=True,
                    save_code=False, x_disable_meta=True, x_disable_machine_info=True, silent=True,
                    disable_job_creation=True)
    VAL = "val-core/openai/gsm8k/reward/mean@1"

    def verl(n_prompts, n_rollouts, gpus=8, nodes=1, **extra):
        cfg = {"data": {"train_batch_size": n_prompts, "max_prompt_length": 512},
               "actor_rollout_ref": {"rollout": {"n": n_rollouts, "temperature": 1.0},
                                     "actor": {"optim": {"lr": 1e-6}}},
               "trainer": {"n_gpus_per_node": gpus, "nnodes": nodes, "test_freq": 5}}
        cfg.update(extra)
        return cfg

    def start(sub, run_id, name, config, **kw):
        return wandb.init(mode="offline", dir=os.path.join(root, sub), project="cbs", name=name,
                          id=run_id, config=config, settings=wandb.Settings(**SETTINGS), **kw)

    def log_standard(run, steps=range(1, 11), val_key=VAL, val=lambda s: 0.1 + 0.04 * s,
                     extra=None, first=True):
        if first:
            run.log({val_key: val(0)}, step=0)  # verl: validation before training, step 0
        for s in steps:
            row = {"training/global_step": s, "critic/score/mean": 0.2 + 0.01 * s,
                   "actor/entropy": 1.0 - 0.01 * s, "actor/grad_norm": 0.5,
                   "perf/time_per_step": 20.0 + s, "timing_s/step": 20.0 + s}
            if s % 5 == 0:
                row[val_key] = val(s)
            if extra:
                row.update(extra(s))
            run.log(row, step=s)

    def faults(s):
        return {3: {"actor/grad_norm": float("nan")}, 4: {"actor/grad_norm": float("inf")},
                6: {"critic/score/mean": "n/a"}}.get(s, {})

    for run_id in ("zz01", "aa02", "mm03"):  # replicates; start order differs from id order
        run = start("good", run_id, "cbs_p1_np32_nr8", verl(32, 8))
        log_standard(run, extra=faults if run_id == "zz01" else None)
        run.finish()

    run = start("good", "mismatch1", "cbs_p2b_np32_nr16", verl(32, 8))
    log_standard(run); run.finish()

    run = start("good", "pct1", "cbs_p4_math_np64_nr8", verl(64, 8, nodes=2))
    log_standard(run, val_key="val-core/HuggingFaceH4/MATH-500/reward/mean@1", val=lambda s: 12.5 + 5 * s)
    run.finish(exit_code=1)

    run = start("good", "noval1", "cbs_p1_np8_nr8_noval", verl(8, 8))
    for s in range(1, 6):
        run.log({"training/global_step": s, "critic/score/mean": 0.1}, step=s)
    run.finish()

    run = start("good", "nophase1", "my_experiment", verl(16, 8))
    log_standard(run); run.finish()

    run = start("good", "noname1", "baseline", {"lr": 1e-6})
    log_standard(run); run.finish()

    # a verl job restarted from the step-3 checkpoint inside the same W&B run: global_step goes
    # 1..6 then 4..8 while W&B's _step keeps increasing
    run = start("good", "restart1", "cbs_p2a_np16_nr4", verl(16, 4))
    run.log({VAL: 0.2}, step=0)
    w = 1
    for seg, steps in ((100, range(1, 7)), (200, range(4, 9))):
        for s in steps:
            row = {"training/global_step": s, "critic/score/mean": seg + s}
            if s == 5:
                row[VAL] = 0.4 if seg == 100 else 0.45
            run.log(row, step=w); w += 1
    run.finish()

    blob = {f"k{i:04d}": "x" * 60 for i in range(2000)}  # ~140 KB config record: 5 blocks
    run = start("good", "big1", "cbs_p2c_np1024_nr2", verl(1024, 2, blob=blob))
    log_standard(run); run.finish()

    # one run resumed with the same id on another node: two files, one run
    run = start("good/nodeA", "seg1", "cbs_p1_np64_nr8", verl(64, 8))
    log_standard(run, steps=range(1, 6)); run.finish()
    run = start("good/nodeB", "seg1", "cbs_p1_np64_nr8", verl(64, 8), resume="allow")
    log_standard(run, steps=range(6, 11), first=False); run.finish()

    for run_id, n_prompts in (("dmgA", 128), ("dmgB", 256), ("dmgC", 512)):  # material for damage
        run = start("material", run_id, f"cbs_p1_np{n_prompts}_nr8", verl(n_prompts, 8))
        log_standard(run); run.finish()
    """
)

# A process that dies without run.finish() (os._exit), as a killed cluster job does.
_CRASH_SCRIPT = textwrap.dedent(
    """
    import glob, os, sys, time, wandb
    run = wandb.init(mode="offline", dir=sys.argv[1], project="cbs", name="cbs_p1_np16_nr8", id="crash1",
                     config={"data": {"train_batch_size": 16}, "actor_rollout_ref": {"rollout": {"n": 8}}},
                     settings=wandb.Settings(x_disable_stats=True, console="off", disable_git=True,
                                             disable_code=True, silent=True, x_disable_meta=True))
    for s in range(800):
        row = {"training/global_step": s, "actor/entropy": 1.5, "critic/score/mean": 0.001 * s,
               "perf/throughput": 1000.0 + s}
        if s % 5 == 0:
            row["val-core/openai/gsm8k/reward/mean@1"] = 0.001 * s
        run.log(row, step=s)
    # wandb-core flushes on its own schedule: on a loaded machine a kill right after the last log
    # found only 2-3 of the file's blocks written. The job is killed once 4 blocks are on disk
    # (what the test's premise needs), as a job killed some time into training is.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = glob.glob(os.path.join(sys.argv[1], "wandb", "offline-run-*-crash1", "run-crash1.wandb"))
        if files and os.path.getsize(files[0]) >= 4 * 32768:
            break
        time.sleep(0.05)
    os._exit(1)
    """
)


@pytest.fixture(scope="session")
def offline_corpus_dir(tmp_path_factory) -> Path:
    """good/ (runs for the loader), material/ (clean runs to damage); written by the real SDK."""
    root = tmp_path_factory.mktemp("wandb_corpus")
    env = offline_wandb_env(root)
    subprocess.run([sys.executable, "-c", _CORPUS_SCRIPT, str(root)], cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    crash = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(root / "good")], cwd=root, env=env,
                           capture_output=True, timeout=300)
    assert crash.returncode == 1
    wait_until_stable(_run_file(root / "good", "crash1"))  # wandb-core may outlive its parent
    return root


def _run_file(root: Path, run_id: str) -> Path:
    matches = [p for p in root.rglob(f"run-{run_id}.wandb") if "latest-run" not in p.parts]
    assert len(matches) >= 1, run_id
    return sorted(matches)[0]


def _frame_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, type, payload) of each physical record: an independent walk of the framing."""
    out, pos = [], 7
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, rtype = struct.unpack_from("<IHB", data, pos)
        out.append((pos, rtype, data[pos + 7:pos + 7 + length]))
        pos += 7 + length
    return out


def _ends_inside_a_record(path: Path) -> bool:
    """Whether the cut fell inside a record (last fragment FIRST/MIDDLE): independent of the reader."""
    return _frame_records(path.read_bytes())[-1][1] in (2, 3)


def _history_record_offset(data: bytes, step: int) -> int:
    from wandb.proto import wandb_internal_pb2

    for offset, rtype, payload in _frame_records(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if rtype == 1 and record.WhichOneof("record_type") == "history":
            steps = [i.value_json for i in record.history.item if list(i.nested_key) == ["_step"] or i.key == "_step"]
            if steps == [str(step)]:
                return offset
    raise AssertionError(f"no history record for step {step}")


@pytest.fixture(scope="session")
def damaged_corpus_dir(offline_corpus_dir, tmp_path_factory) -> Path:
    """good/ runs + damaged, empty, garbage and stray files, as a cluster filesystem leaves them."""
    root = tmp_path_factory.mktemp("damaged") / "runs"
    shutil.copytree(offline_corpus_dir / "good", root, symlinks=True)
    bad = root / "damaged"
    bad.mkdir()
    clean = _run_file(offline_corpus_dir / "material", "dmgA").read_bytes()
    (bad / "run-empty.wandb").write_bytes(b"")
    (bad / "run-badheader.wandb").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    (bad / "run-short.wandb").write_bytes(clean[:3])
    (bad / "run-headeronly.wandb").write_bytes(clean[:7])  # what the SDK leaves after an early crash
    (bad / "run-cut20.wandb").write_bytes(clean[:20])
    (bad / "run-garbage.wandb").write_bytes(clean[:7] + random.Random(7).randbytes(4000))
    # one damaged copy per run id (copies of one id would be merged as resumed segments)
    flipped = bytearray(clean)
    flipped[_history_record_offset(clean, 7)] ^= 0xFF  # first byte of that record's CRC
    (bad / "offline-run-20260101_000000-dmgA").mkdir()
    (bad / "offline-run-20260101_000000-dmgA" / "run-dmgA.wandb").write_bytes(bytes(flipped))
    clean_b = _run_file(offline_corpus_dir / "material", "dmgB").read_bytes()
    (bad / "run-dmgB.wandb").write_bytes(clean_b[:_history_record_offset(clean_b, 6) + 10])
    clean_c = _run_file(offline_corpus_dir / "material", "dmgC").read_bytes()
    (bad / "run-dmgC.wandb").write_bytes(clean_c[:-3])  # the exit record is cut
    (root / "notes.txt").write_text("stray file: not a run\n")
    (bad / "run-dmgA.wandb.synced").write_text("")
    return root


@pytest.fixture(scope="session")
def damaged_snapshot(damaged_corpus_dir) -> dict:
    return build_snapshot(str(damaged_corpus_dir))


def _run(snap: dict, run_id: str) -> dict:
    rows = snap["runs"][snap["runs"]["run_id"] == run_id]
    assert len(rows) == 1, run_id
    return rows.iloc[0].to_dict()


def _hist(snap: dict, run_id: str) -> pd.DataFrame:
    return snap["history"][snap["history"]["run_id"] == run_id].set_index("step")


def _reason(snap: dict, **match) -> str:
    frame = snap["excluded"]
    for key, value in match.items():
        frame = frame[frame[key].astype(str).str.contains(value, regex=False)]
    assert len(frame) == 1, (match, snap["excluded"])
    return frame.iloc[0]["reason"]


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------
def test_parse_run_name_phase_with_underscore_and_suffix():
    assert parse_run_name("cbs_p4_math_np32_nr8_seed1") == {
        "phase": "p4_math", "n_prompts": 32, "n_rollouts": 8, "suffix": "seed1"}
    assert parse_run_name("cbs_p1_np8_nr16") == {"phase": "p1", "n_prompts": 8, "n_rollouts": 16, "suffix": None}
    assert parse_run_name("baseline")["phase"] is None
    assert parse_run_name(None) == {"phase": None, "n_prompts": None, "n_rollouts": None, "suffix": None}


def test_run_metadata_reads_nested_dotted_and_wrapped_configs():
    nested = run_metadata("cbs_p1_np32_nr8", {"data": {"train_batch_size": 32},
                                                  "actor_rollout_ref": {"rollout": {"n": 8}},
                                                  "trainer": {"n_gpus_per_node": 8, "nnodes": 2}})
    assert (nested["n_prompts"], nested["n_rollouts"], nested["total_batch"], nested["n_gpus"]) == (32, 8, 256, 16)
    dotted = run_metadata("cbs_p1_np32_nr8", {"data.train_batch_size": "64", "actor_rollout_ref.rollout.n": 4})
    assert (dotted["n_prompts"], dotted["n_rollouts"], dotted["flags"]) == (64, 4, ["config_name_mismatch"])
    wrapped = run_metadata("cbs_p2b_np32_nr2", {"data": {"value": {"train_batch_size": 32}, "desc": None}})
    assert (wrapped["n_prompts"], wrapped["n_rollouts"], wrapped["flags"]) == (32, 2, [])
    assert run_metadata("cbs_p1_np32_nr8", None)["reason"] is None
    assert "cannot determine" in run_metadata("baseline", {})["reason"]
    # a free-form name: usable (a phase's params may select it by tags, group, pattern or config)
    free = run_metadata("x", {"data.train_batch_size": 8, "actor_rollout_ref.rollout.n": 2})
    assert (free["phase"], free["total_batch"], free["reason"]) == (None, 16, None)


def test_normalise_history_last_write_wins_restart_percent_and_counts():
    rows = [{"_step": 0, "val-core/a/mean@1": 10.0},
            {"_step": 1, "training/global_step": 1, "x": 1.0},
            {"_step": 2, "training/global_step": 2, "x": 2.0, "val-core/a/mean@1": 50.0},
            {"_step": 3, "training/global_step": 1, "x": 11.0},      # restart from step 1
            {"_step": 4, "training/global_step": 2, "x": float("inf")},
            {"_step": 5, "training/global_step": 3, "x": "oops", "media": {"_type": "image-file"}}]
    frame, counts = normalise_history(rows)
    assert frame["step"].tolist() == [0, 1, 2, 3]
    assert frame["x"].tolist()[:2] == [pytest.approx(math.nan, nan_ok=True), 11.0]
    assert math.isnan(frame.loc[2, "x"]) and math.isnan(frame.loc[3, "x"])  # inf and "oops" -> NaN
    assert frame["val-core/a/mean@1"].tolist()[0] == 0.1 and frame.loc[2, "val-core/a/mean@1"] == 0.5
    assert "media" not in frame.columns
    assert (counts["step_restarts"], counts["duplicate_steps"], counts["nonfinite"], counts["non_numeric"]) == (1, 2, 1, 1)
    assert counts["percent_columns"] == ["val-core/a/mean@1"]


# --------------------------------------------------------------------------------------------
# read_wandb_file on real files
# --------------------------------------------------------------------------------------------
def test_read_wandb_file_returns_exact_values(offline_corpus_dir):
    run = read_wandb_file(_run_file(offline_corpus_dir / "good", "zz01"))
    assert (run["run_id"], run["name"], run["project"]) == ("zz01", "cbs_p1_np32_nr8", "cbs")
    assert run["config"]["data"]["train_batch_size"] == 32
    assert run["config"]["actor_rollout_ref"] == {"rollout": {"n": 8, "temperature": 1.0}, "actor": {"optim": {"lr": 1e-6}}}
    assert "_wandb" not in run["config"]
    assert (run["state"], run["exit_code"], run["truncated"], run["n_bad_records"]) == ("finished", 0, False, 0)
    by_step = {row["_step"]: row for row in run["history"]}
    assert sorted(by_step) == list(range(11))
    assert by_step[0][VAL] == 0.1 and "training/global_step" not in by_step[0]
    assert by_step[5][VAL] == 0.1 + 0.04 * 5 and by_step[10]["perf/time_per_step"] == 30.0
    assert math.isnan(by_step[3]["actor/grad_norm"]) and by_step[4]["actor/grad_norm"] == math.inf
    assert by_step[6]["critic/score/mean"] == "n/a"
    assert run["start_time"] > 1.6e9


def test_wandb_file_format_header_and_crc(offline_corpus_dir):
    data = _run_file(offline_corpus_dir / "good", "zz01").read_bytes()
    assert data[:4] == b":W&B" and struct.unpack_from("<H", data, 4)[0] == 0xBEE1 and data[6] == 0
    records = _frame_records(data)
    assert records and all(rtype == 1 for _, rtype, _ in records)  # small file: all FULL records
    for offset, rtype, payload in records:
        # wandb's CRC: plain zlib CRC-32 over the type byte then the payload
        assert struct.unpack_from("<I", data, offset)[0] == zlib.crc32(payload, zlib.crc32(bytes([rtype])))


def test_failed_run_state_and_exit_code(offline_corpus_dir):
    run = read_wandb_file(_run_file(offline_corpus_dir / "good", "pct1"))
    assert (run["state"], run["exit_code"]) == ("failed", 1)
    assert [r[VAL_MATH] for r in run["history"] if VAL_MATH in r] == [12.5, 37.5, 62.5]


def test_record_spanning_several_blocks(offline_corpus_dir):
    path = _run_file(offline_corpus_dir / "good", "big1")
    assert path.stat().st_size > 3 * 32768
    run = read_wandb_file(path)
    assert run["config"]["blob"] == {f"k{i:04d}": "x" * 60 for i in range(2000)}
    assert run["n_bad_records"] == 0 and not run["truncated"]
    assert [r[VAL] for r in run["history"] if VAL in r] == [0.1, 0.1 + 0.04 * 5, 0.1 + 0.04 * 10]


def test_crashed_process_leaves_a_truncated_readable_file(offline_corpus_dir):
    # wandb-core buffers its writes: a killed process leaves no exit record and a file cut where
    # the last flush ended (often a 32 KiB block boundary, sometimes inside a record); a run
    # killed soon after start leaves only the 7-byte header
    path = _run_file(offline_corpus_dir / "good", "crash1")
    assert path.stat().st_size >= 4 * 32768
    run = read_wandb_file(path)
    assert (run["state"], run["exit_code"]) == ("crashed", None)
    assert run["truncated"] is _ends_inside_a_record(path) and run["n_bad_records"] == 0
    steps = [r["_step"] for r in run["history"]]
    assert steps == list(range(len(steps))) and 100 < len(steps) <= 800
    assert all(r["critic/score/mean"] == 0.001 * r["_step"] for r in run["history"])


def test_every_truncation_offset_reads_a_prefix(offline_corpus_dir, tmp_path):
    data = _run_file(offline_corpus_dir / "material", "dmgC").read_bytes()
    full = read_wandb_file(_run_file(offline_corpus_dir / "material", "dmgC"))["history"]
    boundaries = {offset for offset, _, _ in _frame_records(data)} | {len(data)}
    target = tmp_path / "run-cut.wandb"
    for cut in range(7, len(data), 53):
        target.write_bytes(data[:cut])
        run = read_wandb_file(target)
        assert run["history"] == full[:len(run["history"])], cut
        assert run["truncated"] is (cut not in boundaries), cut
        assert run["state"] == "crashed" and run["n_bad_records"] == 0


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b":W&", "too short"),
    (b"PK\x03\x04\x14\x00\x06\x00", "bad header"),
])
def test_unreadable_files_raise_a_specific_error(tmp_path, content, message):
    path = tmp_path / "run-x.wandb"
    path.write_bytes(content)
    with pytest.raises(WandbFileError, match=message):
        read_wandb_file(path)


def test_flipped_crc_skips_one_record_only(offline_corpus_dir, tmp_path):
    data = _run_file(offline_corpus_dir / "material", "dmgA").read_bytes()
    damaged = bytearray(data)
    damaged[_history_record_offset(data, 7)] ^= 0xFF
    (tmp_path / "run-a.wandb").write_bytes(bytes(damaged))
    run = read_wandb_file(tmp_path / "run-a.wandb")
    assert run["n_bad_records"] == 1 and not run["truncated"] and run["state"] == "finished"
    assert [r["_step"] for r in run["history"]] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_damaged_length_drops_rest_of_block_without_error(offline_corpus_dir, tmp_path):
    data = _run_file(offline_corpus_dir / "material", "dmgA").read_bytes()
    damaged = bytearray(data)
    struct.pack_into("<H", damaged, _history_record_offset(data, 4) + 4, 60000)
    (tmp_path / "run-a.wandb").write_bytes(bytes(damaged))
    run = read_wandb_file(tmp_path / "run-a.wandb")
    assert run["n_bad_records"] == 1
    assert [r["_step"] for r in run["history"]] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------
# Offline directory -> snapshot tables: every fault case
# --------------------------------------------------------------------------------------------
def test_every_wandb_file_is_accounted_for(damaged_corpus_dir, damaged_snapshot):
    found = {p.relative_to(damaged_corpus_dir).as_posix() for p in damaged_corpus_dir.rglob("*.wandb")
             if "latest-run" not in p.parts}
    used = {s for sources in damaged_snapshot["runs"]["source"] for s in sources.split(";")}
    excluded = set(damaged_snapshot["excluded"]["source"])
    assert used | excluded == found and not used & excluded
    assert len(damaged_snapshot["runs"]) == 12 and len(damaged_snapshot["excluded"]) == 9
    assert not any("notes.txt" in s or "synced" in s for s in used | excluded)


def test_runs_table_follows_the_contract(damaged_snapshot):
    runs = damaged_snapshot["runs"]
    assert list(runs.columns) == RUNS_COLUMNS
    assert runs["run_id"].is_unique
    for column in ("n_prompts", "n_rollouts", "total_batch", "n_gpus", "last_step"):
        assert str(runs[column].dtype) == "Int64"
    history = damaged_snapshot["history"]
    assert list(history.columns[:2]) == ["run_id", "step"] and history["step"].dtype == "int64"
    assert all(history[c].dtype == "float64" for c in history.columns[2:])
    assert not history.duplicated(["run_id", "step"]).any()
    assert runs.set_index("run_id")["n_history_rows"].sort_index().to_dict() == history.groupby("run_id").size().to_dict()


def test_replicates_are_numbered_by_start_time(damaged_snapshot):
    reps = damaged_snapshot["runs"].query("name == 'cbs_p1_np32_nr8'").set_index("run_id")
    assert reps["replicate"].to_dict() == {"zz01": 0, "aa02": 1, "mm03": 2}
    assert set(reps["n_replicates"]) == {3}
    assert all(len(_hist(damaged_snapshot, rid)) == 11 for rid in ("zz01", "aa02", "mm03"))


def test_nonfinite_and_string_values_become_nan_and_are_flagged(damaged_snapshot):
    run = _run(damaged_snapshot, "zz01")
    assert set(run["flags"].split(";")) == {"nonfinite:2", "non_numeric:1"}
    hist = _hist(damaged_snapshot, "zz01")
    assert math.isnan(hist.loc[3, "actor/grad_norm"]) and math.isnan(hist.loc[4, "actor/grad_norm"])
    assert math.isnan(hist.loc[6, "critic/score/mean"]) and hist.loc[7, "critic/score/mean"] == 0.2 + 0.01 * 7
    assert hist.loc[0, VAL] == 0.1 and hist.loc[10, VAL] == 0.1 + 0.04 * 10
    assert _run(damaged_snapshot, "aa02")["flags"] == ""


def test_config_wins_over_name_and_is_flagged(damaged_snapshot):
    run = _run(damaged_snapshot, "mismatch1")
    assert (run["n_prompts"], run["n_rollouts"], run["total_batch"]) == (32, 8, 256)
    assert run["flags"] == "config_name_mismatch" and run["phase"] == "p2b"
    assert json.loads(run["config"])["actor_rollout_ref"]["rollout"]["n"] == 8


def test_percent_accuracy_rescaled_failed_run_kept(damaged_snapshot):
    run = _run(damaged_snapshot, "pct1")
    assert (run["phase"], run["state"], run["n_gpus"], run["flags"]) == ("p4_math", "failed", 16, "percent_accuracy")
    assert _hist(damaged_snapshot, "pct1")[VAL_MATH].dropna().tolist() == [0.125, 0.375, 0.625]


def test_step_restart_keeps_the_last_write_per_step(damaged_snapshot):
    run = _run(damaged_snapshot, "restart1")
    assert set(run["flags"].split(";")) == {"duplicate_steps:3", "step_restart"}
    hist = _hist(damaged_snapshot, "restart1")
    assert hist.index.tolist() == list(range(9))
    assert hist["critic/score/mean"].tolist()[1:] == [101, 102, 103, 204, 205, 206, 207, 208]
    assert hist.loc[5, VAL] == 0.45 and hist.loc[0, VAL] == 0.2


def test_resumed_run_files_are_merged(damaged_snapshot):
    run = _run(damaged_snapshot, "seg1")
    assert run["flags"] == "segments:2" and len(run["source"].split(";")) == 2
    assert _hist(damaged_snapshot, "seg1").index.tolist() == list(range(11))


def test_crashed_run_keeps_history_and_state(damaged_snapshot, damaged_corpus_dir):
    run = _run(damaged_snapshot, "crash1")
    truncated = _ends_inside_a_record(_run_file(damaged_corpus_dir, "crash1"))
    assert (run["state"], run["flags"]) == ("crashed", "truncated" if truncated else "")
    hist = _hist(damaged_snapshot, "crash1")
    assert len(hist) == run["n_history_rows"] > 100 and hist.loc[100, VAL] == 0.1


def test_damaged_copies_enter_flagged(damaged_snapshot):
    assert _run(damaged_snapshot, "dmgA")["flags"] == "bad_records:1"
    assert 7 not in _hist(damaged_snapshot, "dmgA").index
    dmg_b = _run(damaged_snapshot, "dmgB")
    assert (dmg_b["state"], dmg_b["flags"], dmg_b["last_step"]) == ("crashed", "truncated", 5)
    dmg_c = _run(damaged_snapshot, "dmgC")
    assert (dmg_c["state"], dmg_c["flags"], dmg_c["last_step"]) == ("crashed", "truncated", 10)


def test_exclusion_reasons(damaged_snapshot):
    assert _reason(damaged_snapshot, run_id="noval1") == REASON_NO_VALIDATION
    assert _reason(damaged_snapshot, run_id="nophase1").startswith("no phase in run name 'my_experiment'")
    assert _reason(damaged_snapshot, run_id="noname1").startswith("cannot determine phase/n_prompts/n_rollouts from name 'baseline'")
    assert "empty file" in _reason(damaged_snapshot, source="run-empty.wandb")
    assert "bad header" in _reason(damaged_snapshot, source="run-badheader.wandb")
    assert "too short" in _reason(damaged_snapshot, source="run-short.wandb")
    assert "no records after the file header" in _reason(damaged_snapshot, source="run-headeronly.wandb")
    assert "no records after the file header" in _reason(damaged_snapshot, source="run-cut20.wandb")
    assert "no readable records" in _reason(damaged_snapshot, source="run-garbage.wandb")


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataSourceError, match="source not found"):
        build_snapshot(str(tmp_path / "nope"))
    with pytest.raises(DataSourceError, match="no W&B offline run files"):
        build_snapshot(str(tmp_path))
    with pytest.raises(DataSourceError, match="expected wandb:<entity>/<project>"):
        build_snapshot("wandb:just-a-project")


# --------------------------------------------------------------------------------------------
# Export directory
# --------------------------------------------------------------------------------------------
@pytest.fixture
def export_dir(tmp_path) -> Path:
    root = tmp_path / "export"
    (root / "history").mkdir(parents=True)
    gsm_config = json.dumps({"data": {"train_batch_size": 32}, "actor_rollout_ref": {"rollout": {"n": 4}},
                             "trainer": {"n_gpus_per_node": 4, "nnodes": 1}})
    pd.DataFrame([
        {"run_id": "e1", "name": "cbs_p1_np32_nr8", "state": "finished", "data.train_batch_size": "32",
         "actor_rollout_ref.rollout.n": "8", "config": "", "created_at": "2026-01-02T00:00:00Z"},
        {"run_id": "e2", "name": "cbs_p2b_np32_nr4", "state": "crashed", "data.train_batch_size": "",
         "actor_rollout_ref.rollout.n": "", "config": gsm_config, "created_at": "2026-01-03T00:00:00Z"},
        {"run_id": "e3", "name": "cbs_p1_np64_nr8", "state": "finished", "data.train_batch_size": "64",
         "actor_rollout_ref.rollout.n": "8", "config": "", "created_at": ""},
        {"run_id": "e4", "name": "cbs_p1_np32_nr8", "state": "finished", "data.train_batch_size": "32",
         "actor_rollout_ref.rollout.n": "8", "config": "", "created_at": "2026-01-01T00:00:00Z"},
        {"run_id": "e1", "name": "cbs_p1_np32_nr8_copy", "state": "finished", "data.train_batch_size": "",
         "actor_rollout_ref.rollout.n": "", "config": "", "created_at": ""},
    ]).to_csv(root / "runs.csv", index=False)
    pd.DataFrame({"step": [0, 5, 10], VAL: [0.1, 0.3, 0.5], "critic/score/mean": ["0.2", "oops", "0.4"]}).to_csv(
        root / "history" / "e1.csv", index=False)
    pd.DataFrame({"_step": [0, 1, 2, 3], "training/global_step": [np.nan, 1, 2, 3],
                  VAL: [10.0, np.nan, np.nan, 40.0], "actor/entropy": [np.nan, 1.0, np.inf, 0.8]}).to_parquet(
        root / "history" / "e2.parquet", index=False)
    pd.DataFrame({"training/global_step": [1, 2], VAL: [0.2, 0.25]}).to_csv(root / "history" / "e4.csv", index=False)
    (root / "history" / "stray.csv").write_text("a,b\n1,2\n")
    return root


def test_export_dir_source(export_dir):
    snap = build_snapshot(str(export_dir))
    assert snap["manifest"]["source_kind"] == "export"
    runs = snap["runs"].set_index("run_id")
    assert runs.loc["e1", ["n_prompts", "n_rollouts", "flags", "state"]].tolist() == [32, 8, "non_numeric:1", "finished"]
    assert runs.loc["e2", ["n_rollouts", "n_gpus", "state"]].tolist() == [4, 4, "crashed"]
    assert set(runs.loc["e2", "flags"].split(";")) == {"nonfinite:1", "percent_accuracy"}
    assert runs.loc[["e4", "e1"], "replicate"].tolist() == [0, 1]  # e4 started first
    e1 = _hist(snap, "e1")
    assert e1[VAL].tolist() == [0.1, 0.3, 0.5] and math.isnan(e1.loc[5, "critic/score/mean"])
    e2 = _hist(snap, "e2")
    assert e2.index.tolist() == [0, 1, 2, 3] and e2[VAL].dropna().tolist() == [0.1, 0.4]
    assert _hist(snap, "e4").index.tolist() == [1, 2]
    assert "no history file history/e3.parquet or history/e3.csv" == _reason(snap, run_id="e3")
    assert "duplicate run_id 'e1'" in _reason(snap, name="cbs_p1_np32_nr8_copy")
    assert len(snap["runs"]) + len(snap["excluded"]) == 5


def test_offline_decode_skips_the_keys_nobody_reads():
    """A `.wandb` history record's unread keys are not even decoded (CPU and memory of the
    offline reader); `_` keys (the step, the time stamps) always are."""
    from wandb.proto import wandb_internal_pb2

    from cbs_rlvr.data.history import analysis_key_filter
    from cbs_rlvr.sources.wandb_file import decode_wandb_records

    record = wandb_internal_pb2.Record()
    for key, value in (("_step", "3"), ("actor/pg_loss", "0.5"), (VAL, "0.25"), ("_timestamp", "1.5")):
        item = record.history.item.add()
        item.key, item.value_json = key, value
    payload = record.SerializeToString()
    kept, n_bad = decode_wandb_records([payload], keep=analysis_key_filter())
    assert n_bad == 0 and kept["history"] == [{"_step": 3, VAL: 0.25, "_timestamp": 1.5}]
    every, _ = decode_wandb_records([payload])
    assert every["history"][0]["actor/pg_loss"] == 0.5


def test_snapshot_keeps_the_keys_the_analysis_reads_and_the_phases_metrics(tmp_path):
    """A verl run logs a hundred keys; the snapshot keeps the analysis keys, accuracy keys and
    the keys the phases' `metric` patterns name (an older verl's val/test_score/...), nothing else."""
    root = tmp_path / "export"
    (root / "history").mkdir(parents=True)
    pd.DataFrame([{"run_id": "a", "name": "cbs_p1_np32_nr8", "config": ""}]).to_csv(root / "runs.csv", index=False)
    pd.DataFrame({"step": [0, 5], VAL: [0.1, 0.3], "val/test_score/openai/gsm8k": [0.1, 0.3],
                  "actor/pg_loss": [1.0, 0.5], "response_length/mean": [200.0, 210.0],
                  "actor/grad_norm": [1.0, 0.9], "eval/accuracy": [0.1, 0.3], "perf/mfu/actor": [0.3, 0.3],
                  }).to_csv(root / "history" / "a.csv", index=False)
    kept = {"run_id", "step", VAL, "actor/grad_norm", "eval/accuracy", "perf/mfu/actor"}
    assert set(_hist(build_snapshot(str(root)), "a").reset_index().columns) == kept
    params = tmp_path / "params"
    params.mkdir()
    (params / "p1.yaml").write_text((REPO / "params" / "p1.yaml").read_text().replace('"val-core/*/reward/mean@*"', '"val/test_score/*"'))
    snap = build_snapshot(str(root), params_dir=params)
    assert set(_hist(snap, "a").reset_index().columns) == kept | {"val/test_score/openai/gsm8k"}


def test_export_dir_without_name_column_is_a_clear_error(tmp_path):
    (tmp_path / "runs.csv").write_text("run_id,state\na,finished\n")
    with pytest.raises(DataSourceError, match="lacks column"):
        build_snapshot(str(tmp_path))


# (The W&B API source: tests/test_wandb_api.py, the real wandb client against a local endpoint.)


# --------------------------------------------------------------------------------------------
# Snapshot files: atomic write, hashes, read back, corrupt earlier snapshot
# --------------------------------------------------------------------------------------------
def test_snapshot_roundtrip_and_manifest(damaged_snapshot, damaged_corpus_dir, tmp_path):
    manifest = write_snapshot(damaged_snapshot, tmp_path)
    runs, history, read_manifest = read_snapshot(tmp_path)
    pd.testing.assert_frame_equal(runs, damaged_snapshot["runs"], check_dtype=False)
    pd.testing.assert_frame_equal(history, damaged_snapshot["history"])
    assert read_manifest == manifest
    assert (manifest["n_runs"], manifest["n_excluded"], manifest["n_history_rows"]) == (12, 9, len(history))
    assert manifest["source"] == str(damaged_corpus_dir) and manifest["created"].endswith("+00:00")
    assert set(manifest["files"]) == {"runs.parquet", "history.parquet", "excluded_runs.csv"}
    assert manifest["package_versions"]["pandas"] == pd.__version__
    excluded = read_excluded_runs(tmp_path)
    assert list(excluded.columns) == EXCLUDED_COLUMNS and len(excluded) == 9
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "excluded_runs.csv", "history.parquet", "manifest.json", "runs.parquet"]


def test_a_lazy_snapshot_reads_the_runs_and_columns_asked_for(damaged_snapshot, tmp_path):
    """open_snapshot(lazy=True): the same rows as the whole frame's, for any runs and columns,
    also across row groups (a history written in groups of 7 rows)."""
    snap = dict(damaged_snapshot)
    history = snap["history"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(snapshot_module, "HISTORY_ROW_GROUP", 7)
        write_snapshot(snap, tmp_path)
    _runs, store, _ = read_snapshot(tmp_path, lazy=True)
    assert store._file.num_row_groups == -(-len(history) // 7)
    assert len(store) == len(history) and store.columns == list(history.columns)
    pd.testing.assert_frame_equal(store.read(), history)
    ids = sorted(history["run_id"].unique())
    some = [ids[0], ids[-1], "not-a-run"]
    expected = history[history["run_id"].isin(some)][["run_id", "step", VAL]].reset_index(drop=True)
    pd.testing.assert_frame_equal(store.read(some, [VAL, "no/such/key"]), expected)
    none = store.read(["not-a-run"])
    assert len(none) == 0 and list(none.columns) == list(history.columns)
    assert none.dtypes.equals(history.dtypes)


def test_phase_runs_reads_one_phase_with_the_columns_asked_for(tmp_path):
    """A section's history: the phase's runs only; with columns, run_id, step, the metric and
    those columns; the same frame whether read lazily or cut from the whole history."""
    import cbs_helpers as ch

    out = tmp_path / "out"
    write_snapshot(build_snapshot(str(REPO / "data" / "demo"), params_dir=REPO / "params"), out)
    runs_all, history_all, _ = read_snapshot(out)
    _, store, _ = read_snapshot(out, lazy=True)
    params = ch.load_phase_params(REPO / "params", "p2b")
    for columns in (None, [], ["timing_s/step", "perf/time_per_step", "no/such/key"]):
        runs, eager, metric = ch.phase_runs(runs_all, history_all, params, columns=columns)
        _, lazy, lazy_metric = ch.phase_runs(runs_all, store, params, columns=columns)
        assert lazy_metric == metric and set(lazy["run_id"]) == set(runs["run_id"])
        pd.testing.assert_frame_equal(lazy, eager.reset_index(drop=True))
        if columns is not None:
            assert list(lazy.columns) == ["run_id", "step", metric, *[c for c in columns if c in history_all]]


def test_content_hash_is_deterministic(damaged_corpus_dir, damaged_snapshot):
    again = build_snapshot(str(damaged_corpus_dir))
    assert again["manifest"]["content_hash"] == damaged_snapshot["manifest"]["content_hash"]
    changed = dict(again, history=again["history"].iloc[1:])
    assert snapshot_content_hash(changed["runs"], changed["history"], changed["excluded"]) != again["manifest"]["content_hash"]


def _smaller_snapshot(snap: dict) -> dict:
    keep = snap["runs"]["run_id"].isin(["zz01", "aa02"])
    runs, history = snap["runs"][keep], snap["history"][snap["history"]["run_id"].isin(["zz01", "aa02"])]
    manifest = dict(snap["manifest"], content_hash=snapshot_content_hash(runs, history, snap["excluded"]))
    return {"runs": runs, "history": history, "excluded": snap["excluded"], "manifest": manifest}


def test_crash_in_parquet_writer_keeps_previous_snapshot(damaged_snapshot, tmp_path, monkeypatch):
    write_snapshot(damaged_snapshot, tmp_path)
    real = snapshot_module._write_parquet
    calls = []

    def failing_write(frame, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the history, after part of it is written
            real(frame.iloc[:3], handle)
            raise OSError("disk full")
        return real(frame, handle, *args, **kwargs)

    monkeypatch.setattr(snapshot_module, "_write_parquet", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(_smaller_snapshot(damaged_snapshot), tmp_path)
    runs, _history, manifest = read_snapshot(tmp_path)
    assert manifest["content_hash"] == damaged_snapshot["manifest"]["content_hash"] and len(runs) == 12
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]


def test_crash_between_renames_falls_back_to_previous_set(damaged_snapshot, tmp_path, monkeypatch, caplog):
    write_snapshot(damaged_snapshot, tmp_path)
    real_replace = os.replace
    replaced = []

    def crashing_replace(src, dst):
        if Path(dst).name in SNAPSHOT_FILES:
            replaced.append(Path(dst).name)
            if len(replaced) == 2:
                raise OSError("killed")
        return real_replace(src, dst)

    smaller = _smaller_snapshot(damaged_snapshot)
    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="killed"):
        write_snapshot(smaller, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    # runs.parquet is new, the rest old: the set is torn, the reader sees it and uses .prev
    with caplog.at_level("WARNING"):
        runs, history, manifest = read_snapshot(tmp_path)
    assert "torn or corrupt snapshot" in caplog.text
    assert manifest["content_hash"] == damaged_snapshot["manifest"]["content_hash"]
    assert len(runs) == 12 and history["run_id"].nunique() == 12
    write_snapshot(smaller, tmp_path)  # the next write repairs it
    runs, _history, manifest = read_snapshot(tmp_path)
    assert len(runs) == 2 and manifest["content_hash"] == smaller["manifest"]["content_hash"]
    assert not (tmp_path / "data" / ".prev").exists()


def test_read_snapshot_errors(damaged_snapshot, tmp_path):
    with pytest.raises(SnapshotMissingError, match="manifest.json missing"):
        read_snapshot(tmp_path)
    write_snapshot(damaged_snapshot, tmp_path)
    history = tmp_path / "data" / "history.parquet"
    history.write_bytes(history.read_bytes()[:-10])
    with pytest.raises(SnapshotError, match="history.parquet does not match manifest.json"):
        read_snapshot(tmp_path)
    (tmp_path / "data" / "manifest.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="manifest.json unreadable"):
        read_snapshot(tmp_path)


def test_corrupt_earlier_snapshot_is_ignored_with_a_warning(tmp_path, caplog, wandb_endpoint):
    server = wandb_endpoint([verl_run("r1")])
    out = tmp_path / "out"
    write_snapshot(build_snapshot("wandb:ent/proj", progress=False), out)
    (out / "data" / "runs.parquet").write_bytes(b"garbage")
    fetched = server.count("CbsRunHistory", "r1")
    with caplog.at_level("WARNING"):
        snap = build_snapshot("wandb:ent/proj", previous_dir=out, progress=False)
    assert "earlier snapshot ignored" in caplog.text
    assert snap["manifest"]["warnings"] and snap["manifest"]["n_reused"] == 0
    assert server.count("CbsRunHistory", "r1") == fetched + 1 and len(snap["runs"]) == 1


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def test_cli_snapshot_prints_one_summary_line(damaged_corpus_dir, tmp_path, capsys):
    assert main(["snapshot", "--source", str(damaged_corpus_dir), "--out", str(tmp_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.err == ""
    assert captured.out.startswith("snapshot: 12 runs in, 9 excluded, ")
    assert str(tmp_path / "data") in captured.out
    assert read_snapshot(tmp_path)[2]["n_runs"] == 12


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, wandb_endpoint):
    assert main(["snapshot", "--source", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: source not found") and err.count("\n") == 1

    server = wandb_endpoint([verl_run("r1")])
    server.fail(status=503)  # every request, every attempt of wandb-core
    assert main(["snapshot", "--source", "wandb:ent/proj", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_cli_in_a_subprocess_has_no_traceback(tmp_path):
    code = ("import sys; from cbs_rlvr.__main__ import main; sys.exit(main(['snapshot', '--source', sys.argv[1], "
            "'--out', sys.argv[2]]))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope"), str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: source not found") and result.stderr.count("\n") == 1
