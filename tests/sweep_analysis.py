"""Run every analysis a report makes over one generated sweep, in memory, and check the
invariants of issue 9: no exception, statuses from the documented set, every interval holding
its estimate, every run accounted for, every figure built (and, when asked, drawn).

The calls follow the notebooks section by section (02 fit, 03 curves, 04 two axes, 05 gradient
noise, 06 wall clock, 08 plan, 07 summary), so a crash class found here is one a report would hit.
An exception is recorded with the project file and line it was raised in, so the test can tell
the classes apart by owner.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import cbs_helpers as ch
from cbs_rlvr.fit.phase import FIT_STATUSES

PACKAGE = Path(ch.__file__).resolve().parent / "cbs_rlvr"

# (table name, estimate, lo, hi) of every interval the analysis reports
INTERVALS = {
    "cbs_fit": [("B_noise", "B_noise_lo", "B_noise_hi"), ("S_min", "S_min_lo", "S_min_hi")],
    "two_axis_fit": [("rho", "rho_lo", "rho_hi"), ("B0", "B0_lo", "B0_hi")],
    "b_simple": [("B_simple", "B_simple_lo", "B_simple_hi")],
    "plan": [("predicted_hours", "predicted_hours_lo", "predicted_hours_hi"),
             ("predicted_steps", "predicted_steps_lo", "predicted_steps_hi")],
    "decision": [("predicted_hours", "predicted_hours_lo", "predicted_hours_hi"), ("B_noise", "B_noise_lo", "B_noise_hi")],
}
STATUS_TABLES = ("cbs_fit", "two_axis_fit", "b_simple", "seed_fit")
# the CSV (OUT/<phase>/tables/<name>.csv) each of INTERVALS' tables is written to
INTERVAL_CSVS = {"cbs_fit": "cbs_fit", "two_axis_fit": "two_axis_fit", "b_simple": "noise_scale_vs_fit",
                 "plan": "plan", "decision": "decision"}


def written_table_problems(out: Path) -> list[str]:
    """The tables a build wrote under `out`: every interval of INTERVALS holding its estimate
    where the three are numbers, and statuses from the documented set. One line per problem."""
    lines = []
    for name, triples in INTERVALS.items():
        for path in sorted(out.glob(f"*/tables/{INTERVAL_CSVS[name]}.csv")):
            table, where = pd.read_csv(path), f"{path.parent.parent.name}/{path.name}"
            for est, lo, hi in triples:
                if not {est, lo, hi} <= set(table.columns):
                    continue
                v, a, b = (pd.to_numeric(table[c], errors="coerce") for c in (est, lo, hi))
                if (v.notna() & a.notna() & b.notna() & ~((a <= v) & (v <= b))).any():
                    lines.append(f"{where}: {lo} <= {est} <= {hi} fails")
            if "status" in table.columns and not set(table["status"].dropna()) <= set(FIT_STATUSES):
                lines.append(f"{where}: statuses {sorted(set(table['status'].dropna()))}")
    return lines


@dataclass
class Problem:
    sweep: int
    phase: str
    step: str
    kind: str  # "exception" | "warning" | "invariant"
    where: str  # project file:line of the raise (exceptions), or the table
    message: str

    def line(self) -> str:
        return f"seed {self.sweep} phase {self.phase} [{self.step}] {self.kind} at {self.where}: {self.message}"


@dataclass
class SweepResult:
    seed: int
    problems: list[Problem] = field(default_factory=list)
    tables: dict = field(default_factory=dict)  # (phase, name) -> DataFrame
    n_figures: int = 0


def _where(exc: BaseException) -> str:
    """The innermost frame of the project (cbs_rlvr/ or cbs_helpers.py) in the traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if str(PACKAGE) in f.filename or f.filename.endswith("cbs_helpers.py")]
    f = (mine or frames)[-1]
    name = Path(f.filename).name if not mine else str(Path(f.filename).relative_to(PACKAGE.parent))
    return f"{name}:{f.lineno} ({f.name})"


class _Runner:
    def __init__(self, result: SweepResult, phase: str):
        self.result, self.phase = result, phase

    def __call__(self, step: str, fn, *args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the point is to record every crash
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.result.problems.append(Problem(self.result.seed, self.phase, step,
                                                    "exception", _where(exc), msg))
                return None
            finally:
                # a warning ends up in the report as stderr text: one raised from the project's
                # code is a problem too
                for w in caught:
                    if str(PACKAGE) in str(w.filename):
                        where = f"{Path(w.filename).relative_to(PACKAGE.parent)}:{w.lineno}"
                        self.result.problems.append(Problem(
                            self.result.seed, self.phase, step, "warning", where,
                            f"{w.category.__name__}: {str(w.message).splitlines()[0]}"))

    def bad(self, step: str, where: str, message: str) -> None:
        self.result.problems.append(Problem(self.result.seed, self.phase, step, "invariant",
                                            where, message))


def check_intervals(run: _Runner, name: str, table: pd.DataFrame | None) -> None:
    """lo <= estimate <= hi wherever the three are numbers; a finite estimate without an
    interval (when one was asked for) must come with a reason on its row."""
    if table is None or len(table) == 0:
        return
    for est, lo, hi in INTERVALS.get(name, []):
        if est not in table.columns:
            run.bad("intervals", name, f"column {est} missing")
            continue
        e = pd.to_numeric(table[est], errors="coerce").to_numpy(dtype=float)
        lo_v = pd.to_numeric(table[lo], errors="coerce").to_numpy(dtype=float)
        hi_v = pd.to_numeric(table[hi], errors="coerce").to_numpy(dtype=float)
        both = ~np.isnan(e) & ~np.isnan(lo_v) & ~np.isnan(hi_v)
        bad = both & ~((lo_v <= e) & (e <= hi_v))
        for i in np.flatnonzero(bad):
            run.bad("intervals", name, f"{lo}={lo_v[i]:.6g} <= {est}={e[i]:.6g} <= {hi}={hi_v[i]:.6g} fails")
        half = ~np.isnan(e) & (np.isnan(lo_v) != np.isnan(hi_v))
        for i in np.flatnonzero(half):
            run.bad("intervals", name, f"{est} has one bound only ({lo_v[i]}, {hi_v[i]})")


def check_statuses(run: _Runner, name: str, table: pd.DataFrame | None) -> None:
    if table is None or len(table) == 0:
        return
    if "status" not in table.columns:
        run.bad("statuses", name, "no status column")
        return
    odd = sorted(set(table["status"].astype(str)) - set(FIT_STATUSES))
    if odd:
        run.bad("statuses", name, f"statuses outside {FIT_STATUSES}: {odd}")
    if "reason" in table.columns:
        silent = table[~table["status"].isin(["ok"]) & (table["reason"].fillna("").astype(str) == "")]
        if len(silent) and not (silent["status"] == "extrapolated").all():
            run.bad("statuses", name, f"status {silent['status'].iloc[0]} without a reason")


def _figure(run: _Runner, result: SweepResult, step: str, fn, *args, draw: bool | None = False,
            **kwargs):
    """Build a figure (draw=None: skip it; True: also render it and check its log axes)."""
    if draw is None:
        return None
    fig = run(step, fn, *args, **kwargs)
    if fig is None:
        return None
    result.n_figures += 1
    if draw:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        run(step + " (draw)", lambda: FigureCanvasAgg(fig).draw())
        run(step + " (ticks)", _check_log_ticks, run, step, fig)
    return fig


def tick_labels(ax, which: str) -> list[str]:
    """The non-empty tick labels (major and minor) inside the axis's view limits, as drawn."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    labels = []
    for locator, formatter in ((axis.get_major_locator(), axis.get_major_formatter()),
                               (axis.get_minor_locator(), axis.get_minor_formatter())):
        locs = [v for v in np.asarray(locator(), dtype=float) if np.isfinite(v)]
        inside = [v for v in locs if lo - 1e-9 * abs(lo) <= v <= hi + 1e-9 * abs(hi)]
        formatter.set_locs(inside)
        labels += [formatter(v, i) for i, v in enumerate(inside)]
    return [t for t in labels if str(t).strip()]


def _check_log_ticks(run: _Runner, step: str, fig) -> None:
    """Every log-scaled axis shows at least two tick labels."""
    for ax in fig.axes:
        for which in ("x", "y"):
            axis = ax.xaxis if which == "x" else ax.yaxis
            if axis.get_scale() != "log" or not axis.get_visible():
                continue
            labels = tick_labels(ax, which)
            if len(set(labels)) < 2:
                lo, hi = sorted(axis.get_view_interval())
                run.bad(step, "ticks", f"log {which} axis [{lo:.4g}, {hi:.4g}] of "
                                       f"'{ax.get_title()}' shows {labels} (< 2 tick labels)")


def analyse_sweep(sweep, frames: dict, n_bootstrap: int = 20, seed: int = 0,
                  draw: bool | None = False) -> SweepResult:
    """Every section's analysis over every phase of a generated sweep (see module doc)."""
    result = SweepResult(sweep.seed)
    runs_all, history_all, excluded = frames["runs"], frames["history"], frames["excluded"]
    # every run accounted for
    ids = set(runs_all["run_id"].astype(str)) | set(excluded["run_id"].astype(str))
    if "segment_run_ids" in runs_all:  # resumed runs: every piece is stitched into one run
        ids |= {i for v in runs_all["segment_run_ids"].dropna().astype(str) for i in v.split(";")}
    missing = [r["run_id"] for r in sweep.runs if r["run_id"] not in ids]
    if missing:
        _Runner(result, "-").bad("accounting", "snapshot", f"runs neither analysed nor excluded: {missing}")
    fits, phase_fits = {}, {}
    for phase, params in sweep.params.items():
        run = _Runner(result, phase)
        if not (runs_all["phase"] == phase).any():
            continue  # the build skips a phase without runs (one line, "no runs yet")
        got = run("phase_runs", ch.phase_runs, runs_all, history_all, params)
        if got is None:
            continue
        runs, history, metric = got
        thr = params["thresholds"]
        sections = params["sections"]
        tables = result.tables
        # 02 steps to target
        if "02_steps_to_target" in sections:
            got = run("fit_phase", ch.fit_phase, runs, history, metric, thr, params["n_val"],
                      n_bootstrap=n_bootstrap, seed=seed)
            if got is not None:
                phase_fits[phase] = got
                sb_eb, cbs_fit = got.sb_eb, got.table
                tables[(phase, "cbs_fit")] = cbs_fit
                fits[phase] = cbs_fit
                check_intervals(run, "cbs_fit", cbs_fit)
                check_statuses(run, "cbs_fit", cbs_fit)
                run("sb_eb columns", sb_eb.__getitem__, ch.SB_EB_CSV_COLUMNS)
                seed_fit = run("seed_method_fit", ch.seed_method_fit, runs, history, metric, thr)
                check_statuses(run, "seed_fit", seed_fit)
                run("b_noise_vs_target", ch.b_noise_vs_target, cbs_fit)
                trend = run("trend", got.trend)
                if trend is not None:
                    run("trend words", ch.trend_sentence, trend)
                for row in cbs_fit.itertuples():
                    run("shape words", ch.shape_sentence, row)
                pareto = run("pareto_table", ch.pareto_table, sb_eb, cbs_fit)
                _figure(run, result, "plot_sb_eb", ch.plot_sb_eb, sb_eb, cbs_fit, title=params["title"], draw=draw)
                _figure(run, result, "plot_b_noise_vs_target", ch.plot_b_noise_vs_target, cbs_fit,
                        compare=seed_fit, draw=draw, trend=trend)
                if pareto is not None:
                    _figure(run, result, "plot_pareto", ch.plot_pareto, pareto, draw=draw)
        # 03 training curves
        if "03_training_curves" in sections:
            curves = run("training_curves_table", ch.training_curves_table, runs, history, metric)
            if curves is not None:
                _figure(run, result, "plot_training_curves", ch.plot_training_curves, curves, thr,
                        title=params["title"], draw=draw)
        # 04 two axes
        if "04_two_axis" in sections:
            frames_ = []
            for p in params["two_axis_phases"] or [phase]:
                if p not in sweep.params or not (runs_all["phase"] == p).any():
                    continue
                got = run("phase_runs (joint)", ch.phase_runs, runs_all, history_all, sweep.params[p])
                if got is None:
                    continue
                sb = run("sb_eb_table", ch.sb_eb_table, got[0], got[1], got[2], thr)
                if sb is not None:
                    frames_.append(sb.assign(phase=p))
            sb_all = pd.concat(frames_, ignore_index=True) if frames_ else pd.DataFrame()
            two = run("cross_axis_fit", ch.cross_axis_fit, sb_all, thr, n_bootstrap=n_bootstrap, seed=seed) \
                if len(sb_all) else None
            if two is not None:
                tables[(phase, "two_axis_fit")] = two.table
                check_intervals(run, "two_axis_fit", two.table)
                check_statuses(run, "two_axis_fit", two.table)
                run("rho words", ch.rho_claim, two.table)
                ok = two.table[two.table["status"] == "ok"]
                if len(ok):
                    _figure(run, result, "plot_two_axis", ch.plot_two_axis, sb_all, two,
                            float(ok["threshold"].iloc[len(ok) // 2]), draw=draw)
                if params["axis"] == "iso_batch":
                    sb_iso = run("sb_eb_table (iso)", ch.sb_eb_table, runs, history, metric, thr)
                    if sb_iso is not None:
                        iso = run("iso_batch_table", ch.iso_batch_table, sb_iso, two if len(ok) else None)
                        if iso is not None:
                            _figure(run, result, "plot_iso_batch", ch.plot_iso_batch, iso, draw=draw)
        # 05 gradient noise
        if "05_gradient_noise" in sections:
            got = run("fit_phase (05)", ch.fit_phase, runs, history, metric, thr, params["n_val"],
                      n_bootstrap=n_bootstrap, seed=seed) if phase not in phase_fits else phase_fits[phase]
            sb_eb5 = run("sb_eb_table (05)", ch.sb_eb_table, runs, history, metric, thr)
            if got is not None and sb_eb5 is not None:
                cbs_fit = got.table
                smoothed = run("smooth_grad_noise", ch.smooth_grad_noise, history, runs)
                at_target = None
                if smoothed is not None and len(smoothed):
                    at_target = run("grad_noise_at_target", ch.grad_noise_at_target, smoothed, sb_eb5)
                    _figure(run, result, "plot_grad_noise", ch.plot_grad_noise, smoothed, cbs_fit, draw=draw)
                b_simple = run("b_simple_posthoc", ch.b_simple_posthoc, runs, history, metric, thr,
                               n_bootstrap=n_bootstrap, seed=seed)
                tables[(phase, "b_simple")] = b_simple
                check_intervals(run, "b_simple", b_simple)
                check_statuses(run, "b_simple", b_simple)
                if b_simple is not None:
                    comparison = run("compare_b_simple", ch.compare_b_simple, b_simple, cbs_fit)
                    if comparison is not None:
                        _figure(run, result, "plot_noise_scale_vs_fit", ch.plot_noise_scale_vs_fit,
                                comparison, at_target, draw=draw)
        # 06 wall clock
        if "06_wall_clock" in sections:
            wall = run("wall_clock_table", ch.wall_clock_table, runs, history, metric, thr)
            if wall is not None:
                fastest = run("fastest_batch", ch.fastest_batch, wall)
                if fastest is not None:  # what 06's answer cell does with each row
                    run("06 answer: gpu_hours == gpu_hours", lambda f=fastest: [
                        bool(r.gpu_hours == r.gpu_hours) for r in f.itertuples() if r.n_configs])
                _figure(run, result, "plot_wall_clock", ch.plot_wall_clock, wall, draw=draw)
        # 08 plan: this phase's axis (and the joint phases' where named), the decision, the next runs
        if "08_plan" in sections and phase in phase_fits:
            wall = run("wall_clock_table (08)", ch.wall_clock_table, runs, history, metric, thr)
            if wall is not None:
                model = run("step_time_model", ch.step_time_model, wall)
                times = run("step_time_table", ch.step_time_table, wall)
                pp = run("plan_phase", ch.plan_phase, phase, {phase: phase_fits[phase]}, model, times, thr,
                         requested_target=params.get("decision_target"), n_outcomes=16, seed=seed) \
                    if model is not None and times is not None else None
                if pp is not None:
                    tables[(phase, "plan")] = pp.table
                    check_intervals(run, "plan", pp.table)
                    decision = pd.DataFrame([pp.decision])
                    check_intervals(run, "decision", decision)
                    run("decision words", ch.decision_sentences, pp.decision)
                    run("plan words", ch.plan_summary, pp.table, None, pp.next_runs)
                    if len(pp.next_runs) and (pp.next_runs["p_reach"] < ch.MIN_P_REACH).any():
                        run.bad("next_runs", "next_runs", "a suggested run below a 50% chance to reach")
                    bad_basis = set(pp.table["basis"]) - set(ch.RECOMMENDABLE)
                    if bad_basis:
                        run.bad("plan", "plan", f"a recommendation resting on {sorted(bad_basis)}")
                    cand = pp.plan.candidates
                    if len(cand) and ch.best_split_per_batch(cand).shape[0]:
                        _figure(run, result, "plot_plan", ch.plot_plan, cand, wall, pp.table, draw=draw)
    # 07 summary
    run = _Runner(result, "summary")
    if fits:
        long = run("cbs_summary_long", ch.cbs_summary_long, fits, {p: sweep.params[p] for p in fits})
        if long is not None:
            run("cbs_summary_table", ch.cbs_summary_table, long)
            _figure(run, result, "plot_cross_phase", ch.plot_cross_phase, long, draw=draw)
    return result
