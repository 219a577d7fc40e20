"""Shared fixtures: `wandb_endpoint` points this process's real wandb client at a local W&B
endpoint (tests/wandb_server.py) with short time bounds, set through the same environment
variables a user would set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# as in `python -m cbs_rlvr` (see cbs_rlvr/__main__.py): nbformat's jsonschema without the IRI
# grammars, 1.5-2 s of each worker's start
sys.modules.setdefault("rfc3987_syntax", None)

from testkit import build_demo_report, shared_once  # noqa: E402
from wandb_server import WandbServer  # noqa: E402

# Short bounds for tests: one retry after 1 s, 3 s per attempt, 10 s per run.
FAST_LIMITS = {"WANDB__GRAPHQL_RETRY_MAX": "1", "WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS": "1",
               "WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS": "1", "WANDB__GRAPHQL_TIMEOUT_SECONDS": "3",
               "CBS_WANDB_RUN_TIMEOUT": "10", "CBS_WANDB_TIMEOUT": "120"}


@pytest.fixture(scope="session")
def wandb_dirs(tmp_path_factory) -> dict:
    """Where wandb (and its wandb-core sidecar) keep config, cache, data and run dirs in tests."""
    root = tmp_path_factory.mktemp("wandb_client")
    return {name: str(root / name.split("_")[1].lower())
            for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_DIR")}


def client_environ(environ, server: WandbServer, dirs: dict, **extra: str) -> dict:
    """`environ` without any WANDB_* or CBS_WANDB_* variable, plus what a client of `server` needs."""
    env = {k: v for k, v in environ.items() if not k.startswith(("WANDB_", "CBS_WANDB_"))}
    env.update(server.client_env(**dirs, **FAST_LIMITS))
    env.update(extra)
    return env


@pytest.fixture
def wandb_endpoint(monkeypatch, wandb_dirs):
    """Factory: `wandb_endpoint(runs, **server_options)` starts a WandbServer (stopped after the
    test) and points this process's wandb at it, with FAST_LIMITS."""
    import os

    servers: list[WandbServer] = []

    def start(runs=(), **options) -> WandbServer:
        server = WandbServer(runs, lifetime=300, **options).start()
        servers.append(server)
        for key in [k for k in os.environ if k.startswith(("WANDB_", "CBS_WANDB_"))]:
            monkeypatch.delenv(key)
        for key, value in client_environ({}, server, wandb_dirs).items():
            monkeypatch.setenv(key, value)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> dict:
    """The demo's `make report` in a fresh checkout (testkit.build_demo_report), made once per run for
    test_notebooks.py and test_notebooks_hand.py, whichever worker runs them: {"checkout", "out"}.
    The second file's tests run make and papermill in that checkout; the first's only read it."""
    made = shared_once(tmp_path_factory, "demo_report", build_demo_report)
    return {key: Path(value) for key, value in made.items()}


@pytest.fixture(scope="session")
def hardening_build(tmp_path_factory) -> dict:
    """The hardening corpus, the project's copy and `make report` over them (tests/hardening_kit.py),
    made once per run for test_hardening.py and test_hardening_snapshot.py: only read."""
    import hardening_kit as kit

    if not kit.stamp().is_file():
        pytest.skip(f"{kit.stamp()} missing: run `make setup` first (the copy must not reinstall)")
    return kit.built(shared_once(tmp_path_factory, "hardening", kit.build))


# Module fixtures that build something costly (a whole `make report`, a trained or generated
# sweep, a corpus of W&B files): every test that uses one is slow, wherever it sits in its file.
# Measured with `pytest --durations`; `make test-quick` (-m "not slow") leaves them out.
SLOW_FIXTURES = {
    "test_notebooks.py": {"report"},            # the demo's make report (about 70 s), once per run
    "test_notebooks_hand.py": {"report"},       # the same build
    "test_generated_sweeps.py": {"hunted"},     # the analysis hunt (about 40 s)
    "test_fit.py": {"coverage_runs"},           # many-seed coverage sweeps (about 25 s)
    "test_build.py": {"one_phase"},             # a one-phase build (about 10 s)
    "test_habits.py": {"sweeps"},               # habit sweeps written by the wandb SDK
    "test_plan.py": {"one_axis"},               # the one-axis plan sweeps
    "test_data_layer.py": {"offline_corpus_dir"},  # an offline corpus written by the wandb SDK
}


# The longest files first (measured: wall time of each file on one worker, `make test`, 2 cores):
# with `--dist loadfile` a file runs whole on one worker, so starting the long ones first keeps
# the two workers busy to the end. xdist orders files by their number of tests unless told not to
# (`--no-loadscope-reorder`, in the Makefile). The order changes no result; a file missing here
# only runs later. test_notebooks_hand.py and test_hardening_snapshot.py wait for the build of
# test_notebooks.py and test_hardening.py (shared_once): they come late enough that the build is
# done when a worker takes them.
LONGEST_FIRST = ["test_notebooks.py", "test_hardening.py", "test_build_sweeps.py", "test_generated_sweeps.py",
                 "test_generated_reports.py", "test_notebooks_hand.py", "test_hardening_snapshot.py",
                 "test_faults.py", "test_wandb_api.py", "test_hunt_notebooks.py", "test_jupyterlab.py",
                 "test_build.py", "test_plan.py", "test_hostile.py", "test_habits.py", "test_fit.py",
                 "test_forecast.py", "test_demo_accuracy.py", "test_trainer_fits.py", "test_data_layer.py",
                 "test_offline_parallel.py", "test_integrity.py", "test_analysis.py"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        slow = SLOW_FIXTURES.get(item.path.name, set())
        if slow & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
