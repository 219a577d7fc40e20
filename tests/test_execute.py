"""execute.py: notebooks run one after another on one kept kernel must not see each other."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import LazyModule

from cbs_rlvr.build import execute
from cbs_rlvr.paths import NOTEBOOKS_DIR

nbformat = LazyModule("nbformat")


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_kernels_talk_over_sockets_of_their_own_and_leave_none_behind(tmp_path):
    """Two job slots start kernels at once: over TCP each is handed a port that was free when
    picked and binds it later, so one could lose its port to the other (seen in the suite:
    "ZMQError: Address already in use", then a minute's wait and a failed notebook). Kernels
    talk over Unix sockets named for themselves in a private directory instead; a build's end
    removes them, and a killed build's are removed by the next one."""
    import json
    import threading

    connections = tmp_path / "out" / ".build" / "kernels"
    execute.kernel_environment(connections)
    notebooks = [_notebook(tmp_path / f"n{i}.ipynb", "import os; print(os.getpid())") for i in range(2)]
    errors = [None, None]

    def run(i):
        errors[i] = execute.execute(notebooks[i], tmp_path / f"n{i}.out.ipynb", {})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [None, None]
        infos = [json.loads(p.read_text()) for p in connections.glob("kernel-*.json")]
        assert len(infos) == 2 and {i["transport"] for i in infos} == {"ipc"}
        prefixes = [Path(i["ip"]) for i in infos]
        assert prefixes[0] != prefixes[1] and prefixes[0].parent == prefixes[1].parent
        sockets = prefixes[0].parent
        assert sockets.name.startswith("cbs-kernels-") and len(list(sockets.glob("*-[0-9]*"))) == 10
        assert len(str(prefixes[0])) + len("-99999") < 100  # a socket path's limit, whatever OUT is
    finally:
        execute.shutdown_kernels()
    assert not sockets.exists() and list(connections.glob("*.json")) == []

    # what a killed build left: its connection file and sockets; a file it names elsewhere stays
    import tempfile

    left = Path(tempfile.mkdtemp(prefix="cbs-kernels-", dir="/tmp"))
    for n in (1, 2):
        (left / f"kernel-abc-{n}").write_text("")
    (connections / "kernel-old.json").write_text(json.dumps({"transport": "ipc", "ip": str(left / "kernel-abc")}))
    precious = tmp_path / "data-1"
    precious.write_text("keep")
    (connections / "kernel-odd.json").write_text(json.dumps({"transport": "ipc", "ip": str(tmp_path / "data")}))
    assert len(execute.remove_stale_kernels(connections)) == 2
    assert not left.exists() and precious.read_text() == "keep"


def test_where_tmp_cannot_be_written_kernels_fall_back_to_tcp(tmp_path, monkeypatch):
    """No private socket directory can be made (a read-only or full /tmp): the kernel's options
    carry no ipc transport, so it starts on TCP as before instead of failing the notebook."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setattr(execute, "SOCKETS_ROOT", str(locked / "missing"))
    monkeypatch.setattr(execute, "_sockets", None)
    options = execute._kernel_options()
    assert "transport" not in options and "ip" not in options
    monkeypatch.setattr(execute, "SOCKETS_ROOT", str(tmp_path))
    options = execute._kernel_options()
    assert options["transport"] == "ipc" and Path(options["ip"]).parent.parent == tmp_path
    import shutil

    shutil.rmtree(Path(options["ip"]).parent)
