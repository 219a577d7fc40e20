"""Issue 24's acceptance on sweeps of the real policy-gradient trainer (tests/sweeps/trainer.py): the
decision (decisions.csv's row) against the trainer's many-seed truth, the bands and intervals
against it, and the closed loop of the first suggested run.

Per sweep (one phase along one axis):
- the decision at the phase's default decision target: its true hours over the true optimum among
  the plan's candidates (regret), and whether its 95% hours band holds the true hours;
- every target's B_noise: its error and whether its 95% interval holds the truth, against three
  truths: the general form fitted to the 8-seed S(B) at the sweep's batch sizes (all of them: the
  estimand of a design does not change with the runs' step budget), the same at the batch sizes the
  sweep reached (the previous acceptance's: a fit of 4 points at a high target is itself unstable),
  and the pooled model fitted to the 8-seed S(B) at the sweep's batch sizes (`pooled_truth`);
- the trend of B_noise over the targets: the fitted factor's interval against the truth's factor;
- the closed loop: the first suggested run is trained (a new run: the same trainer, a fresh seed;
  an extension: the same run trained further, which reproduces its steps so far), the phase refitted
  and decided again; the realised regret reduction (true regret before minus after) against the
  promised one, beside the same for "repeat the batch size nearest B_noise" and "one octave beyond
  the largest batch size".

    python tests/decision_acceptance.py SEEDS [N_BOOTSTRAP [OUT.md]]   # e.g. 0,1,2,3 200
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweeps import form  # noqa: E402
from sweeps import trainer as pg  # noqa: E402

import cbs_helpers as ch  # noqa: E402


def true_hours(entry: dict, target: float, batch) -> np.ndarray:
    """The many-seed hours to target at each batch along the sweep's axis (log-log interpolated on
    the truth grid; NaN outside it): S(B) x the step-time model's median step time."""
    pts = {p["batch"]: p["S"][repr(float(target))] for p in entry["points"]}
    gb = np.array(sorted(pts), dtype=float)
    S = np.array([pts[b] for b in gb])
    b = np.asarray(batch, dtype=float)
    s = np.exp(np.interp(np.log(b), np.log(gb), np.log(S), left=np.nan, right=np.nan))
    return s * pg.step_time(b) / 3600.0


def pooled_truth(entry: dict, batches, thresholds, forms=None) -> dict:
    """B_noise per target and the trend of the pooled fit of the 8-seed mean log S at `batches`
    (noise-free: one row per batch, no censoring; the seeds' spread as the scatter)."""
    pts = {p["batch"]: p for p in entry["points"]}
    have = [b for b in sorted(batches) if b in pts]
    thr = [float(t) for t in thresholds]
    if len(have) < 4:
        return {}
    Y = np.array([[math.log(pts[b]["S"][repr(t)]) for t in thr] for b in have])
    R, T = Y.shape
    fit = ch.fit_arrays(np.array(have, dtype=float), Y, np.zeros((R, T), bool), np.ones((R, T)),
                        np.array([str(b) for b in have]), np.full(R, np.inf), thr, n_bootstrap=0, forms=forms)
    out = {"trend": fit.trend()["ratio"], "form": fit.chosen}
    for t in thr:
        out[t] = fit.params(t)["B_noise"] if fit.target_index(t) is not None else np.nan
    return out


def _frames(sw):
    frames = form.snapshot_frames(sw)
    params = sw.params[sw.phase]
    runs, history, metric = ch.phase_runs(frames["runs"], frames["history"], params)
    return runs, history, metric, params


def cut_sweep(sw, share: float):
    """The sweep as it stood when every run had done `share` of its step budget (all started
    together): each run's rows up to there, the unfinished ones `running`."""
    import copy

    new = copy.copy(sw)
    stop = int(share * sw.budget)
    runs = []
    for r in sw.runs:
        rows = [row for row in r["rows"] if row["_step"] <= stop]
        done = len(rows) == len(r["rows"])
        runs.append({**r, "rows": rows, "state": r["state"] if done else "running"})
    new.runs = runs
    return new


def analyse(sw, n_bootstrap: int, seed: int = 0, target: float | None = None) -> dict:
    """The phase's fit and plan (the notebooks' calls)."""
    runs, history, metric, params = _frames(sw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=n_bootstrap,
                           seed=seed)
        wall = ch.wall_clock_table(runs, history, metric, params["thresholds"])
        step_model = ch.step_time_model(wall)
        pp = ch.plan_phase(sw.phase, {sw.phase: fit}, step_model, ch.step_time_table(wall), params["thresholds"],
                           requested_target=target, budget_steps=float(sw.budget), seed=seed)
    return {"fit": fit, "plan": pp, "params": params}


def _regret(entry, t, pred_table, n_p, n_r) -> tuple[float, float]:
    cand = pred_table["total_batch"].to_numpy(dtype=float)
    th = true_hours(entry, t, cand)
    best = np.nanmin(th) if np.isfinite(th).any() else np.nan
    mine = float(true_hours(entry, t, [n_p * n_r])[0])
    return mine / best, mine - best


def _trained_run(sw, n_p: int, n_r: int, steps: int, run_seed: int, name: str | None = None) -> dict:
    """One more run of the sweep's trainer, as trainer_sweep logs it."""
    setting = sw.setting
    lr = pg.sgd_lr(n_p, n_r) if setting == "sgd_tuned" else pg.learning_rate(setting, n_p * n_r)
    test_freq = pg.DEFAULT_TEST_FREQ[setting]
    trace = pg.train(pg.task(), n_p, n_r, setting, run_seed, int(steps), lr=lr, log=True, test_freq=test_freq,
                     n_val=pg.N_VAL, grad_noise_every=pg.GRAD_NOISE_EVERY)
    name = name or f"cbs_{sw.phase}_np{n_p}_nr{n_r}"
    config = {"data": {"train_batch_size": n_p},
              "actor_rollout_ref": {"rollout": {"n": n_r}, "actor": {"optim": {"lr": lr}}},
              "algorithm": {"adv_estimator": "grpo"},
              "trainer": {"n_gpus_per_node": 8, "nnodes": 1, "test_freq": test_freq,
                          "total_training_steps": int(sw.budget), "experiment_name": name, "project_name": "cbs"},
              "seed": run_seed}
    return {"run_id": pg._run_id(f"loop/{sw.setting}/{sw.axis}/{sw.seed}/{n_p}/{n_r}/{run_seed}/{steps}"),
            "name": name, "config": config, "state": "finished", "rows": trace.rows, "start_time": 1.9e9,
            "tags": [], "phase": sw.phase, "n_prompts": n_p, "n_rollouts": n_r, "setting": setting, "seed": run_seed}


def _with_run(sw, n_p, n_r, to_step, extend: str = ""):
    """The sweep after one more run: a new run to the budget (it stops at its crossing in the cost),
    or the run `extend` trained on to `to_step`."""
    import copy

    new = copy.copy(sw)
    runs = list(sw.runs)
    if extend:
        i = next(k for k, r in enumerate(runs) if r["run_id"] == extend)
        old = runs[i]
        run = _trained_run(sw, n_p, n_r, max(int(to_step), len(old["rows"])), old["seed"], name=old["name"])
        run["run_id"] = old["run_id"]
        runs[i] = run
    else:
        runs.append(_trained_run(sw, n_p, n_r, int(sw.budget), 20_000 + 100 * sw.seed + n_p + n_r))
    new.runs = runs
    return new


def _decision_after(sw, n_bootstrap, target=None):
    res = analyse(sw, n_bootstrap, target=target)
    return res["plan"].decision


def evaluate(sw, truth: dict, n_bootstrap: int = 200, loop: bool = True, target: float | None = None) -> dict:
    """One sweep's rows: `decision` (one), `targets` (one per target), `loop` (one, or none);
    `target`: decide there instead of at the default decision target."""
    entry = truth["settings"][sw.setting][sw.axis]
    res = analyse(sw, n_bootstrap, target=target)
    fit, pp = res["fit"], res["plan"]
    d = pp.decision
    out = {"targets": [], "decision": None, "loop": None}
    sb = fit.sb_eb
    points = {p["batch"]: p["S"] for p in entry["points"]}
    batches = sorted(sb["total_batch"].dropna().astype(int).unique())
    pooled = pooled_truth(entry, batches, [float(t) for t in fit.thresholds[fit.fitted]]) if len(fit.fitted) else {}
    trend = fit.trend()
    for f in fit.table.itertuples():
        key = repr(float(f.threshold))
        reached = sorted(sb.loc[(sb["threshold"] == f.threshold) & ~sb["censored"].astype(bool) & sb["in_envelope"],
                                "total_batch"].astype(int).unique())
        have = [b for b in reached if b in points]
        m = (pg.general_fit(np.array(have, float), np.array([points[b][key] for b in have]))
             if len(have) >= 4 else {"alpha": np.nan, "B_noise": np.nan})
        grid = [b for b in batches if b in points]
        mg = (pg.general_fit(np.array(grid, float), np.array([points[b][key] for b in grid]))
              if len(grid) >= 4 else {"alpha": np.nan, "B_noise": np.nan})
        out["targets"].append({
            "setting": sw.setting, "axis": sw.axis, "sweep_seed": sw.seed, "threshold": f.threshold,
            "status": f.status, "model": f.model, "weight_general": f.weight_general, "alpha": f.alpha,
            "alpha_lo": f.alpha_lo, "alpha_hi": f.alpha_hi, "B_noise": f.B_noise, "B_noise_lo": f.B_noise_lo,
            "B_noise_hi": f.B_noise_hi, "n_reached": len(reached), "alpha_true": m["alpha"],
            "B_noise_reached": m["B_noise"], "B_noise_true": mg["B_noise"], "alpha_design": mg["alpha"],
            "B_noise_pooled": pooled.get(float(f.threshold), np.nan),
            "trend": trend["ratio"], "trend_lo": trend["ratio_lo"], "trend_hi": trend["ratio_hi"],
            "trend_true": pooled.get("trend", np.nan)})
    if not np.isfinite(d.get("total_batch", np.nan)):
        return out
    t = d["threshold"]
    pred = pp.plan.predictions[t]
    regret, lost = _regret(entry, t, pred.table, d["n_prompts"], d["n_rollouts"])
    true_h = float(true_hours(entry, t, [d["total_batch"]])[0])
    out["decision"] = {
        "setting": sw.setting, "axis": sw.axis, "sweep_seed": sw.seed, "threshold": t, "B": d["total_batch"],
        "basis": d["basis"], "predicted_hours": d["predicted_hours"], "lo": d["predicted_hours_lo"],
        "hi": d["predicted_hours_hi"], "true_hours": true_h, "regret": regret,
        "covered": d["predicted_hours_lo"] <= true_h <= d["predicted_hours_hi"], "regret_now_h": d["regret_now_h"],
        "next_action": d["next_action"], "p_best": d["p_best"]}
    if loop:
        out["loop"] = closed_loop(sw, entry, pp, fit, n_bootstrap, lost)
    return out


def closed_loop(sw, entry, pp, fit, n_bootstrap: int, lost_before: float) -> dict | None:
    """The first suggestion and the two fixed rules, each run and refitted: realised reductions of
    the true regret (hours) against the promise."""
    nxt = pp.next_runs
    if not len(nxt):
        return None
    t = pp.target
    first = nxt.iloc[0]
    row = {"setting": sw.setting, "axis": sw.axis, "sweep_seed": sw.seed, "threshold": t,
           "action": first["action"], "B": int(first["total_batch"]), "promised_h": float(first["expected_reduction_h"]),
           "promised_lo_h": float(first["reduction_lo_h"]), "promised_hi_h": float(first["reduction_hi_h"]),
           "cost": float(first["cost"]), "regret_before_h": lost_before}

    def realise(n_p, n_r, to_step, extend=""):
        after = _decision_after(_with_run(sw, n_p, n_r, to_step, extend), n_bootstrap, t)
        if not np.isfinite(after.get("total_batch", np.nan)):
            return np.nan
        _, lost = _regret(entry, t, pp.plan.predictions[t].table, after["n_prompts"], after["n_rollouts"])
        return lost_before - lost

    extend = first["run_id"] if str(first["action"]).startswith("extend ") else ""
    row["realised_h"] = realise(int(first["n_prompts"]), int(first["n_rollouts"]), first["to_step"], extend)
    sb = fit.sb_eb
    configs = sb.drop_duplicates(["n_prompts", "n_rollouts"])
    Bs = configs["total_batch"].astype(float).to_numpy()
    bn = fit.row(t)["B_noise"]
    near = configs.iloc[int(np.argmin(np.abs(np.log(Bs) - math.log(bn))))]
    row["repeat_nearest_h"] = realise(int(near["n_prompts"]), int(near["n_rollouts"]), sw.budget)
    big = configs.iloc[int(np.argmax(Bs))]
    n_p, n_r = (int(big["n_prompts"]) * 2, int(big["n_rollouts"])) if sw.axis == "prompts" else \
        (int(big["n_prompts"]), int(big["n_rollouts"]) * 2)
    row["octave_beyond_h"] = realise(n_p, n_r, sw.budget)
    return row


# ------------------------------------------------------------------------------------------
# Studies across axes: prompts against rollouts (sweeps.trainer.joint_trainer_sweep)
# ------------------------------------------------------------------------------------------
def analyse_joint(sw, n_bootstrap: int, phase: str = "p2b", seed: int = 0, target: float | None = None) -> dict:
    """A phase-2 study as 08_plan analyses `phase`: every member phase's own fit (the axes it may
    recommend on), the cross-axis model over them and the iso-batch phase, the plan."""
    frames = form.snapshot_frames(sw)
    params = sw.params[phase]
    members = list(dict.fromkeys([phase, *(params.get("two_axis_phases") or [phase])]))
    extra = [p for p in sw.params if p not in members]
    fits, walls, sbs = {}, [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ph in members + extra:
            p = sw.params[ph]
            runs, history, metric = ch.phase_runs(frames["runs"], frames["history"], p)
            fit = ch.fit_phase(runs, history, metric, p["thresholds"], p["n_val"], n_bootstrap=n_bootstrap, seed=seed)
            sbs.append(fit.sb_eb.assign(phase=ph))
            walls.append(ch.wall_clock_table(runs, history, metric, p["thresholds"]))
            if ph in members:
                fits[ph] = fit
        wall = pd.concat(walls, ignore_index=True).drop_duplicates(["run_id", "threshold"])
        cross = ch.cross_axis_fit(pd.concat(sbs, ignore_index=True), params["thresholds"], n_bootstrap=n_bootstrap,
                                  seed=seed)
        pp = ch.plan_phase(phase, fits, ch.step_time_model(wall), ch.step_time_table(wall), params["thresholds"],
                           requested_target=target, cross=cross, seed=seed)
    return {"fits": fits, "cross": cross, "plan": pp}


def evaluate_joint(sw, truth: dict, n_bootstrap: int = 200, phase: str = "p2b", target: float | None = None) -> dict:
    """The study's decision for `phase`: its true regret over every candidate the truth prices (both
    axes and the splits), whether its band holds the true hours, what it rests on, and the check."""
    res = analyse_joint(sw, n_bootstrap, phase, target=target)
    pp, cross = res["plan"], res["cross"]
    d = pp.decision
    row = {"setting": sw.setting, "sweep_seed": sw.seed, "phase": phase, "threshold": d["threshold"],
           "validated": cross.validated, "check": cross.reason, "rho": cross.rho}
    if not np.isfinite(d.get("total_batch", np.nan)):
        return row
    t = d["threshold"]
    tab = pp.plan.predictions[t].table
    hours = np.array([pg.true_hours(sw.setting, p, r, t, truth) for p, r in zip(tab["n_prompts"], tab["n_rollouts"],
                                                                              strict=True)])
    mine = pg.true_hours(sw.setting, d["n_prompts"], d["n_rollouts"], t, truth)
    allowed = tab["basis"].isin(["measured", "on_axis", "cross_axis"]).to_numpy()
    row.update({"n_prompts": d["n_prompts"], "n_rollouts": d["n_rollouts"], "basis": d["basis"],
                "predicted_hours": d["predicted_hours"], "lo": d["predicted_hours_lo"], "hi": d["predicted_hours_hi"],
                "true_hours": mine, "regret": mine / np.nanmin(hours),
                "regret_recommendable": mine / np.nanmin(np.where(allowed, hours, np.nan)),
                "covered": d["predicted_hours_lo"] <= mine <= d["predicted_hours_hi"],
                "worth_testing": d["worth_testing"], "next_why": d["next_why"]})
    return row


def run(seeds, n_bootstrap: int = 200, classes=None, loop: bool = True, processes: int = 2) -> dict:
    truth = pg.load_truth()
    sweeps = pg.trainer_sweeps(seeds, classes=classes or pg.SWEEP_CLASSES, processes=processes)
    parts = [evaluate(sw, truth, n_bootstrap, loop) for sw in sweeps]
    out = {"targets": pd.DataFrame([r for p in parts for r in p["targets"]]),
           "decisions": pd.DataFrame([p["decision"] for p in parts if p["decision"]]),
           "loop": pd.DataFrame([p["loop"] for p in parts if p["loop"]])}
    studies = [pg.joint_trainer_sweep(s, setting, truth=truth) for s in seeds[:2] for setting in pg.SETTINGS]
    out["joint"] = pd.DataFrame([evaluate_joint(sw, truth, n_bootstrap) for sw in studies])
    return out


def summary(res: dict) -> str:
    d, t, lp = res["decisions"], res["targets"], res["loop"]
    lines = ["## Decisions (default decision target)", "",
             "| class | sweeps | regret <= 1.05 | worst regret | 95% hours band covers |", "|---|---|---|---|---|"]
    for (s, a), g in d.groupby(["setting", "axis"]):
        lines.append(f"| {s} {a} | {len(g)} | {(g['regret'] <= 1.05).mean():.0%} | {g['regret'].max():.3f} | "
                     f"{g['covered'].mean():.0%} |")
    lines.append(f"| all | {len(d)} | {(d['regret'] <= 1.05).mean():.0%} | {d['regret'].max():.3f} | "
                 f"{d['covered'].mean():.0%} |")
    u = t[t["status"].isin(["ok", "extrapolated"])].copy()
    for col in ("B_noise_true", "B_noise_reached", "B_noise_pooled"):
        u[f"err_{col}"] = (u["B_noise"] / u[col] - 1).abs()
        u[f"cov_{col}"] = (u["B_noise_lo"] <= u[col]) & (u[col] <= u["B_noise_hi"])
    lines += ["", "## B_noise per target (usable fits): median error and 95% coverage against each truth", "",
              "| class | targets | general fit, sweep grid | coverage | general fit, reached | coverage "
              "| pooled fit, sweep grid | coverage |", "|---|---|---|---|---|---|---|---|"]
    for (s, a), g in list(u.groupby(["setting", "axis"])) + [(("all", ""), u)]:
        cells = []
        for col in ("B_noise_true", "B_noise_reached", "B_noise_pooled"):
            gg = g[g[col].notna()]
            cells.append(f"{gg[f'err_{col}'].median():.0%} | {gg[f'cov_{col}'].mean():.0%}")
        lines.append(f"| {s} {a} | {len(g)} | " + " | ".join(cells) + " |")
    tr = t.drop_duplicates(["setting", "axis", "sweep_seed"])
    tr = tr[tr["trend_true"].notna() & tr["trend_lo"].notna()]
    cov = ((tr["trend_lo"] <= tr["trend_true"]) & (tr["trend_true"] <= tr["trend_hi"])).mean()
    lines += ["", f"Trend of B_noise over targets: interval holds the pooled truth's factor in {cov:.0%} of "
              f"{len(tr)} sweeps."]
    jt = res.get("joint", pd.DataFrame())
    if len(jt):
        lines += ["", "## Across axes: the p2b decision of a phase-2 study (p1, p2a, p2b, p2c)", "",
                  "| setting | studies | model checked | decision rests on | regret <= 1.05 | worst regret | "
                  "band covers |", "|---|---|---|---|---|---|---|"]
        for st, g in jt.groupby("setting"):
            lines.append(f"| {st} | {len(g)} | {g['validated'].mean():.0%} | "
                         f"{', '.join(f'{k} {v}' for k, v in g['basis'].value_counts().items())} | "
                         f"{(g['regret'] <= 1.05).mean():.0%} | {g['regret'].max():.3f} | {g['covered'].mean():.0%} |")
    if len(lp):
        lines += ["", "## Closed loop (first suggestion run, phase refitted)", "",
                  f"{len(lp)} sweeps with a suggestion: promised {lp['promised_h'].mean():.4f} h, realised "
                  f"{lp['realised_h'].mean():.4f} h on average; repeat nearest B_noise {lp['repeat_nearest_h'].mean():.4f} h, "
                  f"one octave beyond {lp['octave_beyond_h'].mean():.4f} h."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    seeds = [int(s) for s in argv[0].split(",")] if argv else [0]
    n_bootstrap = int(argv[1]) if len(argv) > 1 else 200
    out = Path(argv[2]) if len(argv) > 2 else None
    start = time.perf_counter()
    res = run(seeds, n_bootstrap)
    text = (f"# Issue 24 acceptance on the real trainer's sweeps\n\n`python tests/decision_acceptance.py "
            f"{','.join(map(str, seeds))} {n_bootstrap}` ({time.perf_counter() - start:.0f} s)\n\n" + summary(res) + "\n")
    print(text)
    if out:
        out.write_text(text)
        for k, v in res.items():
            v.to_csv(out.with_suffix(f".{k}.csv"), index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
