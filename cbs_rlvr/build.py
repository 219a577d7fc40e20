"""The report build: which notebooks are stale, running them, their HTML, and the index page.

`python -m cbs_rlvr report` (what `make report` calls) does, in order:
  1. validates the params of the phases asked for: a bad file stops the build first, in one
     line naming the file and the key;
  2. brings the snapshot up to date. The source is read again only when its content changed:
     the fingerprint is the sha256 of every file under it, so an added, removed or edited run
     counts whatever its timestamps (`cp -p`, `rsync -a`); it is taken again after the read, and
     a source that changed meanwhile is read again. A W&B source is always asked
     (incrementally: unchanged runs are not fetched again);
  3. plans one job per (phase with runs, section) plus the cross-phase summary. Each job has a
     key: the hash of its notebook, its params, the snapshot's content, the package's code and
     the bootstrap size. A job runs when its key changed or a file it wrote (executed notebook,
     HTML, every table and figure its kernel opened for writing, each recorded with its sha256)
     is missing, truncated or changed: decided on content, never on file times;
  4. runs the stale jobs JOBS at a time, each through papermill's command line on the notebook
     converted from its .py (the reviewed source), and converts each to HTML when it is done;
  5. removes the outputs of phases the data or the params no longer have (not those of a phase
     whose params file is invalid: it is reported, and kept until fixed), writes the index.

The whole build holds OUT's lock (outlock.py): a second build on the same OUT waits for it; and
after each notebook the build checks that the snapshot is still the one it read. A full disk, an
OUT that cannot be written, a damaged state.json: one line each, never a traceback.
The build imports no analysis, and only the standard library at module level: a build with
nothing to do answers in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .errors import (
    DataLayerError,
    DataSourceError,
    SnapshotError,
    describe_error,
    describe_os_error,
    redact_secrets,
)
from .handrun import claim_output, release_output
from .manifest import remove_stale_temps, snapshot_data_dir, verify_snapshot_files
from .params import SECTIONS, SUMMARY_SECTION, ParamsError, load_phase_params, params_fingerprint
from .paths import NOTEBOOKS_DIR, PROJECT_DIR

STATE_FILE = ".build/state.json"
#: Reads of a directory source that changes while it is read, before the build gives up waiting
SOURCE_READS = 3
#: A rough cost per section (seconds on the demo): the longest jobs start first.
_EXPECTED_SECONDS = {"02_steps_to_target": 6.0, "04_two_axis": 5.0, "05_gradient_noise": 5.0,
                     "06_wall_clock": 4.0, "03_training_curves": 3.5, "01_load_runs": 3.0,
                     "08_plan": 8.0}


class BuildError(Exception):
    """A problem that stops the build before any notebook runs (params, source): one line."""


@dataclass
class Job:
    """One notebook to execute for one phase (phase "summary" for the cross-phase section)."""

    phase: str
    section: str
    key: str = ""
    needs: set = field(default_factory=set)  # jobs (phase/section) that must finish first

    @property
    def name(self) -> str:
        return f"{self.phase}/{self.section}"

    def target(self, out: Path) -> Path:
        return out / self.phase / f"{self.section}.ipynb"


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
             *sorted((PROJECT_DIR / "cbs_rlvr" / "templates").rglob("*.j2"))]
    for path in files:
        if path.is_file():
            hasher.update(path.relative_to(PROJECT_DIR).as_posix().encode() + b"\0")
            _sha256_file(path, hasher)
    return hasher.hexdigest()


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


# ---------------------------------------------------------------------------------------------
# 1. Params, 2. snapshot
# ---------------------------------------------------------------------------------------------
def load_params(params_dir: Path, phases: list[str] | None) -> tuple[dict[str, dict], list[str]]:
    """Validated params of the phases asked for (every params file when `phases` is None), and
    the one-line message of each file that is invalid (its path and key). Raises BuildError when
    there is nothing to build from: no params files, or an unknown phase asked for."""
    known = sorted(p.stem for p in params_dir.glob("*.yaml"))
    if not known:
        raise BuildError(f"no params files (*.yaml) in {params_dir}")
    wanted = list(known) if not phases else list(dict.fromkeys(phases))
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise BuildError(f"unknown phase(s) {', '.join(unknown)}: no {params_dir}/<phase>.yaml; "
                         f"known phases: {', '.join(known)}")
    params, errors = {}, []
    for phase in wanted:
        try:
            params[phase] = load_phase_params(params_dir, phase)
        except ParamsError as exc:
            errors.append(str(exc))
    return params, errors


def index_params(params_dir: Path) -> dict[str, dict | str]:
    """Every params file's validated params, or the one-line reason it is invalid."""
    found: dict[str, dict | str] = {}
    for path in sorted(params_dir.glob("*.yaml")):
        try:
            found[path.stem] = load_phase_params(params_dir, path.stem)
        except ParamsError as exc:
            found[path.stem] = str(exc)
    return found


def update_snapshot(source: str, out: Path, state: dict, params_dir: Path, workers: int = 8,
                    progress: bool | None = None) -> tuple[dict, dict[str, int], bool]:
    """(manifest, {phase: number of runs}, whether the snapshot's content changed).

    Reads the source only when its fingerprint, or that of the params files (they select each
    phase's runs), differs from the one the last build saw (or the snapshot on disk is not the
    one that build wrote); writes the snapshot only when its content changed. Raises DataLayerError with a one-line message when the source is unusable;
    the snapshot on disk is then left as it was."""
    fingerprint = source_fingerprint(source)
    selection = params_fingerprint(params_dir)
    try:
        manifest = verify_snapshot_files(snapshot_data_dir(out))
    except SnapshotError:
        manifest = None
    if (fingerprint is not None and manifest is not None and state.get("source") == str(source)
            and state.get("source_fingerprint") == fingerprint
            and state.get("params_fingerprint") == selection
            and state.get("content_hash") == manifest.get("content_hash")
            and isinstance(state.get("phases"), dict)):
        return manifest, state["phases"], False

    import logging

    from .errors import RedactingFormatter
    from .snapshot import _DATA_LOG, build_snapshot, snapshot_unchanged, write_snapshot

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("warning: %(message)s"))
    _DATA_LOG.addHandler(handler)
    try:
        options = {"max_workers": workers}
        if progress is not None:
            options["progress"] = progress
        for attempt in range(1, SOURCE_READS + 1):
            snapshot = build_snapshot(source, previous_dir=out, params_dir=params_dir, **options)
            # the files read are the files fingerprinted: a source changed during the read is read
            # again, else the next build would call a snapshot of data that no longer exist current
            after = source_fingerprint(source)
            if after == fingerprint:
                break
            if attempt == SOURCE_READS:
                print(f"warning: {source} kept changing while it was read ({SOURCE_READS} reads); "
                      "the snapshot is of the last read and the next build reads it again",
                      file=sys.stderr)
                after = None  # recorded as unknown: never matches, so the next build re-reads
            fingerprint = after
    finally:
        _DATA_LOG.removeHandler(handler)
    changed = not snapshot_unchanged(snapshot["manifest"], out)
    if changed:
        manifest = write_snapshot(snapshot, out)
    else:
        manifest = verify_snapshot_files(snapshot_data_dir(out))
    runs = snapshot["runs"]
    # a run may belong to several phases (params `select`): `phases` lists them, `;`-joined
    column = runs["phases"] if "phases" in runs.columns else runs["phase"]
    phases: dict[str, int] = {}
    for value in column.dropna().astype(str):
        for phase in filter(None, value.split(";")):
            phases[phase] = phases.get(phase, 0) + 1
    state.update({"source": str(source), "source_fingerprint": fingerprint,
                  "params_fingerprint": selection, "content_hash": manifest["content_hash"],
                  "phases": phases})
    return manifest, phases, changed


# ---------------------------------------------------------------------------------------------
# 3. Plan
# ---------------------------------------------------------------------------------------------
def plan_jobs(params: dict[str, dict], phases_with_runs: dict[str, int], params_dir: Path,
              content_hash: str, code: str, n_bootstrap: int) -> tuple[list[Job], list[str]]:
    """The jobs of the phases that have runs, in report order, and the phases skipped (no runs
    yet). The summary job is added by the caller: its key depends on the phases' results."""
    jobs, skipped = [], []
    for phase, p in params.items():
        if not phases_with_runs.get(phase):
            skipped.append(phase)
            continue
        joint = [q for q in p.get("two_axis_phases") or [] if q != phase]
        params_digest = [_file_digest(params_dir / f"{q}.yaml") for q in [phase, *joint]]
        for section in SECTIONS:
            if section not in p["sections"]:
                continue
            nb_digest = _file_digest(NOTEBOOKS_DIR / f"{section}.py")
            key = _job_key(nb_digest, params_digest, content_hash, code, int(n_bootstrap))
            jobs.append(Job(phase, section, key))
    return jobs, skipped


def summary_key(out: Path, phases: list[str], params_dir: Path, content_hash: str, code: str,
                n_bootstrap: int) -> str:
    """The summary's key: its notebook, every phase's params and fitted table, the code."""
    fits = {p: _file_digest(out / p / "tables" / "cbs_fit.csv") for p in sorted(phases)}
    params_digest = {p.stem: _file_digest(p) for p in sorted(params_dir.glob("*.yaml"))}
    return _job_key(_file_digest(NOTEBOOKS_DIR / f"{SUMMARY_SECTION}.py"), params_digest, fits,
                    content_hash, code, int(n_bootstrap))


def is_current(job: Job, out: Path, state: dict) -> bool:
    """The job's key is the one its outputs were built with, and every file it wrote is there
    with the content it wrote (damaged_output)."""
    return (state.get("keys", {}).get(job.name) == job.key
            and damaged_output(job, out, state) is None)


# ---------------------------------------------------------------------------------------------
# Outputs verified, not assumed: the sha256 of every file a job wrote (OUT/.build/state.json)
# ---------------------------------------------------------------------------------------------
def damaged_output(job: Job, out: Path, state: dict) -> str | None:
    """None when every file the job's last run wrote is there with the content it wrote; else
    one line naming the first file that is missing, truncated or changed."""
    record = state.get("outputs", {}).get(job.name)
    if not isinstance(record, dict) or not record:
        return f"{job.name} has no record of its outputs"
    for rel in (_rel(out, job.target(out)), _rel(out, job.target(out).with_suffix(".html"))):
        if rel not in record:
            return f"{rel} is not recorded"
    for rel, expected in sorted(record.items()):
        path = out / rel
        try:
            size = path.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != expected.get("bytes"):
            what = "truncated" if size < expected.get("bytes", 0) else "changed"
            return f"{rel} was {what} ({size} bytes, written with {expected.get('bytes')})"
        if _sha256_file(path).hexdigest() != expected.get("sha256"):
            return f"{rel} was changed since the build wrote it"
    return None


def _rel(out: Path, path: Path) -> str:
    return path.relative_to(out).as_posix()


def _job_outputs(job: Job, out: Path, written: list[str] | None) -> list[Path]:
    """The report products of a job: its executed notebook and HTML, and every file under OUT
    its kernel wrote (the audit hook of execute.py), except the snapshot and the build's own."""
    files = {job.target(out), job.target(out).with_suffix(".html")}
    for name in written or []:
        path = Path(name)
        try:
            parts = path.relative_to(out).parts
        except ValueError:
            continue
        if parts and parts[0] not in ("data", ".build") and not any(p.startswith(".") for p in parts):
            if path.is_file():
                files.add(path)
    return sorted(files)


def record_outputs(job: Job, out: Path, state: dict, written: list[str] | None) -> None:
    """Record the sha256 and size of every file the job wrote. A file belongs to the job that
    wrote it last; files of its previous run it did not rewrite now (unchanged) stay recorded
    while they still hold what was recorded."""
    outputs = state.setdefault("outputs", {})
    record = {}
    for path in _job_outputs(job, out, written):
        data = path.read_bytes()
        record[_rel(out, path)] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    for rel, expected in (outputs.get(job.name) or {}).items():
        path = out / rel
        if rel not in record and path.is_file() and _file_digest(path) == expected.get("sha256"):
            record[rel] = expected
    for name, other in outputs.items():
        if name != job.name and isinstance(other, dict):
            for rel in record:
                other.pop(rel, None)
    outputs[job.name] = record


# ---------------------------------------------------------------------------------------------
# 4. Execute
# ---------------------------------------------------------------------------------------------
def _report_damage(job: Job, out: Path, state: dict) -> bool:
    """is_current, saying in one line why a job whose inputs did not change runs again."""
    if state.get("keys", {}).get(job.name) != job.key:
        return False
    damage = damaged_output(job, out, state)
    if damage and not damage.endswith("has no record of its outputs"):
        print(f"rebuild: {job.name}: {damage}", flush=True)
    return damage is None


def _as_param(path: Path) -> str:
    """A path as a notebook parameter: relative to the project when inside it (executed
    notebooks then carry no home directory), else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(PROJECT_DIR).as_posix()
    except ValueError:
        return str(path)


def convert_source_notebooks(sections: set[str], dest: Path) -> dict[str, tuple[Path, set[str]]]:
    """Each section's .py (the reviewed source) as an .ipynb for papermill, with the names its
    parameters cell defines (only those are passed)."""
    import jupytext

    dest.mkdir(parents=True, exist_ok=True)
    converted = {}
    for section in sorted(sections):
        nb = jupytext.read(NOTEBOOKS_DIR / f"{section}.py")
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        names = set()
        for cell in nb.cells:
            if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
                names |= parameter_names(cell.source)
        path = dest / f"{section}.ipynb"
        jupytext.write(nb, path, fmt="ipynb")
        converted[section] = (path, names)
    return converted


def parameter_names(source: str) -> set[str]:
    """The names a parameters cell assigns, annotated (`n_bootstrap: int = 1000`) or not."""
    import ast

    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def run_notebook(job: Job, source_nb: Path, names: set[str], out: Path, params_dir: Path,
                 source: str, n_bootstrap: int, timeout: int = 1800) -> tuple[bool, float, object]:
    """Execute one job through papermill (execute.py: this job slot's warm kernel). (ok,
    seconds, the files it wrote | message); on failure the partial notebook is kept as <section>.failed.ipynb, the
    one-line message written to <section>.error.txt and returned."""
    from .execute import execute, partial_path, written_files

    target = job.target(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.with_suffix("")
    values = {"phase": job.phase, "out_dir": _as_param(out), "params_dir": _as_param(params_dir),
              "source": source if str(source).startswith("wandb:") else _as_param(Path(source)),
              "n_bootstrap": int(n_bootstrap)}
    t0 = time.perf_counter()
    error = execute(source_nb, target, {k: v for k, v in values.items() if k in names}, timeout)
    seconds = time.perf_counter() - t0
    if error is None:
        for stale in (stem.with_name(stem.name + ".failed.ipynb"),
                      stem.with_name(stem.name + ".error.txt")):
            stale.unlink(missing_ok=True)
        return True, seconds, written_files()
    return False, seconds, record_notebook_failure(target, f"notebooks/{job.section}.py", job.phase,
                                                   partial_path(target), error)


def record_notebook_failure(target: Path, notebook: str, phase: str, partial: Path,
                            error: str = "") -> str:
    """After a failed execution: keep the partial notebook as <stem>.failed.ipynb, remove the
    stale executed notebook and HTML, write the one-line message to <stem>.error.txt (the index
    shows it) and return it. The message names the notebook, the phase and the cell, and carries
    the error's last line, not a traceback."""
    from .execute import failed_cell

    stem = target.with_suffix("")
    where, cell_error = failed_cell(partial) if partial.is_file() else ("", "")
    if partial.is_file():
        os.replace(partial, stem.with_name(stem.name + ".failed.ipynb"))
    msg = f"FAILED: {notebook} [phase {phase}]{where}: {cell_error or error or 'the kernel stopped'}"
    for stale in (target, target.with_suffix(".html")):
        stale.unlink(missing_ok=True)
    stem.with_name(stem.name + ".error.txt").write_text(redact_secrets(msg) + "\n")
    return redact_secrets(msg)


# ---------------------------------------------------------------------------------------------
# 5. Leftovers
# ---------------------------------------------------------------------------------------------
def remove_what_killed_builds_left(out: Path) -> None:
    """Under OUT's lock no other build is writing, so what a killed one left half-done goes:
    its kernels and their connection files, temporary HTML and state files, partial notebooks,
    and the snapshot's temporary files whose writer is gone (outputs it did not finish are
    not recorded, so their jobs run again)."""
    kernels = out / ".build" / "kernels"
    if kernels.is_dir() and any(kernels.glob("kernel-*.json")):
        from .execute import remove_stale_kernels

        remove_stale_kernels(kernels)
    for pattern in ("*.html.tmp", "*/*.html.tmp", "*/.*.partial.ipynb", ".build/*.tmp"):
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)
    if (out / "data").is_dir():
        remove_stale_temps(out / "data")


def remove_leftovers(out: Path, keep: dict[str, set[str]]) -> list[str]:
    """Remove the report products (executed notebooks, HTML, error files, figures, tables) of
    phases and sections not in `keep` ({phase: sections}); other files are left alone."""
    removed = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name == "data":
            continue
        products = list(folder.glob("[0-9][0-9]_*"))
        if not products and not (folder / "tables").is_dir():
            continue  # not ours
        if folder.name not in keep:
            shutil.rmtree(folder)
            removed.append(folder.name)
            continue
        for path in products:
            if path.name.split(".", 1)[0] not in keep[folder.name]:
                path.unlink()
                removed.append(f"{folder.name}/{path.name}")
    return removed


# ---------------------------------------------------------------------------------------------
# The whole build
# ---------------------------------------------------------------------------------------------
def report(source: str, out: str | Path, params_dir: str | Path, phases: list[str] | None = None,
           jobs: int = 2, n_bootstrap: int = 1000, workers: int = 8,
           progress: bool | None = None, wait: bool = True) -> int:
    """Build every report of OUT from SOURCE. Prints one line per notebook run; returns 0 when
    everything built, 1 when a notebook failed (its FAILED line names notebook, phase and cell)
    or, with wait=False, when another build is writing OUT (or the snapshot was replaced under
    this build), 2 when a params file is invalid (reported first, whichever phases are asked
    for; the other phases still build), the source is unusable (nothing is changed) or OUT
    cannot be written (a full disk, a file in the way). One build writes OUT at a time
    (outlock.py): a second one waits for it."""
    from .outlock import OutputBusyError, OutputLock, OutputLockError

    t_start = time.perf_counter()
    out, params_dir = Path(out).resolve(), Path(params_dir).resolve()
    try:
        params, params_errors = load_params(params_dir, phases)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # every params file is read (the snapshot selects each phase's runs with all of them): each
    # invalid one is said, those asked for first; the others' reports are kept as they are
    params_errors += [m for p, m in index_params(params_dir).items()
                      if isinstance(m, str) and p not in params and m not in params_errors]
    for message in params_errors:  # first, before anything else: the rest still builds
        print(f"error: {message}", file=sys.stderr, flush=True)
    if not params:
        return 2
    try:
        with OutputLock(out, wait=wait):
            return _report_locked(source, out, params_dir, params, params_errors, jobs,
                                  n_bootstrap, workers, progress, t_start)
    except OutputBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OutputLockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only OUT: one line, what is done stays done
        print(f"error: {describe_os_error(exc)}; finished reports are kept, the rest rebuild "
              "next time", file=sys.stderr)
        return 2


def _snapshot_moved(out: Path, manifest: dict) -> bool:
    """Whether OUT's snapshot is no longer the one this build read (its manifest's content hash
    changed): read from manifest.json alone, cheap enough after every notebook."""
    try:
        current = json.loads((snapshot_data_dir(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return True
    return not isinstance(current, dict) or current.get("content_hash") != manifest.get("content_hash")


def _report_locked(source: str, out: Path, params_dir: Path, params: dict, params_errors: list,
                   jobs: int, n_bootstrap: int, workers: int, progress: bool | None,
                   t_start: float) -> int:
    """The build, under OUT's lock."""
    from .report_html import convert_notebook, write_index

    state = read_state(out)
    remove_what_killed_builds_left(out)
    try:
        manifest, with_runs, data_changed = update_snapshot(source, out, state, params_dir, workers,
                                                             progress)
    except DataLayerError as exc:
        print(f"error: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    except OSError:
        raise  # a full disk or a read-only OUT: said in one line by report()
    except Exception as exc:  # noqa: BLE001 -- a bug: still one line unless CBS_DEBUG is set
        if os.environ.get("CBS_DEBUG"):
            raise
        print(f"error: unexpected {describe_error(exc)} (set CBS_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 2
    if data_changed:
        print(f"snapshot: {manifest['n_runs']} runs, {manifest['n_excluded']} excluded, from "
              f"{manifest['source']}")
    code = code_digest()
    planned, skipped = plan_jobs(params, with_runs, params_dir, manifest["content_hash"], code,
                                 n_bootstrap)
    for phase in skipped:
        print(f"skip: phase {phase} has no runs yet")
    fitted = [p for p in params if with_runs.get(p) and "02_steps_to_target" in params[p]["sections"]]
    # phases asked for now, plus those of earlier builds whose results still hold
    all_params = index_params(params_dir)
    keep = {j.phase: set() for j in planned}
    for j in planned:
        keep[j.phase].add(j.section)
    for phase, p in all_params.items():
        if phase not in keep and isinstance(p, dict) and with_runs.get(phase) and (out / phase).is_dir():
            keep[phase] = set(p["sections"])
        elif isinstance(p, str) and (out / phase).is_dir():
            # an invalid params file (said above): its phase's reports stay until it is fixed
            keep[phase] = {f.name.split(".", 1)[0] for f in (out / phase).glob("[0-9][0-9]_*")}
    summary = None
    if fitted or any("02_steps_to_target" in s for s in keep.values()):
        summary = Job("summary", SUMMARY_SECTION,
                      needs={j.name for j in planned if j.section == "02_steps_to_target"})
        keep["summary"] = {SUMMARY_SECTION}
    removed = remove_leftovers(out, keep)
    if removed:
        print(f"removed outputs the data or params no longer have: {', '.join(removed)}")

    keys = state.setdefault("keys", {})
    for record in (keys, state.setdefault("outputs", {})):
        for name in list(record):
            if name.split("/", 1)[0] not in keep:
                del record[name]
    # phases kept from earlier builds (not asked for now) are rebuilt when their outputs are
    # damaged: the summary reads their fits
    asked = {j.phase for j in planned}
    for phase in sorted(set(keep) - asked - {"summary"}):
        if isinstance(all_params[phase], str):
            continue  # an invalid params file: nothing of it is run until it is fixed
        extra, _ = plan_jobs({phase: all_params[phase]}, with_runs, params_dir,
                             manifest["content_hash"], code, n_bootstrap)
        if any(keys.get(j.name) == j.key and damaged_output(j, out, state) for j in extra):
            planned.extend(extra)
            if summary is not None:
                summary.needs |= {j.name for j in extra if j.section == "02_steps_to_target"}
    durations = state.setdefault("seconds", {})
    pending = [j for j in planned if not _report_damage(j, out, state)]
    pending = sorted(pending, key=lambda j: -durations.get(j.name, _EXPECTED_SECONDS.get(j.section, 3.0)))
    fit_phases = sorted(p for p, s in keep.items() if "02_steps_to_target" in s)
    n_run, failures, moved = 0, [], False
    converted: dict | None = None
    running: dict[Future, Job] = {}
    # the summary reads every phase's params: while one is invalid (said above) it stays as it is
    waiting_summary = summary is not None and not any(isinstance(p, str) for p in all_params.values())
    if removed or data_changed:
        state.pop("index_sha256", None)  # a build killed before the index is written rewrites it
        write_state(out, state)
    if pending or waiting_summary:
        from .execute import kernel_environment

        kernel_environment(out / ".build" / "kernels")
        claim_output(out)  # the kernels' proof that they are this build (handrun.py)
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            while pending or running or waiting_summary:
                unfinished = {j.name for j in pending} | {j.name for j in running.values()}
                if waiting_summary and not (summary.needs & unfinished):
                    # the fits it reads are final now: key it, and run it unless it is current
                    waiting_summary = False
                    summary.key = summary_key(out, fit_phases, params_dir, manifest["content_hash"],
                                              code, n_bootstrap)
                    if not _report_damage(summary, out, state):
                        pending.append(summary)
                while pending and len(running) < max(1, int(jobs)):
                    job = pending.pop(0)
                    if converted is None:
                        sections = {j.section for j in pending} | {job.section, SUMMARY_SECTION}
                        converted = convert_source_notebooks(sections, out / ".build" / "notebooks")
                    nb_path, names = converted[job.section]
                    running[pool.submit(run_notebook, job, nb_path, names, out, params_dir, source,
                                        n_bootstrap)] = job
                if not running:
                    continue  # only the summary was waiting; it is keyed (or queued) above
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    ok, seconds, message = future.result()
                    n_run += 1
                    durations[job.name] = round(seconds, 2)
                    if ok and _snapshot_moved(out, manifest):
                        moved = True  # its outputs may be of another snapshot: not recorded
                        keys.pop(job.name, None)
                        state.setdefault("outputs", {}).pop(job.name, None)
                    elif ok:
                        convert_notebook(job.target(out), job.target(out).with_suffix(".html"))
                        keys[job.name] = job.key
                        record_outputs(job, out, state, message)
                        print(f"ok: {job.name} ({seconds:.1f} s)", flush=True)
                    else:
                        keys.pop(job.name, None)
                        state.setdefault("outputs", {}).pop(job.name, None)
                        failures.append(message)
                        print(message, file=sys.stderr, flush=True)
                    state.pop("index_sha256", None)  # the index is to be rewritten
                    write_state(out, state)  # a build killed later keeps what is done
    finally:  # the kernels kept warm between notebooks (execute.py), and the build's token
        if "cbs_rlvr.execute" in sys.modules:
            sys.modules["cbs_rlvr.execute"].shutdown_kernels()
        release_output(out)
    if moved or _snapshot_moved(out, manifest):
        # another writer replaced the snapshot under this build (its lock was defeated): nothing
        # this build made is recorded as current, so the next build redoes it from what is there
        for name in {j.name for j in planned} | ({summary.name} if summary else set()):
            keys.pop(name, None)
        for name in ("content_hash", "index_sha256", "source_fingerprint"):
            state.pop(name, None)
        write_state(out, state)
        print(f"error: the snapshot in {out / 'data'} was replaced while this build ran (another "
              "writer?); nothing built is recorded as current: run the build again", file=sys.stderr)
        return 1
    index = out / "index.html"
    index_params_digest = _job_key({p: v if isinstance(v, str) else [v["title"], v["sections"]]
                                    for p, v in all_params.items()})
    if (n_run or removed or data_changed
            or state.get("index_params") != index_params_digest  # a params file became (in)valid
            or state.get("index_sha256") != _file_digest(index)):  # missing or hand-edited
        write_index(out, all_params, with_runs, manifest)
        state["index_sha256"] = _file_digest(index)
        state["index_params"] = index_params_digest
    write_state(out, state)
    elapsed = time.perf_counter() - t_start
    n_current = len(planned) + (summary is not None) - n_run
    print(f"report: {n_run} notebook(s) run, {n_current} up to date, {len(failures)} failed "
          f"in {elapsed:.1f} s; index at {out / 'index.html'}")
    if params_errors:
        print(f"error: {len(params_errors)} params file(s) invalid (above); their phases were "
              "not built", file=sys.stderr)
        return 2
    return 1 if failures else 0
