"""The hardening corpus (tests/sweeps/hardening.py) and the full `make report` over it, made once
per run for test_hardening.py and test_hardening_snapshot.py (testkit.shared_once) and only read
once made: a test that builds again writes its own OUT and params folder.

The corpus holds real W&B offline runs written by the wandb SDK in a subprocess, a crashed
process's run, and files damaged on purpose, under a fake HOME. The build runs `make report` in a
copy of the project (code, notebooks, Makefile; params/ holding the corpus' phases) with that HOME
and a sentinel WANDB_API_KEY."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sweeps import hardening as hc
from testkit import SWEEPS_CLI, fresh_checkout, offline_wandb_env, venv_env

REPO = Path(__file__).resolve().parents[1]
SENTINEL = "SENTINEL-wandb-key-0123456789abcdef0123456789abcdef"
N_BOOTSTRAP = 20


def stamp() -> Path:
    """This environment's install stamp: without it, make would install into it from the copy."""
    return Path(sys.prefix) / ".cbs-rlvr-installed"


def _corpus(base: Path) -> dict:
    home = base / "home"  # a fake HOME: the corpus and OUT live below it, as a user's would
    root = home / "runs" / "corpus"
    root.mkdir(parents=True)
    env = offline_wandb_env(base)
    sdk = subprocess.run([sys.executable, SWEEPS_CLI, "hardening", "sdk", str(root)], cwd=base, env=env,
                         capture_output=True, text=True, timeout=300)
    assert sdk.returncode == 0, sdk.stderr[-3000:]
    crash = subprocess.run([sys.executable, SWEEPS_CLI, "hardening", "crash", str(root)], cwd=base, env=env,
                           capture_output=True, text=True, timeout=300)
    assert crash.returncode == 1, crash.stderr[-3000:]
    hc.wait_until_stable(hc.run_file(root, "crash1"))  # wandb-core may outlive its parent
    return {"base": base, "home": home, "root": root, "made": hc.damage(root)}


def _project(copy: Path) -> Path:
    fresh_checkout(copy, skip=("data/", "tests/", "benchmarks/", "docs/", "outputs/", "params/"))
    # make must not consider the environment out of date (it would `pip install -e` the copy)
    stamp_time = stamp().stat().st_mtime - 10
    os.utime(copy / "pyproject.toml", (stamp_time, stamp_time))
    write_params(copy / "params")
    return copy


def write_params(dest: Path) -> Path:
    """The corpus' phases' params files in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for phase in hc.PHASES:
        (dest / f"{phase}.yaml").write_text(hc.params_yaml(phase))
    return dest


def make_env(corpus: dict, **extra) -> dict:
    return venv_env({k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
                    HOME=str(corpus["home"]), WANDB_API_KEY=SENTINEL,
                    MPLCONFIGDIR=str(corpus["base"] / "mplconfig"), **extra)


def run_make(project: Path, corpus: dict, target: str, *args: str, timeout: int = 600):
    """`make <target> *args` in the project's copy, in the corpus' environment."""
    return subprocess.run(["make", "--no-print-directory", target, *args], cwd=project,
                          env=make_env(corpus), capture_output=True, text=True, timeout=timeout)


def build(folder: Path) -> dict:
    """The corpus, the project's copy and `make report` over the corpus, under `folder`: every path
    as a string, the build's exit code, output and seconds (JSON, for shared_once)."""
    corpus = _corpus(folder / "corpus")
    project = _project(folder / "project")
    out = corpus["home"] / "reports" / "out"
    t0 = time.perf_counter()
    proc = run_make(project, corpus, "report", f"SOURCE={corpus['root']}", f"OUT={out}",
                    f"N_BOOTSTRAP={N_BOOTSTRAP}", "JOBS=2", timeout=900)
    return {**{k: str(v) for k, v in corpus.items() if k != "made"}, "made": corpus["made"],
            "project": str(project), "out": str(out), "returncode": proc.returncode,
            "stdout": proc.stdout, "stderr": proc.stderr, "seconds": time.perf_counter() - t0}


def built(made: dict) -> dict:
    """shared_once's answer with its paths as Paths and the build's process as a CompletedProcess."""
    paths = {k: Path(made[k]) for k in ("base", "home", "root", "project", "out")}
    proc = subprocess.CompletedProcess(["make", "report"], made["returncode"], made["stdout"], made["stderr"])
    return {**paths, "made": made["made"], "proc": proc, "seconds": made["seconds"]}
