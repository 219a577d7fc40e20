"""The architecture, checked: a thin cbs_helpers over a package of small modules whose imports
flow one way (README, "Layout"), and an `import cbs_helpers` that loads no heavy library."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cbs_rlvr"
DATA_LAYER = {"errors", "paths", "manifest", "params", "history", "runs", "resume", "select", "snapshot",
              "sources", "sources.wandb_file", "sources.export_dir", "sources.wandb_api",
              "sources.wandb_graphql", "handrun"}
# what every layer may use, importing nothing of the package itself
SUPPORT = {"progress", "clean_notebook"}
ANALYSIS = {"measure", "envelope", "noise", "wallclock", "baseline", "figures", "figures_habits", "figures_plan",
            "tables", "words", "fit", "fit._tobit", "fit.forms", "fit.resample", "fit.evalnoise", "fit.phase",
            "fit.result", "fit.table", "fit.crossaxis", "fit.joint", "fit.crosscheck", "fit.curves", "fit.across",
            "fit.interval", "plan",
            "plan.predict", "plan.decide", "plan.nextruns", "plan.phase"}
BUILD = {"build", "execute", "report_html", "browser", "__main__", "lab"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__") or "__init__"
        found[name] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The package modules `name` imports, at module level or inside functions."""
    package = name.rsplit(".", 1)[0] if "." in name else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if candidate in _modules() else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cbs_rlvr"):
            found.add(node.module.removeprefix("cbs_rlvr").lstrip(".") or "__init__")
    return {m for m in found if m and m != name}


def test_every_module_reads_in_one_sitting_and_the_api_is_thin():
    for name, path in _modules().items():
        assert len(path.read_text().splitlines()) <= 800, name
    assert len((ROOT / "cbs_helpers.py").read_text().splitlines()) <= 500


def test_imports_flow_one_way_without_cycles():
    modules = _modules()
    graph = {name: _imports(name, path) & set(modules) for name, path in modules.items()}
    for name in DATA_LAYER & set(graph):
        assert not graph[name] & (ANALYSIS | BUILD), (name, graph[name] & (ANALYSIS | BUILD))
    for name in BUILD & set(graph):
        assert not graph[name] & ANALYSIS, (name, graph[name] & ANALYSIS)
    for name in ANALYSIS & set(graph):
        assert not graph[name] & BUILD, (name, graph[name] & BUILD)
    assert not graph["sources.wandb_file"] & {"snapshot", "select"}
    for name in SUPPORT:
        assert graph[name] == set(), (name, graph[name])
    # no cycles: a topological order exists
    remaining = {k: set(v) for k, v in graph.items()}
    while remaining:
        free = [k for k, deps in remaining.items() if not deps & set(remaining)]
        assert free, f"import cycle among {sorted(remaining)}"
        for k in free:
            del remaining[k]


def test_notebooks_import_only_cbs_helpers():
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(str(n).startswith("cbs_rlvr") for n in names), path.name
        assert "cbs_helpers" in names, path.name


def test_import_cbs_helpers_loads_no_heavy_library():
    """scipy, wandb, yaml, jupytext, papermill and nbconvert load only in the functions that use
    them (pyarrow may come with pandas itself)."""
    code = ("import sys, json, cbs_helpers; print(json.dumps(sorted(m for m in "
            "('scipy', 'wandb', 'yaml', 'jupytext', 'papermill', 'nbconvert', 'google.protobuf') "
            "if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_build_driver_imports_neither_pandas_nor_the_analysis():
    """`make report` with nothing to do must answer fast: the build module loads the standard
    library only (pandas comes later, and only when the snapshot must be rebuilt)."""
    code = ("import sys, json, cbs_rlvr.build; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('pandas', 'numpy', 'matplotlib', 'scipy', 'pyarrow'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
               if path.name not in layout]
    assert missing == []
