"""The set-up, as the Makefile does it: `make report` installs what reports need and no more, the
extras come with their targets, conda's base environment is refused, and a missing python3-venv
says what to install. Run on a copy of the Makefile and pyproject.toml (no git, no install: each
case stops before pip, or is a dry run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "jupyter-config" / "labconfig").mkdir(parents=True)
    for rel in ("jupyter-config/labconfig/default_setting_overrides.json", "jupyter-config/jupyter_server_config.json"):
        shutil.copy2(ROOT / rel, tmp_path / rel)
    return tmp_path


def _make(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "MAKEFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=project, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_each_target_installs_only_what_it_needs(project):
    installs = {}
    for target in ("report", "lint", "test", "lab", "notebook"):
        dry = _make(project, "-n", target)
        assert dry.returncode == 0, dry.stderr
        installs[target] = [line for line in dry.stdout.splitlines() if "pip install" in line]
    pip = '".venv/bin/python" -m pip install --quiet --disable-pip-version-check'
    assert installs["report"] == [f"{pip} --upgrade pip", f"{pip} -e ."]
    for target, extra in (("lint", "lint"), ("test", "test"), ("lab", "lab"), ("notebook", "lab")):
        assert installs[target] == [*installs["report"], f"{pip} -e '.[{extra}]'"], target
    # the extras: pytest and JupyterLab only with the test and lab extras, ruff with lint
    text = (ROOT / "pyproject.toml").read_text()
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert not any(name in dependencies for name in ("pytest", "jupyterlab", "ruff", "ipywidgets"))


def test_conda_base_is_refused_with_the_way_forward(project, tmp_path):
    base = tmp_path / "miniconda3"
    (base / "condabin").mkdir(parents=True)
    for env in ({"CONDA_DEFAULT_ENV": "base"}, {}):  # named base, or recognised by its condabin/
        refused = _make(project, "report", CONDA_PREFIX=str(base), **env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"error: conda's base environment is active ({base}); cbs-rlvr does not install into it" \
            in refused.stderr
        assert "conda env create -f environment.yml && conda activate cbs-rlvr" in refused.stderr
        assert "make report ENV_DIR=.venv" in refused.stderr
        assert sorted(p.name for p in base.iterdir()) == ["condabin"]  # nothing installed
    # another conda environment is used as it is
    other = tmp_path / "envs" / "cbs-rlvr"
    other.mkdir(parents=True)
    dry = _make(project, "-n", "report", CONDA_PREFIX=str(other), CONDA_DEFAULT_ENV="cbs-rlvr")
    assert f'"{other}/bin/python" -m pip install --quiet --disable-pip-version-check -e .' in dry.stdout
    # and base with ENV_DIR=.venv: a virtual environment in the project
    dry = _make(project, "-n", "report", "ENV_DIR=.venv", CONDA_PREFIX=str(base), CONDA_DEFAULT_ENV="base")
    assert '".venv/bin/python" -m pip install' in dry.stdout


def test_a_python_without_venv_says_what_to_install(project, tmp_path):
    """Debian's python3 without python3-venv: `python3 -m venv` fails; make says why, exits 2 and
    leaves no half-made .venv behind (the next make would take it for an environment)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("python3")
    fake = bin_dir / "python3"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; '
                    f'echo "The virtual environment was not created successfully because ensurepip is '
                    f'not available." >&2; exit 1; fi\nexec {real} "$@"\n')
    fake.chmod(0o755)
    failed = _make(project, "report", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert failed.returncode == 2
    assert "error: python3 -m venv failed; on Debian/Ubuntu: sudo apt install python3-venv" in failed.stderr
    assert not (project / ".venv").exists()
