"""The build's jobs: one notebook for one phase. Which are stale (their key, and the sha256 of
every file they wrote, verified rather than assumed), running one through papermill on a warm
kernel (execute.py), and removing what killed builds and vanished phases left behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    redact_secrets,
)
from ..params import SECTIONS, SUMMARY_SECTION
from ..paths import NOTEBOOKS_DIR, PROJECT_DIR
from ..sources.manifest import remove_stale_temps
from .nbparams import parameter_names
from .state import _file_digest, _job_key, _sha256_file


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
# 3. Plan
# ---------------------------------------------------------------------------------------------
def plan_jobs(params: dict[str, dict], phases_with_runs: dict[str, int], params_dir: Path,
              content_hash: str | dict, code: str, n_bootstrap: int) -> tuple[list[Job], list[str]]:
    """The jobs of the phases that have runs, in report order, and the phases skipped (no runs
    yet). The summary job is added by the caller: its key depends on the phases' results.
    content_hash: the snapshot's, or per phase (state.phase_data_hashes): a job's key then holds
    the data of its phase and of the phases its params pool, and no other phase's."""
    jobs, skipped = [], []
    for phase, p in params.items():
        if not phases_with_runs.get(phase):
            skipped.append(phase)
            continue
        joint = [q for q in p.get("two_axis_phases") or [] if q != phase]
        params_digest = [_file_digest(params_dir / f"{q}.yaml") for q in [phase, *joint]]
        data = [content_hash.get(q, "none") for q in [phase, *joint]] if isinstance(content_hash, dict) else content_hash
        for section in SECTIONS:
            if section not in p["sections"]:
                continue
            nb_digest = _file_digest(NOTEBOOKS_DIR / f"{section}.py")
            key = _job_key(nb_digest, params_digest, data, code, int(n_bootstrap))
            jobs.append(Job(phase, section, key))
    return jobs, skipped


def summary_key(out: Path, phases: list[str], params_dir: Path, content_hash: str, code: str,
                n_bootstrap: int) -> str:
    """The summary's key: its notebook, every phase's params, fitted tables (cbs_fit, and two_axis_fit
    where 04 wrote one: 07 states what a rollout is worth), the code."""
    fits = {p: _file_digest(out / p / "tables" / "cbs_fit.csv") for p in sorted(phases)}
    fits.update({f"{p}/two_axis": _file_digest(out / p / "tables" / "two_axis_fit.csv") for p in sorted(phases)
                 if (out / p / "tables" / "two_axis_fit.csv").is_file()})
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


