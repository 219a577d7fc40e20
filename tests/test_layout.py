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
# The layers, lowest first: a module may import its own layer's modules, the base modules (the
# package's top-level files) and the layers below its own, never one above. The folders are the
# layers; no list of modules to keep up to date.
LAYERS = ["words", "data", "sources", "measure", "fit", "plan", "report", "build"]
# the entry points may import any layer: the command line, the notebooks' setup
TOP = {"__init__", "__main__", "section"}
# standalone: importing nothing of the package (clean_notebook runs as git's filter, by path)
STANDALONE = {"progress", "build.clean_notebook", "words.numbers"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


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


def _layer(name: str) -> int:
    """-1 for a base module, else the index of its folder in LAYERS."""
    head = name.split(".")[0]
    if "." not in name and head not in LAYERS:
        return -1
    assert head in LAYERS, f"cbs_rlvr/{head}/ is not a layer: add it to LAYERS (and README's Layout)"
    return LAYERS.index(head)


def test_every_module_reads_in_one_sitting_and_the_api_is_thin():
    for name, path in _modules().items():
        lines = path.read_text().splitlines()
        assert len(lines) <= MAX_MODULE_LINES, (name, len(lines))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, (name, node.name, length)
    assert len((ROOT / "cbs_helpers.py").read_text().splitlines()) <= 500


def test_imports_flow_one_way_without_cycles():
    modules = _modules()
    graph = {name: _imports(name, path) & set(modules) for name, path in modules.items()}
    for name, deps in graph.items():
        if name in TOP:
            continue
        for dep in deps - TOP:
            assert _layer(dep) <= _layer(name), f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        assert not deps & TOP, (name, deps & TOP)
    for name in STANDALONE:
        assert graph[name] == set(), (name, graph[name])
    # the words import only words; the readers of sources hand raw runs to the data layer, never
    # reaching for the snapshot; the build runs no analysis (make report with nothing to do answers
    # from the standard library)
    assert all(d.startswith("words") for n, deps in graph.items() if n.startswith("words") for d in deps)
    for reader in ("sources.wandb_file", "sources.export_dir", "sources.wandb_api"):
        assert not graph[reader] & {"sources.snapshot", "data.select"}, reader
    for name, deps in graph.items():
        if name.startswith("build"):
            assert not {d for d in deps if d.split(".")[0] in ("measure", "fit", "plan")}, (name, deps)
    # every folder says what it owns
    for folder in LAYERS:
        init = PACKAGE / folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), folder
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
    code = ("import sys, json, cbs_rlvr.build.builder; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('pandas', 'numpy', 'matplotlib', 'scipy', 'pyarrow'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_readme_layout_lists_every_module():
    """README's Layout names every module under its folder (a folder's section runs from its
    `name/` line to the next entry at the same indentation)."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    sections, current = {"": []}, ""
    for line in layout.splitlines():
        entry = line[2:] if line.startswith("  ") and not line.startswith("   ") else None
        if entry is not None and entry.split()[0].endswith("/") if entry and entry.split() else False:
            current = entry.split()[0].rstrip("/")
            sections[current] = []
        elif entry is not None and entry.strip():
            current = ""
        sections.setdefault(current, []).append(line)
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        if path.name == "__init__.py" and folder:
            continue
        if path.name not in "\n".join(sections.get(folder, [])):
            missing.append(str(rel))
    assert missing == []
