"""Where things are: the project root and the default locations, in one place.

A relative path given to a notebook or the command line resolves against the project root,
not the working directory, so `papermill` and JupyterLab work from any folder.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The project root (the checkout this package lives in).
PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUT = "outputs"
DEFAULT_PARAMS = "params"
DEFAULT_SOURCE = "data/demo"
NOTEBOOKS_DIR = PROJECT_DIR / "notebooks"


def project_path(path: str | os.PathLike | None) -> Path | None:
    """`path` as given when absolute (or `~/...`), else resolved against the project root."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path


def project_source(source: str | None) -> str | None:
    """A source as given when it is `wandb:<entity>/<project>`, else a project-relative path."""
    if source is None or str(source).startswith("wandb:"):
        return source
    return str(project_path(source))


def project_paths(*paths: str | os.PathLike | None) -> tuple:
    """Each path resolved as `project_path` does; a `wandb:<entity>/<project>` source kept as is."""
    return tuple(p if p is None or str(p).startswith("wandb:") else project_path(p) for p in paths)


def display_path(path: str | os.PathLike) -> str:
    """A path as a report prints it: relative to the project when inside it, `~/...` under the
    home directory, else as it is (so no report shows a user's absolute home path)."""
    path = Path(path).expanduser()
    resolved = path.resolve() if path.is_absolute() else (PROJECT_DIR / path).resolve()
    try:
        return resolved.relative_to(PROJECT_DIR).as_posix()
    except ValueError:
        pass
    try:
        return "~/" + resolved.relative_to(Path.home()).as_posix()
    except (ValueError, RuntimeError, KeyError):
        return str(resolved)
