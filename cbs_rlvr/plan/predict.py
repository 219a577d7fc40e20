"""Every candidate configuration at every target: predicted rollout steps, hours, GPU-hours and
samples with 95% bands, and what each prediction rests on (its basis).

The candidates (n_prompts, n_rollouts): along each measured axis (a phase's fit, n_rollouts or
n_prompts held), the sampled configurations and powers of two up to `octaves` beyond the sampled
range; with a cross-axis model, the splits off those axes too. Their basis, per target:

- `measured`: the configuration was run and reached the target;
- `on_axis`: not run, but on a phase's own axis inside the batch sizes that reached the target;
- `cross_axis`: a split off the sampled axes, priced by a cross-axis model that passed its check
  on this sweep (it predicted held-out runs within their scatter);
- `untested`: a split off the sampled axes whose model has not passed that check: never
  recommended, at most worth testing;
- `extrapolated`: beyond the batch sizes that reached the target, or from a fit that is not `ok`.

A prediction is a set of K draws, one per bootstrap draw of the fit (forms mixed in proportion to
their weights): log S of the curve, plus the configuration's own deviation from the curve (lack of
fit, sd sigma_point), which for a measured configuration is estimated from its runs (the curve
shrunk toward their mean, in proportion to how well the runs pin it), times a draw of the step
time from the step-time model's coefficients. The band is the 2.5-97.5% range of the draws,
extended to hold the point value. Hours count training steps only (validation and checkpoints
come on top).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..fit.result import PhaseFit
from ..measure.wallclock import predict_step_time

BASES = ("measured", "on_axis", "cross_axis", "untested", "extrapolated")
#: what a recommendation may rest on
RECOMMENDABLE = ("measured", "on_axis", "cross_axis")
#: GRPO needs two rollouts of a prompt for a group baseline
MIN_ROLLOUTS = 2
PLAN_COLUMNS = ["threshold", "objective", "n_prompts", "n_rollouts", "total_batch", "predicted_steps",
                "predicted_hours", "predicted_hours_lo", "predicted_hours_hi", "predicted_gpu_hours", "basis"]
PLAN_EXTRA_COLUMNS = ["predicted_steps_lo", "predicted_steps_hi", "expected_hours", "predicted_gpu_hours_lo",
                      "predicted_gpu_hours_hi", "predicted_samples", "predicted_samples_lo", "predicted_samples_hi",
                      "step_time_s", "n_gpus", "axis_phase", "model", "fit_status", "n_runs", "note"]
OBJECTIVES = ("wall_clock", "gpu_hours", "samples")


def floats(values) -> np.ndarray:
    """A float array from a column that may be nullable (pd.NA becomes NaN)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


@dataclass
class AxisModel:
    """A phase's fit along its own axis: `axis` 'prompts' (n_rollouts held at `fixed`) or
    'rollouts' (n_prompts held)."""
    phase: str
    fit: PhaseFit
    axis: str
    fixed: float

    def on_axis(self, n_p, n_r) -> np.ndarray:
        held = np.asarray(n_r if self.axis == "prompts" else n_p, dtype=float)
        return np.isclose(held, self.fixed)


def axis_model(phase: str, fit: PhaseFit) -> AxisModel | None:
    """The axis of a phase's fit, or None where it has no fit or no single axis (both counts vary,
    or one configuration)."""
    d = fit.data
    if d is None or d.n_prompts is None or not fit.forms:
        return None
    n_p, n_r = np.unique(d.n_prompts[np.isfinite(d.n_prompts)]), np.unique(d.n_rollouts[np.isfinite(d.n_rollouts)])
    if len(n_r) == 1 and len(n_p) > 1:
        return AxisModel(phase, fit, "prompts", float(n_r[0]))
    if len(n_p) == 1 and len(n_r) > 1:
        return AxisModel(phase, fit, "rollouts", float(n_p[0]))
    return None


def _pow2_range(values, octaves: int, floor: float) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    lo = max(math.floor(math.log2(v.min())) - octaves, math.ceil(math.log2(floor)))
    hi = math.ceil(math.log2(v.max())) + octaves
    return 2.0 ** np.arange(lo, hi + 1)


def axis_candidates(m: AxisModel, octaves: int = 2) -> pd.DataFrame:
    """The configurations along one axis: powers of two across the sampled range and `octaves`
    beyond it, and the sampled values themselves."""
    d = m.fit.data
    varied = d.n_prompts if m.axis == "prompts" else d.n_rollouts
    floor = 1.0 if m.axis == "prompts" else MIN_ROLLOUTS
    v = np.unique(np.r_[_pow2_range(varied, octaves, floor), varied[np.isfinite(varied)]])
    n_p = v if m.axis == "prompts" else np.full(len(v), m.fixed)
    n_r = np.full(len(v), m.fixed) if m.axis == "prompts" else v
    return pd.DataFrame({"n_prompts": n_p, "n_rollouts": n_r, "axis_phase": m.phase})


@dataclass
class Prediction:
    """The candidates of one target: `table` (one row per candidate) and the draws behind it:
    log_steps (K, n), hours (K, n), gpu_hours (K, n) (NaN where unknown)."""
    threshold: float
    table: pd.DataFrame
    log_steps: np.ndarray
    hours: np.ndarray
    gpu_hours: np.ndarray


@dataclass
class Plan:
    """Every target's Prediction, and the candidates table of them all (plan_candidates.csv)."""
    predictions: dict[float, Prediction] = field(default_factory=dict)

    @property
    def candidates(self) -> pd.DataFrame:
        frames = [p.table for p in self.predictions.values()]
        if not frames:
            return pd.DataFrame(columns=[c for c in PLAN_COLUMNS + PLAN_EXTRA_COLUMNS if c != "objective"])
        return pd.concat(frames, ignore_index=True)


def gpu_counts(step_times: pd.DataFrame, total_batch) -> tuple[np.ndarray, str]:
    """The GPU count a run at each batch size would use: the runs' one count, or where they
    differ the count of the run at the nearest batch size (in log B), with a note."""
    B = np.asarray(total_batch, dtype=float)
    known = step_times[np.isfinite(step_times["n_gpus"].astype(float))] if len(step_times) else step_times
    if not len(known):
        return np.full(B.shape, np.nan), "no GPU count in the run configs: no GPU-hours"
    counts = known["n_gpus"].astype(float).unique()
    if len(counts) == 1:
        return np.full(B.shape, counts[0]), ""
    lb = np.log(known["total_batch"].to_numpy(dtype=float))
    nearest = np.abs(np.log(B)[:, None] - lb[None, :]).argmin(axis=1)
    return (known["n_gpus"].to_numpy(dtype=float)[nearest],
            f"runs use different GPU counts {sorted(int(c) for c in counts)}: each candidate takes the count "
            "of the run at the nearest batch size")


def step_time_draws(step_model: dict, n_p, n_r, K: int, rng) -> np.ndarray:
    """(K, n) step times from the coefficients' normal approximation (NaN without a model; a draw
    <= 0, a linear model extrapolated with an uncertain intercept, is NaN)."""
    if step_model.get("status") != "ok":
        return np.full((K, len(n_p)), np.nan)
    names = step_model["terms"]
    beta = np.array([step_model["coef"][k] for k in names])
    coef = rng.multivariate_normal(beta, np.asarray(step_model["cov"]), size=K, method="svd")
    term = {"a": np.ones(len(n_p)), "b_B": n_p * n_r, "b_p": n_p}
    T = coef @ np.stack([term[k] for k in names])
    if "B_fixed" in step_model:
        T[:, ~np.isclose(n_p * n_r, step_model["B_fixed"])] = np.nan
    return np.where(T > 0, T, np.nan)


def band(estimate: np.ndarray, draws: np.ndarray, level: float = 0.95):
    """Percentile band of draws (K, n) per column, extended to hold the estimate; NaN where fewer
    than max(20, K/2) draws are finite."""
    K = draws.shape[0]
    lo = np.full(estimate.shape, np.nan)
    hi = np.full(estimate.shape, np.nan)
    good = np.isfinite(draws).sum(axis=0) >= max(20, 0.5 * K) if K else np.zeros(estimate.shape, bool)
    if good.any():
        q = np.nanquantile(draws[:, good], [(1 - level) / 2, (1 + level) / 2], axis=0, method="inverted_cdf")
        lo[good], hi[good] = q
    ext = good & np.isfinite(estimate)
    return np.fmin(lo, np.where(ext, estimate, lo)), np.fmax(hi, np.where(ext, estimate, hi))


def _local(fit: PhaseFit, threshold: float, n_p, n_r, curve=None, sd: float = np.nan):
    """Per candidate, what its own runs say: the mean log S of the fit's runs at that configuration
    (0 runs: NaN) and how many reached the target. A run there that stopped before the target counts
    with its conditional mean given that it had not crossed by its last step (curve + sd x the
    inverse Mills ratio), not left out: leaving it out keeps only the lucky seeds of a configuration
    at the edge of reaching the target."""
    from scipy import special

    d, j = fit.data, fit.target_index(threshold)
    mean = np.full(len(n_p), np.nan)
    count = np.zeros(len(n_p), dtype=int)
    if j is None:
        return mean, count
    used = d.W[:, j] > 0
    for i, (p, r) in enumerate(zip(n_p, n_r, strict=True)):
        rows = used & np.isclose(d.n_prompts, p) & np.isclose(d.n_rollouts, r)
        reached = rows & ~d.C[:, j]
        if not reached.any():
            continue
        y = list(d.Y[reached, j])
        stopped = rows & d.C[:, j]
        if stopped.any() and curve is not None and np.isfinite(sd) and sd > 0:
            a = (d.Y[stopped, j] - curve[i]) / sd
            y += list(curve[i] + sd * np.exp(-0.5 * a * a - 0.5 * np.log(2 * np.pi) - special.log_ndtr(-a)))
        mean[i], count[i] = float(np.mean(y)), len(y)
    return mean, count


def axis_log_steps(m: AxisModel, threshold: float, n_p, n_r, rng):
    """Point (n,) and draws (K, n) of log S along one axis, with the configuration's own
    deviation: shrunk toward its runs where it was measured, drawn (sd sigma_point) where not.
    Also the count of runs behind each."""
    fit = m.fit
    B = np.asarray(n_p, dtype=float) * np.asarray(n_r, dtype=float)
    j = fit.target_index(threshold)
    point = fit.log_steps(threshold, B)
    draws = fit.log_steps_draws(threshold, B)
    sc = fit.scatter
    s_pt, s_run = float(sc.sigma_point[j]), float(sc.sigma_run[j])
    s_run = max(s_run, 0.5 * float(sc.sigma[j]))  # a replicate-free phase: half the scatter is the run's
    mean, count = _local(fit, threshold, n_p, n_r, point, float(sc.sigma[j]))
    meas = count > 0
    kappa = np.where(meas, s_pt ** 2 / (s_pt ** 2 + s_run ** 2 / np.maximum(count, 1)), 0.0)
    post_sd = np.where(meas, np.sqrt(kappa * s_run ** 2 / np.maximum(count, 1)), s_pt)
    point = np.where(meas, point + kappa * (mean - point), point)
    K = draws.shape[0]
    if K:
        draws = draws + np.where(meas, kappa * (mean - draws), 0.0) + post_sd * rng.standard_normal(draws.shape)
    return point, draws, count


def predict(axis_models: list[AxisModel], step_model: dict, step_times: pd.DataFrame, thresholds,
            cross=None, octaves: int = 2, seed: int = 0) -> Plan:
    """The Plan: every candidate at every target (module docstring). `cross` (optional) prices the
    splits off the axes: an object with `candidates(octaves)`, `log_steps(threshold, n_p, n_r, rng)`
    -> (point, draws) and `validated`."""
    rng = np.random.default_rng(seed)
    base = pd.concat([axis_candidates(m, octaves) for m in axis_models], ignore_index=True) if axis_models else \
        pd.DataFrame(columns=["n_prompts", "n_rollouts", "axis_phase"])
    base = base.drop_duplicates(["n_prompts", "n_rollouts"]).reset_index(drop=True)
    if cross is not None:
        extra = cross.candidates(octaves)
        extra = extra.merge(base[["n_prompts", "n_rollouts"]], how="left", indicator=True)
        extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge").assign(axis_phase="")
        base = pd.concat([base, extra], ignore_index=True)
    plan = Plan()
    for t in thresholds:
        plan.predictions[float(t)] = _predict_target(float(t), axis_models, cross, base, step_model, step_times, rng)
    return plan


def _predict_target(t: float, axis_models, cross, base: pd.DataFrame, step_model, step_times, rng) -> Prediction:
    n = len(base)
    n_p, n_r = base["n_prompts"].to_numpy(float), base["n_rollouts"].to_numpy(float)
    B = n_p * n_r
    K = max([m.fit.n_draws for m in axis_models] + [0])
    point = np.full(n, np.nan)
    draws = np.full((K, n), np.nan)
    basis = np.array(["extrapolated"] * n, dtype=object)
    status = np.array([""] * n, dtype=object)
    n_runs = np.zeros(n, dtype=int)
    notes = [[] for _ in range(n)]
    priced = np.zeros(n, dtype=bool)
    for m in axis_models:
        row = m.fit.row(t)
        on = m.on_axis(n_p, n_r) & ~priced
        if row is None or not on.any():
            continue
        status[on] = row["status"]
        if row["status"] not in ("ok", "extrapolated"):
            for i in np.flatnonzero(on):
                notes[i].append(f"no fit along {m.phase}'s axis at this target ({row['status']})")
            priced |= on
            continue
        idx = np.flatnonzero(on)
        p, dr, cnt = axis_log_steps(m, t, n_p[idx], n_r[idx], rng)
        point[idx], n_runs[idx] = p, cnt
        if K and dr.shape[0] == K:
            draws[:, idx] = dr
        lo, hi = float(row["B_reached_min"]), float(row["B_reached_max"])
        inside = (B[idx] >= lo * (1 - 1e-9)) & (B[idx] <= hi * (1 + 1e-9))
        basis[idx] = np.where(cnt > 0, "measured", np.where(inside & (row["status"] == "ok"), "on_axis", "extrapolated"))
        for i in idx[~inside]:
            notes[i].append(f"beyond the batch sizes that reached the target along {m.phase}'s axis "
                            f"({lo:,.0f} to {hi:,.0f})")
        if row["status"] != "ok":
            for i in idx:
                notes[i].append(f"{m.phase}'s fit is {row['status']} at this target")
        priced |= on
    if cross is not None:
        off = ~priced
        if off.any():
            idx = np.flatnonzero(off)
            p, dr, cnt, cb = cross.log_steps(t, n_p[idx], n_r[idx], rng, K)
            point[idx], n_runs[idx], basis[idx] = p, cnt, cb
            if K:
                draws[:, idx] = dr
    steps = np.exp(point)
    T, _ = predict_step_time(step_model, n_p, n_r)
    T = np.where(T > 0, T, np.nan)
    gpus, gpu_note = gpu_counts(step_times, B)
    T_d = step_time_draws(step_model, n_p, n_r, K, rng) if K else np.zeros((0, n))
    S_d = np.exp(draws)
    H_d = S_d * T_d / 3600.0
    G_d = H_d * gpus[None, :]
    est_h = steps * T / 3600.0
    if step_model.get("status") != "ok":
        for nl in notes:
            nl.append("no step-time model: " + (step_model.get("reason") or "insufficient"))
    elif gpu_note:
        for nl in notes:
            nl.append(gpu_note)
    s_lo, s_hi = band(steps, S_d)
    h_lo, h_hi = band(est_h, H_d)
    g_lo, g_hi = band(est_h * gpus, G_d)
    e_lo, e_hi = band(steps * B, S_d * B[None, :])
    enough = np.isfinite(H_d).sum(axis=0) >= max(1, K // 2) if K else np.zeros(n, dtype=bool)
    expected = est_h.copy()
    if enough.any():
        expected[enough] = np.nanmean(H_d[:, enough], axis=0)
    table = pd.DataFrame({
        "threshold": t, "n_prompts": n_p, "n_rollouts": n_r, "total_batch": B, "predicted_steps": steps,
        "predicted_steps_lo": s_lo, "predicted_steps_hi": s_hi, "step_time_s": T, "predicted_hours": est_h,
        "predicted_hours_lo": h_lo, "predicted_hours_hi": h_hi, "expected_hours": expected, "n_gpus": gpus,
        "predicted_gpu_hours": est_h * gpus, "predicted_gpu_hours_lo": g_lo, "predicted_gpu_hours_hi": g_hi,
        "predicted_samples": steps * B, "predicted_samples_lo": e_lo, "predicted_samples_hi": e_hi,
        "basis": basis, "axis_phase": base["axis_phase"].to_numpy(), "model": "", "fit_status": status,
        "n_runs": n_runs, "note": ["; ".join(x) for x in notes]})
    table = table.astype({"n_prompts": int, "n_rollouts": int, "total_batch": int})
    return Prediction(t, table, draws, H_d, G_d)


def recommend(plan: Plan, samples_slack: float = 0.10) -> pd.DataFrame:
    """plan.csv: per target and objective, the best candidate among those a recommendation may rest
    on (RECOMMENDABLE bases). wall_clock: the fewest expected hours; gpu_hours: the fewest expected
    GPU-hours; samples: the fastest candidate whose predicted samples are within `samples_slack` of
    the fewest (the fewest samples alone always picks the smallest batch whatever the hours)."""
    rows = []
    for _t, pred in sorted(plan.predictions.items()):
        sub = pred.table[pred.table["basis"].isin(RECOMMENDABLE)].reset_index(drop=True)
        if not len(sub):
            continue
        for obj in OBJECTIVES:
            if obj == "samples":
                ok = np.isfinite(sub["predicted_samples"].to_numpy(dtype=float))
                if not ok.any():
                    continue
                pool = sub[ok & (sub["predicted_samples"] <= (1 + samples_slack) * sub.loc[ok, "predicted_samples"].min())]
                hours = pool["expected_hours"].astype(float)
                i = hours.idxmin() if hours.notna().any() else pool["total_batch"].astype(float).idxmax()
            else:
                col = "expected_hours" if obj == "wall_clock" else "predicted_gpu_hours"
                value = sub[col].astype(float)
                if obj == "gpu_hours":
                    value = value.where(sub["n_gpus"].notna())
                if not value.notna().any():
                    continue
                i = value.idxmin()
            rows.append({"objective": obj, **sub.loc[i].to_dict()})
    out = pd.DataFrame(rows, columns=PLAN_COLUMNS + PLAN_EXTRA_COLUMNS)
    return out.astype({"n_prompts": "Int64", "n_rollouts": "Int64", "total_batch": "Int64"})
