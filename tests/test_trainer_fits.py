"""Issue 16 on a real learner: sweeps of the policy-gradient trainer (tests/pg_trainer.py), fitted
as a user's sweep would be, against the trainer's many-seed truth (tests/pg_truth.json).

Three classes are drawn here (one seed each: ~1 min of training on 2 cores); the acceptance over
every class (4 seeds each) runs in `make bench` (tests/trainer_acceptance.py,
benchmarks/trainer_acceptance.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import trainer_acceptance as ta
from pg_trainer import load_truth, trainer_sweeps

CLASSES = (("adam_fixed", "prompts"), ("sgd_tuned", "prompts"), ("adam_fixed", "rollouts"))


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    truth = load_truth()
    sweeps = trainer_sweeps([0], classes=CLASSES, processes=2, truth=truth)
    return pd.concat([ta.evaluate_sweep(sw, truth, n_bootstrap=200) for sw in sweeps], ignore_index=True)


def _class(results, setting, axis):
    r = results[(results["setting"] == setting) & (results["axis"] == axis)]
    return r[r["status"].isin(["ok", "extrapolated"])]


def test_adam_at_a_fixed_rate_bends_like_b_to_the_minus_two_thirds_and_the_fit_says_so(results):
    """The issue's headline class: Adam at one learning rate, prompts axis (truth alpha 0.65-0.69).
    The general form is chosen where 4+ batch sizes reached the target, alpha within 0.1 of the
    truth (median), and the 1/B form would have put B_noise several times lower."""
    r = _class(results, "adam_fixed", "prompts")
    testable = r[r["n_reached"] >= 4]
    assert len(testable) >= 3
    assert (testable["model"] == "general").mean() >= 0.75, testable
    assert testable["alpha_err"].median() <= 0.1, testable[["threshold", "alpha", "alpha_true"]]
    gen = testable[testable["model"] == "general"]
    assert (gen["B_noise_mccandlish"] < 0.6 * gen["B_noise"]).all()
    assert (gen["alpha"] < 0.85).all()
    for row in gen.itertuples():
        assert row.alpha_lo <= row.alpha <= row.alpha_hi
        assert row.B_noise_lo <= row.B_noise <= row.B_noise_hi


def test_every_interval_holds_its_estimate_and_every_target_has_a_form(results):
    usable = results[results["status"].isin(["ok", "extrapolated"])]
    assert len(usable) >= 10
    assert set(usable["model"]) <= {"mccandlish", "general"}
    for est in ("B_noise", "alpha"):
        v, lo, hi = (usable[c].to_numpy(dtype=float) for c in (est, f"{est}_lo", f"{est}_hi"))
        both = ~np.isnan(lo) & ~np.isnan(hi)
        assert both.mean() >= 0.8
        assert ((lo[both] <= v[both]) & (v[both] <= hi[both])).all(), est


def test_the_wall_clock_recommendation_is_near_the_true_optimum(results):
    """The plan's fastest batch, priced with the chosen form, against the many-seed S(B) times the
    trainer's step time over the same candidates: within 5% at the median target and 12% at worst
    (measured over 24 sweeps of six classes: median 0%, worst 16%, on sgd_tuned and rollouts sweeps
    whose highest targets few runs reached)."""
    exc = results["rec_excess"].dropna()
    assert len(exc) >= 10
    assert exc.median() <= 0.05, results[["setting", "axis", "threshold", "rec_batch", "best_batch"]]
    assert exc.max() <= 0.12
