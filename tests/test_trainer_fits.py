"""The fit and the decision on a real learner: sweeps of the policy-gradient trainer
(tests/sweeps/trainer.py), analysed as a user's sweep would be, against the trainer's many-seed truth
(tests/pg_truth.json), through tests/decision_acceptance.py.

Three classes are drawn here (one seed each: about a minute of training on 2 cores); the acceptance
over every class (4 seeds each) and the closed loop run in `make bench`
(benchmarks/decision_acceptance.md)."""

from __future__ import annotations

import decision_acceptance as da
import numpy as np
import pandas as pd
import pytest
from sweeps.trainer import load_truth, trainer_sweeps

pytestmark = pytest.mark.slow  # every test here runs a build, a trainer or a browser

CLASSES = (("adam_fixed", "prompts"), ("sgd_tuned", "prompts"), ("adam_fixed", "rollouts"))


@pytest.fixture(scope="module")
def results() -> dict:
    truth = load_truth()
    # no gradient statistics: nothing here reads them, and they are four fifths of the training
    sweeps = trainer_sweeps([0], classes=CLASSES, processes=2, truth=truth, grad_noise=False)
    parts = [da.evaluate(sw, truth, n_bootstrap=200, loop=False) for sw in sweeps]
    return {"targets": pd.DataFrame([r for p in parts for r in p["targets"]]),
            "decisions": pd.DataFrame([p["decision"] for p in parts if p["decision"]])}


def test_adam_at_a_fixed_rate_bends_like_b_to_the_minus_two_thirds_and_the_fit_says_so(results):
    """The headline class: Adam at one learning rate, prompts axis (truth alpha 0.65-0.75). Held-out
    batch sizes weigh the bent form, alpha within 0.1 of the truth, and the 1/B form would have put
    B_noise several times lower."""
    t = results["targets"]
    r = t[(t["setting"] == "adam_fixed") & (t["axis"] == "prompts") & t["status"].isin(["ok", "extrapolated"])]
    assert len(r) >= 4
    assert (r["model"] == "general").all() and (r["weight_general"] > 0.9).all()
    assert (r["alpha"] - r["alpha_design"]).abs().median() <= 0.1
    assert ((r["alpha_lo"] <= r["alpha_design"]) & (r["alpha_design"] <= r["alpha_hi"])).mean() >= 0.8


def test_b_noise_intervals_hold_the_many_seed_truth(results):
    """Against the general form fitted to the 8-seed S(B) at the sweep's batch sizes."""
    t = results["targets"]
    u = t[t["status"].isin(["ok", "extrapolated"]) & t["B_noise_true"].notna()]
    covered = (u["B_noise_lo"] <= u["B_noise_true"]) & (u["B_noise_true"] <= u["B_noise_hi"])
    assert covered.mean() >= 0.8, u[["setting", "axis", "threshold", "B_noise", "B_noise_lo", "B_noise_hi",
                                     "B_noise_true"]]


def test_every_interval_holds_its_estimate_and_every_target_has_a_form(results):
    t = results["targets"]
    u = t[t["status"].isin(["ok", "extrapolated"])]
    assert u["model"].isin(["mccandlish", "general"]).all()
    for est in ("B_noise", "alpha"):
        ok = u[f"{est}_lo"].notna()
        assert ((u.loc[ok, f"{est}_lo"] <= u.loc[ok, est]) & (u.loc[ok, est] <= u.loc[ok, f"{est}_hi"])).all()


def test_the_decision_is_near_the_true_optimum_and_its_band_holds_the_true_hours(results):
    d = results["decisions"]
    assert len(d) == len(CLASSES)
    assert (d["regret"] <= 1.05).all(), d
    assert d["covered"].mean() >= 2 / 3, d
    assert set(d["basis"]) <= {"measured", "on_axis"}
    assert np.isfinite(d["p_best"]).all()
