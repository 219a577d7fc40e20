"""The notebooks' sources: one per section, the jupytext .py and its .ipynb twin alike and the
.ipynb without outputs but with its kernel, no code cell over fifteen lines, one literal, typed
parameters cell right after the title, which papermill reads with types and help. (Running them:
test_notebooks.py, test_notebooks_hand.py.)"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import LazyModule

from cbs_rlvr.params import SECTIONS, SUMMARY_SECTION

jupytext = LazyModule("jupytext")
nbformat = LazyModule("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_every_section_has_a_notebook():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted([*SECTIONS, SUMMARY_SECTION])


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_py_and_ipynb_twins_agree_and_ipynb_has_no_outputs(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync-notebooks`"
    text_nb = jupytext.read(py)
    json_nb = nbformat.read(ipynb, as_version=4)
    pairs = list(zip([(c.cell_type, c.source) for c in text_nb.cells],
                     [(c.cell_type, c.source) for c in json_nb.cells], strict=False))
    assert len(text_nb.cells) == len(json_nb.cells), f"{py.name} and {ipynb.name} differ in cells"
    for i, (a, b) in enumerate(pairs):
        assert a == b, f"{py.name} and {ipynb.name} differ at cell {i}: run `make sync-notebooks`"
    # papermill runs a committed .ipynb by hand as it is: it needs the kernel named
    assert json_nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{ipynb.name}: no kernelspec"
    for cell in json_nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{ipynb.name} carries outputs"
            assert cell.get("execution_count") is None, f"{ipynb.name} carries execution counts"


#: A notebook narrates and calls: a code cell of more than this many lines (blank lines and comments
#: aside) holds logic that belongs in a tested function of cbs_rlvr/ (issue 29).
MAX_CELL_LINES = 15


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_is_longer_than_fifteen_lines(py):
    for i, cell in enumerate(jupytext.read(py).cells):
        if cell.cell_type != "code":
            continue
        lines = [x for x in cell.source.splitlines() if x.strip() and not x.strip().startswith("#")]
        assert len(lines) <= MAX_CELL_LINES, (f"{py.name}, cell {i}: {len(lines)} lines of code (at most "
                                              f"{MAX_CELL_LINES}): move the logic into a tested function")


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_literal_parameters_cell_right_after_the_title(py):
    nb = jupytext.read(py)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], f"{py.name}: the parameters cell must be the one right after the title"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert nb.cells[0].source.splitlines()[0].rstrip().endswith("?"), "the title states the question"
    names = {}
    for node in ast.parse(nb.cells[1].source).body:
        # typed, so that `papermill --help-notebook` shows the types
        assert isinstance(node, ast.AnnAssign), f"{py.name}: only annotated assignments in the parameters cell"
        names[node.target.id] = ast.unparse(node.annotation)
        assert type(ast.literal_eval(node.value)).__name__ == names[node.target.id]  # a literal of its type
    assert {"phase", "out_dir", "params_dir", "n_bootstrap"} <= set(names)
    # the first cell says how to look at another phase (07: how to open it in Lab)
    assert f"make notebook NB={py.stem[:2]}" in nb.cells[0].source
    assert nb.cells[-1].cell_type == "code", f"{py.name}: ends with the answer printed from variables"


@pytest.mark.slow
def test_papermill_infers_every_parameter_with_its_type_and_help():
    from papermill.inspection import inspect_notebook

    for py in NOTEBOOKS:
        inferred = inspect_notebook(str(py.with_suffix(".ipynb")))
        cell = jupytext.read(py).cells[1].source
        assert list(inferred) == [n.target.id for n in ast.parse(cell).body], py.name
        for name, parameter in inferred.items():
            assert parameter["inferred_type_name"] in ("str", "int"), (py.name, name, parameter)
            assert parameter["help"], (py.name, name)
    help_text = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook",
                                str(ROOT / "notebooks" / "02_steps_to_target.ipynb")],
                               capture_output=True, text=True, timeout=300)
    assert "n_bootstrap: int (default 1000)" in help_text.stdout and "Unknown type" not in help_text.stdout
