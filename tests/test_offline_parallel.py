"""The offline reader on every core: runs decoded in worker processes give the same snapshot,
byte for byte, as decoding them in one process (real W&B offline files: the demo sweep, a
resumed copy, damaged and stray files)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cbs_rlvr.errors import WandbFileError
from cbs_rlvr.sources import wandb_file
from cbs_rlvr.sources.snapshot import build_snapshot, write_snapshot
from cbs_rlvr.sources.wandb_file import decode_workers, find_wandb_files, load_offline_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The demo's offline runs plus what a cluster filesystem leaves: an empty file, a file that
    is not a W&B file, a cut copy of a run (a second segment of its id) and a stray note."""
    root = tmp_path_factory.mktemp("parallel") / "runs"
    shutil.copytree(REPO / "data" / "demo" / "wandb", root, symlinks=True)
    files = find_wandb_files(root)
    assert len(files) >= 40
    bad = root / "damaged"
    bad.mkdir()
    (bad / "run-empty.wandb").write_bytes(b"")
    (bad / "run-zip.wandb").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    data = files[3].read_bytes()
    (bad / "offline-run-20260101_000000-cut").mkdir()
    (bad / "offline-run-20260101_000000-cut" / files[3].name).write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not a run\n")
    return root


def _hashes(out: Path) -> dict:
    return {name: hashlib.sha256((out / "data" / name).read_bytes()).hexdigest()
            for name in ("runs.parquet", "history.parquet", "excluded_runs.csv")}


def test_parallel_and_serial_decoding_give_the_same_snapshot_bytes(corpus, tmp_path, monkeypatch):
    serial = load_offline_runs(corpus, workers=1)
    parallel = load_offline_runs(corpus, workers=2)
    for name in ("runs", "history", "excluded"):
        pd.testing.assert_frame_equal(parallel[name], serial[name])
    assert len(serial["excluded"]) == 2 and serial["runs"]["flags"].str.contains("segments:2").sum() == 1
    hashes = {}
    for workers in ("1", "2", "3"):
        monkeypatch.setenv("CBS_DECODE_WORKERS", workers)
        out = tmp_path / workers
        manifest = write_snapshot(build_snapshot(str(corpus)), out)
        hashes[workers] = (_hashes(out), manifest["content_hash"])
    assert hashes["1"] == hashes["2"] == hashes["3"]


def test_parallel_decoding_happens_in_worker_processes(corpus, monkeypatch):
    """With 2 workers no run is normalised in this process (a spy here sees none); with 1 all are."""
    calls = []
    real = wandb_file.normalise_raw_run
    monkeypatch.setattr(wandb_file, "normalise_raw_run", lambda raw, *a: calls.append(raw["run_id"]) or real(raw, *a))
    n_runs = len(load_offline_runs(corpus, workers=2)["runs"])
    assert n_runs > 40 and calls == []
    load_offline_runs(corpus, workers=1)
    assert len(calls) >= n_runs


def test_a_process_with_threads_decodes_through_a_fork_server(corpus, monkeypatch):
    """A caller running other threads (a build driver, a progress bar) does not fork itself:
    the workers come from a fork server, with the same frames."""
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 3)
    serial = load_offline_runs(corpus, workers=1)
    served = load_offline_runs(corpus, workers=2)
    for name in ("runs", "history", "excluded"):
        pd.testing.assert_frame_equal(served[name], serial[name])


def test_how_many_workers(tmp_path):
    small = tmp_path / "small.wandb"
    small.write_bytes(b"x" * 1000)
    assert decode_workers([small], {}) == 1  # a small sweep: one process, no start-up cost
    big = tmp_path / "big.wandb"
    big.write_bytes(b"x" * (wandb_file.PARALLEL_MIN_BYTES + 1))
    assert decode_workers([big], {}) == len(os.sched_getaffinity(0))
    assert decode_workers([big], {"CBS_DECODE_WORKERS": "1"}) == 1
    assert decode_workers([small], {"CBS_DECODE_WORKERS": "3"}) == 3
    with pytest.raises(WandbFileError, match="CBS_DECODE_WORKERS='many': expected a number of processes"):
        decode_workers([small], {"CBS_DECODE_WORKERS": "many"})

