"""What a report says: claims computed from the data (never assumed), censored values marked as
lower bounds, statuses, states and flags explained, and the helpers total on empty input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbs_rlvr.data.runs import RUN_STATES, normalise_raw_run
from cbs_rlvr.fit.across import b_noise_vs_target, pareto_table
from cbs_rlvr.fit.phase import FIT_STATUSES
from cbs_rlvr.report.tables import (
    FLAG_MEANINGS,
    STATE_MEANINGS,
    STATUS_MEANINGS,
    cbs_summary_long,
    cbs_summary_table,
    censored_pivot,
    explain_flags,
    flag_legend,
    legend_markdown,
    median_with_censoring,
    status_legend,
    with_intervals,
)
from cbs_rlvr.words.claims import (
    TRENDS,
    b_noise_trend,
    noise_scale_verdict,
    rho_claim,
    trend_claim,
)
from cbs_rlvr.words.numbers import interval, mark_censored, reader_table

ROOT = Path(__file__).resolve().parents[1]
X = [0.3, 0.4, 0.5, 0.6]


# ------------------------------------------------------------------------------------------
# Claims
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est, lo, hi, trend, significant, claim", [
    ([100, 150, 220, 300], [80, 120, 180, 250], [120, 180, 260, 360], "grows", True,
     "B_noise grows with the target accuracy"),
    ([100, 110, 105, 115], [60, 70, 65, 75], [160, 170, 165, 175], "unclear", False,
     "no clear trend of B_noise with the target accuracy"),
    ([100, 110, 120, 130], [60, 70, 80, 90], [160, 170, 180, 190], "grows", False,
     "B_noise grows with the target accuracy, within its uncertainty"),
    ([100, 300, 120, 320], [90, 280, 110, 300], [110, 320, 130, 340], "not monotone", False,
     "B_noise does not change monotonically with the target accuracy"),
    ([100, 200, 180, 400], [80, 160, 150, 350], [120, 240, 210, 450], "grows", True,
     "B_noise grows with the target accuracy overall"),
    ([400, 300, 200, 100], [350, 260, 170, 80], [450, 340, 230, 120], "falls", True,
     "B_noise falls with the target accuracy"),
])
def test_trend_claim_states_what_the_estimates_and_intervals_show(est, lo, hi, trend, significant, claim):
    out = trend_claim(X, est, lo, hi)
    assert (out["trend"], out["significant"], out["claim"]) == (trend, significant, claim)
    assert out["trend"] in TRENDS
    assert f"from {est[0]:.3g} at 0.3 to {est[-1]:.3g} at 0.6" in out["evidence"]


def test_a_dip_within_the_uncertainty_is_named_in_the_evidence():
    out = trend_claim(X, [100, 200, 180, 400], [80, 160, 150, 350], [120, 240, 210, 450])
    assert "with one dip within the uncertainty (from 200 at 0.4 to 180 at 0.5)" in out["evidence"]
    out = trend_claim(X, [100, 300, 120, 320], [90, 280, 110, 300], [110, 320, 130, 340])
    assert "dips from 300 at 0.4 to 120 at 0.5, beyond the uncertainty" in out["evidence"]


def test_the_seed_title_is_not_claimed_on_a_sweep_where_b_noise_dips():
    """The default title 'critical batch size grows with the target' was printed whatever
    the fits showed; now the claim comes from the fits, here a significant dip."""
    fit = pd.DataFrame({"threshold": X, "B_noise": [300, 200, 180, 150],
                        "B_noise_lo": [280, 190, 170, 140], "B_noise_hi": [320, 210, 190, 160],
                        "status": ["ok", "ok", "extrapolated", "insufficient"]})
    out = b_noise_trend(fit)
    assert out["n_points"] == 3  # the insufficient target does not count
    assert out["trend"] == "falls" and out["claim"] == "B_noise falls with the target accuracy"


@pytest.mark.parametrize("x, est", [([], []), ([0.3], [100.0]), ([0.3, 0.4], [np.nan, 5.0]),
                                    ([0.3, np.nan], [1.0, 2.0])])
def test_too_few_points_are_undetermined(x, est):
    out = trend_claim(x, est)
    assert out["trend"] == "undetermined" and "too few usable points" in out["claim"]


def test_flat_values_and_claims_without_intervals():
    assert trend_claim(X, [5, 5, 5, 5])["trend"] == "flat"
    out = trend_claim([64, 128, 256], [16.0, 20.0, 26.0], quantity="step time", along="B")
    assert out["claim"] == "step time grows with B" and out["evidence"].endswith("at every step")


def test_b_noise_trend_and_tables_are_total_on_empty_input():
    assert b_noise_trend(pd.DataFrame())["trend"] == "undetermined"
    assert b_noise_vs_target(pd.DataFrame()).empty
    assert pareto_table(pd.DataFrame(), pd.DataFrame()).empty
    assert cbs_summary_table(cbs_summary_long({}, {})).empty


# ------------------------------------------------------------------------------------------
# Censored values
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, censored, median, lower", [
    ([70.2], [True], 70.2, True),
    ([10, 20, 30], [0, 0, 1], 20, False),  # the censored value is above the median
    ([10, 20, 30], [0, 1, 0], 20, True),
    ([10, 20, 30, 40], [0, 0, 1, 0], 25, True),  # raising 30 moves (20 + 30) / 2
    ([10, 20, 30, 40], [0, 0, 0, 1], 25, False),
    ([10, 10, 30], [0, 1, 0], 10, True),  # a tie: the censored one ranks first
    ([np.nan, 5.0], [1, 0], 5.0, False),
])
def test_the_median_of_replicates_is_a_lower_bound_exactly_when_censoring_can_move_it(
        values, censored, median, lower):
    assert median_with_censoring(values, censored) == (pytest.approx(median), lower)


def test_the_steps_table_marks_censored_values_as_lower_bounds():
    sb = pd.DataFrame({"total_batch": [64, 64, 128, 128, 256], "n_prompts": [8, 8, 16, 16, 32],
                       "n_rollouts": 8, "threshold": [0.3, 0.3, 0.3, 0.5, 0.5],
                       "S_B": [70.2, 80.0, 40.0, 90.0, np.nan],
                       "censored": [True, False, False, True, False]})
    table = censored_pivot(sb)
    assert list(table.index.names) == ["batch B", "prompts", "rollouts"] and table.columns.name == "target accuracy"
    assert table.loc[("64", "8", "8"), 0.3] == "≥75"  # the index as a reader reads it: counts
    assert table.loc[("128", "16", "8")].tolist() == ["40", "≥90"]
    assert table.loc[("256", "32", "8")].tolist() == ["–", "–"]
    assert censored_pivot(sb.iloc[:0]).empty
    assert [mark_censored(v, c) for v, c in ((70.4, True), (70.4, False), (np.nan, True))] == \
        ["≥70", "70", "–"]


def test_open_interval_ends_are_written_as_such():
    assert interval(290, 250, np.inf, decimals=0) == "290 [250, ∞)"
    assert interval(290, 0.0, 330, decimals=0) == "290 [0, 330]"
    assert interval(pd.NA, 1, 2, decimals=0) == "–"
    assert interval(2013.4, 1800, np.inf, unit="samples") == "2,013 [1,800, ∞) samples"
    table = with_intervals(pd.DataFrame({"threshold": [0.3], "rho": [0.2], "rho_lo": [0.1],
                                         "rho_hi": [0.3], "status": ["ok"]}),
                           {"rho": 2, "B0": 0}, keep=["threshold", "status"])
    assert list(table.columns) == ["threshold", "rho [95% CI]", "B0 [95% CI]", "status"]
    assert table.iloc[0].tolist() == [0.3, "0.20 [0.10, 0.30]", "–", "ok"]
    shown = reader_table(pd.DataFrame({"S_min": [1.5, np.nan], "status": ["ok", None], "r2_log": [0.9, 0.8],
                                       "E_min": [31552.0, 3.36e4]}))
    assert shown.to_dict("list") == {"fewest steps (large B)": ["1.50", "–"], "fit": ["ok", "–"],
                                     "R² of log S": ["0.90", "0.80"], "fewest samples (small B)": ["31,552", "33,600"]}


# ------------------------------------------------------------------------------------------
# Statuses, states and flags explained
# ------------------------------------------------------------------------------------------
def test_every_status_and_state_has_a_meaning():
    assert set(STATUS_MEANINGS) == set(FIT_STATUSES)
    assert set(STATE_MEANINGS) == set(RUN_STATES)
    legend = status_legend(["ok", "failed", "ok", None])
    assert legend["status"].tolist() == ["ok", "failed"]
    md = legend_markdown(legend)
    assert md.startswith("\n\n- `ok`: fitted") and "\n- `failed`: not fitted" in md
    assert legend_markdown(status_legend([])) == ""


def test_every_flag_the_data_layer_writes_is_documented():
    """Flags are written in runs.py and the sources as literals (`flags.append("truncated")`,
    f"segments:{n}", history.history_flags' count keys): each has a plain-language meaning."""
    written = set()
    for path in (ROOT / "cbs_rlvr").rglob("*.py"):
        text = path.read_text()
        written |= set(re.findall(r'flags\.append\(f?"([a-z_]+)', text))
        written |= set(re.findall(r'"([a-z_]+)"\]\s*if f\)', text))  # wandb_api's "stale"
        if path.name == "history.py":
            block = re.search(r"def history_flags.*?return flags", text, re.S).group(0)
            written |= set(re.findall(r'"([a-z_]+)"', block))
    written -= {"step_restarts", "percent_columns"}  # counts keys turned into the flags below
    assert {"truncated", "segments", "bad_records", "config_name_mismatch", "step_restart",
            "percent_accuracy", "nonfinite", "stale"} <= written
    assert written <= set(FLAG_MEANINGS), written - set(FLAG_MEANINGS)


def test_flags_of_a_real_normalised_run_are_explained():
    rows = [{"_step": 0, "val-core/x/reward/mean@1": 40.0},
            {"_step": 5, "val-core/x/reward/mean@1": float("nan")},
            {"_step": 5, "val-core/x/reward/mean@1": "oops"}]
    entry = normalise_raw_run({"source": "t", "run_id": "r1", "name": "cbs_p1_np8_nr4",
                               "config": {"data": {"train_batch_size": 16}}, "state": "finished",
                               "rows": rows})
    flags = entry["row"]["flags"]
    text = explain_flags(flags)
    assert "the run config's batch sizes differ from its name" in text
    assert "1 logged value(s) were not finite numbers" in text
    assert "accuracy was logged in percent" in text
    assert "undocumented" not in text
    assert set(flag_legend([flags, ""])["flag"]) == {f.split(":")[0] for f in flags.split(";")}
    assert explain_flags("") == "" and explain_flags(None) == ""
    assert explain_flags("brand_new:2") == "brand_new:2 (undocumented flag)"


def test_rho_is_claimed_only_where_the_fit_pins_it_down():
    """The cross-axis fit has one rho for every target: a claim when its interval pins it down
    (narrower than half the range) and the fit describes the runs, with what a second rollout is
    worth against a new prompt, (1 - rho) / (1 + rho)."""
    fit = pd.DataFrame({"threshold": [0.3, 0.4, 0.5], "rho": [0.2] * 3, "rho_lo": [0.12] * 3, "rho_hi": [0.27] * 3,
                        "r2_log": [0.98, 0.99, np.nan], "status": ["ok", "ok", "insufficient"]})
    (claim,) = rho_claim(fit)
    assert claim.startswith("rho = 0.20 (95% interval 0.12 to 0.27): the second rollout of a prompt is worth "
                            "0.67 of a new prompt (0.57 to 0.79 within the interval)")
    (open_,) = rho_claim(fit.assign(rho_lo=0.0, rho_hi=0.9))
    assert open_.startswith("The fit leaves rho open (rho = 0.20, 95% interval 0.00 to 0.90)")
    assert rho_claim(fit.assign(r2_log=-1.5, status="ok")) == []  # a poor fit claims nothing
    assert rho_claim(fit.iloc[[2]]) == [] and rho_claim(pd.DataFrame()) == []
    zero = rho_claim(fit.assign(rho=0.0, rho_lo=0.0, rho_hi=0.1))
    assert "worth 1.00 of a new prompt (0.82 to 1.00 within the interval)" in zero[0]


def test_noise_scale_verdict_answers_in_words_with_level_and_trend():
    comp = pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "B_simple": [20.0, 22.0, 25.0],
                         "B_simple_lo": [15.0, 17.0, 20.0], "B_simple_hi": [25.0, 27.0, 30.0],
                         "B_noise": [200.0, 600.0, 2200.0], "B_noise_lo": [150.0, 500.0, 1800.0],
                         "B_noise_hi": [250.0, 700.0, 2600.0], "status": "ok"})
    fit = pd.DataFrame({"model": ["general"] * 3, "alpha": [0.6, 0.62, 0.58]})
    lines = noise_scale_verdict(comp, fit)
    assert lines[0].startswith("Does the noise scale predict B_noise? No: it is about 27x too low")
    assert "B_simple changes 1.2x and B_noise 11.0x" in lines[1]
    assert "does not follow the trend" in lines[1]
    assert "alpha about 0.60" in lines[2]
    assert noise_scale_verdict(comp.assign(status="insufficient"))[0].startswith("No target has both")
