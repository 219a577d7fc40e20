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


# --- hand runs ---------------------------------------------------------------------------------
#: Where runs that are not the build's write (git-ignored): working copies and their outputs.
SCRATCH_DIR = "scratch"


def notebook_defaults(section: str, notebooks_dir: str | os.PathLike | None = None) -> dict:
    """The literals of the `parameters` cell of notebooks/<section>.py, by name (the defaults a
    run of that notebook starts from)."""
    import ast

    text = (Path(notebooks_dir or NOTEBOOKS_DIR) / f"{section}.py").read_text(encoding="utf-8")
    cell, inside = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            if inside:
                break
            inside = 'tags=["parameters"]' in line
        elif inside:
            cell.append(line)
    return {target.id: ast.literal_eval(node.value) for node in ast.parse("\n".join(cell)).body
            if isinstance(node, ast.Assign) for target in node.targets}


def scratch_out(source: str | None = None, params_dir: str | os.PathLike | None = None) -> Path:
    """The scratch output directory of hand runs over `source` with `params_dir`: one per pair,
    so a scratch snapshot is never read for another source."""
    import hashlib

    if (source in (None, DEFAULT_SOURCE)) and (params_dir in (None, DEFAULT_PARAMS)):
        return PROJECT_DIR / SCRATCH_DIR / "outputs"
    digest = hashlib.sha256(repr((str(source), str(params_dir))).encode()).hexdigest()[:8]
    return PROJECT_DIR / SCRATCH_DIR / f"outputs-{digest}"


def section_paths(section: str, out_dir, params_dir, source, **parameters) -> tuple:
    """(out, params_dir, source) of one run of notebooks/<section>, resolved as `project_paths`
    does. Where the output goes: `out_dir` when it is given (the build always gives it); when it
    is None, the project's outputs/ only if every parameter has the notebook's default, else a
    scratch directory (`scratch_out`), so that a hand run with another phase, fewer bootstrap
    resamples or another source never overwrites what the build wrote. The scratch case is said
    in one printed line."""
    if out_dir is None:
        defaults = notebook_defaults(section)
        given = {"params_dir": params_dir, "source": source, **parameters}
        changed = [f"{k}={v!r}" for k, v in given.items() if k in defaults and defaults[k] != v]
        if changed:
            out_dir = scratch_out(source, params_dir)
            print(f"A run with {', '.join(changed)} (not this notebook's default) writes to "
                  f"{display_path(out_dir)}/, not to {DEFAULT_OUT}/ (the build's); set out_dir "
                  "to choose.")
        else:
            out_dir = DEFAULT_OUT
    return project_paths(out_dir, params_dir, source)
