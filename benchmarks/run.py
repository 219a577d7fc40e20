"""Benchmarks of cbs-rlvr: report build, snapshot, analysis at scale, W&B fetch (issues 5, 11, 20).

    python benchmarks/run.py                  # full sizes (about 10 min on 2 cores)
    python benchmarks/run.py --quick          # smaller sizes (about 3 min)
    python benchmarks/run.py --only analysis fetch

Prints a table and writes benchmarks/results.md (machine, date, medians over repeats, ratios
against a baseline measured in the same run). Generated inputs are cached under
benchmarks/_work/ (git-ignored); their generation is not timed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"
RESULTS = REPO / "benchmarks" / "results.md"
if str(REPO) not in sys.path:  # import the working copy of cbs_helpers
    sys.path.insert(0, str(REPO))
VAL = "val-core/openai/gsm8k/reward/mean@1"
THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.65, 0.7]
N_VAL = 1319

SIZES = {  # full / --quick
    "snapshot_runs": (200, 40), "snapshot_steps": (2000, 500),
    "analysis_runs": (1000, 200), "analysis_evals": (2000, 500), "analysis_bootstrap": (1000, 1000),
    "fetch_runs": (200, 40), "fetch_steps": (500, 500),
}
# W&B latency model of the local endpoint (tests/wandb_server.py, server side): every answer
# waits REQUEST_S, plus its size at BANDWIDTH bytes/s.
REQUEST_S = 0.150
BANDWIDTH = 20e6
N_EXTRA_KEYS = 100  # keys a verl run logs that the analysis does not need


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------
def _sweeps():
    """tests/sweeps/scale.py: every sweep the benchmarks draw (the package the tests draw theirs from)."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from sweeps import scale

    return scale


def _make_env() -> dict:
    """Environment for `make`: this interpreter's environment, no conda override."""
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix)
    env.pop("CONDA_PREFIX", None)
    return env


def _timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t0, proc


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed: {what} (exit {proc.returncode})\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _worker(name: str, *args: str, pythonpath: str | None = None) -> dict:
    """Run `run.py _<name> args` in a fresh process; it prints one JSON line at the end. pythonpath:
    a tree whose cbs_helpers/cbs_rlvr the worker imports instead of this checkout's."""
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    proc = subprocess.run([sys.executable, __file__, f"_{name}", *args], capture_output=True,
                          text=True, cwd=pythonpath or REPO, env=env)
    _check(proc, f"worker {name}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values):
    return statistics.median(values) if values else math.nan


def _fmt(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def _maxrss_mb() -> float:
    """This process's peak RSS: VmHWM (of this program only; ru_maxrss would carry the peak of
    the process it was started from across exec), else ru_maxrss."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def machine_info() -> dict:
    from importlib import metadata

    versions = {}
    for package in ("numpy", "pandas", "scipy", "matplotlib", "pyarrow", "wandb", "protobuf",
                    "papermill", "nbconvert", "jupytext", "ipykernel"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(os.cpu_count())
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "nproc": nproc,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": versions}


# --------------------------------------------------------------------------------------------
# 1. Report build on the demo: cold, no-op, and the floor (trivial notebooks, same parallelism)
# --------------------------------------------------------------------------------------------
_FLOOR_EXEC = textwrap.dedent('''
    """Execute one trivial notebook through papermill."""
    import sys

    import nbformat
    import papermill as pm
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    src, dst = sys.argv[1], sys.argv[2]
    nb = new_notebook(cells=[
        new_markdown_cell("# trivial"),
        new_code_cell('phase = "p1"', metadata={"tags": ["parameters"]}),
        new_code_cell("import pandas as pd\\nimport matplotlib.pyplot as plt"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    pm.execute_notebook(src, dst, parameters={"phase": "x"}, kernel_name="python3", progress_bar=False,
                        log_output=False, extra_arguments=["--IPKernelApp.log_level=ERROR"])
''')


def _floor(n_notebooks: int, jobs: int, workdir: Path) -> float:
    """Seconds to execute n trivial notebooks through papermill, `make -j<jobs>`, one process each."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "floor_exec.py").write_text(_FLOOR_EXEC)
    targets = [f"nb{i:02d}.out.ipynb" for i in range(n_notebooks)]
    rules = [f"all: {' '.join(targets)}", ""]
    for i, target in enumerate(targets):
        rules += [f"{target}:", f"\t@\"{sys.executable}\" floor_exec.py nb{i:02d}.ipynb $@", ""]
    (workdir / "Makefile").write_text("\n".join(rules))
    seconds, proc = _timed(["make", "--no-print-directory", f"-j{jobs}", "all"], cwd=workdir)
    _check(proc, "floor notebooks")
    return seconds


def _notebook_profile(out: Path) -> dict:
    """Per-notebook and per-cell-kind seconds from papermill's metadata in the executed notebooks."""
    kinds = {"setup: imports, params, read_snapshot": 0.0, "fit / bootstrap": 0.0,
             "figures (plot + save pdf/png/csv)": 0.0, "tables and other cells": 0.0}
    notebooks = {}
    setup_cells = 0.0
    for path in sorted(out.glob("*/[0-9][0-9]_*.ipynb")):
        if path.name.endswith(".failed.ipynb"):
            continue
        nb = json.loads(path.read_text())
        notebooks[f"{path.parent.name}/{path.stem}"] = nb["metadata"].get("papermill", {}).get("duration") or 0.0
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
            if "import cbs_helpers" in src:
                kind = "setup: imports, params, read_snapshot"
                setup_cells += duration
            elif any(k in src for k in ("fit_phase", "two_axis_fit(", "b_simple_posthoc", "seed_method_fit")):
                kind = "fit / bootstrap"
            elif "save_figure" in src or "plot_" in src:
                kind = "figures (plot + save pdf/png/csv)"
            else:
                kind = "tables and other cells"
            kinds[kind] += duration
    return {"notebooks": notebooks, "kinds": kinds, "setup_cells": setup_cells}


def _import_seconds(statement: str, repeats: int) -> list[float]:
    return [_timed([sys.executable, "-c", statement], cwd=REPO)[0] for _ in range(repeats)]


def bench_report(args, results: dict) -> None:
    """Cold builds and the floor side by side (cold, floor, cold, floor...): the machine's load
    shifts both of a pair alike, so the median of the pairs' ratios is the figure to quote."""
    base = WORK / "report"
    out = base / "cold_out"
    env = _make_env()
    make = ["make", "--no-print-directory", "report", f"OUT={out}", f"JOBS={args.jobs}"]
    pairs = []
    n_notebooks = None
    for _ in range(args.repeats_cold):
        shutil.rmtree(out, ignore_errors=True)
        seconds, proc = _timed(make, cwd=REPO, env=env)
        _check(proc, "make report (cold)")
        n_notebooks = n_notebooks or len(_notebook_profile(out)["notebooks"])
        pairs.append((seconds, _floor(n_notebooks, args.jobs, base / "floor")))
    noop = []
    for _ in range(args.repeats):
        seconds, proc = _timed(make, cwd=REPO, env=env)
        _check(proc, "make report (no-op)")
        if "ok:" in proc.stdout:
            raise SystemExit("the no-op rebuild re-ran notebooks:\n" + proc.stdout)
        noop.append(seconds)
    # what the no-op build checked: every output file's recorded sha256 (issue 18)
    recorded = json.loads((out / ".build" / "state.json").read_text()).get("outputs", {})
    verified = [v.get("bytes", 0) for record in recorded.values() for v in record.values()]
    profile = _notebook_profile(out)
    floor_nbs = [json.loads(p.read_text()) for p in sorted((base / "floor").glob("nb*.out.ipynb"))]
    floor_profile = {
        "papermill_duration_s": _median([nb["metadata"]["papermill"]["duration"] for nb in floor_nbs]),
        "import_cell_s": _median([nb["cells"][-1]["metadata"]["papermill"]["duration"] for nb in floor_nbs]),
    }
    # The parts of a cold build that are not notebook execution, measured one by one.
    snap_out = base / "snapshot_only"
    shutil.rmtree(snap_out, ignore_errors=True)
    t_snapshot, proc = _timed([sys.executable, "-m", "cbs_rlvr", "snapshot", "--source", "data/demo",
                               "--out", str(snap_out)], cwd=REPO)
    _check(proc, "snapshot of the demo")
    code = ("import sys, time; from pathlib import Path; from cbs_rlvr.report.html import convert_notebook\n"
            "t = time.perf_counter()\n"
            "for nb in sorted(Path(sys.argv[1]).glob('*/[0-9][0-9]_*.ipynb')):\n"
            "    convert_notebook(nb, Path(sys.argv[2]) / (nb.parent.name + nb.stem + '.html'))\n"
            "print(time.perf_counter() - t)")
    html_tmp = base / "html_only"
    shutil.rmtree(html_tmp, ignore_errors=True)
    html_tmp.mkdir(parents=True)
    t_html, proc = _timed([sys.executable, "-c", code, str(out), str(html_tmp)], cwd=REPO)
    _check(proc, "html conversion")
    # import cost of a kernel: the notebooks' API against the floor's imports, alternated
    helpers, floor_imp = [], []
    for _ in range(max(5, args.repeats)):
        helpers += _import_seconds("import cbs_helpers", 1)
        floor_imp += _import_seconds("import pandas, matplotlib.pyplot", 1)
    results["report"] = {
        "n_notebooks": n_notebooks, "jobs": args.jobs, "pairs": pairs, "noop": noop,
        "noop_verified": {"files": len(verified), "mb": sum(verified) / 1e6},
        "snapshot_s": t_snapshot, "html_s": t_html, "profile": profile, "floor_profile": floor_profile,
        "imports": {"cbs_helpers": helpers, "floor": floor_imp},
    }


# --------------------------------------------------------------------------------------------
# 2. Snapshot from W&B offline runs (real SDK files)
# --------------------------------------------------------------------------------------------
_GENERATE = "generate_offline"


def _generate_offline(dest: str, n_runs: str, n_steps: str) -> None:
    """Write n_runs p1-style runs of n_steps steps with the wandb SDK (tests/sweeps/scale.py)."""
    _sweeps().write_offline_p1(Path(dest), int(n_runs), int(n_steps))
    print(json.dumps({"written": int(n_runs)}))


def _offline_corpus(n_runs: int, n_steps: int) -> Path:
    """The cached generated sweep (generated once; not timed)."""
    root = WORK / f"offline_{n_runs}x{n_steps}"
    marker = root / "complete.json"
    if marker.is_file():
        return root / "sweep"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"  generating {n_runs} offline runs x {n_steps} steps with the wandb SDK (cached in {root})...",
          flush=True)
    t0 = time.perf_counter()
    _worker(_GENERATE, str(root / "sweep"), str(n_runs), str(n_steps))
    marker.write_text(json.dumps({"n_runs": n_runs, "n_steps": n_steps,
                                  "seconds": time.perf_counter() - t0}))
    return root / "sweep"


def _children_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # the largest worker


def _snapshot_worker(source: str, out: str, workers: str = "") -> None:
    if workers:
        os.environ["CBS_DECODE_WORKERS"] = workers
    from cbs_rlvr.sources import snapshot as ch
    from cbs_rlvr.sources.wandb_file import decode_workers, find_wandb_files

    n_workers = decode_workers(find_wandb_files(source))
    rss_imported = _maxrss_mb()
    cpu0 = os.times()
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    snapshot = ch.build_snapshot(source)
    t1 = time.perf_counter()
    ch.write_snapshot(snapshot, out)
    t2 = time.perf_counter()
    print(json.dumps({"build_s": t1 - t0, "write_s": t2 - t1, "n_runs": len(snapshot["runs"]),
                      "n_excluded": len(snapshot["excluded"]), "n_rows": len(snapshot["history"]),
                      "rss_after_import_mb": rss_imported, "peak_rss_mb": _maxrss_mb(),
                      "peak_rss_worker_mb": _children_maxrss_mb(), "workers": n_workers,
                      "cpu_self_s": os.times().user + os.times().system - cpu0.user - cpu0.system,
                      "cpu_children_s": (os.times().children_user + os.times().children_system
                                         - cpu0.children_user - cpu0.children_system)}))


def bench_snapshot(args, results: dict) -> None:
    n_runs, n_steps = args.size("snapshot_runs"), args.size("snapshot_steps")
    source = _offline_corpus(n_runs, n_steps)
    n_bytes = sum(p.stat().st_size for p in source.rglob("*.wandb"))
    # (serial, parallel) pairs, alternating, so a shared machine's load shifts both alike:
    # serial is today's reader in one process (CBS_DECODE_WORKERS=1), parallel its default
    pairs = [(_worker("snapshot", str(source), str(WORK / "snapshot_out"), "1"),
              _worker("snapshot", str(source), str(WORK / "snapshot_out")))
             for _ in range(args.repeats_snapshot)]
    assert all(r["n_runs"] == n_runs for pair in pairs for r in pair), pairs
    results["snapshot"] = {"n_runs": n_runs, "n_steps": n_steps, "bytes": n_bytes,
                           "reps": [p for _, p in pairs], "serial": [s for s, _ in pairs]}


# --------------------------------------------------------------------------------------------
# 3. Analysis at scale: synthetic snapshot-schema frames
# --------------------------------------------------------------------------------------------
def _analysis_worker(n_runs: str, n_evals: str, n_bootstrap: str, repeats: str) -> None:
    import cbs_helpers as ch  # the notebooks' API

    runs, history = _sweeps().synthetic_phase(int(n_runs), int(n_evals))
    timings = {"sb_eb_table": [], "fit_phase_no_bootstrap": [], "fit_phase": []}
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        sb = ch.sb_eb_table(runs, history, VAL, THRESHOLDS)
        t1 = time.perf_counter()
        ch.fit_phase(runs, history, VAL, THRESHOLDS, N_VAL, n_bootstrap=0)
        t2 = time.perf_counter()
        res = ch.fit_phase(runs, history, VAL, THRESHOLDS, N_VAL, n_bootstrap=int(n_bootstrap))
        fit = res.table if hasattr(res, "table") else res[1]  # the baseline tree returns (sb_eb, cbs_fit)
        t3 = time.perf_counter()
        timings["sb_eb_table"].append(t1 - t0)
        timings["fit_phase_no_bootstrap"].append(t2 - t1)
        timings["fit_phase"].append(t3 - t2)
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(ch.fit_phase, runs, history, VAL, THRESHOLDS, N_VAL, n_bootstrap=int(n_bootstrap))
    stats = pstats.Stats(profiler).stats
    inside = {}
    for (filename, _line, func), (_cc, _nc, _tt, cumtime, _callers) in stats.items():
        if "cbs_rlvr" in filename:
            inside[func] = max(inside.get(func, 0.0), cumtime)
    top = dict(sorted(inside.items(), key=lambda kv: -kv[1])[:8])
    print(json.dumps({"timings": timings, "n_rows": len(history), "n_sb_rows": len(sb), "profile": top,
                      "status": fit["status"].tolist(), "B_noise": fit["B_noise"].round(1).tolist(),
                      "peak_rss_mb": _maxrss_mb()}))


#: the analysis before issue 24 (per-target fits, the F test of the shape), timed beside the pooled fit
BASELINE_COMMIT = "e8be31f"


def progress_fit_time(n_runs: int, n_evals: int, n_bootstrap: int = 1000, repeats: int = 1) -> dict:
    """Seconds of fit_phase (n_bootstrap tables) and, in the same process on the same synthetic
    phase, of the progress model of every evaluation (issue 26: point fit and its bootstrap draws,
    then the path calibration a forecast needs), each repeat in that order; and both fits' B_noise
    against the model's truth (make_demo's gsm8k task on the prompts axis)."""
    import warnings

    import cbs_helpers as ch
    from cbs_rlvr.fit.allevals import fit_all_evals
    from cbs_rlvr.fit.runpath import path_noise

    md = _sweeps()._model()
    task = md.TASKS["gsm8k"]
    runs, history = _sweeps().synthetic_phase(n_runs, n_evals)
    out = {"n_runs": n_runs, "n_evals": n_evals, "n_rows": len(history), "n_bootstrap": n_bootstrap,
           "crossing": [], "all_evals": [], "calibration": []}
    for _ in range(repeats):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            fit = ch.fit_phase(runs, history, VAL, THRESHOLDS, N_VAL, n_bootstrap=n_bootstrap)
            t1 = time.perf_counter()
            pf = fit_all_evals(runs, history, VAL, THRESHOLDS, N_VAL,
                               form="mccandlish" if fit.chosen == "mccandlish" else "general")
            t2 = time.perf_counter()
            path_noise(pf)
            t3 = time.perf_counter()
        out["crossing"].append(t1 - t0)
        out["all_evals"].append(t2 - t1)
        out["calibration"].append(t3 - t2)
    truth = [md.mccandlish_truth(task, "prompts", {"n_rollouts": 8}, t)["B_noise"] for t in THRESHOLDS]
    out.update(draws=int(len(pf.draws)), phi=float(pf.phi), sigma_u=float(pf.sigma_u), truth=truth, b_noise={
        name: t.assign(truth=truth)[["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "truth"]].round(
            {"B_noise": 1, "B_noise_lo": 1, "B_noise_hi": 1, "truth": 1}).to_dict("records")
        for name, t in (("crossing", fit.table), ("all_evals", pf.table))})
    return out


def _progress_worker(n_runs: str, n_evals: str, n_bootstrap: str, repeats: str) -> None:
    print(json.dumps(progress_fit_time(int(n_runs), int(n_evals), int(n_bootstrap), int(repeats))))


def bench_progress(args, results: dict) -> None:
    n_runs, n_evals = args.size("analysis_runs"), args.size("analysis_evals")
    results["progress"] = _worker("progress", str(n_runs), str(n_evals), str(args.size("analysis_bootstrap")),
                                  str(args.repeats_analysis))


def _baseline_tree() -> str | None:
    """The package as it was at BASELINE_COMMIT, unpacked under benchmarks/_work (None without git)."""
    dest = WORK / f"baseline-{BASELINE_COMMIT}"
    if not (dest / "cbs_helpers.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", BASELINE_COMMIT, "cbs_rlvr", "cbs_helpers.py", "data/demo/make_demo.py"],
                                 cwd=REPO, capture_output=True)
        if archive.returncode != 0:
            return None
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return str(dest)


def bench_analysis(args, results: dict) -> None:
    n_runs, n_evals = args.size("analysis_runs"), args.size("analysis_evals")
    n_bootstrap = args.size("analysis_bootstrap")
    out = _worker("analysis", str(n_runs), str(n_evals), str(n_bootstrap), str(args.repeats_analysis))
    results["analysis"] = {"n_runs": n_runs, "n_evals": n_evals, "n_bootstrap": n_bootstrap, **out}
    tree = _baseline_tree()
    if tree:  # the same sweep through the fit before issue 24, in this run: the ratio is the measure
        base = _worker("analysis", str(n_runs), str(n_evals), str(n_bootstrap), str(args.repeats_analysis),
                       pythonpath=tree)
        results["analysis"]["baseline"] = {"commit": BASELINE_COMMIT, **base}


# --------------------------------------------------------------------------------------------
# 4. W&B fetch: the real wandb client against the local W&B endpoint, latency server side
# --------------------------------------------------------------------------------------------
def _serve_worker(n_runs: str, n_steps: str, port_file: str, lifetime: str, latency: str = "") -> None:
    """Serve the bench sweep from this process (so its work does not compete with the client's
    threads for one interpreter lock) until killed or `lifetime` s have passed."""
    sys.path.insert(0, str(REPO / "tests"))
    from wandb_server import WandbServer

    server = WandbServer(_sweeps().served_runs(int(n_runs), int(n_steps), N_EXTRA_KEYS), entity="bench", project="cbs",
                         latency=float(latency) if latency else REQUEST_S,
                         bandwidth=None if latency else BANDWIDTH, lifetime=float(lifetime)).start()
    Path(port_file).write_text(str(server.port))
    while server._httpd is not None:
        time.sleep(0.5)


def seed_fetch(api, path: str) -> dict:
    """The seed notebook's loading loop: full scan_history of every run, sequential, every time."""
    import pandas as pd

    all_runs = {}
    for run in api.runs(path):
        if not (run.name.startswith("cbs_") and "_np" in run.name):
            continue
        meta = {"name": run.name, "run_id": run.id, "state": run.state}
        meta["history"] = pd.DataFrame(list(run.scan_history(page_size=10000)))
        all_runs[run.name] = meta  # (the seed also overwrites replicates here)
    return all_runs


def bench_fetch(args, results: dict) -> None:
    import urllib.request

    n_runs, n_steps = args.size("fetch_runs"), args.size("fetch_steps")
    port_file = WORK / "fetch_server.port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "_serve", str(n_runs), str(n_steps), str(port_file), "3600"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.perf_counter()
        while not port_file.is_file() or not port_file.read_text().strip():
            if server.poll() is not None or time.perf_counter() - t0 > 120:
                raise SystemExit(f"benchmark step failed: the W&B endpoint did not start\n{server.stderr.read()}")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        _use_endpoint(url)
        import wandb

        from cbs_rlvr.sources import snapshot as ch

        wandb.setup()  # start wandb-core once, before anything is timed

        def served_requests() -> dict:
            with urllib.request.urlopen(f"{url}/_requests", timeout=30) as answer:
                return json.loads(answer.read())

        out = WORK / "fetch_out"
        shutil.rmtree(out, ignore_errors=True)
        rows = {}

        def project(label: str) -> None:
            served_requests()
            t0 = time.perf_counter()
            snap = ch.build_snapshot("wandb:bench/cbs", previous_dir=out, progress=False)
            ch.write_snapshot(snap, out)
            rows[label] = {"seconds": time.perf_counter() - t0, **served_requests(), "n_runs": len(snap["runs"]),
                           "n_fetched": snap["manifest"].get("n_fetched"), "n_reused": snap["manifest"].get("n_reused")}

        def seed(label: str) -> None:
            served_requests()
            t0 = time.perf_counter()
            loaded = seed_fetch(wandb.Api(), "bench/cbs")
            rows[label] = {"seconds": time.perf_counter() - t0, **served_requests(), "n_runs": len(loaded)}

        project("project cold")
        project("project warm")
        seed("seed")  # the seed has no incremental fetch: cold and warm are the same
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert rows["project cold"]["n_runs"] == n_runs and rows["project warm"]["n_reused"] == n_runs, rows
    for r in rows.values():
        r["floor_s"] = fetch_floor(r["requests"], r.get("bytes_by_operation", {}), FETCH_WORKERS)
    results["fetch"] = {"n_runs": n_runs, "n_steps": n_steps, "n_keys_logged": N_EXTRA_KEYS + 15,
                        "request_s": REQUEST_S, "bandwidth": BANDWIDTH, "workers": FETCH_WORKERS, "rows": rows}


FETCH_WORKERS = 8  # fetch_wandb_project's default max_workers
SEQUENTIAL_OPERATIONS = ("Viewer", "GetDefaultEntity", "Runs", "CbsRuns")  # one after the other


def fetch_floor(requests: dict, bytes_by_operation: dict, concurrency: int) -> float:
    """The least time the endpoint needs to answer these requests: each waits REQUEST_S plus its
    size at BANDWIDTH; the login and the listing's pages one after the other, the rest
    `concurrency` at a time."""
    def cost(ops) -> float:
        return sum(requests.get(op, 0) * REQUEST_S + bytes_by_operation.get(op, 0) / BANDWIDTH for op in ops)

    sequential = cost(SEQUENTIAL_OPERATIONS)
    return sequential + cost([op for op in requests if op not in SEQUENTIAL_OPERATIONS]) / concurrency


def _start_server(n_runs: int, n_steps: int, latency: str = "") -> tuple[subprocess.Popen, str]:
    port_file = WORK / "fetch_server.port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "_serve", str(n_runs), str(n_steps), str(port_file), "3600",
                               latency], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    while not port_file.is_file() or not port_file.read_text().strip():
        if server.poll() is not None or time.perf_counter() - t0 > 120:
            raise SystemExit(f"benchmark step failed: the W&B endpoint did not start\n{server.stderr.read()}")
        time.sleep(0.1)
    return server, f"http://127.0.0.1:{port_file.read_text().strip()}"


def _use_endpoint(url: str) -> None:
    """Point this process's wandb client at the local endpoint (its key; config, cache and data
    dirs under WORK), silently."""
    sys.path.insert(0, str(REPO / "tests"))
    from wandb_server import API_KEY

    client = WORK / "wandb_client"
    os.environ.update({"WANDB_BASE_URL": url, "WANDB_API_KEY": API_KEY, "WANDB_SILENT": "true",
                       "WANDB_ERROR_REPORTING": "false", **{f"WANDB_{d.upper()}_DIR": str(client / d)
                                                            for d in ("config", "cache", "data")},
                       "WANDB_DIR": str(client / "runs")})


def _fetch_memory_worker(url: str, out: str) -> None:
    """A cold fetch + write in a fresh process: its time and peak RSS."""
    _use_endpoint(url)
    import wandb

    from cbs_rlvr.sources import snapshot as ch

    wandb.setup()
    rss_imported = _maxrss_mb()
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    snap = ch.build_snapshot("wandb:bench/cbs", progress=False)
    ch.write_snapshot(snap, out)
    print(json.dumps({"seconds": time.perf_counter() - t0, "n_runs": len(snap["runs"]), "n_rows": len(snap["history"]),
                      "rss_after_import_mb": rss_imported, "peak_rss_mb": _maxrss_mb()}))


def bench_memory(args, results: dict) -> None:
    """Time and peak RSS of a cold W&B fetch (endpoint without added latency) as the sweep grows."""
    sizes = [int(n) for n in (args.memory_runs or ((200, 1000) if not args.quick else (40, 200)))]
    n_steps = args.size("fetch_steps")
    rows = []
    for n_runs in sizes:
        server, url = _start_server(n_runs, n_steps, "0")
        try:
            rows.append({"n_runs_served": n_runs, **_worker("fetchmem", url, str(WORK / "memory_out"))})
        finally:
            server.terminate()
            server.wait(timeout=30)
    results["memory"] = {"n_steps": n_steps, "rows": rows}


# --------------------------------------------------------------------------------------------
# make report at scale: time and peak memory of every process
# --------------------------------------------------------------------------------------------
def _watch_peaks(cmd: list[str], env: dict) -> dict:
    """Run cmd, sampling the RSS of it and of every process it starts every 0.1 s: the wall
    time and each process's peak (by role: the build, its notebook kernels)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, peaks = psutil.Process(proc.pid), {}
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    line = " ".join(p.cmdline())
                    role = "kernel" if "ipykernel" in line else "build" if "cbs_rlvr" in line else "other"
                    key = (role, p.pid)
                    peaks[key] = max(peaks.get(key, 0), p.memory_info().rss / 2**20)
        time.sleep(0.1)
    output = proc.stdout.read()
    _check(subprocess.CompletedProcess(cmd, proc.returncode, output, ""), " ".join(cmd))
    by_role: dict[str, float] = {}
    for (role, _pid), mb in peaks.items():
        by_role[role] = max(by_role.get(role, 0.0), mb)
    return {"seconds": time.perf_counter() - t0, "peak_mb": by_role, "output_tail": output.splitlines()[-3:]}


def bench_scale(args, results: dict) -> None:
    """`make report PHASES=p1` on export sweeps of 200, 1,000 and 2,000 verl-style runs x 2,000
    steps (tests/sweeps/scale.py: 40 keys a step), and on one run of 10^6 history rows;
    each into an empty OUT (snapshot + notebooks + HTML)."""
    sys.path.insert(0, str(REPO / "tests"))
    from sweeps import scale  # the one package of generated sweeps (tests/sweeps)

    sizes = [int(n) for n in (args.scale_runs or ((200, 1000, 2000) if not args.quick else (40, 200)))]
    cases = [(f"{n} runs x 2,000 steps", n, 2000, 0) for n in sizes]
    cases.append(("1 run x 10^6 history rows", 1, 0, 10**6 if not args.quick else 10**5))
    rows = []
    for label, n_runs, n_steps, one in cases:
        source = WORK / f"scale_{n_runs}x{n_steps or one}"
        if not (source / "runs.csv").is_file():
            shutil.rmtree(source, ignore_errors=True)
            scale.write_sweep(source, n_runs, n_steps, one_run_rows=one)
        out = WORK / "scale_out"
        shutil.rmtree(out, ignore_errors=True)
        env = _make_env()
        result = _watch_peaks(["make", "--no-print-directory", "report", f"SOURCE={source}", f"OUT={out}",
                               "PHASES=p1", f"JOBS={args.jobs}"], env)
        manifest = json.loads((out / "data" / "manifest.json").read_text())
        rows.append({"label": label, "n_runs": manifest["n_runs"], "n_rows": manifest["n_history_rows"],
                     "history_mb": (out / "data" / "history.parquet").stat().st_size / 2**20, **result})
        print(f"  {label}: {result['seconds']:.0f} s, peaks {result['peak_mb']}", flush=True)
    results["scale"] = {"rows": rows}


# --------------------------------------------------------------------------------------------
# Report: table on stdout + results.md
# --------------------------------------------------------------------------------------------
def render(results: dict, info: dict, args) -> str:
    lines = ["# Benchmarks", "",
             f"Measured by `python benchmarks/run.py{' --quick' if args.quick else ''}` on {info['date']}.",
             f"Machine: nproc {info['nproc']}, Python {info['python']}, {info['platform']}; load average "
             f"{info['load_average_start']} at start, {info.get('load_average_end', '-')} at the end "
             "(the machine may be shared: ratios are against a baseline measured in the same run).",
             "Packages: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".", "",
             "| case | measure | median | n | baseline (same run) | ratio | goal | met |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | --- |"]
    notes: list[str] = []

    def row(case, measure, value, n, baseline="", ratio=None, goal="", met=None):
        lines.append(f"| {case} | {measure} | {value} | {n} | {baseline} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | {goal} | "
                     f"{'' if met is None else ('yes' if met else '**no**')} |")

    if "report" in results:
        r = results["report"]
        cold = _median([c for c, _ in r["pairs"]])
        floor = _median([f for _, f in r["pairs"]])
        ratio = _median([c / f for c, f in r["pairs"]])
        noop = _median(r["noop"])
        case = f"report build, demo ({r['n_notebooks']} notebooks, JOBS={r['jobs']})"
        row(case, "cold `make report` (s)", _fmt(cold, 1), len(r["pairs"]),
            f"floor {floor:.1f} s (median of {len(r['pairs'])} pairs)", ratio, "<= 1.5x floor",
            ratio <= 1.5)
        checked = r.get("noop_verified") or {}
        row(case, "no-op `make report` (s)", _fmt(noop, 3), len(r["noop"]),
            f"hashes all {checked.get('files', 0)} output files ({checked.get('mb', 0):.0f} MB)" if checked
            else "", None, "<= 1 s", noop <= 1.0)
        row(case, "floor: trivial notebooks via papermill (s)", _fmt(floor, 1), len(r["pairs"]))
        imp, imp_floor = _median(r["imports"]["cbs_helpers"]), _median(r["imports"]["floor"])
        row("kernel import", "`import cbs_helpers`, fresh interpreter (s)", _fmt(imp, 2),
            len(r["imports"]["cbs_helpers"]), f"`import pandas, matplotlib.pyplot` {imp_floor:.2f} s",
            imp / imp_floor, "<= 1.25x", imp <= 1.25 * imp_floor)
        prof = r["profile"]
        total_cells = sum(prof["notebooks"].values())
        n, fp = r["n_notebooks"], r["floor_profile"]
        notes += ["", "### Report build: where the cold time goes", "",
                  "Pairs (cold build, floor) in seconds, in the order measured: "
                  + ", ".join(f"({c:.1f}, {f:.1f})" for c, f in r["pairs"]) + ".", "",
                  "- the build runs papermill in its own process on kept (warm) kernels, one per job "
                  "slot, cleared between notebooks (`cbs_rlvr/build/execute.py`); the floor starts a "
                  "process and a kernel per notebook, as a papermill-per-notebook build would;",
                  f"- sum of notebook durations (papermill: from the notebook's start to its end; "
                  f"warm, this no longer includes a kernel start) {total_cells:.1f} s, "
                  f"i.e. {total_cells / r['jobs']:.1f} s of wall if perfectly parallel; the floor's "
                  f"notebook takes {fp['papermill_duration_s']:.2f} s, of which its import cell "
                  f"{fp['import_cell_s']:.2f} s;",
                  f"- the snapshot of the demo alone {r['snapshot_s']:.1f} s (a process of its own; "
                  "in the build it runs in the driver, before any notebook);",
                  f"- HTML conversion of all {n} notebooks {r['html_s']:.1f} s in one process (in the "
                  "build it overlaps the notebooks still running);", "",
                  "Cell time by kind, summed over all notebooks:", "",
                  "| kind | seconds | share |", "| --- | ---: | ---: |"]
        for kind, seconds in sorted(prof["kinds"].items(), key=lambda kv: -kv[1]):
            notes.append(f"| {kind} | {seconds:.1f} | {seconds / max(total_cells, 1e-9):.0%} |")
        notes += ["", "Slowest notebooks (papermill duration, s):", "", "| notebook | seconds |", "| --- | ---: |"]
        for name, seconds in sorted(prof["notebooks"].items(), key=lambda kv: -kv[1])[:8]:
            notes.append(f"| {name} | {seconds:.1f} |")
    if "snapshot" in results:
        s = results["snapshot"]
        total = [r["build_s"] + r["write_s"] for r in s["reps"]]
        serial = [r["build_s"] + r["write_s"] for r in s.get("serial", [])]
        t = _median(total)
        rep = s["reps"][0]
        case = f"snapshot, {s['n_runs']} offline runs x {s['n_steps']} steps ({s['bytes'] / 1e6:.0f} MB of .wandb)"
        row(case, f"build_snapshot + write_snapshot, {rep.get('workers', 1)} decode processes (s)", _fmt(t, 1),
            len(total), f"build {_median([r['build_s'] for r in s['reps']]):.1f} s, write "
            f"{_median([r['write_s'] for r in s['reps']]):.2f} s")
        if serial:
            ratios = [b / a for a, b in zip(total, serial, strict=True)]
            row(case, "runs/s, parallel decode", _fmt(s["n_runs"] / t, 1), len(total),
                f"serial (one process) {s['n_runs'] / _median(serial):.1f} runs/s", _median(ratios),
                ">= 1.8x serial on 2 cores", _median(ratios) >= 1.8)
            row(case, "build_snapshot + write_snapshot, serial (s)", _fmt(_median(serial), 1), len(serial))
        else:
            row(case, "runs/s", _fmt(s["n_runs"] / t, 1), len(total))
        row(case, "history rows/s", _fmt(rep["n_rows"] / t, 0), len(total))
        row(case, "peak RSS, parent (MB)", _fmt(_median([r["peak_rss_mb"] for r in s["reps"]]), 0), len(total),
            f"after imports {rep['rss_after_import_mb']:.0f} MB; serial "
            f"{_median([r['peak_rss_mb'] for r in s.get('serial', [])]):.0f} MB")
        row(case, "peak RSS, largest decode worker (MB)",
            _fmt(_median([r.get("peak_rss_worker_mb", math.nan) for r in s["reps"]]), 0), len(total))
        if serial and "cpu_self_s" in rep:
            # what the parallel decode would give with its cores free: the serial run's CPU time
            # over the parent's CPU time plus the workers' CPU time shared among them
            ideal = [a["cpu_self_s"] / (b["cpu_self_s"] + b["cpu_children_s"] / max(1, b["workers"]))
                     for a, b in zip(s["serial"], s["reps"], strict=True)]
            row(case, "CPU time: serial / (parent + workers' / n) (with free cores)", f"{_median(ideal):.2f}x",
                len(ideal), f"serial {_median([r['cpu_self_s'] for r in s['serial']]):.1f} s CPU; parallel: "
                f"parent {_median([r['cpu_self_s'] for r in s['reps']]):.1f} s, workers "
                f"{_median([r['cpu_children_s'] for r in s['reps']]):.1f} s CPU")
        if serial:
            notes += ["", "### Snapshot: serial and parallel decode, in the order measured", "",
                      "Pairs (serial, parallel) in seconds: "
                      + ", ".join(f"({a:.1f}, {b:.1f})" for a, b in zip(serial, total, strict=True)) + "."]
    if "analysis" in results:
        a = results["analysis"]
        tm = a["timings"]
        sb, fit0, full = (_median(tm["sb_eb_table"]), _median(tm["fit_phase_no_bootstrap"]),
                          _median(tm["fit_phase"]))
        total = sb + full
        case = (f"analysis, {a['n_runs']} runs x {a['n_evals']} evals, {len(THRESHOLDS)} thresholds, "
                f"{a['n_bootstrap']} bootstrap")
        n = len(tm["fit_phase"])
        row(case, "sb_eb_table + fit_phase (s)", _fmt(total, 2), n, "", None, "< 10 s", total < 10)
        row(case, "measurement: sb_eb_table (s)", _fmt(sb, 2), n)
        row(case, "measurement + point fits: fit_phase(n_bootstrap=0) (s)", _fmt(fit0, 2), n)
        row(case, "bootstrap: fit_phase - fit_phase(n_bootstrap=0) (s)", _fmt(full - fit0, 2), n)
        row(case, "peak RSS (MB)", _fmt(a["peak_rss_mb"], 0), 1)
        if "baseline" in a:
            bt = a["baseline"]["timings"]
            base_full = _median(bt["fit_phase"])
            ratio = full / base_full if base_full else math.nan
            row(case, f"fit_phase before issue 24 ({a['baseline']['commit']}), same sweep (s)", _fmt(base_full, 2),
                len(bt["fit_phase"]))
            row(case, "pooled fit / fit before issue 24 (ratio of medians)", _fmt(ratio, 2), n, "", None,
                "fit <= 15 s", full <= 15)
        notes += ["", "### Analysis at scale: inside fit_phase (cProfile, cumulative s, one run)", "",
                  "| function | seconds |", "| --- | ---: |"]
        notes += [f"| {func} | {sec:.2f} |" for func, sec in a["profile"].items()]
        notes += ["", f"Fit status per threshold: {a['status']}; B_noise: {a['B_noise']}."]
    if "fetch" in results:
        f = results["fetch"]
        rows_ = f["rows"]
        case = (f"W&B fetch, real wandb client, {f['n_runs']} runs x {f['n_steps']} steps, {f['n_keys_logged']} keys "
                f"logged, endpoint {f['request_s'] * 1000:.0f} ms/request + {f['bandwidth'] / 1e6:.0f} MB/s")
        seed = rows_.get("seed") or rows_.get("seed cold")
        for label in ("project cold", "project warm"):
            r = rows_[label]
            ratio = seed["seconds"] / r["seconds"]
            row(case, f"{label} (s)", _fmt(r["seconds"], 1), 1, f"seed {seed['seconds']:.1f} s", ratio,
                "faster than seed", ratio > 1)
            if "floor_s" in r:
                to_floor = r["seconds"] / r["floor_s"]
                row(case, f"{label}: time / floor", f"{to_floor:.2f}", 1,
                    f"floor {r['floor_s']:.1f} s (requests x latency / concurrency)", None, "<= 1.5x floor",
                    to_floor <= 1.5)
            per_run = sum(n for op, n in r["requests"].items() if op not in SEQUENTIAL_OPERATIONS) / f["n_runs"]
            goal = "<= 2 (live history)" if label.endswith("cold") else "0"
            row(case, f"{label}: requests per run (listing apart)", f"{per_run:.2f}", 1, "", None, goal,
                per_run <= 2 if label.endswith("cold") else per_run == 0)
        row(case, "seed, every time (s)", _fmt(seed["seconds"], 1), 1)
        operations = sorted({op for r in rows_.values() for op in r["requests"]},
                            key=lambda op: -sum(r["requests"].get(op, 0) for r in rows_.values()))
        notes += ["", "### W&B fetch: requests the endpoint answered", "",
                  "The project: `build_snapshot` + `write_snapshot` (8 workers, only the needed keys, "
                  "incremental: the listing with config and historyKeys, then one request per changed run); "
                  "the floor: the login and the listing pages one after the other, the rest 8 at a time, "
                  "each at the endpoint's latency plus its bytes at its bandwidth; the seed: the original notebook's loop (`scan_history(page_size=10000)` "
                  "of every key of every run, one run after the other). Both through wandb 0.31 and its "
                  "wandb-core sidecar; the history is served live (not yet exported to parquet).", "",
                  "| pattern | seconds | " + " | ".join(operations) + " | MB sent |",
                  "| --- | ---: | " + " | ".join("---:" for _ in operations) + " | ---: |"]
        for label, r in rows_.items():
            notes.append(f"| {label} | {r['seconds']:.1f} | "
                         + " | ".join(str(r["requests"].get(op, 0)) for op in operations)
                         + f" | {r['bytes'] / 1e6:.1f} |")
    if "memory" in results:
        m = results["memory"]
        for r in m["rows"]:
            case = f"W&B fetch at scale, {r['n_runs']} runs x {m['n_steps']} steps, endpoint without added latency"
            row(case, "cold fetch + write (s)", _fmt(r["seconds"], 1), 1, f"{1000 * r['seconds'] / r['n_runs']:.0f} ms per run")
            row(case, "peak RSS (MB)", _fmt(r["peak_rss_mb"], 0), 1,
                f"after imports {r['rss_after_import_mb']:.0f} MB; "
                f"{1024 * (r['peak_rss_mb'] - r['rss_after_import_mb']) / r['n_runs']:.0f} kB per run above it")
    if "progress" in results:
        _render_progress(results["progress"], row, notes)
    if "scale" in results:
        for r in results["scale"]["rows"]:
            case = f"make report PHASES=p1, export sweep of {r['label']} ({r['n_rows']:,} history rows kept)"
            row(case, "wall time (s)", _fmt(r["seconds"], 1), 1,
                f"{1000 * r['seconds'] / max(r['n_runs'], 1):.0f} ms per run")
            for role, what in (("build", "the build (snapshot, papermill, HTML)"), ("kernel", "largest notebook kernel")):
                mb = r["peak_mb"].get(role, math.nan)
                goal = "<= 500 MB" if r["n_runs"] == 1 else "<= 1,024 MB"
                row(case, f"peak RSS, {what} (MB)", _fmt(mb, 0), 1,
                    f"{1024 * mb / r['n_runs']:.0f} kB per run" if r["n_runs"] > 1 else "", None, goal,
                    mb <= (500 if r["n_runs"] == 1 else 1024))
    lines += notes
    return "\n".join(lines) + "\n"


def _render_progress(r: dict, row, notes: list) -> None:
    """The all-evaluations model's rows: its time against fit_phase's in the same process, and
    whether both fits' 95% intervals hold the truth."""
    case = (f"all-evaluations model (issue 26), {r['n_runs']} runs x {r['n_evals']} evals, 6 thresholds, "
            f"{r['draws']} bootstrap draws")
    crossing, fit = _median(r["crossing"]), _median(r["all_evals"])
    n = len(r["crossing"])
    row(case, "point fit + bootstrap (s)", _fmt(fit, 1), n, f"fit_phase, {r['n_bootstrap']} bootstrap: {crossing:.1f} s",
        fit / crossing, "<= 2x fit_phase", fit <= 2 * crossing)
    both = fit + _median(r["calibration"])
    row(case, "with the path calibration of the forecasts (s)", _fmt(both, 1), n,
        f"fit_phase {crossing:.1f} s", both / crossing, "<= 2x fit_phase", both <= 2 * crossing)
    for name, label in (("all_evals", "all-evaluations model"), ("crossing", "fit_phase")):
        rows_ = r["b_noise"][name]
        held = sum(x["B_noise_lo"] <= x["truth"] <= x["B_noise_hi"] for x in rows_)
        row(case, f"targets whose 95% B_noise interval holds the truth, {label}", f"{held} of {len(rows_)}", 1, "",
            None, "all" if name == "all_evals" else "", held == len(rows_) if name == "all_evals" else None)
    notes += ["", "### All-evaluations model at scale: B_noise against the truth", "",
              f"Dispersion {r['phi']:.2f}, speeds' spread {r['sigma_u']:.3f} (the model's truth: 1, 0.03). Seconds "
              "per repeat (fit_phase, all-evaluations fit, calibration): "
              + ", ".join(f"({a:.1f}, {b:.1f}, {c:.1f})" for a, b, c in zip(r["crossing"], r["all_evals"],
                                                                       r["calibration"], strict=True)) + ".", "",
              "| threshold | truth | all-evaluations model | fit_phase |", "| ---: | ---: | --- | --- |"]
    for a, c in zip(r["b_noise"]["all_evals"], r["b_noise"]["crossing"], strict=True):
        notes.append(f"| {a['threshold']:g} | {a['truth']:.1f} | {a['B_noise']:.1f} [{a['B_noise_lo']:.1f}, "
                     f"{a['B_noise_hi']:.1f}] | {c['B_noise']:.1f} [{c['B_noise_lo']:.1f}, {c['B_noise_hi']:.1f}] |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (see SIZES)")
    cases = ["report", "snapshot", "analysis", "progress", "fetch", "memory", "scale"]
    parser.add_argument("--only", nargs="+", choices=cases, default=cases)
    parser.add_argument("--memory-runs", nargs="+", type=int, help="sweep sizes of the memory case (200 1000)")
    parser.add_argument("--scale-runs", nargs="+", type=int, help="sweep sizes of the scale case (200 1000 2000)")
    parser.add_argument("--jobs", type=int, default=2, help="JOBS of make report and of the floor")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the cheap measures (no-op)")
    parser.add_argument("--repeats-cold", type=int, default=3, help="(cold build, floor) pairs")
    parser.add_argument("--repeats-snapshot", type=int, default=2)
    parser.add_argument("--repeats-analysis", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.size = lambda key: SIZES[key][1 if args.quick else 0]
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    results: dict = {}
    steps = {"report": bench_report, "snapshot": bench_snapshot, "analysis": bench_analysis,
             "progress": bench_progress, "fetch": bench_fetch, "memory": bench_memory, "scale": bench_scale}
    t_start = time.perf_counter()
    for name in args.only:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {name}...", flush=True)
        steps[name](args, results)
    info["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = render(results, info, args)
    text += f"\nTotal benchmark time: {time.perf_counter() - t_start:.0f} s.\n"
    (WORK / "results.json").write_text(json.dumps({"info": info, "results": results}, indent=1, default=str))
    args.results.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        with contextlib.suppress(BrokenPipeError):
            {"_" + _GENERATE: _generate_offline, "_snapshot": _snapshot_worker,
             "_analysis": _analysis_worker, "_progress": _progress_worker, "_serve": _serve_worker,
             "_fetchmem": _fetch_memory_worker}[sys.argv[1]](*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
