"""What a fit of S(B) returns: one object that every consumer reads (the S(B) table, the per-target
table of cbs_fit.csv, the forms and their weights, the bootstrap draws with the runs they came
from, the scatter), and the curves and draws it predicts with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._tobit import Layout
from .forms import FormFit
from .interval import bootstrap_interval
from .resample import Scatter


@dataclass
class FitData:
    """The rows a fit used, one per run: ids, names, batch-point codes, batch (in the fit's
    units) and its log, and per fitted target log S, censored flags, weights; `bounds` the log of
    each run's last evaluated step (where a run that has not reached a target stands)."""
    run_id: np.ndarray
    run_name: np.ndarray
    group: np.ndarray
    B: np.ndarray
    x: np.ndarray
    Y: np.ndarray
    C: np.ndarray
    W: np.ndarray
    bounds: np.ndarray
    n_prompts: np.ndarray | None = None
    n_rollouts: np.ndarray | None = None


@dataclass
class PhaseFit:
    """A phase's fit. `table` is cbs_fit.csv (one row per threshold); `sb_eb` the S(B) table it
    was fitted to. The pooled fit covers the targets `fitted` (indices into `thresholds`) with
    coordinates `z`; each form's point fit is in `forms`, its cross-validated weight in
    `weights`, its refits of the K bootstrap tables in `draws` (K, P) with `bad` (K, J) marking
    tables that could not fit a target (fewer than 3 batch sizes reached it). `assign` (K,) is the
    form each bootstrap draw is taken from in the model average (forms in proportion to their
    weights): every interval and prediction downstream mixes the forms this way."""
    sb_eb: pd.DataFrame
    table: pd.DataFrame
    thresholds: np.ndarray
    fitted: np.ndarray
    z: np.ndarray
    data: FitData | None = None
    layout: Layout | None = None
    forms: dict[str, FormFit] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    elpd: dict[str, np.ndarray] = field(default_factory=dict)
    chosen: str = ""
    draws: dict[str, np.ndarray] = field(default_factory=dict)
    bad: dict[str, np.ndarray] = field(default_factory=dict)
    at_bound: dict[str, np.ndarray] = field(default_factory=dict)
    assign: np.ndarray | None = None
    scatter: Scatter | None = None
    units: str = "rollout steps"

    # --- where things are -------------------------------------------------------------------
    @property
    def form_names(self) -> list[str]:
        return list(self.forms)

    @property
    def n_draws(self) -> int:
        return 0 if self.assign is None else int(len(self.assign))

    def target_index(self, threshold) -> int | None:
        """The index of `threshold` among the fitted targets, or None when it was not fitted."""
        for i, j in enumerate(self.fitted):
            if math.isclose(float(self.thresholds[j]), float(threshold), rel_tol=0, abs_tol=1e-9):
                return i
        return None

    def usable(self, threshold) -> bool:
        row = self.row(threshold)
        return row is not None and row["status"] in ("ok", "extrapolated")

    def row(self, threshold):
        t = self.table
        if t is None or not len(t):
            return None
        m = t[np.isclose(t["threshold"].astype(float), float(threshold))]
        return None if not len(m) else m.iloc[0]

    # --- curves --------------------------------------------------------------------------------
    def _local(self, theta: np.ndarray, j: int) -> np.ndarray:
        """(K, 4): a_j, b_j, alpha_j, log sigma_j of theta (K, P)."""
        return self.layout.local(np.atleast_2d(theta))[:, j, :]

    def params(self, threshold, form: str | None = None) -> dict:
        """The point values at a target of `form` (default: the chosen one): S_min, B_noise, alpha,
        sigma (of log S for one run)."""
        j = self.target_index(threshold)
        if j is None or not self.forms:
            return {"S_min": np.nan, "B_noise": np.nan, "alpha": np.nan, "sigma": np.nan}
        a, b, al, ls = self._local(self.forms[form or self.chosen].theta, j)[0]
        return {"S_min": math.exp(a), "B_noise": math.exp(b), "alpha": float(al), "sigma": math.exp(ls)}

    def log_steps(self, threshold, B, form: str | None = None) -> np.ndarray:
        """The point prediction of log S at batch sizes B (in the fit's units)."""
        p = self.params(threshold, form)
        x = np.log(np.asarray(B, dtype=float))
        return math.log(p["S_min"]) + np.logaddexp(0.0, p["alpha"] * (math.log(p["B_noise"]) - x))

    def param_draws(self, threshold) -> dict:
        """The model-averaged bootstrap draws at a target (K,): log_S_min, log_B_noise, alpha, the
        form of each draw, and `ok` (False where that draw's table could not fit the target)."""
        j = self.target_index(threshold)
        K = self.n_draws
        out = {k: np.full(K, np.nan) for k in ("log_S_min", "log_B_noise", "alpha")}
        out["form"] = np.array([""] * K, dtype=object)
        out["ok"] = np.zeros(K, dtype=bool)
        if j is None or not K:
            return out
        names = self.form_names
        for m, name in enumerate(names):
            rows = np.flatnonzero(self.assign == m)
            if not rows.size:
                continue
            loc = self._local(self.draws[name][rows], j)
            out["log_S_min"][rows] = loc[:, 0]
            out["log_B_noise"][rows] = loc[:, 1]
            out["alpha"][rows] = loc[:, 2]
            out["form"][rows] = name
            out["ok"][rows] = ~self.bad[name][rows, j]
        return out

    def log_steps_draws(self, threshold, B) -> np.ndarray:
        """(K, n) model-averaged bootstrap draws of log S at batch sizes B (NaN for a draw whose
        table could not fit the target)."""
        d = self.param_draws(threshold)
        x = np.log(np.asarray(B, dtype=float))[None, :]
        out = d["log_S_min"][:, None] + np.logaddexp(0.0, d["alpha"][:, None] * (d["log_B_noise"][:, None] - x))
        return np.where(d["ok"][:, None], out, np.nan)

    # --- across targets ---------------------------------------------------------------------------
    def trend(self) -> dict:
        """How B_noise changes from the lowest fitted target to the highest: the factor (chosen
        form) with its 95% interval (model-averaged draws), and the targets it spans."""
        out = {"ratio": np.nan, "ratio_lo": np.nan, "ratio_hi": np.nan, "from": np.nan, "to": np.nan,
               "n_targets": int(len(self.fitted)), "note": ""}
        if len(self.fitted) < 2 or not self.forms:
            return out
        lay = self.layout
        out["from"], out["to"] = float(self.thresholds[self.fitted[0]]), float(self.thresholds[self.fitted[-1]])

        def ratio(theta):
            b = lay.local(np.atleast_2d(theta))[:, :, 1]
            return np.exp(b[:, -1] - b[:, 0])

        out["ratio"] = float(ratio(self.forms[self.chosen].theta)[0])
        if self.n_draws:
            draws = np.full(self.n_draws, np.nan)
            for m, name in enumerate(self.form_names):
                rows = np.flatnonzero(self.assign == m)
                if not rows.size:
                    continue
                ok = ~self.bad[name][rows].any(axis=1)
                draws[rows[ok]] = ratio(self.draws[name][rows[ok]])
            out["ratio_lo"], out["ratio_hi"], out["note"] = bootstrap_interval(out["ratio"], draws, "the trend")
        return out
