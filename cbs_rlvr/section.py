"""A section notebook's one setup call: `section(...)` returns what the section works with (its
phase's params, where it writes, the snapshot and the phase's runs), so that every notebook opens
the same way and none can drift (the params folder a hand run names reaches the snapshot too).

An entry point, like __main__: it joins the build's rule of where a run writes (handrun) with the
sources and the measure layer, for the notebooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .build.handrun import output_file, section_paths
from .measure.crossings import joint_phase_runs, phase_runs
from .params import ParamsError, load_phase_params
from .report.style import setup_style
from .sources.snapshot import open_snapshot


@dataclass
class Section:
    """One run of one section notebook for one phase. `out` is where it writes (the build's OUT, or
    scratch/ for a hand run), `params` the phase's params, `runs`/`history`/`metric` the phase's
    runs in the snapshot (`runs_all`/`history_all`: the whole snapshot, history read lazily)."""
    name: str
    phase: str
    out: Path
    params_dir: Path
    source: str
    params: dict
    runs_all: pd.DataFrame
    history_all: Any
    manifest: dict
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    metric: str = ""

    @property
    def figures(self) -> Path:
        return self.out / self.phase / "figures"

    @property
    def tables(self) -> Path:
        return self.out / self.phase / "tables"

    def joint(self, columns: Iterable[str] = ()) -> tuple[list[dict], list[str]]:
        """The phases a joint fit pools (params `two_axis_phases`) with their runs, and those left
        out with the reason (measure.crossings.joint_phase_runs)."""
        return joint_phase_runs(self.runs_all, self.history_all, self.params, self.params_dir,
                                columns=list(columns))

    def axes(self, columns: Iterable[str] = ()) -> tuple[list[dict], list[str]]:
        """The sampled axes a plan prices: this phase first, then the phases its params pool
        (`two_axis_phases`), each {phase, params, runs, history, metric}; and those left out."""
        members, left_out = self.joint(columns) if self.params.get("two_axis_phases") else ([], [])
        own = {"phase": self.phase, "params": self.params, "runs": self.runs, "history": self.history,
               "metric": self.metric}
        return [own] + [m for m in members if m["phase"] != self.phase], left_out


def section(name: str, phase: str, out_dir: str = "", params_dir: str = "params", source: str = "data/demo",
            *, columns: Iterable[str] = (), **parameters) -> Section:
    """Set up a run of notebooks/<name> for `phase`: the figure style, where it writes (a hand run,
    out_dir empty: scratch/, said in one line), the phase's params, the snapshot (built from
    `source` with `params_dir` on first use) and the phase's runs with the history keys `columns`
    besides the accuracy. `parameters` (n_bootstrap, seed, ...) name the run in the hand-run line.
    The phase "summary" (07) has no params of its own and no runs of its own."""
    setup_style()
    out, params_path, source = section_paths(name, out_dir, params_dir, source, phase=phase, **parameters)
    runs_all, history_all, manifest = open_snapshot(out, source, params_path, lazy=True)
    params = {} if phase == "summary" else load_phase_params(params_path, phase)
    s = Section(name, phase, out, params_path, source, params, runs_all, history_all, manifest)
    if params:
        s.runs, s.history, s.metric = phase_runs(runs_all, history_all, params, columns=list(columns))
    return s


def fit_axes(axes: list[dict], thresholds, n_bootstrap: int, seed: int) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Each axis's own fit (it prices the configurations on it), their S(B) tables pooled (for the
    cross-axis model) and their wall-clock tables pooled (for the step-time model), each row with
    its phase: ({phase: PhaseFit}, sb_eb, wall_clock)."""
    from .fit.phase import fit_phase
    from .measure.wallclock import wall_clock_table

    fits, sbs, walls = {}, [], []
    for m in axes:
        meta = m["params"]["metaparameters"]
        fits[m["phase"]] = fit_phase(m["runs"], m["history"], m["metric"], thresholds, m["params"]["n_val"],
                                     n_bootstrap=n_bootstrap, seed=seed, metaparameters=meta)
        sbs.append(fits[m["phase"]].sb_eb.assign(phase=m["phase"]))
        walls.append(wall_clock_table(m["runs"], m["history"], m["metric"], thresholds,
                                      metaparameters=meta).assign(phase=m["phase"]))
    return fits, pd.concat(sbs, ignore_index=True), pd.concat(walls, ignore_index=True)


def summary_fits(s: Section) -> tuple[dict[str, tuple[dict, pd.DataFrame]], list[str]]:
    """07's phases: {phase: (params, its cbs_fit table)} for each phase with runs and a built fit
    (a hand run: its own, else the build's), and the phases left out, each with the reason."""
    in_snapshot = set(s.runs_all["phase"].dropna().astype(str)) if "phase" in s.runs_all else set()
    phases, skipped = {}, []
    for path in sorted(s.params_dir.glob("*.yaml")):
        try:
            params = load_phase_params(s.params_dir, path.stem)
        except ParamsError as exc:  # that phase's own notebooks report it; summarise the rest
            skipped.append(f"{path.stem} (params file invalid: {exc})")
            continue
        fit_csv = output_file(s.out, params["phase"], "tables", "cbs_fit.csv")
        if params["phase"] not in in_snapshot:
            skipped.append(f"{params['phase']} (no runs yet)")
        elif "02_steps_to_target" not in params["sections"]:
            skipped.append(f"{params['phase']} (no McCandlish fit in its sections: axis {params['axis']})")
        elif not fit_csv.exists():
            skipped.append(f"{params['phase']} (its fit has not been built: see its 02 report)")
        else:
            phases[params["phase"]] = (params, pd.read_csv(fit_csv))
    return phases, skipped
