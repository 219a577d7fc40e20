"""Helpers several test modules share: the demo's simulation module, and the environment of a
subprocess that writes W&B offline runs with the real SDK."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

MAKE_DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "make_demo.py"
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
