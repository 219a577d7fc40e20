"""Hand runs: only the build writes a build's output directory (its token proves it is the
build); every other run writes to scratch/, says so on its console, and reads the build's
snapshot when the build made it from the same source and params. Also the two helpers the
notebooks share with JupyterLab: the progress bar (shown to a person, never in a report) and the
committed form of a notebook (one implementation, the same as nbconvert's options)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbs_rlvr import paths
from cbs_rlvr.build import handrun
from cbs_rlvr.build.clean_notebook import clean_notebook_text
from cbs_rlvr.params import params_fingerprint
from cbs_rlvr.sources.manifest import SNAPSHOT_FILES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root in tmp_path (params/ copied, data/demo named), as handrun and paths see it."""
    (tmp_path / "params").mkdir()
    for path in (ROOT / "params").glob("*.yaml"):
        (tmp_path / "params" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "data" / "demo").mkdir(parents=True)
    monkeypatch.setattr(paths, "PROJECT_DIR", tmp_path)
    monkeypatch.setattr(handrun, "PROJECT_DIR", tmp_path)
    monkeypatch.delenv(handrun.BUILD_TOKEN_ENV, raising=False)
    return tmp_path


def _fake_build(project: Path, source: str, content: str = "a") -> str:
    """outputs/ as a build leaves it: a snapshot set in data/ and the state naming its source,
    the params fingerprint and the content hash. Returns the manifest's text."""
    data = project / "outputs" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in SNAPSHOT_FILES:
        (data / name).write_text(f"{name} {content}")
    manifest = json.dumps({"source": source, "content_hash": f"sha256:{content}"})
    (data / "manifest.json").write_text(manifest)
    (project / "outputs" / ".build").mkdir(exist_ok=True)
    (project / "outputs" / handrun.BUILD_STATE_FILE).write_text(json.dumps({
        "source": str(project / "data" / "demo"), "content_hash": f"sha256:{content}",
        "params_fingerprint": params_fingerprint(project / "params")}))
    (project / "outputs" / ".lock").touch()
    return manifest


def test_a_hand_run_writes_to_scratch_whatever_its_parameters(project, capsys):
    """Defaults or not (a saved edit changes the defaults on disk), out_dir empty is a hand run."""
    for given in ({"phase": "p1", "n_bootstrap": 1000}, {"phase": "p2b", "n_bootstrap": 50}):
        for out_dir in (None, ""):
            out, params_dir, source = handrun.section_paths("02_steps_to_target", out_dir, "params",
                                                            "data/demo", **given)
            assert out == project / "scratch" / "outputs"
            assert (params_dir, source) == (project / "params", project / "data" / "demo")
            line = capsys.readouterr().out
            assert line.startswith(f"hand run of 02_steps_to_target [{given['phase']}]: writing to "
                                   "scratch/outputs/, not outputs/")
            assert "reading its own snapshot in scratch/outputs/data/" in line
    other, _, _ = handrun.section_paths("02_steps_to_target", "", "params", "/data/x", phase="p1")
    assert other.parent == project / "scratch" and other.name.startswith("outputs-")
    named, _, _ = handrun.section_paths("02_steps_to_target", "mine", "params", "data/demo", phase="p1")
    assert named == project / "mine" and capsys.readouterr().out.count("hand run") == 1


def test_only_the_build_holding_the_token_writes_a_build_output(project):
    out = project / "outputs"
    out.mkdir()
    with pytest.raises(handrun.HandRunError, match="out_dir outputs is a report build's output"):
        handrun.section_paths("02_steps_to_target", "outputs", "params", "data/demo", phase="p1")
    # a folder a build wrote elsewhere (OUT=...) is one too, by its lock
    elsewhere = project / "run2"
    (elsewhere / ".build").mkdir(parents=True)
    with pytest.raises(handrun.HandRunError):
        handrun.section_paths("02_steps_to_target", str(elsewhere), "params", "data/demo")
    token = handrun.claim_output(out)
    try:
        assert os.environ[handrun.BUILD_TOKEN_ENV] == token
        assert oct((out / handrun.WRITER_FILE).stat().st_mode & 0o777) == "0o600"
        got, _, _ = handrun.section_paths("02_steps_to_target", "outputs", "params", "data/demo")
        assert got == out
        # the token of one build does not open another's OUT, nor a forged or stale one
        with pytest.raises(handrun.HandRunError):
            handrun.section_paths("02_steps_to_target", str(elsewhere), "params", "data/demo")
        os.environ[handrun.BUILD_TOKEN_ENV] = "0" * 32
        assert not handrun.is_build_run(out)
        os.environ[handrun.BUILD_TOKEN_ENV] = token
    finally:
        handrun.release_output(out)
    assert handrun.BUILD_TOKEN_ENV not in os.environ and not (out / handrun.WRITER_FILE).exists()
    os.environ[handrun.BUILD_TOKEN_ENV] = token  # the token of a build that is over
    try:
        with pytest.raises(handrun.HandRunError):
            handrun.section_paths("02_steps_to_target", "outputs", "params", "data/demo")
    finally:
        del os.environ[handrun.BUILD_TOKEN_ENV]


def test_a_hand_run_reads_the_build_snapshot_of_its_source_and_params(project, capsys):
    manifest = _fake_build(project, "data/demo", "a")
    out, _, _ = handrun.section_paths("03_training_curves", "", "params", "data/demo", phase="p2a")
    assert "reading make report's snapshot (outputs/data/)" in capsys.readouterr().out
    for name in (*SNAPSHOT_FILES, "manifest.json"):  # hard links: no copy of a large snapshot
        assert (out / "data" / name).samefile(project / "outputs" / "data" / name)
    # the build writes a new snapshot (by rename, as write_snapshot does): linked again
    build_data = project / "outputs" / "data"
    manifest_b = _fake_build(project, "data/demo", "b")
    assert manifest_b != manifest
    handrun.section_paths("03_training_curves", "", "params", "data/demo")
    assert (out / "data" / "manifest.json").read_text() == manifest_b
    assert (out / "data" / "runs.parquet").read_text() == "runs.parquet b"
    # the 07 summary of a hand run reads the build's fits where it has none of its own
    (project / "outputs" / "p1" / "tables").mkdir(parents=True)
    (project / "outputs" / "p1" / "tables" / "cbs_fit.csv").write_text("built")
    assert handrun.output_file(out, "p1", "tables", "cbs_fit.csv") == \
        project / "outputs" / "p1" / "tables" / "cbs_fit.csv"
    (out / "p1" / "tables").mkdir(parents=True)
    (out / "p1" / "tables" / "cbs_fit.csv").write_text("mine")
    assert handrun.output_file(out, "p1", "tables", "cbs_fit.csv") == out / "p1" / "tables" / "cbs_fit.csv"
    # params edited since the build: the build's snapshot may select other runs; not used
    (project / "params" / "p1.yaml").write_text((project / "params" / "p1.yaml").read_text() + "\n# edited\n")
    assert not handrun.link_build_snapshot(out, str(project / "data" / "demo"), project / "params")
    # another source: its own scratch folder, its own snapshot, and none of the build's fits
    other, _, _ = handrun.section_paths("07_summary", "", "params", "/data/x")
    assert "reading its own snapshot" in capsys.readouterr().out and not (other / "data").exists()
    assert handrun.output_file(other, "p1", "tables", "cbs_fit.csv") == other / "p1" / "tables" / "cbs_fit.csv"
    assert build_data.is_dir()  # nothing of the build's was moved


def test_progress_shows_in_an_interactive_kernel_and_nowhere_in_a_report():
    """A real kernel: a request that allows input (JupyterLab's) gets the bar as widgets; the
    same code run as nbclient runs it (papermill, the build) prints only what it prints."""
    import jupyter_client

    km, kc = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", extra_arguments=["--IPKernelApp.log_level=ERROR"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    code = ("import time, cbs_helpers as ch\n"
            "for _ in ch.progress(range(20), desc='check', delay=0): time.sleep(0.005)\n"
            "with ch.progress(total=4, delay=0) as bar:\n    bar.update(4)\nprint('done')")
    try:
        seen = {}
        for allow_stdin in (True, False):
            msg_id = kc.execute(code, allow_stdin=allow_stdin)
            got = []
            while True:
                msg = kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
                if msg["msg_type"] in ("stream", "display_data", "comm_open", "error"):
                    got.append((msg["msg_type"], msg["content"].get("name", "")))
            seen[allow_stdin] = got
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert ("comm_open", "") in seen[True] and ("display_data", "") in seen[True]
    assert ("stream", "stderr") not in seen[True]
    assert seen[False] == [("stream", "stdout")]  # 'done', nothing else


def test_progress_is_silent_under_the_build_and_off_a_terminal(monkeypatch, capsys):
    from cbs_rlvr.progress import progress, where_shown

    monkeypatch.setenv(handrun.BUILD_TOKEN_ENV, "x")
    assert where_shown() == ""
    assert list(progress(range(3), delay=0)) == [0, 1, 2]
    monkeypatch.delenv(handrun.BUILD_TOKEN_ENV)
    assert where_shown() == ""  # pytest captures stderr: not a terminal
    with progress(total=5, delay=0) as bar:
        bar.update(5)
    assert bar.disable and capsys.readouterr() == ("", "")


def _notebook(**extra) -> dict:
    code = {"cell_type": "code", "id": "c1", "execution_count": 7, "source": "x = 1\nx",
            "metadata": {"tags": ["parameters"], "scrolled": True, "trusted": True,
                         "execution": {"iopub.status.busy": "2026"}},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "a\nb\n"},
                        {"output_type": "display_data", "metadata": {},
                         "data": {"text/plain": "w", "application/vnd.jupyter.widget-view+json":
                                  {"model_id": "m", "version_major": 2, "version_minor": 0}}}]}
    markdown = {"cell_type": "markdown", "id": "m1", "metadata": {"editable": False},
                "source": ["# T\u00e9st?\n", "more"]}
    return {"cells": [markdown, code], "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python", "version": "3.11.7"},
                         "jupytext": {"notebook_metadata_filter": "kernelspec,-all"},
                         "widgets": {"application/vnd.jupyter.widget-state+json": {}}, **extra}}


def test_clean_notebook_writes_what_nbconvert_with_the_committed_options_writes(tmp_path):
    """The git filter, make sync-notebooks and the pre-commit hook use clean_notebook.py: the
    same bytes as nbconvert --clear-output with the metadata masks (what they used before), on a
    notebook with outputs, widget state and Lab's metadata; and a no-op on the committed ones."""
    text = json.dumps(_notebook(), indent=2)
    args = ["--clear-output", "--stdin", "--stdout", "--log-level=ERROR",
            "--ClearMetadataPreprocessor.enabled=True",
            "--ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec",
            "--ClearMetadataPreprocessor.preserve_nb_metadata_mask=jupytext",
            "--ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags"]
    nbconvert = subprocess.run([sys.executable, "-m", "nbconvert", *args], input=text.encode(),
                               capture_output=True, timeout=120, check=True).stdout.decode()
    assert clean_notebook_text(text) == nbconvert
    cleaned = json.loads(nbconvert)
    assert set(cleaned["metadata"]) == {"kernelspec", "jupytext"}
    assert cleaned["cells"][1]["metadata"] == {"tags": ["parameters"]} and cleaned["cells"][1]["outputs"] == []
    # a file in place, and stdin -> stdout as git runs it (with `python3`, from the top of the tree)
    path = tmp_path / "n.ipynb"
    path.write_text(text)
    script = ROOT / "cbs_rlvr" / "build" / "clean_notebook.py"
    subprocess.run([sys.executable, str(script), str(path)], check=True, timeout=60)
    assert path.read_text() == nbconvert
    piped = subprocess.run(["python3", "cbs_rlvr/build/clean_notebook.py"], cwd=ROOT, input=text.encode(),
                           capture_output=True, check=True, timeout=60).stdout.decode()
    assert piped == nbconvert
    for committed in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert clean_notebook_text(committed.read_text()) == committed.read_text(), committed.name


def test_sync_notebooks_the_git_filter_and_the_pre_commit_hook_run_the_same_cleaner():
    import yaml

    from cbs_rlvr.build.lab import GIT_FILTER

    makefile = (ROOT / "Makefile").read_text()
    assert "CLEAN_NOTEBOOK := cbs_rlvr/build/clean_notebook.py" in makefile
    sync = makefile.split("\nsync-notebooks:", 1)[1].split("\n\n", 1)[0]
    assert '"$(PY)" $(CLEAN_NOTEBOOK) notebooks/*.ipynb' in sync
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    entry = next(h["entry"] for r in hooks for h in r["hooks"] if h["id"] == "clear-notebook-outputs")
    assert entry == "python3 cbs_rlvr/build/clean_notebook.py"
    assert f"notebooks/*.ipynb filter={GIT_FILTER}" in (ROOT / ".gitattributes").read_text()
