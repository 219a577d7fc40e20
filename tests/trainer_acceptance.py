"""Issue 16's acceptance on sweeps of the real policy-gradient trainer (tests/pg_trainer.py):
what the fit says at each target against the trainer's many-seed truth, and whether the
plan's wall-clock recommendation is near the true optimum.

The truth of a sweep is the general form fitted to the many-seed S(B) (pg_truth.json) at the
batch sizes where the sweep's own runs reached the target: the same range the sweep can
describe. The trainer's S(B) is not exactly of the general form (its log-rms against the form is
0.01-0.07), so a fit over another range describes another stretch of the curve (adam_sqrt's
learning rate stops growing at B = 1024: below it S falls like B^-1.5, over the whole grid like
B^-1.1). The full-grid truth is kept beside it (`*_grid`).

    python tests/trainer_acceptance.py SEEDS [N_BOOTSTRAP [OUT.md]]   # e.g. 0,1,2,3 200
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg_trainer as pg  # noqa: E402
import sweepgen  # noqa: E402

import cbs_helpers as ch  # noqa: E402


def _true_hours(entry: dict, target: float, batch: float) -> float:
    """The many-seed hours to target at `batch`, log-log interpolated over the truth grid."""
    wc = entry["wallclock_optimum"][repr(target)]
    grid_b = np.array([p["batch"] for p in entry["points"]], dtype=float)
    hours = np.array(wc["hours_by_batch"], dtype=float)
    order = np.argsort(grid_b)
    return float(np.exp(np.interp(np.log(batch), np.log(grid_b[order]), np.log(hours[order]),
                                  left=np.nan, right=np.nan)))


def evaluate_sweep(sw, truth: dict, n_bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per target: the fit (model, alpha with interval, B_noise with interval), the truth
    on the sweep's reached range and on the full grid, and the wall-clock recommendation with its
    true excess over the true optimum among the candidates."""
    entry = truth["settings"][sw.setting][sw.axis]
    frames = sweepgen.snapshot_frames(sw)
    params = sw.params[sw.phase]
    runs, history, metric = ch.phase_runs(frames["runs"], frames["history"], params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb, fit, draws = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"],
                                      n_bootstrap=n_bootstrap, seed=seed, return_draws=True)
        wall = ch.wall_clock_table(runs, history, metric, params["thresholds"])
        step_model = ch.step_time_model(wall)
        predictions = ch.predict_plan(ch.mccandlish_models(sb, fit, draws), step_model,
                                      ch.step_time_table(wall), seed=seed)
        plan = ch.recommend(predictions)
    points = {p["batch"]: p["S"] for p in entry["points"]}
    rows = []
    for f in fit.itertuples():
        key = repr(float(f.threshold))
        reached = sorted(sb.loc[(sb["threshold"] == f.threshold) & ~sb["censored"].astype(bool)
                                & sb["in_envelope"], "total_batch"].astype(int).unique())
        have = [b for b in reached if b in points]
        matched = (pg.general_fit(np.array(have, float), np.array([points[b][key] for b in have]))
                   if len(have) >= 4 else {"alpha": np.nan, "B_noise": np.nan})
        grid = entry["fits"][key]
        row = {"setting": sw.setting, "axis": sw.axis, "sweep_seed": sw.seed, "threshold": f.threshold,
               "status": f.status, "model": f.model, "alpha": f.alpha, "alpha_lo": f.alpha_lo,
               "alpha_hi": f.alpha_hi, "B_noise": f.B_noise, "B_noise_lo": f.B_noise_lo,
               "B_noise_hi": f.B_noise_hi, "B_noise_mccandlish": f.B_noise_mccandlish,
               "n_censored": f.n_censored, "n_reached": len(reached),
               "alpha_true": matched["alpha"], "B_noise_true": matched["B_noise"],
               "alpha_grid": grid["alpha"], "B_noise_grid": grid["B_noise"]}
        rec = plan[(plan["threshold"] == f.threshold) & (plan["objective"] == "wall_clock")]
        if len(rec):
            cand = predictions.loc[predictions["threshold"] == f.threshold, "total_batch"].astype(float)
            true_c = np.array([_true_hours(entry, f.threshold, b) for b in cand])
            best = np.nanmin(true_c) if np.isfinite(true_c).any() else np.nan
            b_rec = float(rec["total_batch"].iloc[0])
            row.update(rec_batch=b_rec, rec_true_hours=_true_hours(entry, f.threshold, b_rec),
                       best_true_hours=best, best_batch=float(cand.iloc[int(np.nanargmin(true_c))])
                       if np.isfinite(best) else np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("rec_batch", "rec_true_hours", "best_true_hours", "best_batch"):
        if col not in out:
            out[col] = np.nan
    out["alpha_err"] = (out["alpha"] - out["alpha_true"]).abs()
    out["alpha_covered"] = (out["alpha_lo"] <= out["alpha_true"]) & (out["alpha_true"] <= out["alpha_hi"])
    out["B_noise_err"] = (out["B_noise"] / out["B_noise_true"] - 1).abs()
    out["B_noise_covered"] = (out["B_noise_lo"] <= out["B_noise_true"]) & (out["B_noise_true"] <= out["B_noise_hi"])
    out["rec_excess"] = out["rec_true_hours"] / out["best_true_hours"] - 1
    return out


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, axis): targets, share general, median |alpha error|, alpha coverage, median
    |B_noise error|, B_noise coverage, worst and median excess of the recommendation."""
    usable = results[results["status"].isin(["ok", "extrapolated"]) & results["alpha_true"].notna()]
    g = usable.groupby(["setting", "axis"])
    return g.agg(targets=("threshold", "size"),
                 truth_alpha=("alpha_true", "median"),
                 general=("model", lambda s: float((s == "general").mean())),
                 alpha_err=("alpha_err", "median"), alpha_cov=("alpha_covered", "mean"),
                 B_noise_err=("B_noise_err", "median"), B_noise_cov=("B_noise_covered", "mean"),
                 rec_excess_median=("rec_excess", "median"), rec_excess_max=("rec_excess", "max"))


def markdown(results: pd.DataFrame, seeds, n_bootstrap: int, seconds: float) -> str:
    """The per-class table as the benchmark report's Markdown."""
    table = summarise(results).reset_index()
    head = ("| setting | axis | targets | truth alpha (median) | general chosen | median abs alpha error "
            "| alpha 95% coverage | median B_noise error | B_noise 95% coverage | recommendation excess "
            "median | worst |\n" + "|---" * 11 + "|\n")
    body = "".join(
        f"| {r.setting} | {r.axis} | {r.targets} | {r.truth_alpha:.2f} | {r.general:.0%} | {r.alpha_err:.3f} "
        f"| {r.alpha_cov:.0%} | {r.B_noise_err:.0%} | {r.B_noise_cov:.0%} | {r.rec_excess_median:.1%} "
        f"| {r.rec_excess_max:.1%} |\n" for r in table.itertuples())
    usable = results[results["status"].isin(["ok", "extrapolated"]) & results["alpha_true"].notna()]
    return (f"# Issue 16 acceptance on the real trainer's sweeps\n\nMeasured by `python "
            f"tests/trainer_acceptance.py {','.join(map(str, seeds))} {n_bootstrap}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({seconds:.0f} s): "
            f"{results[['setting', 'axis', 'sweep_seed']].drop_duplicates().shape[0]} sweeps, "
            f"{len(usable)} targets with a usable fit and a truth. Truth: the general form fitted to "
            "the trainer's 8-seed S(B) at the batch sizes the sweep's runs reached. Recommendation "
            "excess: the true hours at the recommended batch over the true optimum among the same "
            f"candidates.\n\n{head}{body}\nOverall: median abs alpha error "
            f"{usable['alpha_err'].median():.3f}, alpha coverage {usable['alpha_covered'].mean():.0%}, "
            f"median B_noise error {usable['B_noise_err'].median():.0%}, B_noise coverage "
            f"{usable['B_noise_covered'].mean():.0%}.\n")


def main(argv: list[str]) -> int:
    seeds = [int(s) for s in argv[0].split(",")] if argv else [0]
    n_bootstrap = int(argv[1]) if len(argv) > 1 else 200
    out = Path(argv[2]) if len(argv) > 2 else None
    start = time.perf_counter()
    truth = pg.load_truth()
    sweeps = pg.trainer_sweeps(seeds, processes=2)
    results = pd.concat([evaluate_sweep(sw, truth, n_bootstrap) for sw in sweeps], ignore_index=True)
    text = markdown(results, seeds, n_bootstrap, time.perf_counter() - start)
    print(text)
    if out:
        out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
