"""execute.py: notebooks run one after another on one kept kernel must not see each other."""

from __future__ import annotations

import nbformat
import pytest

from cbs_rlvr.build import execute
from cbs_rlvr.paths import NOTEBOOKS_DIR


def _notebook(path, *sources, parameters="x = 0"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"], nb


@pytest.fixture()
def kernels():
    execute.kernel_environment()
    yield
    execute.shutdown_kernels()


def test_a_kept_kernel_starts_each_notebook_clean(tmp_path, kernels):
    first = _notebook(tmp_path / "a.ipynb",
                      "import os, matplotlib as mpl\nleaked = 1\nmpl.rcParams['lines.linewidth'] = 9\n"
                      "os.chdir('/')\nimport matplotlib.pyplot as plt\nplt.figure()\n"
                      "import pandas as pd\npd.set_option('display.max_rows', 3)\n"
                      "import os; pid_a = os.getpid(); print(pid_a)")
    second = _notebook(tmp_path / "b.ipynb",
                       "import os, matplotlib as mpl, matplotlib.pyplot as plt\n"
                       "import pandas as pd\n"
                       "print('leaked' in dir(), mpl.rcParams['lines.linewidth'], os.getcwd(), "
                       "len(plt.get_fignums()), x, os.getpid(), pd.get_option('display.max_rows'))")
    assert execute.execute(first, tmp_path / "a.out.ipynb", {"x": 1}) is None
    assert execute.execute(second, tmp_path / "b.out.ipynb", {"x": 2}) is None
    cells_a, _ = _outputs(tmp_path / "a.out.ipynb")
    cells_b, _ = _outputs(tmp_path / "b.out.ipynb")
    pid_a = cells_a[-1]["outputs"][0]["text"].strip()
    leaked, width, cwd, figures, x, pid_b, rows = cells_b[-1]["outputs"][0]["text"].split()
    assert pid_b == pid_a, "the second notebook should run on the kept kernel"
    assert (leaked, float(width), cwd, int(figures), int(x), int(rows)) == (
        "False", 1.5, str(NOTEBOOKS_DIR), 0, 2, 60)
    # numbered as in a new kernel: the parameters cell, papermill's injected cell, then ours
    assert [c["execution_count"] for c in cells_b] == [1, 2, 3]
    assert not (tmp_path / ".b.out.partial.ipynb").exists()


def test_a_failed_notebook_names_its_cell_and_the_next_one_gets_a_new_kernel(tmp_path, kernels):
    bad = _notebook(tmp_path / "bad.ipynb", "import os; print(os.getpid())",
                    "raise ValueError('phase B has no runs\\nsecond line')")
    good = _notebook(tmp_path / "good.ipynb", "import os; print(os.getpid())")
    error = execute.execute(bad, tmp_path / "bad.out.ipynb", {})
    assert error == "ValueError: second line"
    partial = execute.partial_path(tmp_path / "bad.out.ipynb")
    assert partial.is_file() and not (tmp_path / "bad.out.ipynb").exists()
    # code cells counted as a reader counts them: parameters, print, raise (no parameters
    # passed, so papermill injected no cell)
    assert execute.failed_cell(partial) == (", cell 3", "ValueError: second line")
    assert execute.execute(good, tmp_path / "good.out.ipynb", {}) is None
    pid_bad = _outputs(partial)[0][1]["outputs"][0]["text"].strip()
    pid_good = _outputs(tmp_path / "good.out.ipynb")[0][-1]["outputs"][0]["text"].strip()
    assert pid_good != pid_bad, "a kernel that saw a failure must not be reused"


def test_failed_cell_of_an_unreadable_or_clean_notebook(tmp_path):
    broken = tmp_path / "x.ipynb"
    broken.write_text("{not json")
    assert execute.failed_cell(broken) == ("", "")
    assert execute.failed_cell(_notebook(tmp_path / "ok.ipynb", "1")) == ("", "")
