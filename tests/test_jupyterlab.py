"""JupyterLab, as a user meets it: a real Lab (this environment's, with the project's settings)
driven by headless Chromium over the DevTools protocol, on a fresh git checkout of the project.

Lab at the project root (as `make notebook` starts it): a working copy of 02 for another phase
(written by the command `make notebook` runs) is opened, run with Run All and saved: no error
output, its figures rendered in the page, its outputs in scratch/. Lab in notebooks/: the .py
opens as a notebook by default, and a save writes both twins. Afterwards the build's outputs/ is
untouched, the pair in step and, after `make sync-notebooks`, `git status` clean.
Skipped only where Chromium is absent (CI sets CBS_REQUIRE_CHROMIUM=1: then it fails instead).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest

from cbs_rlvr.browser import find_chromium
from cbs_rlvr.lab import install_lab_config, working_copy
from cbs_rlvr.paths import notebook_defaults, section_paths

ROOT = Path(__file__).resolve().parents[1]
SECTION = "02_steps_to_target"


# --- without a browser ---------------------------------------------------------------------------

def test_a_hand_run_with_other_parameters_writes_to_scratch(capsys):
    defaults = notebook_defaults(SECTION)
    assert defaults["phase"] == "p1" and defaults["out_dir"] is None
    common = {"params_dir": "params", "source": "data/demo"}
    out, _, _ = section_paths(SECTION, None, **common, phase="p1", n_bootstrap=1000, seed=0)
    assert out == ROOT / "outputs" and capsys.readouterr().out == ""
    out, _, _ = section_paths(SECTION, None, **common, phase="p2b", n_bootstrap=50, seed=0)
    assert out == ROOT / "scratch" / "outputs"
    assert "phase='p2b', n_bootstrap=50" in capsys.readouterr().out
    other, _, _ = section_paths(SECTION, None, "params", "/data/x", phase="p1", n_bootstrap=1000,
                                seed=0)
    assert other.parent == ROOT / "scratch" and other != out  # one scratch per source
    given, _, _ = section_paths(SECTION, "outputs", **common, phase="p2b", n_bootstrap=50, seed=0)
    assert given == ROOT / "outputs"  # told otherwise: as the build does


def test_working_copy_sets_the_parameters_and_keeps_edits(tmp_path):
    path, created = working_copy("2", "p2b", n_bootstrap=50, scratch_dir=tmp_path)
    assert created and path == tmp_path / f"{SECTION}-p2b.ipynb"
    nb = nbformat.read(path, 4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'phase = "p2b"' in params.source and "n_bootstrap = 50" in params.source
    assert 'out_dir = "scratch/outputs"' in params.source
    assert nb.metadata["jupytext"]["formats"] == "ipynb"  # never paired
    path.write_text(path.read_text().replace("n_bootstrap = 50", "n_bootstrap = 7"))
    again, created = working_copy("02_steps_to_target", "p2b", n_bootstrap=50, scratch_dir=tmp_path)
    assert again == path and not created and "n_bootstrap = 7" in path.read_text()
    with pytest.raises(ValueError, match="unknown phase 'p9'.*Known phases: p1, p2a"):
        working_copy("02", "p9", scratch_dir=tmp_path)
    with pytest.raises(ValueError, match="no section notebook '42'"):
        working_copy("42", "p1", scratch_dir=tmp_path)


def test_install_lab_config_merges_into_the_environment(tmp_path):
    target = tmp_path / "etc" / "jupyter" / "labconfig" / "default_setting_overrides.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"other:plugin": {"x": 1}, "@jupyterlab/docmanager-extension:plugin":
                                  {"defaultViewers": {"markdown": "Markdown Preview"}}}))
    assert install_lab_config(tmp_path) == [target]
    merged = json.loads(target.read_text())
    assert merged["other:plugin"] == {"x": 1}
    assert merged["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"] == {
        "markdown": "Markdown Preview", "python": "Jupytext Notebook"}


def test_sync_notebooks_and_the_pre_commit_hook_strip_the_same_metadata():
    import yaml

    makefile = (ROOT / "Makefile").read_text()
    block = makefile.split("CLEAN_NOTEBOOK :=", 1)[1].split("\n\n", 1)[0]
    make_args = block.replace("\\\n", " ").split()
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    entry = next(h["entry"] for r in hooks for h in r["hooks"] if h["id"] == "clear-notebook-outputs")
    assert entry.split()[1:] == make_args
    assert "--ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec" in make_args


# --- in JupyterLab -------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=True).stdout


def _checkout(dest: Path) -> Path:
    """The project's files as a fresh clone holds them, committed in a new repository."""
    listed = _git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for rel in listed:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "checkout")
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(check, timeout: float, what: str, interval: float = 0.2):
    """check() until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s; reaped either way."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Lab:
    """A JupyterLab server of this environment on `root`, with the project's Lab settings and no
    user settings (a clean profile), its kernels importing the checkout's code."""

    def __init__(self, root: Path, checkout: Path, tmp: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                   JUPYTER_DATA_DIR=str(tmp / "data"), PYTHONPATH=str(checkout),
                   JUPYTER_CONFIG_PATH=str(checkout / "jupyter-config"))
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "lab.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}",
             "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", "--allow-root",
             f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={self.token}",
             "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp / 'settings'}",
             f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=None"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/lab?token={self.token}"

    def wait(self) -> Lab:
        _poll(self._ready, 90, "JupyterLab to answer")
        return self

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "JupyterLab exited: " + self.log_path.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status?token={self.token}",
                                        timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self):
        _terminate(self.proc)
        self.log.close()


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, browser: str, tmp: Path):
        import websocket

        profile = tmp / "chromium"
        self.proc = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        port = _poll(lambda: active.is_file() and active.read_text().split("\n")[0], 30,
                     "Chromium's DevTools port")

        def page_target():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                return next((t for t in json.load(answer) if t["type"] == "page"), None)

        page = _poll(page_target, 30, "Chromium's page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120,
                                              suppress_origin=True)
        self.next_id = 0
        # headless, the page never has the focus, and Lab's current widget follows the focus
        self.call("Emulation.setFocusEmulationEnabled", enabled=True)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open_lab(self, lab: Lab):
        self.call("Page.navigate", url=lab.url)
        _poll(lambda: self.js("!!(window.jupyterapp && window.jupyterapp.shell)"), 60,
              "JupyterLab to load in the page", interval=0.5)
        self.js("window.jupyterapp.restored.then(() => true)")

    def stop(self):
        self.ws.close()
        _terminate(self.proc)


# Open `path` as a double-click does (its default viewer), wait for its kernel; what opened.
OPEN = """(async () => {
  const app = window.jupyterapp;
  const widget = await app.commands.execute('docmanager:open', {path: %s});
  await widget.context.ready;
  if (widget.sessionContext) { await widget.sessionContext.ready; }
  app.shell.activateById(widget.id);
  window.cbsWidget = widget;
  return {factory: app.docRegistry.getWidgetFactory(
            app.docRegistry.defaultWidgetFactory(%s).name).name,
          notebook: !!(widget.content && widget.content.model && widget.content.model.cells),
          id: widget.id};
})()"""

# Run All in the current notebook, wait until the kernel is idle, save; what the page shows.
RUN_ALL_AND_SAVE = """(async () => {
  const app = window.jupyterapp;
  const widget = window.cbsWidget;
  app.shell.activateById(widget.id);
  if (app.shell.currentWidget !== widget) { throw new Error('the notebook is not the current widget'); }
  await app.commands.execute('notebook:run-all-cells');
  const kernel = widget.sessionContext.session.kernel;
  while (kernel.status !== 'idle') { await new Promise(r => setTimeout(r, 100)); }
  await widget.context.save();
  const cells = Array.from(widget.content.model.cells);
  const outputs = cells.filter(c => c.type === 'code').map(c => c.toJSON().outputs || []).flat();
  return {images: widget.node.querySelectorAll('.jp-RenderedImage img').length,
          errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
          dirty: widget.context.model.dirty,
          text: outputs.map(o => [].concat(o.text || []).join('')).join('')};
})()"""

SAVE_AND_CLOSE = """(async () => {
  const app = window.jupyterapp;
  const widget = window.cbsWidget;
  await widget.context.save();
  const dirty = widget.context.model.dirty;
  await widget.sessionContext.shutdown();
  widget.dispose();
  return dirty;
})()"""


@pytest.fixture(scope="module")
def chromium_path():
    browser = find_chromium()
    if browser is None:
        if os.environ.get("CBS_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (CBS_REQUIRE_CHROMIUM is set) but not found")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    return browser


def _files(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _mtimes(checkout: Path) -> dict:
    return {s: (checkout / "notebooks" / f"{SECTION}{s}").stat().st_mtime_ns for s in (".py", ".ipynb")}


def test_jupyterlab_working_copy_pairing_and_a_clean_tree(chromium_path, tmp_path):
    checkout = _checkout(tmp_path / "checkout")
    outputs_before = _files(checkout / "outputs")
    env = dict(os.environ, PYTHONPATH=str(checkout))
    # both Labs start at once (each takes seconds), one at the root as `make notebook` starts
    # it, one in notebooks/ as a user may start it
    labs = [Lab(checkout, checkout, tmp_path / "lab_root"),
            Lab(checkout / "notebooks", checkout, tmp_path / "lab_notebooks")]
    browser = None
    try:
        # what `make notebook NB=02 PHASE=p2b N_BOOTSTRAP=50` runs before starting Lab at the root
        copy = subprocess.run([sys.executable, "-m", "cbs_rlvr.lab", "copy", "--nb", "02", "--phase",
                               "p2b", "--n-bootstrap", "50"], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=120)
        assert copy.returncode == 0, copy.stderr
        working = copy.stdout.strip()
        assert working == f"scratch/{SECTION}-p2b.ipynb" and (checkout / working).is_file()

        browser = Chromium(chromium_path, tmp_path)
        # Lab at the project root: the working copy, Run All, save
        labs[0].wait()
        browser.open_lab(labs[0])
        opened = browser.js(OPEN % (json.dumps(working), json.dumps(working)))
        assert opened["notebook"], opened
        shown = browser.js(RUN_ALL_AND_SAVE)
        assert shown["errors"] == [] and not shown["dirty"]
        assert shown["images"] >= 3, shown  # the figures, rendered in the page
        assert "50 bootstrap resamples" in shown["text"]  # the copy's parameters
        saved = nbformat.read(checkout / working, 4)
        outputs = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
        assert (checkout / "scratch" / "outputs" / "p2b" / "tables" / "cbs_fit.csv").is_file()
        # the reviewed .py opens as a notebook from the root too, and a save keeps the pair
        before = _mtimes(checkout)
        py = f"notebooks/{SECTION}.py"
        opened = browser.js(OPEN % (json.dumps(py), json.dumps(py)))
        assert opened == {**opened, "factory": "Jupytext Notebook", "notebook": True}
        browser.js(SAVE_AND_CLOSE)
        after = _mtimes(checkout)
        assert all(after[s] > before[s] for s in before), "a save from the root wrote one twin only"
        labs.pop(0).stop()

        # Lab started in notebooks/: the .py opens as a notebook, a save writes both twins
        browser.open_lab(labs[0].wait())
        before = _mtimes(checkout)
        name = f"{SECTION}.py"
        opened = browser.js(OPEN % (json.dumps(name), json.dumps(name)))
        assert opened["factory"] == "Jupytext Notebook" and opened["notebook"], opened
        assert browser.js(SAVE_AND_CLOSE) is False
        after = _mtimes(checkout)
        assert all(after[s] > before[s] for s in before), "a save in notebooks/ lost the pairing"
    finally:
        for lab in labs:
            lab.stop()
        if browser is not None:
            browser.stop()

    # the pair in step, the build's outputs/ untouched
    text_nb = jupytext.read(checkout / "notebooks" / f"{SECTION}.py")
    json_nb = nbformat.read(checkout / "notebooks" / f"{SECTION}.ipynb", 4)
    assert [(c.cell_type, c.source) for c in text_nb.cells] == \
        [(c.cell_type, c.source) for c in json_nb.cells]
    assert _files(checkout / "outputs") == outputs_before
    # opening and saving is not editing: after `make sync-notebooks`, nothing to commit
    # (-o: the environment counts as installed, so make never reinstalls it from the checkout)
    stamp = Path(sys.prefix) / ".cbs-rlvr-installed"
    sync = subprocess.run(["make", "--no-print-directory", "-o", str(stamp), "sync-notebooks"],
                          cwd=checkout,
                          env=dict(env, VIRTUAL_ENV=sys.prefix), capture_output=True, text=True,
                          timeout=300)
    assert sync.returncode == 0, sync.stdout[-2000:] + sync.stderr[-2000:]
    assert _git(checkout, "status", "--porcelain") == ""
