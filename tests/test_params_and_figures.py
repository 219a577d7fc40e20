"""Phase parameters, figure helpers, LaTeX tables and the index page (no notebooks run here)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure

from cbs_rlvr.measure.crossings import phase_runs
from cbs_rlvr.params import SECTIONS, ParamsError, load_phase_params, validate_phase_params
from cbs_rlvr.report.style import _plain_label, save_figure, set_log2_axis, setup_style
from cbs_rlvr.report.tables import to_latex_booktabs
from cbs_rlvr.words.numbers import interval

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"phase": "p9", "title": "t", "axis": "prompts", "metric": "val-core/*/reward/mean@*",
        "n_val": 100, "thresholds": [0.5, 0.3], "sections": ["01_load_runs"]}


@pytest.mark.parametrize("phase", sorted(p.stem for p in (ROOT / "params").glob("*.yaml")))
def test_every_shipped_params_file_validates(phase):
    params = load_phase_params(ROOT / "params", phase)
    assert params["phase"] == phase
    assert params["thresholds"] == sorted(params["thresholds"])
    assert all(s in SECTIONS for s in params["sections"])


def test_shipped_phases_are_the_design_phases():
    assert sorted(p.stem for p in (ROOT / "params").glob("*.yaml")) == \
        ["p1", "p2a", "p2b", "p2c", "p4_math", "p4_rpp"]


def test_valid_params_get_defaults_and_sorted_thresholds():
    params = validate_phase_params(dict(GOOD))
    assert params["thresholds"] == [0.3, 0.5]
    assert params["prefer_source"] is None and params["two_axis_phases"] == []


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "unknown key(s) ['colour']"),
    ({"thresholds": [0.5, 60]}, "threshold must be a number in (0, 1), got 60"),
    ({"thresholds": [0.0]}, "in (0, 1)"),
    ({"thresholds": "0.5"}, "thresholds must be list"),
    ({"n_val": "1319"}, "n_val must be int"),
    ({"n_val": True}, "n_val must be int"),
    ({"n_val": -3}, "positive"),
    ({"axis": "diagonal"}, "axis must be one of"),
    ({"sections": ["99_magic"]}, "unknown section(s) ['99_magic']"),
    ({"thresholds": []}, "thresholds is empty"),
])
def test_bad_params_stop_with_a_message_naming_the_key(change, message):
    with pytest.raises(ParamsError) as err:
        validate_phase_params({**GOOD, **change}, where="params/p9.yaml")
    assert message in str(err.value)
    assert "params/p9.yaml" in str(err.value)


def test_missing_key_and_non_mapping_are_reported():
    bad = dict(GOOD)
    del bad["metric"]
    with pytest.raises(ParamsError, match=r"missing key\(s\) \['metric'\]"):
        validate_phase_params(bad)
    with pytest.raises(ParamsError, match="expected a mapping"):
        validate_phase_params(["phase", "p1"])


def test_unknown_phase_lists_the_known_ones(tmp_path):
    (tmp_path / "p1.yaml").write_text(yaml.safe_dump({**GOOD, "phase": "p1"}))
    with pytest.raises(ParamsError, match=r"unknown phase 'p7'.*Known phases: \['p1'\]"):
        load_phase_params(tmp_path, "p7")
    (tmp_path / "p2.yaml").write_text(yaml.safe_dump({**GOOD, "phase": "p1"}))
    with pytest.raises(ParamsError, match="named for 'p2'"):
        load_phase_params(tmp_path, "p2")
    (tmp_path / "p3.yaml").write_text("phase: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_phase_params(tmp_path, "p3")


def test_batch_size_labels_are_plain_numbers():
    assert [_plain_label(x, binary=True) for x in (64, 1024, 4096, 16384, 96)] == \
        ["64", "1024", "4096", "16K", "96"]


def test_save_figure_writes_pdf_png_and_the_plotted_data(tmp_path):
    setup_style()
    fig = Figure()
    ax = fig.subplots()
    data = pd.DataFrame({"B": [64, 128, 256], "S": [300.0, 180.0, 120.0]})
    ax.plot(data["B"], data["S"])
    set_log2_axis(ax, "x")
    paths = save_figure(fig, data, tmp_path / "figs", "toy")
    assert paths["pdf"].read_bytes()[:4] == b"%PDF"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), data)
    # no creation date: the same figure saved twice gives the same PDF
    first = paths["pdf"].read_bytes()
    save_figure(fig, data, tmp_path / "figs", "toy")
    assert paths["pdf"].read_bytes() == first


def test_latex_table_is_booktabs_and_escaped():
    table = pd.DataFrame({"phase": ["p4_math"], "B_noise": ["290 [250, 330]"], "n": [7]})
    tex = to_latex_booktabs(table, caption="50% target & more", label="tab:x")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"p4\_math & 290 [250, 330] & 7 \\" in tex
    assert r"50\% target \& more" in tex
    assert r"\begin{tabular}{llr}" in tex


def test_interval_to_fixed_decimals():
    assert interval(290.4, 250.2, 330.9, decimals=0) == "290 [250, 331]"
    assert interval(np.nan, 1, 2, decimals=0) == "–"
    assert interval(12.34, np.nan, np.nan, decimals=1) == "12.3"
    assert interval(0.8312, 0.7, 0.95) == "0.83 [0.70, 0.95]"


def test_phase_runs_selects_the_phase_and_its_metric():
    runs = pd.DataFrame({"run_id": ["a", "b"], "phase": ["p1", "p2b"]})
    history = pd.DataFrame({"run_id": ["a", "a", "b"], "step": [0, 5, 0],
                            "val-core/openai/gsm8k/reward/mean@1": [0.1, 0.2, np.nan],
                            "val-core/math/reward/mean@1": [np.nan, np.nan, 0.3]})
    params = {**GOOD, "phase": "p1", "prefer_source": "gsm8k"}
    r, h, metric = phase_runs(runs, history, params)
    assert list(r["run_id"]) == ["a"] and len(h) == 2
    assert metric == "val-core/openai/gsm8k/reward/mean@1"
    with pytest.raises(ValueError, match=r"no runs of phase 'p9' in the snapshot; phases present: \['p1', 'p2b'\]"):
        phase_runs(runs, history, {**GOOD, "phase": "p9"})
