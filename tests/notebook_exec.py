"""Run the real section notebooks' code in this process, cell by cell, over a snapshot: the
notebooks as the reports run them (parameters injected as papermill does), without a kernel,
so that hundreds of generated sweeps can go through every cell in the suite.

A cell that raises, or a warning raised from the project's code, is a problem: what a report of
that sweep would show as a failure or a warning. Figures are built and drawn to an in-memory
PNG (the draw is where tick and layout code runs); PDFs are skipped unless `full_figures`.
"""

from __future__ import annotations

import contextlib
import io
import traceback
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DRAW = True


@dataclass
class CellProblem:
    notebook: str
    phase: str
    cell: int
    kind: str  # "exception" | "warning"
    message: str

    def line(self) -> str:
        return f"{self.notebook} [{self.phase}] cell {self.cell} {self.kind}: {self.message}"


@cache
def notebook_cells(section: str) -> tuple[tuple[str, bool], ...]:
    """(source, is_parameters_cell) of each code cell of notebooks/<section>.py."""
    import jupytext

    nb = jupytext.read(NOTEBOOKS / f"{section}.py")
    return tuple((c.source, "parameters" in c.metadata.get("tags", []))
                 for c in nb.cells if c.cell_type == "code")


def _light_save_figure(fig, data, out_dir, name):
    """save_figure without the PDF: the PNG draw still runs every tick and layout computation."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    if DRAW:
        fig.savefig(buffer, format="png", dpi=40)
    fig._cbs_saved_png = buffer.getvalue()
    data.to_csv(out_dir / f"{name}.csv", index=False)
    return {"csv": out_dir / f"{name}.csv"}


def run_notebook(section: str, parameters: dict, full_figures: bool = False) -> list[CellProblem]:
    """Execute notebooks/<section>.py with `parameters` injected after its parameters cell."""
    import matplotlib

    matplotlib.use("agg")
    import cbs_helpers as ch

    problems: list[CellProblem] = []
    namespace: dict = {"__name__": "__main__", "display": lambda *a, **k: None}
    phase = str(parameters.get("phase", "?"))
    saved = ch.save_figure
    if not full_figures:
        ch.save_figure = _light_save_figure
    try:
        for index, (source, is_params) in enumerate(notebook_cells(section), start=1):
            code = source if not is_params else source + "\n" + "\n".join(
                f"{k} = {v!r}" for k, v in parameters.items())
            with warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("always")
                try:
                    exec(compile(code, f"{section}.py cell {index}", "exec"), namespace)  # noqa: S102
                except Exception as exc:  # noqa: BLE001 -- that is what we are looking for
                    frames = traceback.extract_tb(exc.__traceback__)
                    where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                                  if "cbs_rlvr" in f.filename or f.filename.endswith("cbs_helpers.py")
                                  or f.filename.startswith(section)), "?")
                    problems.append(CellProblem(section, phase, index, "exception",
                                                f"{type(exc).__name__} at {where}: {exc}"[:400]))
                    break  # a notebook stops at its first error, as papermill does
            for w in caught:
                if "cbs_rlvr" in str(w.filename) or str(w.filename).startswith(section):
                    problems.append(CellProblem(section, phase, index, "warning",
                                                f"{w.category.__name__} at {Path(w.filename).name}:"
                                                f"{w.lineno}: {w.message}"[:400]))
    finally:
        ch.save_figure = saved
        import matplotlib.pyplot as plt

        plt.close("all")
    return problems


def hunt_sweep(seed: int, n_bootstrap: int = 20, draw: bool = False) -> list[str]:
    """Every section notebook of every phase of generated sweep `seed` (tests/sweeps/generated.py, with
    verl's habits), run on its snapshot as `make report` would; then the invariants on what
    they wrote. Returns the problems as lines (empty: the sweep reports cleanly)."""
    import tempfile

    import pandas as pd
    from sweep_analysis import written_table_problems
    from sweeps.form import snapshot_frames, write_params
    from sweeps.generated import generate_sweep

    from cbs_rlvr.params import SUMMARY_SECTION
    from cbs_rlvr.sources.snapshot import write_snapshot

    global DRAW
    DRAW = draw
    sweep = generate_sweep(seed)
    frames = snapshot_frames(sweep)
    lines: list[str] = []
    ids = set(frames["runs"]["run_id"].astype(str)) | set(frames["excluded"]["run_id"].astype(str))
    ids |= {i for v in frames["runs"]["segment_run_ids"].dropna().astype(str) for i in v.split(";")}
    lost = [r["run_id"] for r in sweep.runs if r["run_id"] not in ids]
    if lost:
        lines.append(f"seed {seed}: runs neither analysed nor excluded: {lost}")
    with tempfile.TemporaryDirectory(prefix="cbs-hunt-") as tmp:
        out, params_dir = Path(tmp) / "out", write_params(sweep, Path(tmp) / "params")
        manifest = {"source": f"generated:{seed}", "content_hash": "-", "n_runs": len(frames["runs"]),
                    "n_excluded": len(frames["excluded"]), "n_history_rows": len(frames["history"])}
        write_snapshot({**frames, "manifest": manifest}, out)
        phases = frames["runs"]["phases"].astype(str).str.split(";").explode()
        for phase, params in sweep.params.items():
            if not (phases == phase).any():
                continue  # the build skips a phase without runs
            for section in params["sections"]:
                got = run_notebook(section, {"phase": phase, "out_dir": str(out), "params_dir": str(params_dir),
                                             "source": "-", "n_bootstrap": n_bootstrap, "seed": seed,
                                             "n_simulations": 20})
                lines += [f"seed {seed}: {p.line()}" for p in got]
        got = run_notebook(SUMMARY_SECTION, {"phase": "summary", "out_dir": str(out),
                                             "params_dir": str(params_dir), "source": "-"})
        lines += [f"seed {seed}: {p.line()}" for p in got]
        lines += [f"seed {seed}: {p}" for p in written_table_problems(out)]
        for path in out.glob("*/tables/plan.csv"):
            plan = pd.read_csv(path)
            for est, lo, hi in (("predicted_hours", "predicted_hours_lo", "predicted_hours_hi"),):
                v, a, b = plan[est], plan[lo], plan[hi]
                bad = v.notna() & a.notna() & b.notna() & ~((a <= v) & (v <= b))
                if bad.any():
                    lines.append(f"seed {seed}: {path.parent.parent.name}/plan.csv: {lo} <= {est} <= {hi} fails")
            if len(plan) and not set(plan["basis"].dropna()) <= {"measured", "on_axis", "cross_axis"}:
                lines.append(f"seed {seed}: plan.csv basis {sorted(set(plan['basis']))}")
    return lines
