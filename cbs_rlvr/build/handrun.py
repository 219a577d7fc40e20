"""Where a run of a section notebook writes, and which snapshot it reads.

Only the build writes its output directory (`outputs/`, or `OUT`). Every other run of a section
notebook (JupyterLab, papermill, `python notebooks/NN_x.py`) is a hand run: it writes to a folder
in `scratch/` (git-ignored), or to the folder its `out_dir` names, and says so in one line in the
notebook and on the console that started its kernel (papermill's, JupyterLab's terminal).

The build proves it is the build: `claim_output(out)` (under OUT's lock) writes a random token to
OUT/.build/writer and puts the same token in the environment its kernels inherit
(CBS_BUILD_TOKEN); `release_output` removes both when the build ends. `section_paths` lets a run
write into a build's output directory only when the two agree, so neither a parameter edited and
saved in Lab, nor a hand papermill run after `make report N_BOOTSTRAP=50`, can write there.

A hand run reads the snapshot `make report` keeps in outputs/data/ when the build made it from the
same source and params (its files are hard-linked into the scratch folder, and linked again when
the build's changes), so a hand run sees what the reports show without reading the source again;
otherwise it makes its own snapshot in the scratch folder on first use.

Standard library only, like the build that imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from ..params import params_fingerprint
from ..paths import (
    DEFAULT_OUT,
    DEFAULT_PARAMS,
    DEFAULT_SOURCE,
    PROJECT_DIR,
    display_path,
    project_paths,
    project_source,
)
from ..sources.manifest import SNAPSHOT_FILES

#: Where hand runs write (git-ignored), relative to the project.
SCRATCH_DIR = "scratch"
#: The environment variable that carries the build's token to its kernels.
BUILD_TOKEN_ENV = "CBS_BUILD_TOKEN"
#: The build's token, inside its output directory (exists only while a build runs).
WRITER_FILE = ".build/writer"
#: The build's record of what it built from (cbs_rlvr.build.builder.STATE_FILE).
BUILD_STATE_FILE = ".build/state.json"


class HandRunError(ValueError):
    """A hand run asked to write where only the build writes; the message is one line."""


# --- the build's token ------------------------------------------------------------------------
def claim_output(out: Path) -> str:
    """Mark `out` as being written by this process's build: a new token in OUT/.build/writer
    (readable by its owner only) and in this process's environment, which the kernels it starts
    inherit. Call under OUT's lock, before any kernel starts."""
    token = secrets.token_hex(16)
    path = Path(out) / WRITER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token)
    os.environ[BUILD_TOKEN_ENV] = token
    return token


def release_output(out: Path) -> None:
    """The build is over: its token leaves OUT and the environment."""
    (Path(out) / WRITER_FILE).unlink(missing_ok=True)
    os.environ.pop(BUILD_TOKEN_ENV, None)


def is_build_run(out: Path) -> bool:
    """Whether this process is a kernel (or the process) of the build that is writing `out`."""
    token = os.environ.get(BUILD_TOKEN_ENV, "")
    try:
        written = (Path(out) / WRITER_FILE).read_text(encoding="ascii").strip()
    except OSError:
        return False
    return bool(token) and secrets.compare_digest(token, written)


def is_build_output(out: Path) -> bool:
    """Whether `out` is a build's output directory: the project's outputs/, or a folder a build
    has written (its lock or its state are there)."""
    out = Path(out)
    return (out.resolve() == (PROJECT_DIR / DEFAULT_OUT).resolve() or (out / ".build").is_dir()
            or (out / ".lock").exists())


# --- hand runs -------------------------------------------------------------------------------
def scratch_out(source: str | None = None, params_dir: str | os.PathLike | None = None) -> Path:
    """The scratch folder of hand runs over `source` with `params_dir`: scratch/outputs for the
    project's defaults, one scratch/outputs-<hash> per other pair (a snapshot of one source is
    never read for another)."""
    resolved = (project_source(source or DEFAULT_SOURCE), str(project_paths(params_dir or DEFAULT_PARAMS)[0]))
    defaults = (project_source(DEFAULT_SOURCE), str(project_paths(DEFAULT_PARAMS)[0]))
    if resolved == defaults:
        return PROJECT_DIR / SCRATCH_DIR / "outputs"
    digest = hashlib.sha256(repr(resolved).encode()).hexdigest()[:8]
    return PROJECT_DIR / SCRATCH_DIR / f"outputs-{digest}"


def section_paths(section: str, out_dir, params_dir, source, **parameters) -> tuple:
    """(out, params_dir, source) of one run of notebooks/<section>, resolved against the project.

    `out_dir` empty (None or ""): a hand run, whatever the other parameters are. It writes to
    `scratch_out(source, params_dir)`, reads the build's snapshot there when it fits, and says
    both in one line (in the notebook and on the console). `out_dir` given: that folder, unless it
    is a build's output directory and this is not that build (HandRunError). `parameters` (the
    run's phase and others) name the run in the line."""
    params_path, source = project_paths(params_dir, source)
    if out_dir in (None, ""):
        out = scratch_out(source, params_path)
        snapshot = link_build_snapshot(out, source, params_path)
        phase = f" [{parameters['phase']}]" if parameters.get("phase") else ""
        reads = (f"make report's snapshot ({display_path(PROJECT_DIR / DEFAULT_OUT / 'data')}/)"
                 if snapshot else f"its own snapshot in {display_path(out / 'data')}/")
        announce(f"hand run of {section}{phase}: writing to {display_path(out)}/, not {DEFAULT_OUT}/ "
                 f"(only make report writes there; out_dir names another folder); reading {reads}")
        return out, params_path, source
    out = project_paths(out_dir)[0]
    if is_build_output(out) and not is_build_run(out):
        raise HandRunError(
            f"out_dir {display_path(out)} is a report build's output directory, which only make "
            f"report writes: leave out_dir empty (a hand run writes to {SCRATCH_DIR}/) or name "
            "a folder of your own")
    return out, params_path, source


def link_build_snapshot(scratch: Path, source, params_dir: Path) -> bool:
    """Point the scratch folder's snapshot at the one the build keeps in outputs/data/, if the
    build made it from `source` with the params in `params_dir` as they are now: its files are
    hard-linked (copied across file systems) into <scratch>/data, again whenever the build's
    changed. The build replaces its files by rename, never in place, so the links keep the set
    they were made from. False (the scratch folder keeps its own snapshot) otherwise."""
    build = PROJECT_DIR / DEFAULT_OUT
    try:
        state = json.loads((build / BUILD_STATE_FILE).read_text(encoding="utf-8"))
        manifest_text = (build / "data" / "manifest.json").read_text(encoding="utf-8")
        manifest = json.loads(manifest_text)
    except (OSError, ValueError):
        return False
    if (not isinstance(state, dict) or not isinstance(manifest, dict)
            or state.get("source") != str(source)
            or state.get("content_hash") != manifest.get("content_hash")
            or not params_dir.is_dir() or state.get("params_fingerprint") != params_fingerprint(params_dir)):
        return False
    target = Path(scratch) / "data"
    try:
        if (target / "manifest.json").read_text(encoding="utf-8") == manifest_text:
            return True
    except OSError:
        pass
    staging = Path(scratch) / f".data.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in (*SNAPSHOT_FILES, "manifest.json"):
            try:
                os.link(build / "data" / name, staging / name)
            except OSError:
                shutil.copy2(build / "data" / name, staging / name)
        old = Path(scratch) / f".data.{os.getpid()}.old"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True


def output_file(out: Path, *parts: str) -> Path:
    """A file one section reads from another's outputs (07 reads each phase's cbs_fit.csv): in
    `out`; for a hand run whose scratch folder lacks it and reads the build's snapshot (the same
    data), the build's copy in outputs/."""
    path = Path(out).joinpath(*parts)
    if path.exists() or not Path(out).resolve().is_relative_to((PROJECT_DIR / SCRATCH_DIR).resolve()):
        return path
    build = PROJECT_DIR / DEFAULT_OUT
    try:
        same_data = ((Path(out) / "data" / "manifest.json").read_bytes()
                     == (build / "data" / "manifest.json").read_bytes())
    except OSError:
        return path
    built = build.joinpath(*parts)
    return built if same_data and built.exists() else path


def announce(line: str) -> None:
    """Print `line` where the run's reader sees it (the notebook, or the terminal of a plain
    `python` run) and, inside a Jupyter kernel, also on the console that started the kernel
    (papermill's, JupyterLab's terminal), which the kernel's own output never reaches."""
    print(line, flush=True)
    stream = sys.stderr
    if not type(stream).__module__.startswith("ipykernel"):
        return  # not in a kernel: the print above is already on the console
    # on a line of its own: papermill's progress bar may be mid-line there
    data = ("\n" + line + "\n").encode("utf-8", "replace")
    try:
        # ipykernel captures fd 2 for the notebook; fileno() is its copy of the original stderr
        os.write(stream.fileno(), data)
    except (OSError, ValueError, AttributeError):
        try:
            sys.__stderr__.write("\n" + line + "\n")
            sys.__stderr__.flush()
        except (OSError, ValueError, AttributeError):
            pass
