"""JupyterLab on the project: what `make lab`, `make notebook` and `make setup` run.

  python -m cbs_rlvr.build.lab install-config   merge jupyter-config/ into the active environment (a
                                          .py opens in the text editor, the notebooks as notebooks;
                                          a section notebook is saved without language_info), for
                                          its Lab wherever it starts
  python -m cbs_rlvr.build.lab install-git-filter
                                          the clean filter of notebooks/*.ipynb (.gitattributes) in
                                          this clone's git config: opening, running or autosaving
                                          a notebook in Lab leaves `git status` clean
  python -m cbs_rlvr.build.lab copy --nb 02 --phase p2b [...]
                                          write an untracked working copy of a section notebook
                                          in scratch/, its parameters set; prints the Lab address
                                          of the copy (`/lab/tree/scratch/...`)

Looking at another phase is not changing the reviewed notebook: the copy is not paired (only
notebooks/ is, by notebooks/jupytext.toml) and is git-ignored, and it is a hand run, so its
figures and tables go to scratch/ (handrun.py) and the build's outputs/ never changes.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import subprocess
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from ..paths import (
    DEFAULT_PARAMS,
    DEFAULT_SOURCE,
    NOTEBOOKS_DIR,
    PROJECT_DIR,
    display_path,
    project_path,
)
from .handrun import SCRATCH_DIR

#: The Jupyter configuration the project ships (`install_lab_config` merges it into an env).
LAB_CONFIG_DIR = PROJECT_DIR / "jupyter-config"


class LabError(ValueError):
    """A request `make notebook` cannot serve; its message is one line for the user."""


def _merge(into: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def install_lab_config(prefix: str | Path = sys.prefix, config_dir: Path = LAB_CONFIG_DIR) -> list[Path]:
    """Merge each jupyter-config/labconfig/<name>.json and jupyter-config/jupyter_server_config.json
    into the same file under <prefix>/etc/jupyter/ (keys already there and not ours are kept).
    Jupyter reads these from every config path, so the settings (a .py opens in the text editor;
    the section notebooks are saved without the metadata Lab adds) hold for this environment's
    Lab wherever it starts. The paths written."""
    written = []
    ours_files = [*sorted((config_dir / "labconfig").glob("*.json")), config_dir / "jupyter_server_config.json"]
    for ours in ours_files:
        target = Path(prefix) / "etc" / "jupyter" / ours.relative_to(config_dir)
        current = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
        merged = _merge(current, json.loads(ours.read_text(encoding="utf-8")))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        written.append(target)
    return written


def find_section(nb: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    """The section notebooks/<NN_name>.py that `nb` names: `02`, `2`, `02_steps_to_target` or a
    path to either twin."""
    name = Path(str(nb).strip()).stem
    known = sorted(p.stem for p in notebooks_dir.glob("[0-9][0-9]_*.py"))
    if name.isdigit():
        matches = [s for s in known if s[:2] == f"{int(name):02d}"]
    else:
        matches = [s for s in known if s == name]
    if len(matches) != 1:
        raise LabError(f"no section notebook {nb!r}: NB is one of {', '.join(known)} "
                       "(or its number, e.g. NB=02)")
    return matches[0]


def _parameter_nodes(source: str) -> list:
    """The assignments of a parameters cell (`phase: str = "p1"` or `phase = "p1"`)."""
    return [node for node in ast.parse(source).body
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None]


def _node_names(node) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def notebook_defaults(section: str, notebooks_dir: str | os.PathLike | None = None) -> dict:
    """The literals of the `parameters` cell of notebooks/<section>.py, by name (the defaults a
    run of that notebook starts from)."""
    text = (Path(notebooks_dir or NOTEBOOKS_DIR) / f"{section}.py").read_text(encoding="utf-8")
    cell, inside = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            if inside:
                break
            inside = 'tags=["parameters"]' in line
        elif inside:
            cell.append(line)
    return {name: ast.literal_eval(node.value) for node in _parameter_nodes("\n".join(cell))
            for name in _node_names(node)}


def _set_parameters(source: str, values: dict) -> str:
    """The parameters cell's text with the value of each parameter named in `values` set anew;
    its annotation and comment stay."""
    lines = source.splitlines()
    for node in reversed(_parameter_nodes(source)):
        names = [n for n in _node_names(node) if n in values]
        value = node.value
        if not names or value.lineno != value.end_lineno:
            continue
        literal = values[names[0]]
        literal = json.dumps(literal) if isinstance(literal, str) else repr(literal)
        # col offsets count UTF-8 bytes
        line = lines[value.lineno - 1].encode()
        lines[value.lineno - 1] = (line[:value.col_offset] + literal.encode()
                                   + line[value.end_col_offset:]).decode()
    return "\n".join(lines)


def working_copy(nb: str, phase: str = "", source: str = DEFAULT_SOURCE,
                 params_dir: str = DEFAULT_PARAMS, n_bootstrap: int | None = None,
                 scratch_dir: str | Path | None = None) -> tuple[Path, bool]:
    """(path, created): scratch/<section>-<phase>.ipynb, made from notebooks/<section>.py (the
    reviewed source) with its parameters cell set to `phase` (empty: the notebook's default),
    `source`, `params_dir` and `n_bootstrap`; its `out_dir` stays empty, so it runs as every hand
    run does (handrun.py: it writes to scratch/). An existing copy is kept as it is (your edits
    in it are not overwritten): created is False."""
    import jupytext

    section = find_section(nb)
    defaults = notebook_defaults(section)
    phase = phase.strip() or defaults["phase"]
    params_path = project_path(params_dir)
    if phase != defaults["phase"] and not (params_path / f"{phase}.yaml").is_file():
        known = sorted(p.stem for p in params_path.glob("*.yaml"))
        raise LabError(f"unknown phase {phase!r}: there is no {display_path(params_path)}/"
                       f"{phase}.yaml. Known phases: {', '.join(known)}")
    scratch = project_path(scratch_dir or SCRATCH_DIR)
    path = scratch / f"{section}-{phase}.ipynb"
    if path.exists():
        return path, False
    values = {"phase": phase, "source": source, "params_dir": params_dir, "out_dir": ""}
    if n_bootstrap is not None:
        values["n_bootstrap"] = int(n_bootstrap)
    notebook = jupytext.read(NOTEBOOKS_DIR / f"{section}.py")
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            cell.source = _set_parameters(cell.source, {k: v for k, v in values.items()
                                                        if k in defaults})
    notebook.metadata.setdefault("jupytext", {})["formats"] = "ipynb"  # never paired
    scratch.mkdir(parents=True, exist_ok=True)
    jupytext.write(notebook, path, fmt="ipynb")
    return path, True


def lab_url_path(path: Path) -> str:
    """The address of `path` in a Lab started at the project root (`/lab/tree/...`), for
    `--LabApp.default_url`: Lab then opens it, and prints the direct link with its token."""
    relative = Path(path).resolve().relative_to(PROJECT_DIR.resolve()).as_posix()
    return "/lab/tree/" + urllib.parse.quote(relative)


# --- saving the reviewed notebooks -------------------------------------------------------------
def pre_save_hook(model: dict, path: str, contents_manager, **kwargs) -> None:
    """Jupyter server's pre-save hook (jupyter-config/jupyter_server_config.d/cbs-rlvr.json,
    installed with the Lab settings): a section notebook (notebooks/NN_x.ipynb of this project) is
    saved without the notebook metadata Lab adds on opening (language_info, with the Python
    version), so opening it and letting Lab autosave writes the committed file byte for byte and
    `git status` stays clean. Outputs, the user's work, are kept; git sees past them through the
    clean filter (install_git_filter)."""
    from .clean_notebook import KEEP_NOTEBOOK_METADATA

    if model.get("type") != "notebook" or not str(path).endswith(".ipynb"):
        return
    folder = (Path(getattr(contents_manager, "root_dir", ".")) / str(path).lstrip("/")).resolve().parent
    if folder.name != "notebooks" or not (folder.parent / "cbs_helpers.py").is_file():
        return
    metadata = (model.get("content") or {}).get("metadata")
    if isinstance(metadata, dict):
        for key in [k for k in metadata if k not in KEEP_NOTEBOOK_METADATA]:
            del metadata[key]


# --- git ---------------------------------------------------------------------------------------
#: The filter .gitattributes names for notebooks/*.ipynb.
GIT_FILTER = "cbs-notebook"


def install_git_filter(project_dir: Path = PROJECT_DIR) -> str | None:
    """Set filter.cbs-notebook.clean in the git config of the clone holding `project_dir`: git
    then sees a notebook through cbs_rlvr/build/clean_notebook.py (what `make sync-notebooks` writes),
    so outputs, execution counts and the metadata Lab adds on opening (language_info) never
    show as changes. git runs it from the top of the work tree, so the path is relative to it
    (the clone may move). The command set, or None outside a git work tree."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True)

    try:
        prefix = git("rev-parse", "--show-prefix")
    except OSError:  # no git
        return None
    if prefix.returncode != 0:
        return None
    command = "python3 " + shlex.quote(prefix.stdout.strip() + "cbs_rlvr/build/clean_notebook.py")
    if git("config", "--local", f"filter.{GIT_FILTER}.clean").stdout.strip() != command:
        git("config", "--local", f"filter.{GIT_FILTER}.clean", command)
    return command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbs_rlvr.build.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install-config", help="the Lab settings, into this environment")
    install.add_argument("--prefix", default=sys.prefix,
                         help="the environment (default: this Python's, %(default)s)")
    commands.add_parser("install-git-filter", help="the notebooks' clean filter, into this clone")
    copy = commands.add_parser("copy", help="a working copy of a section notebook in scratch/")
    copy.add_argument("--nb", required=True, help="the section, e.g. 02 or 02_steps_to_target")
    copy.add_argument("--phase", default="", help="the phase (default: the notebook's)")
    copy.add_argument("--source", default=DEFAULT_SOURCE,
                      help="the copy's source parameter (default: %(default)s)")
    copy.add_argument("--params-dir", default=DEFAULT_PARAMS,
                      help="the copy's params directory (default: %(default)s)")
    copy.add_argument("--n-bootstrap", type=int, default=None,
                      help="bootstrap resamples per fit (default: the notebook's)")
    args = parser.parse_args(argv)
    if args.command == "install-config":
        for path in install_lab_config(args.prefix):
            print(f"lab settings: {path}", file=sys.stderr)
        return 0
    if args.command == "install-git-filter":
        install_git_filter()
        return 0
    try:
        path, created = working_copy(args.nb, args.phase, args.source, args.params_dir,
                                     args.n_bootstrap)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'working copy' if created else 'your existing working copy (delete it for a fresh one)'}: "
          f"{display_path(path)}; its figures and tables go to scratch/, not outputs/. JupyterLab "
          "opens it; its direct link (with the token) is the address Lab prints below.",
          file=sys.stderr)
    print(lab_url_path(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
