"""The one form of a generated sweep, and everything that turns it into a source.

A sweep is any object with `runs` and `params` (generated.GeneratedSweep, trainer.PGSweep,
habits.habit_sweep's result): `runs` are raw runs in the data layer's source-independent form
(`run_id`, `name`, `config`, `state`, `rows` in log order as dicts with `_step`, `start_time`,
optional `tags` and `group`), `params` one params dict per phase. From it:
- `snapshot_frames(sweep)`: the snapshot tables in memory, through the real data layer;
- `write_export_dir(sweep, dest)`: an export directory (runs.csv + history/<run_id>.csv);
- `write_offline_runs(sweep, dest)`: real W&B offline runs through data/demo/make_demo.py's SDK
  writer (about a second per run; run it in a subprocess with a clean WANDB_* environment);
- `write_params(sweep, dest)`: params/<phase>.yaml files.
`run_id(text)`: an 8-character W&B-style run id derived from `text` (stable across processes).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path


def run_id(text: str) -> str:
    """8 base-36 characters from sha256(text): deterministic, W&B's id alphabet."""
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(chars[(digest // 36 ** i) % 36] for i in range(8))


def snapshot_frames(sweep) -> dict:
    """The snapshot tables (runs, history, excluded) of the sweep, through the real data layer."""
    from cbs_rlvr.data.runs import assemble_snapshot_frames, normalise_raw_run
    from cbs_rlvr.data.select import apply_phase_selection

    entries = []
    for r in sweep.runs:
        raw = {"source": f"generated:{r['run_id']}", "tags": r.get("tags") or [],
               **{k: r[k] for k in ("run_id", "name", "config", "state", "rows", "start_time")}}
        entries.append(normalise_raw_run(raw))
    # as build_snapshot does with the params: runs no phase selects go to excluded_runs
    return apply_phase_selection(assemble_snapshot_frames(entries), sweep.params)


def write_params(sweep, dest: Path) -> Path:
    import yaml

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for phase, p in sweep.params.items():
        body = {k: v for k, v in p.items() if not (k == "prefer_source" and v is None)}
        (dest / f"{phase}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return dest


def write_export_dir(sweep, dest: Path) -> Path:
    """runs.csv (config as a JSON column) + history/<run_id>.csv, as the README describes."""
    import csv

    import pandas as pd

    dest = Path(dest)
    (dest / "history").mkdir(parents=True, exist_ok=True)
    with (dest / "runs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run_id", "name", "state", "config", "start_time", "tags", "group"])
        for r in sweep.runs:
            writer.writerow([r["run_id"], r["name"], r["state"], json.dumps(r["config"]), r["start_time"],
                             json.dumps(r.get("tags") or []), r.get("group") or ""])
    for r in sweep.runs:
        frame = pd.DataFrame([{("step" if k == "_step" else k): ("NaN" if v is None else v)
                               for k, v in row.items()} for row in r["rows"]])
        frame.to_csv(dest / "history" / f"{r['run_id']}.csv", index=False)
    return dest


@dataclass(frozen=True)
class _Spec:
    """What make_demo.write_runs reads of a run spec."""
    name: str
    run_id: str
    start_time: float
    fails: bool
    dir_name: str
    tags: tuple = ()
    group: str | None = None


@dataclass
class _Sim:
    spec: _Spec
    rows: list
    config: dict


def write_offline_runs(sweep, dest: Path) -> list[Path]:
    """Real W&B offline runs (make_demo's SDK writer). Runs the SDK in this process: call it in
    a subprocess (`python tests/sweeps generated offline SEED DEST`). A run whose state is not
    finished exits with code 1 (the reader then calls it failed)."""
    from datetime import datetime, timezone

    from testkit import load_make_demo

    sims = []
    for r in sweep.runs:
        ts = datetime.fromtimestamp(r["start_time"], tz=timezone.utc).strftime("%Y%m%d_%H%M%S")
        spec = _Spec(r["name"], r["run_id"], r["start_time"], r["state"] != "finished",
                     f"offline-run-{ts}-{r['run_id']}", tuple(r.get("tags") or ()), r.get("group"))
        rows = [(int(row["_step"]), {k: (math.nan if v is None else v) for k, v in row.items()
                                     if k != "_step"}) for row in r["rows"]]
        sims.append(_Sim(spec, rows, r["config"]))
    return load_make_demo("make_demo_writer").write_runs(sims, Path(dest))


