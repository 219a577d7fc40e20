"""Hardening: a corpus of bad inputs never breaks the report, and no input run is lost silently.

The corpus (tests/sweeps/hardening.py) holds real W&B offline runs written by the wandb SDK with
every fault of the data-layer issue, files damaged on purpose, stray files, and 1,000 cloned runs
of which one is broken. The FULL `make report` runs over it (in a copy of the project whose
params/ holds the corpus' phases) with a fake HOME and a sentinel WANDB_API_KEY; each case then
has its own assertion on what the build wrote. Separate tests: a params file with wrong types;
the W&B fetch's grouping of keys. The snapshot over the same corpus (missing / unreachable sources,
a corrupt earlier snapshot, `make snapshot` killed mid-write, the offline reader's grouping):
test_hardening_snapshot.py. Corpus and build: tests/hardening_kit.py, made once per run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import hardening_kit as kit  # noqa: E402
from sweeps import hardening as hc  # noqa: E402
from wandb_server import ServedRun  # noqa: E402

from cbs_rlvr.data.runs import REASON_NO_VALIDATION
from cbs_rlvr.sources.snapshot import build_snapshot

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

# --------------------------------------------------------------------------------------------
# Fixtures: the corpus, a copy of the project with the corpus' params, the report built over it
# (tests/hardening_kit.py, made once per run for this file and test_hardening_snapshot.py)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(hardening_build) -> dict:
    return hardening_build


@pytest.fixture(scope="module")
def project(corpus) -> Path:
    return corpus["project"]


@pytest.fixture(scope="module")
def report(corpus) -> dict:
    out = corpus["out"]
    data = out / "data"
    runs = pd.read_parquet(data / "runs.parquet") if (data / "runs.parquet").is_file() else None
    excluded = (pd.read_csv(data / "excluded_runs.csv", dtype=str, keep_default_na=False)
                if (data / "excluded_runs.csv").is_file() else None)
    history = pd.read_parquet(data / "history.parquet") if (data / "history.parquet").is_file() else None
    html = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in out.rglob("*.html")}
    return {"runs": runs, "excluded": excluded, "history": history, "html": html, **corpus}


def _run(report: dict, run_id: str) -> dict:
    rows = report["runs"][report["runs"]["run_id"] == run_id]
    assert len(rows) == 1, (run_id, report["runs"]["run_id"].tolist()[:40])
    return rows.iloc[0].to_dict()


def _flags(report: dict, run_id: str) -> dict:
    """'a:3;b' -> {'a': '3', 'b': ''}"""
    text = _run(report, run_id)["flags"] or ""
    return dict((f.split(":", 1) + [""])[:2] for f in text.split(";") if f)


def _reason(report: dict, run_id: str | None = None, source: str | None = None) -> str:
    frame = report["excluded"]
    if run_id is not None:
        frame = frame[frame["run_id"] == run_id]
    if source is not None:
        frame = frame[frame["source"] == source]
    assert len(frame) == 1, (run_id, source, report["excluded"])
    return frame.iloc[0]["reason"]


def _hist(report: dict, run_id: str) -> pd.DataFrame:
    history = report["history"]
    return history[history["run_id"] == run_id].set_index("step")


def _table(report: dict, phase: str, name: str) -> pd.DataFrame:
    return pd.read_csv(report["out"] / phase / "tables" / f"{name}.csv")


def _sb_eb_runs(report: dict, phase: str) -> set:
    return set(_table(report, phase, "sb_eb")["run_id"])


# --------------------------------------------------------------------------------------------
# The build as a whole
# --------------------------------------------------------------------------------------------
def test_full_report_over_the_corpus_exits_0(report):
    proc = report["proc"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "FAILED" not in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    for phase, (_thresholds, sections) in hc.PHASES.items():
        for section in sections:
            assert (report["out"] / phase / f"{section}.html").is_file(), (phase, section)
    assert (report["out"] / "summary" / "07_summary.html").is_file()
    assert not list(report["out"].rglob("*.error.txt"))


def test_every_run_file_is_accounted_for(report):
    files = {p.relative_to(report["root"]).as_posix() for p in hc.wandb_files(report["root"])}
    used = {s for sources in report["runs"]["source"] for s in sources.split(";")}
    excluded = set(report["excluded"]["source"])
    assert used | excluded == files
    assert not used & excluded
    assert len(files) == hc.N_CLONES + 28 + 4  # clones, SDK runs (2 files: resumed run), damaged
    assert report["excluded"]["reason"].str.len().gt(10).all()


def test_no_html_shows_a_traceback(report):
    assert report["html"], "no HTML written"
    for name, text in report["html"].items():
        assert "Traceback" not in text, name
        assert not re.search(r"\b[A-Z][A-Za-z]*Error\b: ", text), name


# --------------------------------------------------------------------------------------------
# One assertion per case of the corpus
# --------------------------------------------------------------------------------------------
def case_unparseable_name(r):
    assert _reason(r, "unparse1").startswith("cannot determine phase/n_prompts/n_rollouts from name 'baseline-run'")


def case_name_without_phase(r):
    assert _reason(r, "nophase1").startswith("no phase in run name 'my_experiment'")


def case_no_validation_metric(r):
    assert _reason(r, "noval1") == REASON_NO_VALIDATION


def case_validation_never_finite(r):
    assert "never a finite number" in _reason(r, "nanval1")


def case_nan_and_inf_values(r):
    assert _flags(r, "nan1")["nonfinite"] == "4"
    hist = _hist(r, "nan1")
    assert hist[hc.VAL].isna()[[10, 20]].all() and hist[hc.VAL].notna()[[5, 15, 25]].all()
    assert "nan1" in _sb_eb_runs(r, "hA")


def case_metric_logged_as_a_string(r):
    assert _flags(r, "str1")["non_numeric"] == "2"
    hist = _hist(r, "str1")
    assert pd.isna(hist.loc[15, hc.VAL]) and pd.isna(hist.loc[6, "critic/score/mean"])
    assert "str1" in _sb_eb_runs(r, "hA")


def case_empty_file(r):
    assert "empty file" in _reason(r, source=r["made"]["empty_file"])


def case_not_a_wandb_file(r):
    assert "bad header" in _reason(r, source=r["made"]["not_a_wandb_file"])


def case_header_only_file(r):
    assert "no records after the file header" in _reason(r, source=r["made"]["header_only"])


def case_garbage_after_header(r):
    assert "no readable records" in _reason(r, source=r["made"]["garbage_after_header"])


def case_truncated_file(r):
    run = _run(r, "trunc1")
    assert (run["state"], run["flags"]) == ("crashed", "truncated")
    assert 10 <= run["last_step"] < 80 and "trunc1" in _sb_eb_runs(r, "hA")


def case_flipped_crc(r):
    assert _flags(r, "crc1") == {"bad_records": "1"}
    assert _run(r, "crc1")["last_step"] == 80


def case_stray_files(r):
    sources = set(r["excluded"]["source"]) | {s for x in r["runs"]["source"] for s in x.split(";")}
    assert all(s.endswith(".wandb") for s in sources)
    assert not any("synced" in s or "odd.wandb/" in s or "latest-run" in s for s in sources)


def case_duplicate_names_are_replicates(r):
    reps = r["runs"][r["runs"]["name"] == "cbs_hA_np256_nr8"].set_index("run_id")
    assert sorted(reps["replicate"]) == [0, 1] and set(reps["n_replicates"]) == {2}
    assert {"dupA", "dupB"} <= _sb_eb_runs(r, "hA")


def case_crashed_process(r):
    run = _run(r, "crash1")
    assert run["state"] == "crashed" and run["n_history_rows"] > 20
    assert "crash1" in _sb_eb_runs(r, "hA")


def case_failed_run_keeps_its_history(r):
    run = _run(r, "fail1")
    assert (run["state"], run["last_step"]) == ("failed", 40) and "fail1" in _sb_eb_runs(r, "hA")


def case_config_name_mismatch(r):
    run = _run(r, "mism1")
    assert (run["n_prompts"], run["total_batch"], run["flags"]) == (24, 192, "config_name_mismatch")


def case_resumed_run_with_overlapping_steps(r):
    flags = _flags(r, "resume1")
    assert flags["segments"] == "2" and int(flags["duplicate_steps"]) == 11
    hist = _hist(r, "resume1")
    assert hist.index.tolist() == list(range(81))
    assert hist.loc[45, "critic/score/mean"] == 2045.0 and hist.loc[39, "critic/score/mean"] != 2039.0


def case_step_counter_restarts(r):
    flags = _flags(r, "restart1")
    assert "step_restart" in flags and int(flags["duplicate_steps"]) == 11
    hist = _hist(r, "restart1")
    assert hist.index.tolist() == list(range(81))
    assert hist.loc[35, "critic/score/mean"] == 3035.0 and hist.loc[29, "critic/score/mean"] == 1029.0


def case_accuracy_in_percent(r):
    assert "percent_accuracy" in _flags(r, "pct1")
    values = _hist(r, "pct1")[hc.VAL].dropna()
    assert 0 < values.max() <= 1 and values.iloc[-1] == pytest.approx(hc.accuracy(80, 8192), abs=1e-4)
    sb = _table(r, "hA", "sb_eb")
    assert sb[sb["run_id"] == "pct1"]["S_B"].notna().all()


def case_phase_with_a_single_batch_size(r):
    fit = _table(r, "hsingle", "cbs_fit")
    assert set(fit["status"]) == {"insufficient"} and len(fit) == 2
    assert "hsingle/02_steps_to_target.html" in r["html"]
    # no fit, no step-time model: the plan's tables are written with their header only
    assert _table(r, "hsingle", "plan").empty and _table(r, "hsingle", "next_runs").empty
    assert "no plan (fit insufficient" in r["html"]["hsingle/08_plan.html"]


def case_phase_where_no_run_reaches_a_threshold(r):
    sb = _table(r, "hnoreach", "sb_eb")
    assert len(sb) == 3 * 2 and sb["censored"].all()
    assert set(_table(r, "hnoreach", "cbs_fit")["status"]) == {"insufficient"}
    assert _table(r, "hnoreach", "plan").empty and "threshold" in _table(r, "hnoreach", "plan").columns


def case_plan_over_the_damaged_phase(r):
    """hA (replicates, percent accuracy, resumed and restarted runs, odd batch sizes) gets a plan
    whose intervals hold their estimates."""
    plan = _table(r, "hA", "plan")
    assert set(plan["objective"]) == {"wall_clock", "gpu_hours", "samples"}
    assert ((plan["predicted_hours_lo"] <= plan["predicted_hours"])
            & (plan["predicted_hours"] <= plan["predicted_hours_hi"])).all()
    nxt = _table(r, "hA", "next_runs")  # a settled decision lists none; a listed run can reach the target
    assert (nxt["p_reach"] >= 0.5).all() and list(nxt["rank"]) == list(range(1, len(nxt) + 1))
    decision = _table(r, "hA", "decision").iloc[0]
    assert decision["basis"] in ("measured", "on_axis") and decision["n_prompts"] > 0


def case_thousand_runs_one_broken(r):
    big = r["runs"][r["runs"]["phase"] == "hbig"]
    assert len(big) == hc.N_CLONES - 1
    assert "no readable records" in _reason(r, source=r["made"]["broken_clone"])
    assert len(_sb_eb_runs(r, "hbig")) == hc.N_CLONES - 1
    assert "hbig/02_steps_to_target.html" in r["html"]


def case_script_in_a_parseable_run_name(r):
    assert _run(r, "xss1")["name"] == f"cbs_hA_np40_nr8_{hc.SCRIPT_NAME}"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r["html"]["hA/01_load_runs.html"]
    for name, text in r["html"].items():
        assert "<script>alert(1)" not in text, name


def case_script_in_an_unparseable_run_name(r):
    assert "cannot determine" in _reason(r, "xss2")
    for name, text in r["html"].items():
        assert "<script>alert(3)" not in text, name


def case_markup_in_a_config_value(r):
    assert hc.IMG_CONFIG in json.loads(_run(r, "xss1")["config"])["experiment_note"]
    for name, text in r["html"].items():
        assert "<img src=x onerror" not in text, name


def case_api_key_never_written(r):
    for path in r["out"].rglob("*"):
        if path.is_file():
            assert kit.SENTINEL.encode() not in path.read_bytes(), path


def case_no_absolute_home_paths_in_reports(r):
    home = str(r["home"])
    for name, text in r["html"].items():
        assert home not in text, (name, text[max(0, text.find(home) - 200):text.find(home) + 200])


def case_no_environment_variables_in_reports(r):
    env_values = [os.environ.get("PATH", ""), sys.prefix, str(REPO)]
    for name, text in r["html"].items():
        assert "WANDB_API_KEY" not in text and "VIRTUAL_ENV" not in text, name
        for value in env_values:
            assert value not in text, (name, value)


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


@pytest.mark.parametrize("case", list(CASES))
def test_case(report, case):
    CASES[case](report)


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


# --------------------------------------------------------------------------------------------
# Cases that need their own build
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_params_build(report, project, tmp_path_factory) -> dict:
    """The report rebuilt after adding a params file with wrong types (phase hbadtypes)."""
    out = tmp_path_factory.mktemp("bad_params") / "out"
    shutil.copytree(report["out"], out, symlinks=True)
    params = kit.write_params(out.parent / "params")  # the project's own params/ stay as they are
    (params / "hbadtypes.yaml").write_text(
        hc.params_yaml("hsingle").replace("phase: hsingle", "phase: hbadtypes")
        .replace("n_val: 1319", "n_val: \"many\"").replace("[0.3, 0.5]", "\"0.3\""))
    proc = kit.run_make(project, report, "report", f"SOURCE={report['root']}", f"OUT={out}",
                        f"PARAMS={params}", f"N_BOOTSTRAP={kit.N_BOOTSTRAP}", "JOBS=2")
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    return {"out": out, "proc": proc, "failed": failed}


def test_params_file_with_wrong_types_is_reported_first_and_the_rest_builds(bad_params_build):
    """The build says first, in one line, which file and key are wrong; every other phase stays
    built; the index says which params file is invalid; the exit code is not 0."""
    out, proc = bad_params_build["out"], bad_params_build["proc"]
    assert proc.returncode != 0
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: ") and first.endswith("hbadtypes.yaml: n_val must be int, got 'many'"), \
        proc.stderr[-3000:]
    assert bad_params_build["failed"] == []
    assert "Traceback" not in proc.stderr
    assert "n_val must be int" in (out / "index.html").read_text()
    for phase, (_thresholds, sections) in hc.PHASES.items():
        for section in sections:
            assert (out / phase / f"{section}.html").is_file(), (phase, section)


def test_params_file_with_wrong_types_leaves_the_summary_built(bad_params_build):
    assert (bad_params_build["out"] / "summary" / "07_summary.html").is_file()


# --------------------------------------------------------------------------------------------
# W&B fetch (the real client against the local endpoint): keys grouped by their logged counts
# lose no rows
# --------------------------------------------------------------------------------------------
def _served(rows, **kw):
    return ServedRun("r1", "cbs_p1_np32_nr8", {"data": {"train_batch_size": 32},
                                               "actor_rollout_ref": {"rollout": {"n": 8}}}, rows, **kw)


def _fetch(**kw):
    return build_snapshot("wandb:ent/proj", progress=False, **kw)


def test_fetch_groups_keys_by_logged_count(wandb_endpoint):
    rows = [{"_step": 0, hc.VAL: 0.1}]
    for s in range(1, 21):
        row = {"_step": s, "training/global_step": s, "critic/score/mean": 0.01 * s, "actor/entropy": 1.0,
               "perf/time_per_step": 20.0, "timing_s/step": 20.0, "actor/pg_loss": 0.1}
        if s % 5 == 0:
            row[hc.VAL] = 0.1 + 0.02 * s
        rows.append(row)
    server = wandb_endpoint([_served(rows)])
    snap = _fetch()
    # one request, one spec per group: per-step keys, validation keys (not one per family)
    assert server.count("CbsRunHistory") == 1 and len(server.specs()) == 2
    reference = _fetch(scan_each_key=True)
    assert server.count("CbsRunHistory") == 2 and len(server.specs()) == 2 + 6
    pd.testing.assert_frame_equal(snap["history"], reference["history"])
    assert snap["history"][hc.VAL].notna().sum() == 5 and len(snap["history"]) == 21


@pytest.mark.parametrize("exported_until", [None, 9, math.inf], ids=["live", "partly exported", "exported"])
def test_fetch_loses_no_rows_when_equal_counts_are_logged_at_different_steps(wandb_endpoint, exported_until):
    rows = [{"_step": 0, hc.VAL: 0.1}]
    for s in range(1, 21):
        row = {"_step": s, "training/global_step": s}
        row["actor/entropy" if s % 2 else "perf/time_per_step"] = float(s)  # 10 each, never together
        if s % 5 == 0:
            row[hc.VAL] = 0.1 + 0.02 * s
        rows.append(row)
    wandb_endpoint([_served(rows, exported_until=exported_until)])
    history = _fetch()["history"].set_index("step")
    assert history["actor/entropy"].dropna().index.tolist() == list(range(1, 21, 2))
    assert history["perf/time_per_step"].dropna().index.tolist() == list(range(2, 21, 2))
    reference = _fetch(scan_each_key=True)["history"].set_index("step")
    pd.testing.assert_frame_equal(history, reference)
