"""Helpers several test modules share: the demo's simulation module, the environment of a
subprocess that writes W&B offline runs with the real SDK, `make report` in a fresh checkout of
the project, and a costly fixture made once per run for every xdist worker (`shared_once`)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "data" / "demo"
MAKE_DEMO = DEMO_DIR / "make_demo.py"
# the generators' command line: [sys.executable, SWEEPS_CLI, KIND, ...] (tests/sweeps/__main__.py)
SWEEPS_CLI = str(Path(__file__).resolve().parent / "sweeps")


def load_make_demo(name: str):
    """data/demo/make_demo.py (the demo's model and its SDK writer) as a fresh module registered
    as `name` (its dataclasses look their module up while it runs). Each caller gets its own
    copy, so one that changes a module constant changes nobody else's."""
    spec = importlib.util.spec_from_file_location(name, MAKE_DEMO)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def offline_wandb_env(tmp: Path) -> dict:
    """This process's environment without any WANDB_ setting of the user's, for a subprocess
    writing offline runs: offline mode, silent, config, cache and data dirs under `tmp`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONFIG_DIR=str(tmp / ".config"),
               WANDB_CACHE_DIR=str(tmp / ".cache"), WANDB_DATA_DIR=str(tmp / ".data"))
    return env


def in_two_processes(fn, jobs) -> list:
    """fn over jobs in two forked worker processes (the machine has two cores), in job order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(fn, jobs, chunksize=2))


class LazyModule:
    """A module imported at its first attribute access: heavy imports (nbformat's validator alone
    takes about 2 s) stay out of the suite's collection, which every worker repeats."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        # pytest's collection looks every module attribute over for its own markers (dunder and
        # underscore names): answering those without the import keeps the import out of collection
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)


def shared_once(tmp_path_factory, name: str, make):
    """make(folder) run once per test run and its JSON answer shared by every xdist worker: the
    first worker to ask makes it under a file lock in the run's common temporary folder, the
    others wait for it and read the answer (pytest-xdist's recipe for a session fixture made once).
    A make that raised fails every later asker with its message, without a second try. Without
    xdist (or without fcntl) it simply runs make in a folder of its own."""
    try:
        import fcntl
    except ImportError:  # Windows: one per process
        fcntl = None
    if fcntl is None or not os.environ.get("PYTEST_XDIST_WORKER"):
        return make(tmp_path_factory.mktemp(name))
    import pytest

    root = tmp_path_factory.getbasetemp().parent  # pytest-N/, the parent of every popen-gwK/
    answer, failed = root / f"{name}.json", root / f"{name}.failed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if failed.exists():
            pytest.fail(f"{name}, made by another worker, failed: {failed.read_text()[-3000:]}")
        if not answer.exists():
            folder = root / name
            folder.mkdir()
            try:
                made = make(folder)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            answer.write_text(json.dumps(made))
        return json.loads(answer.read_text())


def venv_env(environ=None, **extra: str) -> dict:
    """`environ` (default this process's environment) for a `make` run on this environment:
    VIRTUAL_ENV names it and conda's prefix, if any, is dropped (the Makefile installs into the
    first it finds); `extra` on top."""
    env = dict(os.environ if environ is None else environ, VIRTUAL_ENV=sys.prefix, **extra)
    env.pop("CONDA_PREFIX", None)
    return env


# this environment's stamps: make counts it as installed (-o), never reinstalls from a checkout
STAMPS = [Path(sys.prefix) / f".cbs-rlvr{s}-installed" for s in ("", "-lab", "-lint", "-test")]


def make_report(out: Path, *args, cwd: Path = ROOT, env_extra=None) -> subprocess.CompletedProcess:
    """`make report OUT=out N_BOOTSTRAP=40 *args` in `cwd` (a checkout), on this environment."""
    return subprocess.run(["make", "--no-print-directory", *[f"-o{s}" for s in STAMPS], "report",
                           f"OUT={out}", "N_BOOTSTRAP=40", *args], cwd=cwd, env=venv_env(**(env_extra or {})),
                          capture_output=True, text=True, timeout=1500)


def fresh_checkout(dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """The project's files as a fresh clone holds them (tracked, and new ones git does not ignore),
    without outputs, copied to `dest`; `skip`: path prefixes left out."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split("\n")
    for rel in filter(None, listed):
        if not rel.startswith(skip) and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def build_demo_report(folder: Path) -> dict:
    """`make report` of the demo in a fresh checkout under `folder`, into its own outputs/ (a
    user's first build): {"checkout", "out"} as strings. Fails on a build that does not exit 0."""
    checkout = fresh_checkout(folder / "checkout")
    out = checkout / "outputs"
    proc = make_report(out, cwd=checkout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"checkout": str(checkout), "out": str(out)}


# ---- small builds of runs cut from the demo sweep (test_build.py, test_build_sweeps.py) ----
def _demo_runs() -> dict:
    return json.loads((DEMO_DIR / "ground_truth.json").read_text())["runs"]


DEMO_RUNS = _demo_runs()  # run id -> its phase, batch and path in data/demo


def demo_run_dirs(phase: str) -> list[Path]:
    """The run folders of one phase of the demo sweep."""
    return sorted((DEMO_DIR / r["path"]).parent for r in DEMO_RUNS.values() if r["phase"] == phase)


def copy_runs(dirs: list[Path], dest: Path, preserve_times: bool = True) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        shutil.copytree(d, dest / d.name, copy_function=shutil.copy2 if preserve_times else shutil.copy)


def phase_params(dest: Path, phases: dict[str, list[str]]) -> Path:
    """A params directory: each phase copied from params/ with only the given sections."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    for phase, sections in phases.items():
        params = yaml.safe_load((ROOT / "params" / f"{phase}.yaml").read_text())
        params["sections"] = sections
        params.pop("two_axis_phases", None)
        (dest / f"{phase}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def make_here(*args: str, target: str = "report") -> subprocess.CompletedProcess:
    """`make <target> N_BOOTSTRAP=20 *args` in this checkout, on this environment."""
    return subprocess.run(["make", "--no-print-directory", target, "N_BOOTSTRAP=20", *args],
                          cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=900)

