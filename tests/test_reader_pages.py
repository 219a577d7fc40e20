"""Every HTML page of generated sweeps, as a reader sees it in headless Chromium
(browser.reader_problems): no 'NaN', no raw column name in the visible text, no page wider than
the window at 390 px (a phone) and 1280 px, and a title naming the phase and the section.

Two generated sweeps (tests/sweepgen.py, with verl's habits: learning-rate sweeps, GPU counts
missing from some configs, resumed runs) are built with `make report` from export directories,
40 bootstrap resamples. Cost: about a minute per sweep to build and a few seconds per page to
lay out at both widths. Skipped without Chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweepgen import generate_sweep, write_export_dir, write_params

from cbs_rlvr.report.browser import find_chromium, reader_problems

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 49)  # prompts + rollouts phases with a learning-rate sweep; a prompts phase with one


def build(seed: int, tmp: Path) -> Path:
    sweep = generate_sweep(seed)
    src = write_export_dir(sweep, tmp / "source")
    params = write_params(sweep, tmp / "params")
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix)
    env.pop("CONDA_PREFIX", None)
    proc = subprocess.run(["make", "--no-print-directory", "report", f"SOURCE={src}", f"OUT={tmp / 'out'}",
                           f"PARAMS={params}", "N_BOOTSTRAP=40", "JOBS=1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return tmp / "out"


@pytest.mark.parametrize("seed", SEEDS)
def test_every_page_of_a_generated_sweep_reads_on_a_phone_and_a_laptop(seed, tmp_path):
    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    out = build(seed, tmp_path)
    pages = [out / "index.html", *sorted(out.glob("*/*.html"))]
    assert len(pages) > 3
    problems = reader_problems(pages)
    assert not problems, "\n".join(problems)
