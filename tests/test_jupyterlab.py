"""JupyterLab, as a user meets it: a real Lab (this environment's, with the project's settings)
driven by headless Chromium over the DevTools protocol, on a fresh git clone of the project set
up as `make setup` sets it up (the notebooks' git clean filter).

Lab at the project root, started by `make notebook NB=02 PHASE=p2b`: the address it prints opens
the working copy, which runs (Run All) with its figures and a progress bar in the page and writes
to scratch/. A reviewed notebook, a parameter edited and saved (the defaults on disk change), runs
all and still writes to scratch/: outputs/ stays byte-identical, and git sees only the edit. A
reviewed notebook opened without an edit is autosaved by Lab and `git status` stays clean.
Double-clicking cbs_helpers.py opens the text editor. Lab in notebooks/: a save writes both twins.
Skipped only where Chromium is absent (CI sets CBS_REQUIRE_CHROMIUM=1: then it fails instead).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from testkit import LazyModule, fresh_checkout

from cbs_rlvr.build.clean_notebook import clean_notebook_text
from cbs_rlvr.build.lab import (
    install_lab_config,
    lab_url_path,
    notebook_defaults,
    working_copy,
)
from cbs_rlvr.report.browser import find_chromium

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

jupytext = LazyModule("jupytext")
nbformat = LazyModule("nbformat")

ROOT = Path(__file__).resolve().parents[1]
SECTION = "02_steps_to_target"
EDITED, OTHER = "03_training_curves", "06_wall_clock"  # a saved parameter edit; opened, left alone
# the stamps of this environment: make counts it as installed (-o), never reinstalls from a checkout
STAMPS = [Path(sys.prefix) / f".cbs-rlvr{s}-installed" for s in ("", "-lab", "-lint", "-test")]


# --- without a browser ---------------------------------------------------------------------------

def test_working_copy_sets_the_parameters_and_keeps_edits(tmp_path):
    defaults = notebook_defaults(SECTION)
    assert defaults["phase"] == "p1" and defaults["out_dir"] == "" and defaults["n_bootstrap"] == 1000
    path, created = working_copy("2", "p2b", n_bootstrap=50, scratch_dir=tmp_path)
    assert created and path == tmp_path / f"{SECTION}-p2b.ipynb"
    nb = nbformat.read(path, 4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # the values set, the annotations and the help comments kept
    assert 'phase: str = "p2b"  # the phase' in params.source
    assert "n_bootstrap: int = 50  # bootstrap resamples" in params.source
    assert 'out_dir: str = ""  # empty: a hand run' in params.source
    assert nb.metadata["jupytext"]["formats"] == "ipynb"  # never paired
    path.write_text(path.read_text().replace("n_bootstrap: int = 50", "n_bootstrap: int = 7"))
    again, created = working_copy("02_steps_to_target", "p2b", n_bootstrap=50, scratch_dir=tmp_path)
    assert again == path and not created and "n_bootstrap: int = 7" in path.read_text()
    assert lab_url_path(ROOT / "scratch" / "a b.ipynb") == "/lab/tree/scratch/a%20b.ipynb"
    with pytest.raises(ValueError, match="unknown phase 'p9'.*Known phases: p1, p2a"):
        working_copy("02", "p9", scratch_dir=tmp_path)
    with pytest.raises(ValueError, match="no section notebook '42'"):
        working_copy("42", "p1", scratch_dir=tmp_path)


def test_install_lab_config_merges_into_the_environment(tmp_path):
    target = tmp_path / "etc" / "jupyter" / "labconfig" / "default_setting_overrides.json"
    target.parent.mkdir(parents=True)
    # an environment set up by an older `make lab` (every .py opened as a notebook)
    target.write_text(json.dumps({"other:plugin": {"x": 1}, "@jupyterlab/docmanager-extension:plugin":
                                  {"defaultViewers": {"markdown": "Markdown Preview",
                                                      "python": "Jupytext Notebook"}}}))
    server = tmp_path / "etc" / "jupyter" / "jupyter_server_config.json"
    server.write_text(json.dumps({"ServerApp": {"open_browser": False}}))
    assert install_lab_config(tmp_path) == [target, server]
    merged = json.loads(target.read_text())
    assert merged["other:plugin"] == {"x": 1}
    assert merged["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"] == {
        "markdown": "Markdown Preview", "python": "Editor"}
    assert json.loads(server.read_text()) == {"ServerApp": {"open_browser": False},
                                              "ContentsManager": {"pre_save_hook": "cbs_rlvr.build.lab.pre_save_hook"}}


# --- in JupyterLab -------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=True).stdout


def _checkout(dest: Path) -> Path:
    """The project's files as a fresh clone holds them, committed in a new repository."""
    fresh_checkout(dest)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "checkout")
    return dest


def _make(checkout: Path, env: dict, *args: str, **popen) -> subprocess.Popen:
    """`make <args>` in the checkout, on this environment (counted as installed)."""
    command = ["make", "--no-print-directory", *[f"-o{s}" for s in STAMPS], *args]
    env = dict(env, VIRTUAL_ENV=sys.prefix)
    env.pop("CONDA_PREFIX", None)
    return subprocess.Popen(command, cwd=checkout, env=env, **popen)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(check, timeout: float, what: str, interval: float = 0.2):
    """check() until it returns something truthy; fail after `timeout` seconds, with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM to its process group (make and the Lab it started), SIGKILL after 15 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


class Lab:
    """A JupyterLab server of this environment on `root` with the project's Lab settings and a
    clean user profile (autosave off until `autosave_every` turns it on, as a user may set it), started by
    `make <target>` (its LAB_ARGS) or directly; its kernels import the checkout's code."""

    def __init__(self, root: Path, checkout: Path, tmp: Path, make: list[str] | None = None):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        self.env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                        JUPYTER_DATA_DIR=str(tmp / "data"), PYTHONPATH=str(checkout),
                        JUPYTER_CONFIG_PATH=str(checkout / "jupyter-config"))
        self.settings = tmp / "settings" / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
        self.settings.parent.mkdir(parents=True, exist_ok=True)
        # no autosave racing the test's own saves (two saves of a paired notebook at once can
        # raise Lab's "File Changed" dialog)
        self.settings.write_text(json.dumps({"autosave": False}))
        options = ["--no-browser", f"--port={self.port}", "--ServerApp.port_retries=0",
                   "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
                   "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp / 'settings'}",
                   f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=None"]
        self.log_path = tmp / "lab.log"
        self.log = self.log_path.open("w")
        io = {"stdout": self.log, "stderr": subprocess.STDOUT, "start_new_session": True}
        if make:
            self.proc = _make(checkout, self.env, *make, "LAB_ARGS=" + " ".join(options), **io)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--allow-root", f"--ServerApp.root_dir={root}",
                 *options], cwd=root, env=self.env, **io)
        self.url = f"http://127.0.0.1:{self.port}/lab?token={self.token}"

    def autosave_every(self, seconds: int) -> None:
        """The user's setting: autosave on, every `seconds` (Lab's default: 120); read when the
        page loads."""
        self.settings.write_text(json.dumps({"autosave": True, "autosaveInterval": seconds}))

    def wait(self) -> Lab:
        _poll(self._ready, 120, "JupyterLab to answer")
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
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        port = _poll(lambda: active.is_file() and active.read_text().split("\n")[0], 30,
                     "Chromium's DevTools port")

        def page_target():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                return next((t for t in json.load(answer) if t["type"] == "page"), None)

        page = _poll(page_target, 30, "Chromium's page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=180,
                                              suppress_origin=True)
        self.next_id = 0
        # headless, the page never has the focus, and Lab's current widget follows the focus
        self.call("Emulation.setFocusEmulationEnabled", enabled=True)
        self.call("Page.enable")  # for its dialogs (below)

    def call(self, method: str, **params):
        self.next_id += 1
        waiting = self.next_id
        self.ws.send(json.dumps({"id": waiting, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Page.javascriptDialogOpening":
                # "leave this page?" when a document is unsaved: a person leaving says yes
                self.next_id += 1
                self.ws.send(json.dumps({"id": self.next_id, "method": "Page.handleJavaScriptDialog",
                                         "params": {"accept": True}}))
            if message.get("id") == waiting:
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

    def open_lab(self, url: str):
        self.call("Page.navigate", url=url)
        _poll(lambda: self.js("!!(window.jupyterapp && window.jupyterapp.shell)"), 90,
              "JupyterLab to load in the page", interval=0.5)
        self.js("window.jupyterapp.restored.then(() => true)")

    def double_click(self, x: float, y: float):
        """A person's double-click at (x, y): two presses, the second with clickCount 2."""
        for count in (1, 2):
            for kind in ("mousePressed", "mouseReleased"):
                self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                          clickCount=count)

    def stop(self):
        self.ws.close()
        _terminate(self.proc)


# The current widget once it shows `path` (Lab opened it by itself), its kernel ready.
CURRENT = """(async () => {
  const app = window.jupyterapp;
  const widget = app.shell.currentWidget;
  if (!widget || !widget.context || widget.context.path !== %s) { return null; }
  await widget.context.ready;
  if (widget.sessionContext) { await widget.sessionContext.ready; }
  window.cbsWidget = widget;
  return {path: widget.context.path, notebook: !!(widget.content.model && widget.content.model.cells)};
})()"""

# Open `path` with its default viewer (what a double-click does), wait for its kernel; what opened.
OPEN = """(async () => {
  const app = window.jupyterapp;
  const widget = await app.commands.execute('docmanager:open', {path: %s});
  await widget.context.ready;
  if (widget.sessionContext) { await widget.sessionContext.ready; }
  app.shell.activateById(widget.id);
  window.cbsWidget = widget;
  return {notebook: !!(widget.content && widget.content.model && widget.content.model.cells)};
})()"""

# Set the parameters cell's source, save (both twins, as a person's Ctrl-S).
EDIT_PARAMETERS_AND_SAVE = """(async () => {
  const widget = window.cbsWidget;
  const cell = Array.from(widget.content.model.cells).find(c => (c.getMetadata('tags') || []).includes('parameters'));
  cell.sharedModel.setSource(%s);
  await widget.context.save();
  return widget.context.model.dirty;
})()"""

# Run All in the current notebook, wait until the kernel is idle, save; what the page shows. A
# step that has not finished after 120 s ends it with what the page shows then (a dialog?).
RUN_ALL_AND_SAVE = """(async () => {
  const app = window.jupyterapp;
  const widget = window.cbsWidget;
  const stage = {now: 'activate'};
  const run = (async () => {
    app.shell.activateById(widget.id);
    if (app.shell.currentWidget !== widget) { throw new Error('the notebook is not the current widget'); }
    stage.now = 'run-all';
    await app.commands.execute('notebook:run-all-cells');
    stage.now = 'wait-idle';
    const kernel = widget.sessionContext.session.kernel;
    while (kernel.status !== 'idle') { await new Promise(r => setTimeout(r, 100)); }
    stage.now = 'save';
    await widget.context.save();
    stage.now = 'done';
  })();
  const timeout = new Promise(r => setTimeout(() => r('timeout'), 120000));
  if (await Promise.race([run.then(() => 'ok'), timeout]) === 'timeout') {
    return {timeout: stage.now, kernel: widget.sessionContext.session && widget.sessionContext.session.kernel.status,
            dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText)};
  }
  const cells = Array.from(widget.content.model.cells);
  const outputs = cells.filter(c => c.type === 'code').map(c => c.toJSON().outputs || []).flat();
  return {images: widget.node.querySelectorAll('.jp-RenderedImage img').length,
          errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
          stderr: outputs.filter(o => o.name === 'stderr').map(o => [].concat(o.text).join('')),
          dirty: widget.context.model.dirty,
          text: outputs.map(o => [].concat(o.text || []).join('')).join('')};
})()"""

# A new last cell that loops under ch.progress, run as a person runs it; what its output shows.
RUN_PROGRESS_CELL = """(async () => {
  const app = window.jupyterapp;
  const widget = window.cbsWidget;
  const model = widget.content.model;
  model.sharedModel.insertCell(model.cells.length, {cell_type: 'code', source:
    "import time\\nfor _ in ch.progress(range(30), desc='checking', delay=0, leave=True):\\n    time.sleep(0.02)"});
  widget.content.activeCellIndex = model.cells.length - 1;
  await app.commands.execute('notebook:run-cell');
  const kernel = widget.sessionContext.session.kernel;
  while (kernel.status !== 'idle') { await new Promise(r => setTimeout(r, 100)); }
  await new Promise(r => setTimeout(r, 500));  // the widget view renders after the message
  const node = widget.content.widgets[model.cells.length - 1].node;
  const outputs = model.cells.get(model.cells.length - 1).toJSON().outputs;
  return {bars: node.querySelectorAll('.jp-OutputArea .widget-hprogress .progress-bar').length,
          text: node.querySelector('.jp-OutputArea') ? node.querySelector('.jp-OutputArea').innerText : '',
          kinds: outputs.map(o => o.output_type + ':' + (o.name || Object.keys(o.data || {}).join(',')))};
})()"""

# The file browser at the project root, scrolled to `name`; where to double-click it, once the
# listing holds still there (null until then).
FILE_ITEM = """(async () => {
  const app = window.jupyterapp;
  await app.commands.execute('filebrowser:go-to-path', {path: '/'});
  const find = () => Array.from(document.querySelectorAll('.jp-DirListing-item'))
    .find(i => (i.querySelector('.jp-DirListing-itemText') || {}).textContent === %s);
  let item = find();
  if (!item) { return null; }
  item.scrollIntoView({block: 'center'});
  await new Promise(r => setTimeout(r, 300));
  item = find();
  const box = item && item.getBoundingClientRect();
  if (!box || !box.height) { return null; }
  const x = box.left + Math.min(40, box.width / 2), y = box.top + box.height / 2;
  return item.contains(document.elementFromPoint(x, y)) ? {x, y} : null;
})()"""

# What the current widget is: a file editor (no kernel, no kernel dialog) or a notebook.
CURRENT_KIND = """(() => {
  const widget = window.jupyterapp.shell.currentWidget;
  if (!widget || !widget.context) { return null; }
  return {path: widget.context.path, editor: !!(widget.content && widget.content.editor),
          kernel: !!widget.sessionContext, dialogs: document.querySelectorAll('.jp-Dialog').length,
          factories: Object.fromEntries(%s.map(p => [p, window.jupyterapp.docRegistry.defaultWidgetFactory(p).name]))};
})()"""

# The current document holds the kernel's language_info and has nothing unsaved (autosaved since).
AUTOSAVED = """(() => {
  const model = window.cbsWidget.context.model;
  const info = model.getMetadata('language_info');
  return !!(info && info.name === 'python' && !model.dirty);
})()"""

SAVE_AND_CLOSE = """(async () => {
  const widget = window.cbsWidget;
  await widget.context.save();
  const dirty = widget.context.model.dirty;
  if (widget.sessionContext) { await widget.sessionContext.shutdown(); }
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


def _mtimes(checkout: Path, section: str) -> dict:
    return {s: (checkout / "notebooks" / f"{section}{s}").stat().st_mtime_ns for s in (".py", ".ipynb")}


def test_jupyterlab_hand_runs_a_clean_tree_and_the_text_editor(chromium_path, tmp_path):
    checkout = _checkout(tmp_path / "checkout")
    env = dict(os.environ, PYTHONPATH=str(checkout))
    # what `make setup` does in a clone besides installing: the notebooks' clean filter
    setup = _make(checkout, env, "setup", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert setup.wait(120) == 0, setup.stdout.read()
    assert _git(checkout, "config", "filter.cbs-notebook.clean").strip() == \
        "python3 cbs_rlvr/build/clean_notebook.py"
    (checkout / "outputs" / "p1" / "tables").mkdir(parents=True)  # as a build leaves outputs/
    (checkout / "outputs" / "p1" / "tables" / "cbs_fit.csv").write_text("threshold,B_noise\n0.5,100\n")
    outputs_before = _files(checkout / "outputs")
    copy = f"scratch/{SECTION}-p2b.ipynb"
    # both Labs start at once (each takes seconds): one by `make notebook` at the root, one in
    # notebooks/ as a user may start it
    labs = [Lab(checkout, checkout, tmp_path / "lab_root",
                make=["notebook", "NB=02", "PHASE=p2b", "N_BOOTSTRAP=20"]),
            Lab(checkout / "notebooks", checkout, tmp_path / "lab_notebooks")]
    browser = None
    try:
        browser = Chromium(chromium_path, tmp_path)
        root = labs[0].wait()
        # `make notebook` prints the direct link to the copy (Lab shows a token it did not
        # generate as "...": this one is the test's)
        link = f"http://127.0.0.1:{root.port}/lab/tree/{copy}?token="
        printed = _poll(lambda: link in root.log_path.read_text() and root.log_path.read_text(), 30,
                        "make notebook to print the copy's address")
        assert f"working copy: {copy}" in printed
        browser.open_lab(link + root.token)
        opened = _poll(lambda: browser.js(CURRENT % json.dumps(copy)), 60, "Lab to open the copy")
        assert opened["notebook"], opened

        # the working copy: Run All, save; its figures in the page, its outputs in scratch/
        shown = browser.js(RUN_ALL_AND_SAVE)
        assert shown["errors"] == [] and shown["stderr"] == [] and not shown["dirty"], shown
        assert shown["images"] >= 3, shown  # the figures, rendered in the page
        assert "20 bootstrap resamples" in shown["text"]  # the copy's parameters
        assert f"hand run of {SECTION} [p2b]: writing to scratch/outputs/, not outputs/" in shown["text"]
        assert (checkout / "scratch" / "outputs" / "p2b" / "tables" / "cbs_fit.csv").is_file()
        # a progress bar in a cell, as a person runs it: a widget in the page, no stderr
        bar = browser.js(RUN_PROGRESS_CELL)
        assert bar["bars"] == 1 and "checking" in bar["text"] and "30/30" in bar["text"], bar
        assert not [k for k in bar["kinds"] if k.startswith("stream:stderr")], bar
        browser.js(SAVE_AND_CLOSE)

        # a reviewed notebook, a parameter edited and saved (the defaults on disk are now the
        # edit), then Run All: a hand run all the same, so outputs/ does not change
        browser.js(OPEN % json.dumps(f"notebooks/{EDITED}.ipynb"))
        source = (checkout / "notebooks" / f"{EDITED}.py").read_text()
        cell = re.search(r'# %% tags=\["parameters"\]\n(.*?)\n\n', source, re.S).group(1)
        edited = cell.replace('phase: str = "p1"', 'phase: str = "p2a"')
        assert edited != cell
        assert browser.js(EDIT_PARAMETERS_AND_SAVE % json.dumps(edited)) is False
        assert 'phase: str = "p2a"' in (checkout / "notebooks" / f"{EDITED}.py").read_text()
        shown = browser.js(RUN_ALL_AND_SAVE)
        assert shown["errors"] == [] and shown["images"] >= 1, shown
        assert f"hand run of {EDITED} [p2a]: writing to scratch/outputs/, not outputs/" in shown["text"]
        assert (checkout / "scratch" / "outputs" / "p2a" / "figures" / "training_curves.png").is_file()
        assert _files(checkout / "outputs") == outputs_before
        # saved with its outputs (the user's work), without the metadata Lab adds (the server's
        # pre-save hook); git sees the edit, and only the edit, not the outputs and counts
        saved = (checkout / "notebooks" / f"{EDITED}.ipynb").read_text()
        assert '"outputs": [\n    {' in saved and '"language_info"' not in saved
        diff = _git(checkout, "diff", "--numstat", "--", f"notebooks/{EDITED}.ipynb", f"notebooks/{EDITED}.py")
        assert sorted(diff.split()) == sorted(["1", "1", f"notebooks/{EDITED}.ipynb",
                                               "1", "1", f"notebooks/{EDITED}.py"]), diff
        # the filter is what nbconvert with the committed options writes, on what Lab saved
        nbconvert = subprocess.run(
            [sys.executable, "-m", "nbconvert", "--clear-output", "--stdin", "--stdout", "--log-level=ERROR",
             "--ClearMetadataPreprocessor.enabled=True",
             "--ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec",
             "--ClearMetadataPreprocessor.preserve_nb_metadata_mask=jupytext",
             "--ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags"],
            input=saved, capture_output=True, text=True, timeout=120, check=True).stdout
        assert clean_notebook_text(saved) == nbconvert
        browser.js(SAVE_AND_CLOSE)

        # a reviewed notebook opened and left alone: Lab marks it changed (language_info) and
        # autosaves it (the user's interval, 2 s); the file is the committed one, git sees nothing
        root.autosave_every(2)
        browser.open_lab(root.url)
        before = _mtimes(checkout, OTHER)
        assert browser.js(OPEN % json.dumps(f"notebooks/{OTHER}.ipynb"))["notebook"]
        # the kernel's language_info in the document, and an autosave since: nothing unsaved
        _poll(lambda: browser.js(AUTOSAVED), 60, "Lab to add language_info and autosave it")
        assert _mtimes(checkout, OTHER)[".ipynb"] > before[".ipynb"]
        assert _git(checkout, "status", "--porcelain") == \
            f" M notebooks/{EDITED}.ipynb\n M notebooks/{EDITED}.py\n"

        # double-clicking cbs_helpers.py in the file browser: the text editor, no kernel
        where = _poll(lambda: browser.js(FILE_ITEM % json.dumps("cbs_helpers.py")), 30,
                      "cbs_helpers.py in the file browser")
        browser.double_click(where["x"], where["y"])
        paths = ["cbs_helpers.py", "cbs_rlvr/fit/phase.py", "tests/test_layout.py", f"notebooks/{SECTION}.py",
                 f"notebooks/{SECTION}.ipynb"]
        seen = []
        try:
            kind = _poll(lambda: (k := browser.js(CURRENT_KIND % json.dumps(paths))) and
                         (seen.append(k) or k["path"] == "cbs_helpers.py") and k, 60, "cbs_helpers.py to open")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; double-clicked at {where}; then the current widget: {seen[-1:]}") from None
        assert kind["editor"] and not kind["kernel"] and kind["dialogs"] == 0, kind
        assert kind["factories"] == {**{p: "Editor" for p in paths[:4]}, paths[4]: "Notebook"}
        browser.js(SAVE_AND_CLOSE)  # OTHER's notebook
        root.stop()

        # Lab started in notebooks/: the .ipynb opens as a notebook, a save writes both twins
        browser.open_lab(labs[1].wait().url)
        before = _mtimes(checkout, OTHER)
        assert browser.js(OPEN % json.dumps(f"{OTHER}.ipynb"))["notebook"]
        assert browser.js(SAVE_AND_CLOSE) is False
        after = _mtimes(checkout, OTHER)
        assert all(after[s] > before[s] for s in before), "a save in notebooks/ lost the pairing"
    finally:
        for lab in labs:
            lab.stop()
        if browser is not None:
            browser.stop()

    # the pairs in step, the build's outputs/ untouched, git sees only the one edit
    for section in (EDITED, OTHER):
        text_nb = jupytext.read(checkout / "notebooks" / f"{section}.py")
        json_nb = nbformat.read(checkout / "notebooks" / f"{section}.ipynb", 4)
        assert [(c.cell_type, c.source) for c in text_nb.cells] == \
            [(c.cell_type, c.source) for c in json_nb.cells]
    assert _files(checkout / "outputs") == outputs_before
    assert _git(checkout, "status", "--porcelain") == \
        f" M notebooks/{EDITED}.ipynb\n M notebooks/{EDITED}.py\n"
