"""JupyterLab on the project: what `make lab` and `make notebook` run.

  python -m cbs_rlvr.lab install-config   merge jupyter-config/labconfig/*.json into the active
                                          environment, so the Lab of this environment opens a
                                          notebooks/*.py as a notebook, wherever it is started
  python -m cbs_rlvr.lab copy --nb 02 --phase p2b [...]
                                          write an untracked working copy of a section notebook
                                          in scratch/, its parameters set, its outputs in a
                                          scratch folder; prints its path (relative to the project)

Looking at another phase is not changing the reviewed notebook: the copy is not paired (only
notebooks/ is, by notebooks/jupytext.toml) and is git-ignored, and its `out_dir` names a folder
in scratch/, so neither the committed notebook nor the build's outputs/ change.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .paths import (
    DEFAULT_PARAMS,
    DEFAULT_SOURCE,
    NOTEBOOKS_DIR,
    PROJECT_DIR,
    SCRATCH_DIR,
    display_path,
    notebook_defaults,
    project_path,
    scratch_out,
)

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
    """Merge each jupyter-config/labconfig/<name>.json into <prefix>/etc/jupyter/labconfig/<name>.json
    (keys already there and not ours are kept). JupyterLab reads these from every Jupyter config
    path, so the settings hold for this environment's Lab wherever it starts. The paths written."""
    written = []
    for ours in sorted((config_dir / "labconfig").glob("*.json")):
        target = Path(prefix) / "etc" / "jupyter" / "labconfig" / ours.name
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


def _set_parameters(source: str, values: dict) -> str:
    """The parameters cell's text with each `name = <literal>` line of `values` set anew."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\w+)\s*=", line)
        if match and match.group(1) in values:
            value = values[match.group(1)]
            literal = json.dumps(value) if isinstance(value, str) else repr(value)
            lines[i] = f"{match.group(1)} = {literal}"
    return "\n".join(lines)


def working_copy(nb: str, phase: str = "", source: str = DEFAULT_SOURCE,
                 params_dir: str = DEFAULT_PARAMS, n_bootstrap: int | None = None,
                 scratch_dir: str | Path | None = None) -> tuple[Path, bool]:
    """(path, created): scratch/<section>-<phase>.ipynb, made from notebooks/<section>.py (the
    reviewed source) with its parameters cell set to `phase` (empty: the notebook's default),
    `source`, `params_dir`, `n_bootstrap` and an `out_dir` in scratch/ (`paths.scratch_out`).
    An existing copy is kept as it is (your edits in it are not overwritten): created is False."""
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
    out = scratch_out(source, params_dir)
    values = {"phase": phase, "source": source, "params_dir": params_dir,
              "out_dir": display_path(out)}
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbs_rlvr.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install-config", help="the Lab settings, into this environment")
    install.add_argument("--prefix", default=sys.prefix,
                         help="the environment (default: this Python's, %(default)s)")
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
    try:
        path, created = working_copy(args.nb, args.phase, args.source, args.params_dir,
                                     args.n_bootstrap)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'working copy' if created else 'your existing working copy (delete it for a fresh one)'}: "
          f"{display_path(path)}; its outputs go to scratch/, not outputs/", file=sys.stderr)
    print(display_path(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
