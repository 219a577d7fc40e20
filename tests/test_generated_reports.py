"""The whole `make report` over two generated sweeps (tests/sweeps/generated.py, with verl's habits), one
written as real W&B offline runs by the SDK and one as an export directory: the build end to end
from files, then every page as a reader sees it at phone and laptop width. The offline one also
holds a small sweep of real policy-gradient training (tests/sweeps/trainer.py) as a phase of its own,
so a real learner's report is read in the browser too, in the same build. The hunts
(test_generated_sweeps.py, test_hunt_notebooks.py) run the same analysis and notebooks in-process
over many more sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_analysis import written_table_problems
from sweeps import trainer as pg
from sweeps.form import write_export_dir, write_params
from sweeps.generated import generate_sweep
from testkit import SWEEPS_CLI, LazyModule, offline_wandb_env, venv_env

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

nbformat = LazyModule("nbformat")

ROOT = Path(__file__).resolve().parents[1]

#: Real training beside seed 0's generated runs: Adam at one learning rate along the rollouts axis
#: (phase p2b, which seed 0 does not have), 4 batch sizes of one seed, one run stopped early, written
#: by the SDK into the same source; no gradient statistics (p2b's sections do not read them; they
#: are four fifths of the training time).
PG_SWEEP = {"setting": "adam_fixed", "axis": "rollouts", "seed": 5,
            "kwargs": {"n_seeds": 1, "sizes": [[16, 2], [16, 4], [16, 8], [16, 32]], "n_running": 1,
                       "grad_noise": False}}

# seed -> (how the sweep is written, what it exercises, checked against its features, real training added)
E2E = {
    0: ("offline", ["prompts:normal", "rollouts:normal", "habit:lr_sweep", "habit:resumed",
                    "state:running", "acc:no_val", "config:no_gpus", "acc:inf_points"], PG_SWEEP),
    424: ("export", ["iso_batch:empty", "iso_batch:normal", "orphan_phase", "no_step_time",
                     "state:failed", "acc:all_nan"], None),
}


def _source(seed: int, kind: str, tmp: Path, trained: dict | None) -> Path:
    sweep = generate_sweep(seed)
    src = tmp / "source"
    if kind == "export":
        return write_export_dir(sweep, src)
    proc = subprocess.run([sys.executable, SWEEPS_CLI, "generated", "offline", str(seed),
                           str(src)], cwd=tmp, env=offline_wandb_env(tmp), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if trained:
        env = {**offline_wandb_env(tmp), "PG_SWEEP_ARGS": json.dumps(trained["kwargs"])}
        proc = subprocess.run([sys.executable, SWEEPS_CLI, "trainer", "offline", trained["setting"],
                               trained["axis"], str(trained["seed"]), str(src)], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return src


def _trained_params(trained: dict, dest: Path) -> str:
    """The params file of the real-training phase, as sweeps.trainer.trainer_sweep states it; its phase."""
    axis = trained["axis"]
    phase = pg.AXES[axis]["phase"]
    params = {"phase": phase, "title": f"Real policy-gradient training, {trained['setting']}, {axis} axis",
              "axis": axis, "metric": pg.VAL_KEY, "n_val": pg.N_VAL, "thresholds": list(pg.TARGETS),
              "sections": list(pg.SECTIONS[axis]), "two_axis_phases": [phase] if axis == "rollouts" else []}
    (dest / f"{phase}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return phase


def _make_report(src: Path, params: Path, out: Path) -> subprocess.CompletedProcess:
    env = venv_env()
    return subprocess.run(["make", "--no-print-directory", "report", f"SOURCE={src}", f"OUT={out}",
                           f"PARAMS={params}", "N_BOOTSTRAP=40"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def _stderr_outputs(nb_path: Path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if o.get("output_type") == "error" or (o.get("output_type") == "stream" and o.get("name") == "stderr"):
                out.append(f"{nb_path.name}: {o.get('text', o.get('evalue', ''))[:300]}")
    return out


@pytest.fixture(scope="module", params=list(E2E))
def built(request, tmp_path_factory) -> dict:
    """`make report` over the sweep, once for the module's tests."""
    seed = request.param
    kind, features, trained = E2E[seed]
    sweep = generate_sweep(seed)
    assert set(features) <= set(sweep.features), sweep.describe()
    tmp = tmp_path_factory.mktemp(f"sweep{seed}")
    src = _source(seed, kind, tmp, trained)
    params = write_params(sweep, tmp / "params")
    trained_phase = _trained_params(trained, params) if trained else None
    assert trained_phase not in sweep.params  # a phase of its own
    out = tmp / "out"
    return {"seed": seed, "sweep": sweep, "out": out, "proc": _make_report(src, params, out),
            "trained_phase": trained_phase}


def test_make_report_over_a_generated_sweep(built):
    """Exit 0 with no traceback; every input run analysed or excluded; every written interval
    holds its estimate; no notebook prints an error or a warning."""
    sweep, out, proc = built["sweep"], built["out"], built["proc"]
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log, log[-3000:]
    assert proc.returncode == 0, log[-3000:]
    # every input run accounted for
    runs = pd.read_parquet(out / "data" / "runs.parquet")
    excluded = pd.read_csv(out / "data" / "excluded_runs.csv")
    seen = set(runs["run_id"].astype(str)) | set(excluded["run_id"].dropna().astype(str))
    seen |= {i for v in runs["segment_run_ids"].dropna().astype(str) for i in v.split(";")}
    assert {r["run_id"] for r in sweep.runs} <= seen
    # every interval holds its estimate; statuses documented
    assert not written_table_problems(out)
    # no report shows a traceback; no notebook prints an error or a warning
    for html in out.glob("*/*.html"):
        assert "Traceback" not in html.read_text(), html
    noisy = [line for nb in out.glob("*/*.ipynb") for line in _stderr_outputs(nb)]
    assert not noisy, noisy
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["n_runs"] == len(runs)
    phase = built["trained_phase"]
    if phase:  # the real learner's runs are a phase of their own, with a fit and an answer
        assert (runs["phase"] == phase).sum() == len(PG_SWEEP["kwargs"]["sizes"])
        assert (pd.read_csv(out / phase / "tables" / "cbs_fit.csv")["status"] == "ok").any()
        decided = pd.read_csv(out / "decisions.csv").set_index("phase")
        assert decided.loc[phase, "basis"] in ("measured", "on_axis"), decided.loc[phase]


def test_every_page_of_a_generated_sweep_reads_on_a_phone_and_a_laptop(built):
    """Every HTML page as a reader sees it in headless Chromium (browser.reader_problems): no
    'NaN', no raw column name in the visible text, no page wider than the window at 390 px (a
    phone) and 1280 px, a title naming the phase and the section; the real learner's pages among
    them (seed 0). Skipped without Chromium (CI installs it and sets CBS_REQUIRE_CHROMIUM=1, which
    makes the skip a failure)."""
    from cbs_rlvr.report.browser import find_chromium, reader_problems

    if find_chromium() is None:
        if os.environ.get("CBS_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (CBS_REQUIRE_CHROMIUM is set) but not found")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    assert built["proc"].returncode == 0
    out = built["out"]
    pages = [out / "index.html", *sorted(out.glob("*/*.html"))]
    assert len(pages) > 3
    if built["trained_phase"]:
        trained = {p.stem for p in pages if p.parent.name == built["trained_phase"]}
        assert trained == set(pg.SECTIONS[PG_SWEEP["axis"]]), trained
    problems = reader_problems(pages)
    assert not problems, "\n".join(problems)
