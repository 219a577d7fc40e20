"""What the build keeps between runs: the fingerprints of the source and the code, the keys of
the jobs, and OUT/.build/state.json (read back whatever a killed build or a hand left there:
a damaged file is one warning and a rebuild of what it recorded)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from ..errors import (
    DataSourceError,
)
from ..paths import PROJECT_DIR

STATE_FILE = ".build/state.json"


# ---------------------------------------------------------------------------------------------
# Fingerprints and keys
# ---------------------------------------------------------------------------------------------
def _sha256_file(path: Path, hasher=None):
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher


def source_fingerprint(source: str) -> str | None:
    """sha256 over the relative path and content of every file under a directory source (None
    for a W&B source, which has no files to look at). Timestamps play no part."""
    if str(source).startswith("wandb:"):
        return None
    root = Path(source).expanduser()
    if root.is_file():
        root = root.parent  # runs.csv given: the export directory
    if not root.is_dir():
        raise DataSourceError(f"source not found: {source} (expected an offline-runs directory, "
                              "an export directory with runs.csv, or wandb:<entity>/<project>)")
    hasher = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
            try:
                _sha256_file(path, hasher)
            except OSError as exc:  # unreadable: the snapshot step reports it per run
                hasher.update(f"unreadable:{exc.errno}".encode())
            hasher.update(b"\0")
    return "sha256:" + hasher.hexdigest()


def code_digest() -> str:
    """sha256 of the code every report depends on: cbs_helpers.py and the cbs_rlvr package."""
    hasher = hashlib.sha256()
    files = [PROJECT_DIR / "cbs_helpers.py", *sorted((PROJECT_DIR / "cbs_rlvr").rglob("*.py")),
             *sorted((PROJECT_DIR / "cbs_rlvr").rglob("*.j2"))]
    for path in files:
        if path.is_file():
            hasher.update(path.relative_to(PROJECT_DIR).as_posix().encode() + b"\0")
            _sha256_file(path, hasher)
    return hasher.hexdigest()


def phase_members(runs):
    """Per run, the phases it belongs to: a run may be in several (params `select`), listed
    `;`-joined in the snapshot's `phases` column (`phase` in older snapshots)."""
    column = runs["phases"] if "phases" in runs.columns else runs["phase"]
    return column.fillna("").astype(str).str.split(";").map(lambda ps: [p for p in ps if p])


def phase_data_hashes(runs, history, excluded, manifest: dict) -> dict[str, str]:
    """sha256 per phase of what its notebooks read of the snapshot: its runs' rows and their
    history, with what every phase shows of the whole (the source, the counts, the excluded runs:
    01_load_runs). A run that logged more changes only its phases' hashes, so a live sweep's
    build reruns the phases whose runs ran, not every phase (a job's key holds these, not the
    snapshot's content hash)."""
    from ..sources.snapshot import snapshot_content_hash

    members = phase_members(runs)
    whole = json.dumps([manifest.get(k) for k in ("source", "n_runs", "n_excluded")], default=str)
    out = {}
    for phase in sorted({p for ps in members for p in ps}):
        mine = runs[members.map(lambda ps, p=phase: p in ps)]
        hist = history[history["run_id"].isin(mine["run_id"])]
        out[phase] = _job_key(whole, snapshot_content_hash(mine, hist, excluded))
    return out


def _job_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    return _sha256_file(path).hexdigest() if path.is_file() else "missing"


# ---------------------------------------------------------------------------------------------
# State kept between builds (OUT/.build/state.json)
# ---------------------------------------------------------------------------------------------
def _is_map(value: object, check=lambda v: True) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def _is_record(value: object) -> bool:
    """One job's outputs: {relative path: {"sha256": str, "bytes": int}}."""
    return _is_map(value, lambda v: isinstance(v, dict) and isinstance(v.get("sha256"), str)
                   and isinstance(v.get("bytes"), int) and not isinstance(v.get("bytes"), bool))


#: What state.json holds, and what each entry must look like; an entry that does not (a file
#: edited by hand, another version's) is dropped, and what it recorded is rebuilt.
_STATE_FIELDS = {
    "keys": lambda v: _is_map(v, lambda x: isinstance(x, str)),
    "outputs": lambda v: _is_map(v, _is_record),
    "seconds": lambda v: _is_map(v, lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)),
    "phases": lambda v: _is_map(v, lambda x: isinstance(x, int) and not isinstance(x, bool)),
    "source": lambda v: isinstance(v, str),
    "source_fingerprint": lambda v: v is None or isinstance(v, str),
    "params_fingerprint": lambda v: isinstance(v, str),
    "content_hash": lambda v: isinstance(v, str),
    "phase_hashes": lambda v: _is_map(v, lambda x: isinstance(x, str)),
    "index_sha256": lambda v: isinstance(v, str),
    "index_params": lambda v: isinstance(v, str),
}


def read_state(out: Path) -> dict:
    """OUT/.build/state.json as the last build left it; entries of the wrong shape are dropped,
    with one warning line (their jobs rebuild), never a traceback."""
    path = out / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        print(f"warning: {path} unreadable ({type(exc).__name__}); rebuilding what it recorded",
              file=sys.stderr)
        return {}
    if not isinstance(state, dict):
        print(f"warning: {path} is not a JSON object; rebuilding what it recorded", file=sys.stderr)
        return {}
    bad = sorted(k for k, ok in _STATE_FIELDS.items() if k in state and not ok(state[k]))
    if bad:
        print(f"warning: {path} has entries of the wrong type ({', '.join(bad)}); rebuilding what "
              "they recorded", file=sys.stderr)
    return {k: v for k, v in state.items() if k in _STATE_FIELDS and k not in bad}


def write_state(out: Path, state: dict) -> None:
    """Write the state when it changed (a build with nothing to do rewrites no file)."""
    path = out / STATE_FILE
    text = json.dumps(state, indent=1, sort_keys=True) + "\n"
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


