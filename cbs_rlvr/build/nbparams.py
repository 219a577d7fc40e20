"""The parameters cell of a section notebook, read one way for everyone: the build (which names
it passes to papermill), `make notebook`'s working copies (the defaults, a value set anew) and
Lab's tests. A parameter is an assignment with a literal value, annotated or not
(`n_bootstrap: int = 1000` or `n_bootstrap = 1000`)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from ..paths import NOTEBOOKS_DIR


def parameter_nodes(source: str) -> list:
    """The assignments of a parameters cell's source, in order."""
    return [node for node in ast.parse(source).body
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None]


def node_names(node) -> list[str]:
    """The names one assignment sets."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def parameter_names(source: str) -> set[str]:
    """The names a parameters cell assigns."""
    return {name for node in parameter_nodes(source) for name in node_names(node)}


def parameters_cell(text: str) -> str:
    """The source of the cell tagged `parameters` in a jupytext percent-format .py ('' if none)."""
    cell, inside = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            if inside:
                break
            inside = 'tags=["parameters"]' in line
        elif inside:
            cell.append(line)
    return "\n".join(cell)


def notebook_defaults(section: str, notebooks_dir: str | os.PathLike | None = None) -> dict:
    """The literals of the parameters cell of notebooks/<section>.py, by name (the defaults a run
    of that notebook starts from)."""
    text = (Path(notebooks_dir or NOTEBOOKS_DIR) / f"{section}.py").read_text(encoding="utf-8")
    return {name: ast.literal_eval(node.value) for node in parameter_nodes(parameters_cell(text))
            for name in node_names(node)}
