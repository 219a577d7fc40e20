"""Issue 26's acceptance on sweeps of the real policy-gradient trainer (tests/sweeps/trainer.py), cut as
they ran: every run started together, the sweep cut at the wall-clock time when 30%, 50% and 70%
of its GPU-hours were spent (sweeps.trainer.sweep_at), every optimiser class and both axes.

Per sweep and cut:
- the decision (the phase's decision target, the plan on the fit with the running runs'
  forecasts imputed, and on the fit with them as lower bounds only): its true regret (the true
  hours at the chosen batch over the truth's best among the plan's candidates at that target),
  whether its 95% hours band holds the true hours, whether it is the full sweep's decision;
- B_noise at every target the cut answers: whether its 95% interval holds the full sweep's point
  value, and the truth (the general form fitted to the trainer's 8-seed S(B) at the sweep's batch
  sizes, as tests/decision_acceptance.py);
- every crossing forecast of a run that later crossed: whether its 90% interval holds the
  crossing the full sweep measured (isotonic), and p_reach against whether it crossed within budget;
- at 50%: the stop list; the sweep with those runs stopped there and the rest finished is analysed
  again: its decision's true regret, whether it is the full sweep's decision, and the share of the
  full sweep's GPU-hours the stopped runs would still have spent (true step times);
- the fit time of the progress model of every evaluation at 1,000 runs x 2,000 evaluations
  against fit_phase's (benchmarks/run.py's synthetic phase), a benchmark, not a test.

    python tests/forecast_acceptance.py SEEDS [N_BOOTSTRAP [OUT.md]]   # e.g. 0,1,2,3 400
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decision_acceptance as da  # noqa: E402
from sweeps import trainer as pg  # noqa: E402

import cbs_helpers as ch  # noqa: E402
from cbs_rlvr.plan.forecast import forecast_phase  # noqa: E402
from cbs_rlvr.plan.stop import stop_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "_work" / "forecast_sweeps"
SHARES = (0.3, 0.5, 0.7)


def _plain(x):
    """numpy's scalars and arrays as JSON's numbers and lists (json.dumps' default)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON data")


def _write_json(path: Path, obj) -> None:
    """obj as JSON (NaN and infinities as Python's json writes them), written whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, default=_plain))
    os.replace(tmp, path)


def sweeps(seeds, classes=pg.SWEEP_CLASSES, processes: int = 2) -> list:
    """Finished sweeps (no run left running) of every class and seed, cached in CACHE as JSON by
    the trainer's code version."""
    CACHE.mkdir(parents=True, exist_ok=True)
    version = pg.code_version()

    def path(seed, s, a):
        return CACHE / f"{version}_{s}_{a}_{seed}.json"

    for seed in seeds:
        todo = [(s, a) for s, a in classes if not path(seed, s, a).exists()]
        if todo:
            for sw in pg.trainer_sweeps([seed], classes=todo, processes=processes, n_running=0):
                _write_json(path(seed, sw.setting, sw.axis), dataclasses.asdict(sw))
    return [pg.PGSweep(**json.loads(path(seed, s, a).read_text())) for seed in seeds for s, a in classes]


def gpu_hours(run: dict) -> float:
    gpus = run["config"]["trainer"]["n_gpus_per_node"] * run["config"]["trainer"]["nnodes"]
    return pg.elapsed_hours(run) * gpus


def cut_hours(sw, share: float) -> float:
    """The wall-clock hours after the common start when `share` of the sweep's GPU-hours are spent."""
    T = np.array([pg.elapsed_hours(r) for r in sw.runs])
    G = np.array([gpu_hours(r) / max(pg.elapsed_hours(r), 1e-12) for r in sw.runs])
    lo, hi = 0.0, float(T.max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (np.minimum(mid, T) * G).sum() < share * (T * G).sum() else (lo, mid)
    return hi


def analyse(sw, n_bootstrap: int, seed: int = 0, with_forecasts: bool = True) -> dict:
    """The fit, the forecasts, the plans (with forecasts and with lower bounds only) of one sweep."""
    runs, history, metric, params = da._frames(sw)
    thr = params["thresholds"]
    out = {"runs": runs, "history": history, "metric": metric, "params": params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ch.fit_phase(runs, history, metric, thr, params["n_val"], n_bootstrap=n_bootstrap, seed=seed)
        wall = ch.wall_clock_table(runs, history, metric, thr)
        sm, st = ch.step_time_model(wall), ch.step_time_table(wall)
        out.update(fit=fit, step_model=sm, step_times=st)
        out["plan"] = ch.plan_phase(sw.phase, {sw.phase: fit}, sm, st, thr, budget_steps=float(sw.budget),
                                    n_outcomes=16, seed=seed)
        if with_forecasts:
            t0 = time.perf_counter()
            fc = forecast_phase(runs, history, metric, thr, params["n_val"], fit, n_bootstrap=n_bootstrap, seed=seed)
            out["forecast_s"] = time.perf_counter() - t0
            out["fc"] = fc
            out["plan_fc"] = (ch.plan_phase(sw.phase, {sw.phase: fc.fit}, sm, st, thr, budget_steps=float(sw.budget),
                                            n_outcomes=16, seed=seed) if fc.fit is not fit else out["plan"])
    return out


def decision_row(entry, pp, full_d) -> dict:
    """A plan's decision against the truth and the full sweep's decision."""
    d = pp.decision
    if not np.isfinite(d.get("total_batch", np.nan)):
        return {"decided": False}
    t = d["threshold"]
    regret, _ = da._regret(entry, t, pp.plan.predictions[t].table, d["n_prompts"], d["n_rollouts"])
    true_h = float(da.true_hours(entry, t, [d["total_batch"]])[0])
    same = (d["n_prompts"], d["n_rollouts"]) == (full_d.get("n_prompts"), full_d.get("n_rollouts"))
    ft = full_d.get("threshold")
    at_full = np.nan
    if ft is not None and np.isfinite(ft) and ft in pp.plan.predictions:
        at_full = da._regret(entry, ft, pp.plan.predictions[ft].table, d["n_prompts"], d["n_rollouts"])[0]
    return {"decided": True, "threshold": t, "B": d["total_batch"], "regret": regret,
            "covered": bool(d["predicted_hours_lo"] <= true_h <= d["predicted_hours_hi"]), "same_as_full": same,
            "same_target": bool(np.isclose(t, ft)) if ft is not None else False, "regret_at_full_target": at_full}


def b_noise_rows(fit, full_fit, truth_b: dict, label: str) -> list:
    rows = []
    for r in fit.table.itertuples():
        if r.status not in ("ok", "extrapolated"):
            continue
        f = full_fit.row(r.threshold)
        full_b = float(f["B_noise"]) if f is not None and f["status"] in ("ok", "extrapolated") else np.nan
        tb = truth_b.get(float(r.threshold), np.nan)
        rows.append({"fit": label, "threshold": r.threshold, "B_noise": r.B_noise, "lo": r.B_noise_lo,
                     "hi": r.B_noise_hi, "full": full_b, "truth": tb,
                     "covers_full": bool(r.B_noise_lo <= full_b <= r.B_noise_hi) if np.isfinite(full_b) else np.nan,
                     "covers_truth": bool(r.B_noise_lo <= tb <= r.B_noise_hi) if np.isfinite(tb) else np.nan})
    return rows


def truth_b_noise(entry, sb) -> dict:
    points = {p["batch"]: p["S"] for p in entry["points"]}
    grid = [b for b in sorted(sb["total_batch"].dropna().astype(int).unique()) if b in points]
    out = {}
    for t in sorted(sb["threshold"].unique()):
        key = repr(float(t))
        if len(grid) >= 4:
            out[float(t)] = pg.general_fit(np.array(grid, float), np.array([points[b][key] for b in grid]))["B_noise"]
    return out


def forecast_rows(fc, full_fit) -> list:
    """Every forecast of a running run against what the full sweep then measured."""
    if fc is None or not len(fc.table):
        return []
    sb = full_fit.sb_eb.set_index(["run_id", "threshold"])
    rows = []
    for r in fc.table[~fc.table["observed"].astype(bool) & (fc.table["state"] == "running")].itertuples():
        key = (r.run_id, r.threshold)
        if key not in sb.index:
            continue
        s_full, cens = float(sb.at[key, "S_B"]), bool(sb.at[key, "censored"])
        rows.append({"threshold": r.threshold, "step": r.step, "lo": r.step_lo, "hi": r.step_hi, "p_reach": r.p_reach,
                     "forecast": bool(np.isfinite(r.step)), "crossed": not cens, "full_step": s_full,
                     "covered": bool(r.step_lo <= s_full <= r.step_hi) if (not cens and np.isfinite(r.step)) else np.nan,
                     "log_error": math.log(s_full / r.step) if (not cens and np.isfinite(r.step)) else np.nan})
    return rows


def stopped_sweep(sw, cut, stop_ids: set):
    """The sweep with the runs `stop_ids` stopped at the cut (their rows then) and the rest finished."""
    import copy

    new = copy.copy(sw)
    by_id = {r["run_id"]: r for r in cut.runs}
    new.runs = [{**by_id[r["run_id"]], "state": "finished"} if r["run_id"] in stop_ids else r for r in sw.runs]
    return new


def evaluate(sw, truth: dict, n_bootstrap: int = 400) -> dict:
    entry = truth["settings"][sw.setting][sw.axis]
    full = analyse(sw, n_bootstrap, with_forecasts=False)
    full_fit, full_d = full["fit"], full["plan"].decision
    tb = truth_b_noise(entry, full_fit.sb_eb)
    total = sum(gpu_hours(r) for r in sw.runs)
    base = {"setting": sw.setting, "axis": sw.axis, "sweep_seed": sw.seed}
    out = {"cuts": [], "b_noise": [], "forecasts": [], "stops": [],
           "full": {**base, "threshold": full_d.get("threshold"), "B": full_d.get("total_batch"),
                    **{k: v for k, v in decision_row(entry, full["plan"], full_d).items() if k != "same_as_full"}}}
    for share in SHARES:
        cut = pg.sweep_at(sw, cut_hours(sw, share))
        res = analyse(cut, n_bootstrap)
        fc = res.get("fc")
        answered = [float(t) for t in res["fit"].table.loc[res["fit"].table["status"].isin(["ok", "extrapolated"]),
                                                           "threshold"]]
        row = {**base, "share": share, "answered": answered, "forecast_s": res.get("forecast_s", np.nan),
               "n_running": int((res["runs"]["state"] == "running").sum())}
        for label, key in (("forecast", "plan_fc"), ("bounds", "plan")):
            row.update({f"{label}_{k}": v for k, v in decision_row(entry, res[key], full_d).items()})
        out["cuts"].append(row)
        for label, f in (("forecast", fc.fit if fc is not None else None), ("bounds", res["fit"])):
            if f is not None:
                out["b_noise"] += [{**base, "share": share, **r} for r in b_noise_rows(f, full_fit, tb, label)]
        out["forecasts"] += [{**base, "share": share, **r} for r in forecast_rows(fc, full_fit)]
        if share == 0.5 and fc is not None:
            out["stops"].append({**base, **stop_outcome(sw, cut, res, entry, full_d, total, n_bootstrap)})
    return out


def stop_outcome(sw, cut, res, entry, full_d, total: float, n_bootstrap: int) -> dict:
    params = res["params"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = stop_runs(res["fc"], res["fit"], sw.phase, res["runs"], res["step_model"], res["step_times"],
                         params["thresholds"], n_bootstrap=n_bootstrap)
    ids = set(plan.table["run_id"])
    by_id = {r["run_id"]: r for r in cut.runs}
    saved = sum(gpu_hours(r) - gpu_hours(by_id[r["run_id"]]) for r in sw.runs if r["run_id"] in ids)
    after = analyse(stopped_sweep(sw, cut, ids), n_bootstrap, with_forecasts=False)
    d = decision_row(entry, after["plan"], full_d)
    return {"n_stopped": len(ids), "saved_share": saved / total, "estimated_saved": float(plan.table["gpu_hours_saved"].sum()),
            "rules": ",".join(sorted(set(plan.table["rule"]))), **{f"after_{k}": v for k, v in d.items()}}


def _code_hash() -> str:
    import hashlib

    h = hashlib.sha256()
    for path in sorted((ROOT / "cbs_rlvr").rglob("*.py")) + [Path(__file__)]:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _job(args):
    """One sweep's rows, cached under benchmarks/_work by the code's hash (a rerun after a crash
    redoes only what is missing); a sweep that fails is reported, not fatal."""
    sw, n_bootstrap, code = args
    cache = CACHE.parent / "forecast_results" / f"{code}_{n_bootstrap}_{sw.setting}_{sw.axis}_{sw.seed}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    try:
        out = evaluate(sw, pg.load_truth(), n_bootstrap)
    except Exception as exc:  # the harness reports every sweep it could not evaluate
        import traceback

        return {"error": f"{sw.setting} {sw.axis} {sw.seed}: {exc!r}\n{traceback.format_exc()}"}
    cache.parent.mkdir(parents=True, exist_ok=True)
    _write_json(cache, out)
    return json.loads(cache.read_text())  # what a rerun reads from the cache, so both runs agree


def run(seeds, n_bootstrap: int = 400, classes=pg.SWEEP_CLASSES, processes: int = 2) -> dict:
    import multiprocessing

    sws = sweeps(seeds, classes, processes)
    code = _code_hash()
    jobs = [(sw, n_bootstrap, code) for sw in sws]
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.map(_job, jobs, chunksize=1)
    else:
        parts = [_job(j) for j in jobs]
    errors = [p["error"] for p in parts if "error" in p]
    parts = [p for p in parts if "error" not in p]
    return {k: pd.DataFrame([r for p in parts for r in p[k]]) for k in ("cuts", "b_noise", "forecasts", "stops")} | {
        "full": pd.DataFrame([p["full"] for p in parts]), "errors": errors}


# ------------------------------------------------------------------------------------------
# The fit time at scale (a benchmark)
# ------------------------------------------------------------------------------------------
def fit_time(n_runs: int = 1000, n_evals: int = 2000, n_bootstrap: int = 1000, repeats: int = 1) -> dict:
    """Seconds of fit_phase (n_bootstrap) and of the progress model of every evaluation (point fit
    and its bootstrap, then the path calibration) on benchmarks/run.py's synthetic phase: that
    benchmark's own measure (`run.py --only progress`), in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.progress_fit_time(n_runs, n_evals, n_bootstrap, repeats)


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


def _mean(s: pd.Series) -> float:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else np.nan


def decisions_table(cuts: pd.DataFrame) -> list[str]:
    lines = ["| class | cut | sweeps | decided | regret <= 1.05 | worst regret | band covers truth | same batch as "
             "full sweep | regret <= 1.05, lower bounds only |", "|---|---|---|---|---|---|---|---|---|"]
    for (s, a, sh), g in cuts.groupby(["setting", "axis", "share"]):
        d = g[g["forecast_decided"].astype(bool)]
        b = g[g["bounds_decided"].astype(bool)]
        lines.append(f"| {s} {a} | {sh:.0%} | {len(g)} | {len(d)} | {_pct(_mean(d['forecast_regret'] <= 1.05))} | "
                     f"{d['forecast_regret'].max():.3f} | {_pct(_mean(d['forecast_covered']))} | "
                     f"{_pct(_mean(d['forecast_same_as_full']))} | {_pct(_mean(b['bounds_regret'] <= 1.05))} |")
    return lines


def b_noise_table(b: pd.DataFrame) -> list[str]:
    lines = ["| class | cut | targets answered | covers full sweep (forecasts) | covers truth (forecasts) | "
             "covers full sweep (lower bounds only) | covers truth (lower bounds only) |", "|---|---|---|---|---|---|---|"]
    for (s, a, sh), g in b.groupby(["setting", "axis", "share"]):
        f, lb = g[g["fit"] == "forecast"], g[g["fit"] == "bounds"]
        lines.append(f"| {s} {a} | {sh:.0%} | {len(f)} | {_pct(_mean(f['covers_full']))} | "
                     f"{_pct(_mean(f['covers_truth']))} | {_pct(_mean(lb['covers_full']))} | "
                     f"{_pct(_mean(lb['covers_truth']))} |")
    return lines


def forecast_table_md(fr: pd.DataFrame) -> list[str]:
    lines = ["| class | cut | forecasts of later crossings | 90% interval covers | median abs log error | "
             "no forecast (beyond the curve) | p_reach (mean) / crossed by budget |", "|---|---|---|---|---|---|---|"]
    for (s, a, sh), g in fr.groupby(["setting", "axis", "share"]):
        made = g[g["forecast"]]
        crossed = made[made["crossed"]]
        lines.append(f"| {s} {a} | {sh:.0%} | {len(crossed)} | {_pct(_mean(crossed['covered']))} | "
                     f"{crossed['log_error'].abs().median():.3f} | {int((~g['forecast']).sum())} | "
                     f"{_mean(made['p_reach']):.2f} / {_mean(made['crossed']):.2f} |")
    return lines


def stops_table(st: pd.DataFrame) -> list[str]:
    lines = ["| class | sweeps | runs stopped (mean) | GPU-hours saved (median share of the sweep) | regret <= 1.05 "
             "after | same batch as full sweep | same target as full sweep |", "|---|---|---|---|---|---|---|"]
    for (s, a), g in st.groupby(["setting", "axis"]):
        lines.append(f"| {s} {a} | {len(g)} | {g['n_stopped'].mean():.1f} | {_pct(g['saved_share'].median())} | "
                     f"{_pct(_mean(g['after_regret'] <= 1.05))} | {_pct(_mean(g['after_same_as_full']))} | "
                     f"{_pct(_mean(g['after_same_target']))} |")
    lines.append(f"| all | {len(st)} | {st['n_stopped'].mean():.1f} | {_pct(st['saved_share'].median())} | "
                 f"{_pct(_mean(st['after_regret'] <= 1.05))} | {_pct(_mean(st['after_same_as_full']))} | "
                 f"{_pct(_mean(st['after_same_target']))} |")
    return lines


def summary(res: dict, timing: dict | None = None) -> str:
    cuts, b, fr, st = res["cuts"], res["b_noise"], res["forecasts"], res["stops"]
    errors = res.get("errors") or []
    lines = [f"**{len(errors)} sweep(s) could not be evaluated:** " + "; ".join(e.splitlines()[0] for e in errors), ""] \
        if errors else []
    lines += ["## Decisions at each cut (plan on the fit with the running runs' forecasts)", "", *decisions_table(cuts)]
    p1 = cuts[(cuts["axis"] == "prompts") & (cuts["share"] == 0.5) & cuts["forecast_decided"].astype(bool)]
    lines += ["", f"p1 (prompts axis) at 50%: regret <= 1.05 in {_pct(_mean(p1['forecast_regret'] <= 1.05))} of "
              f"{len(p1)} decisions (goal: all)."]
    at30 = cuts[(cuts["share"] == 0.3) & cuts["forecast_decided"].astype(bool)]
    lines += [f"30%: the decision's 95% hours band misses the true hours in {_pct(1 - _mean(at30['forecast_covered']))} "
              f"of {len(at30)} decisions (goal: <= 15%)."]
    lines += ["", "## B_noise at every target the cut answers: 95% interval against the full sweep and the truth", "",
              *b_noise_table(b)]
    f50 = b[(b["share"] == 0.5) & (b["fit"] == "forecast")]
    lines += ["", f"At 50%: B_noise intervals cover the full sweep's value in {_pct(_mean(f50['covers_full']))} and "
              f"the truth in {_pct(_mean(f50['covers_truth']))} of {len(f50)} targets (goal: >= 85%)."]
    lines += ["", "## Crossing forecasts (running runs, targets they had not reached)", "", *forecast_table_md(fr)]
    c50 = fr[(fr["share"] == 0.5) & fr["forecast"] & fr["crossed"]]
    lines += ["", f"At 50%: 90% intervals cover the later crossing in {_pct(_mean(c50['covered']))} of {len(c50)} "
              "forecasts (goal: 80-97%)."]
    if len(st):
        lines += ["", "## Stopping the stop list at 50% and finishing the rest", "", *stops_table(st)]
    if timing:
        ratio = np.median(timing["all_evals"]) / np.median(timing["crossing"])
        lines += ["", "## Fit time at scale (benchmark)", "",
                  f"{timing['n_runs']:,} runs x {timing['n_evals']:,} evaluations ({timing['n_rows']:,} rows): "
                  f"fit_phase with 1,000 bootstrap tables {np.median(timing['crossing']):.1f} s; the progress model of "
                  f"every evaluation (point fit and {timing['draws']} bootstrap refits) "
                  f"{np.median(timing['all_evals']):.1f} s ({ratio:.2f}x; goal <= 2x); its path calibration "
                  f"{np.median(timing['calibration']):.1f} s more. Its 95% B_noise intervals hold the truth at "
                  f"{sum(r['B_noise_lo'] <= r['truth'] <= r['B_noise_hi'] for r in timing['b_noise']['all_evals'])} "
                  f"of {len(timing['b_noise']['all_evals'])} targets (fit_phase's at "
                  f"{sum(r['B_noise_lo'] <= r['truth'] <= r['B_noise_hi'] for r in timing['b_noise']['crossing'])})."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    seeds = [int(s) for s in argv[0].split(",")] if argv else [0]
    n_bootstrap = int(argv[1]) if len(argv) > 1 else 400
    out = Path(argv[2]) if len(argv) > 2 else None
    start = time.perf_counter()
    res = run(seeds, n_bootstrap)
    timing = fit_time() if os.environ.get("CBS_SKIP_FIT_TIME") != "1" else None
    text = (f"# Issue 26 acceptance: early answers on the real trainer's sweeps\n\n`python tests/forecast_acceptance.py "
            f"{','.join(map(str, seeds))} {n_bootstrap}` ({time.perf_counter() - start:.0f} s)\n\n"
            + summary(res, timing) + "\n")
    print(text)
    if out:
        out.write_text(text)
        for k, v in res.items():
            if isinstance(v, pd.DataFrame):
                v.to_csv(out.with_suffix(f".{k}.csv"), index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
