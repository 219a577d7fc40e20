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

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    DataLayerError,
    SnapshotError,
    describe_error,
    redact_secrets,
)
from ..params import SECTIONS, SUMMARY_SECTION, ParamsError, load_phase_params, params_fingerprint
from ..sources.manifest import snapshot_data_dir, verify_snapshot_files
from .handrun import claim_output, release_output
from .jobs import (
    Job,
    _job_outputs,
    _report_damage,
    convert_source_notebooks,
    damaged_output,
    plan_jobs,
    record_outputs,
    remove_leftovers,
    remove_what_killed_builds_left,
    run_notebook,
    summary_key,
)
from .state import (
    _file_digest,
    _job_key,
    code_digest,
    phase_data_hashes,
    phase_members,
    read_state,
    source_fingerprint,
    write_state,
)

#: Reads of a directory source that changes while it is read, before the build gives up waiting
SOURCE_READS = 3
#: A rough cost per section (seconds on the demo): the longest jobs start first.
_EXPECTED_SECONDS = {"02_steps_to_target": 6.0, "04_two_axis": 5.0, "05_gradient_noise": 5.0,
                     "06_wall_clock": 4.0, "03_training_curves": 3.5, "01_load_runs": 3.0,
                     "08_plan": 8.0}


class BuildError(Exception):
    """A problem that stops the build before any notebook runs (params, source): one line."""


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

    from ..errors import RedactingFormatter
    from ..sources.snapshot import _DATA_LOG, build_snapshot, snapshot_unchanged, write_snapshot

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
    phases: dict[str, int] = {}
    for member_of in phase_members(runs):
        for phase in member_of:
            phases[phase] = phases.get(phase, 0) + 1
    state.update({"source": str(source), "source_fingerprint": fingerprint,
                  "params_fingerprint": selection, "content_hash": manifest["content_hash"],
                  "phases": phases, "phase_hashes": phase_data_hashes(runs, snapshot["history"],
                                                                      snapshot["excluded"], manifest)})
    return manifest, phases, changed


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
    from .outlock import under_lock

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
    return under_lock(out, wait, lambda: _report_locked(source, out, params_dir, params, params_errors, jobs,
                                                        n_bootstrap, workers, progress, t_start),
                      "finished reports are kept, the rest rebuild next time")


def _snapshot_moved(out: Path, manifest: dict) -> bool:
    """Whether OUT's snapshot is no longer the one this build read (its manifest's content hash
    changed): read from manifest.json alone, cheap enough after every notebook."""
    try:
        current = json.loads((snapshot_data_dir(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return True
    return not isinstance(current, dict) or current.get("content_hash") != manifest.get("content_hash")


@dataclass
class _Build:
    """What one build under OUT's lock works with and keeps track of."""
    source: str
    out: Path
    params_dir: Path
    n_bootstrap: int
    state: dict
    manifest: dict = field(default_factory=dict)
    with_runs: dict = field(default_factory=dict)
    code: str = ""
    planned: list = field(default_factory=list)
    summary: Job | None = None
    keep: dict = field(default_factory=dict)
    all_params: dict = field(default_factory=dict)
    n_run: int = 0
    failures: list = field(default_factory=list)
    moved: bool = False

    @property
    def keys(self) -> dict:
        return self.state.setdefault("keys", {})

    def forget(self, name: str) -> None:
        """A job's outputs are not current (failed, or of another snapshot)."""
        self.keys.pop(name, None)
        self.state.setdefault("outputs", {}).pop(name, None)


def _report_locked(source: str, out: Path, params_dir: Path, params: dict, params_errors: list,
                   jobs: int, n_bootstrap: int, workers: int, progress: bool | None,
                   t_start: float) -> int:
    """The build, under OUT's lock: the snapshot, the jobs, their run, the index."""
    b = _Build(source, out, params_dir, n_bootstrap, read_state(out))
    remove_what_killed_builds_left(out)
    try:
        b.manifest, b.with_runs, data_changed = update_snapshot(source, out, b.state, params_dir, workers,
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
        print(f"snapshot: {b.manifest['n_runs']} runs, {b.manifest['n_excluded']} excluded, from "
              f"{b.manifest['source']}")
    b.code = code_digest()
    b.planned, skipped = plan_jobs(params, b.with_runs, params_dir,
                                   b.state.get("phase_hashes") or b.manifest["content_hash"], b.code, n_bootstrap)
    for phase in skipped:
        print(f"skip: phase {phase} has no runs yet")
    removed = _what_to_keep(b, params)
    if removed or data_changed:
        b.state.pop("index_sha256", None)  # a build killed before the index is written rewrites it
        write_state(out, b.state)
    _run_jobs(b, jobs)
    if b.moved or _snapshot_moved(out, b.manifest):
        return _snapshot_replaced(b)
    _write_index(b, bool(b.n_run or removed or data_changed))
    elapsed = time.perf_counter() - t_start
    n_current = len(b.planned) + (b.summary is not None) - b.n_run
    print(f"report: {b.n_run} notebook(s) run, {n_current} up to date, {len(b.failures)} failed "
          f"in {elapsed:.1f} s; index at {out / 'index.html'}")
    if params_errors:
        print(f"error: {len(params_errors)} params file(s) invalid (above); their phases were "
              "not built", file=sys.stderr)
        return 2
    return 1 if b.failures else 0


def _what_to_keep(b: _Build, params: dict) -> list[str]:
    """The phases and sections whose outputs stay (asked for now, or of earlier builds whose
    results still hold), the summary job, the jobs of kept phases whose outputs are damaged;
    removes the rest and returns what it removed."""
    fitted = [p for p in params if b.with_runs.get(p) and "02_steps_to_target" in params[p]["sections"]]
    b.all_params = index_params(b.params_dir)
    keep = {j.phase: set() for j in b.planned}
    for j in b.planned:
        keep[j.phase].add(j.section)
    for phase, p in b.all_params.items():
        if phase not in keep and isinstance(p, dict) and b.with_runs.get(phase) and (b.out / phase).is_dir():
            keep[phase] = set(p["sections"])
        elif isinstance(p, str) and (b.out / phase).is_dir():
            # an invalid params file (said above): its phase's reports stay until it is fixed
            keep[phase] = {f.name.split(".", 1)[0] for f in (b.out / phase).glob("[0-9][0-9]_*")}
    if fitted or any("02_steps_to_target" in s for s in keep.values()):
        b.summary = Job("summary", SUMMARY_SECTION,  # it reads the fits (02) and the cross-axis fits (04)
                        needs={j.name for j in b.planned if j.section in _SUMMARY_READS})
        keep["summary"] = {SUMMARY_SECTION}
    b.keep = keep
    removed = remove_leftovers(b.out, keep)
    if removed:
        print(f"removed outputs the data or params no longer have: {', '.join(removed)}")
    for record in (b.keys, b.state.setdefault("outputs", {})):
        for name in list(record):
            if name.split("/", 1)[0] not in keep:
                del record[name]
    # phases kept from earlier builds (not asked for now) are rebuilt when their outputs are
    # damaged: the summary reads their fits
    asked = {j.phase for j in b.planned}
    for phase in sorted(set(keep) - asked - {"summary"}):
        if isinstance(b.all_params[phase], str):
            continue  # an invalid params file: nothing of it is run until it is fixed
        extra, _ = plan_jobs({phase: b.all_params[phase]}, b.with_runs, b.params_dir,
                             b.manifest["content_hash"], b.code, b.n_bootstrap)
        if any(b.keys.get(j.name) == j.key and damaged_output(j, b.out, b.state) for j in extra):
            b.planned.extend(extra)
            if b.summary is not None:
                b.summary.needs |= {j.name for j in extra if j.section in _SUMMARY_READS}
    return removed


#: The sections whose tables the summary (07) reads: it runs after them, and its key holds their tables.
_SUMMARY_READS = ("02_steps_to_target", "04_two_axis")


def _run_jobs(b: _Build, jobs: int) -> None:
    """Run the stale jobs, `jobs` at a time, longest first; the summary once the fits it reads are
    final. Each result is recorded as it comes (a build killed later keeps what is done)."""
    durations = b.state.setdefault("seconds", {})
    pending = [j for j in b.planned if not _report_damage(j, b.out, b.state)]
    pending.sort(key=lambda j: -durations.get(j.name, _EXPECTED_SECONDS.get(j.section, 3.0)))
    fit_phases = sorted(p for p, s in b.keep.items() if "02_steps_to_target" in s)
    # the summary reads every phase's params: while one is invalid (said above) it stays as it is
    waiting_summary = b.summary is not None and not any(isinstance(p, str) for p in b.all_params.values())
    if not (pending or waiting_summary):
        return
    from .execute import kernel_environment

    kernel_environment(b.out / ".build" / "kernels")
    claim_output(b.out)  # the kernels' proof that they are this build (handrun.py)
    converted: dict | None = None
    running: dict[Future, Job] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            while pending or running or waiting_summary:
                unfinished = {j.name for j in pending} | {j.name for j in running.values()}
                if waiting_summary and not (b.summary.needs & unfinished):
                    # the fits it reads are final now: key it, and run it unless it is current
                    waiting_summary = False
                    b.summary.key = summary_key(b.out, fit_phases, b.params_dir, b.manifest["content_hash"],
                                                b.code, b.n_bootstrap)
                    if not _report_damage(b.summary, b.out, b.state):
                        pending.append(b.summary)
                while pending and len(running) < max(1, int(jobs)):
                    job = pending.pop(0)
                    if converted is None:
                        sections = {j.section for j in pending} | {job.section, SUMMARY_SECTION}
                        converted = convert_source_notebooks(sections, b.out / ".build" / "notebooks")
                    nb_path, names = converted[job.section]
                    running[pool.submit(run_notebook, job, nb_path, names, b.out, b.params_dir, b.source,
                                        b.n_bootstrap)] = job
                if not running:
                    continue  # only the summary was waiting; it is keyed (or queued) above
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    _record(b, running.pop(future), *future.result())
    finally:  # the kernels kept warm between notebooks (execute.py), and the build's token
        if "cbs_rlvr.build.execute" in sys.modules:
            sys.modules["cbs_rlvr.build.execute"].shutdown_kernels()
        release_output(b.out)


def _record(b: _Build, job: Job, ok: bool, seconds: float, message) -> None:
    """One finished job: its HTML and outputs recorded, or its failure said."""
    from ..report.html import convert_notebook

    b.n_run += 1
    b.state.setdefault("seconds", {})[job.name] = round(seconds, 2)
    if ok and _snapshot_moved(b.out, b.manifest):
        b.moved = True  # its outputs may be of another snapshot: not recorded
        b.forget(job.name)
    elif ok:
        target = job.target(b.out)
        p = b.all_params.get(job.phase)
        sections = ([x for x in SECTIONS if x in p["sections"]] if isinstance(p, dict)
                    else [SUMMARY_SECTION] if job.phase == "summary" else None)
        files = [str(f.relative_to(target.parent)) for f in _job_outputs(job, b.out, message)
                 if f.is_relative_to(target.parent)]
        convert_notebook(target, target.with_suffix(".html"), sections, files)
        b.keys[job.name] = job.key
        record_outputs(job, b.out, b.state, message)
        print(f"ok: {job.name} ({seconds:.1f} s)", flush=True)
    else:
        b.forget(job.name)
        b.failures.append(message)
        print(message, file=sys.stderr, flush=True)
    b.state.pop("index_sha256", None)  # the index is to be rewritten
    write_state(b.out, b.state)  # a build killed later keeps what is done


def _snapshot_replaced(b: _Build) -> int:
    """Another writer replaced the snapshot under this build (its lock was defeated): nothing this
    build made is recorded as current, so the next build redoes it from what is there."""
    for name in {j.name for j in b.planned} | ({b.summary.name} if b.summary else set()):
        b.keys.pop(name, None)
    for name in ("content_hash", "index_sha256", "source_fingerprint"):
        b.state.pop(name, None)
    write_state(b.out, b.state)
    print(f"error: the snapshot in {b.out / 'data'} was replaced while this build ran (another "
          "writer?); nothing built is recorded as current: run the build again", file=sys.stderr)
    return 1


def _write_index(b: _Build, changed: bool) -> None:
    """The index, rewritten when anything it shows changed or it is missing or hand-edited."""
    from ..report.html import write_index

    index = b.out / "index.html"
    digest = _job_key({p: v if isinstance(v, str) else [v["title"], v["sections"]]
                       for p, v in b.all_params.items()})
    if (changed or b.state.get("index_params") != digest  # a params file became (in)valid
            or b.state.get("index_sha256") != _file_digest(index)):  # missing or hand-edited
        write_index(b.out, b.all_params, b.with_runs, b.manifest)
        b.state["index_sha256"] = _file_digest(index)
        b.state["index_params"] = digest
    write_state(b.out, b.state)
