"""`python -m cbs_rlvr <command>`: what the Makefile calls. `--help` on each command says more.

  report     bring the snapshot up to date, run the stale section notebooks, write the HTML
             reports and OUT/index.html (what `make report` runs)
  snapshot   only read the source into OUT/data/ (parquet + manifest), rewritten when it changed
  screenshots  render OUT's index and one report with headless Chromium into docs/
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .paths import DEFAULT_OUT, DEFAULT_PARAMS, DEFAULT_SOURCE, project_path, project_source

# jsonschema, which nbformat loads, imports rfc3987_syntax when it is installed (JupyterLab's
# jupyter-events brings it), and that compiles some 35 Earley grammars at import: 1.5-2 s of
# every build that runs a notebook, for the IRI format no notebook schema uses (jsonschema
# issue 1428). Marked absent, jsonschema takes its own ImportError path and skips that format.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

_SOURCE_HELP = ("wandb:<entity>/<project>, a directory of W&B offline runs, or an export "
                f"directory with runs.csv (default: {DEFAULT_SOURCE}, the bundled demo)")


def _snapshot(args: argparse.Namespace) -> int:
    """One summary line on success; one error line and exit 2 on failure."""
    from .build.outlock import under_lock

    out = project_path(args.out)
    try:
        return under_lock(out, not args.no_wait, lambda: _snapshot_locked(args),
                          "the previous snapshot is unchanged")
    except KeyboardInterrupt:
        print("error: interrupted; the previous snapshot is unchanged", file=sys.stderr)
        return 130


def _snapshot_locked(args: argparse.Namespace) -> int:
    from .errors import DataLayerError, RedactingFormatter, describe_error, redact_secrets
    from .sources.snapshot import _DATA_LOG, build_snapshot, snapshot_unchanged, write_snapshot

    source, out = project_source(args.source), project_path(args.out)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("warning: %(message)s"))
    _DATA_LOG.addHandler(handler)
    try:
        options = {"max_workers": args.workers}
        if args.no_progress:
            options["progress"] = False
        snapshot = build_snapshot(source, previous_dir=project_path(args.previous) or out,
                                  params_dir=project_path(args.params_dir), **options)
        unchanged = snapshot_unchanged(snapshot["manifest"], out)
        if not unchanged:
            write_snapshot(snapshot, out)
    except DataLayerError as exc:
        print(f"error: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    except OSError:
        raise  # said in one line by _snapshot
    except Exception as exc:  # noqa: BLE001 -- a bug: still one line unless CBS_DEBUG is set
        if os.environ.get("CBS_DEBUG"):
            raise
        print(f"error: unexpected {describe_error(exc)} (set CBS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    finally:
        _DATA_LOG.removeHandler(handler)
    manifest = snapshot["manifest"]
    if unchanged:
        print(f"snapshot: unchanged ({manifest['n_runs']} runs, {manifest['n_excluded']} excluded) "
              f"in {out / 'data'}")
        return 0
    print(f"snapshot: {manifest['n_runs']} runs in, {manifest['n_excluded']} excluded, "
          f"{manifest['n_history_rows']} history rows from {manifest['source']} -> {out / 'data'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .build.builder import report

    phases = args.phases.split() if args.phases and args.phases.strip() else None
    try:
        return report(project_source(args.source), project_path(args.out),
                      project_path(args.params_dir), phases=phases, jobs=args.jobs,
                      n_bootstrap=args.n_bootstrap, workers=args.workers,
                      progress=False if args.no_progress else None, wait=not args.no_wait)
    except KeyboardInterrupt:
        print("error: interrupted; finished reports are kept, the rest rebuild next time",
              file=sys.stderr)
        return 130


def _screenshots(args: argparse.Namespace) -> int:
    import json

    from .report.browser import find_chromium, screenshot, screenshot_record
    from .sources.manifest import file_sha256

    out, dest = project_path(args.out), project_path(args.dest)
    pages = [(out / "index.html", dest / "index.png"),
             (out / args.section, dest / ("report_" + args.section.replace("/", "_").replace(".html", ".png")))]
    missing = [str(page) for page, _ in pages if not page.is_file()]
    if missing:
        print(f"error: no report at {', '.join(missing)}: run `make report` first", file=sys.stderr)
        return 2
    if find_chromium() is None:
        print("error: Chromium not found: install it (apt-get install chromium)", file=sys.stderr)
        return 2
    for page, png in pages:
        screenshot(page, png, height=args.height)
        print(f"screenshot: {png}")
    # what the pictures show, for the suite to hold a fresh demo build against (stale pictures fail)
    record = {**screenshot_record(out, args.section),
              "files": {png.name: file_sha256(png) for _, png in pages}}
    (dest / "screenshots.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"what they show: {dest / 'screenshots.json'}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line, every command and option with its help text."""
    top = argparse.ArgumentParser(prog="python -m cbs_rlvr", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="command")
    rep = commands.add_parser(
        "report", help="build every report (what `make report` runs)",
        description="Bring the snapshot up to date, run the section notebooks whose notebook, "
                    "params, data or code changed, convert them to HTML and write OUT/index.html. "
                    "Relative paths resolve against the project. Exit 0: built; 1: a notebook "
                    "failed (its FAILED line names notebook, phase and cell); 2: params or "
                    "source unusable (nothing was changed).")
    rep.add_argument("--source", default=DEFAULT_SOURCE, help=_SOURCE_HELP)
    rep.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    rep.add_argument("--params-dir", default=DEFAULT_PARAMS,
                     help=f"directory of the phases' <phase>.yaml files (default: {DEFAULT_PARAMS})")
    rep.add_argument("--phases", default="",
                     help="space-separated phases to build, e.g. 'p1 p2b' (default: every params file)")
    rep.add_argument("--jobs", type=_positive, default=2, help="notebooks run at once (default: 2)")
    rep.add_argument("--n-bootstrap", type=_positive, default=1000,
                     help="bootstrap resamples per fit (default: 1000)")
    rep.add_argument("--workers", type=_positive, default=8,
                     help="parallel run fetches from a W&B server (default: 8)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar for a W&B fetch")
    rep.add_argument("--no-wait", action="store_true",
                     help="exit 1 at once when another build is writing OUT (default: wait for it)")
    rep.set_defaults(run=_report)
    snap = commands.add_parser(
        "snapshot", help="only read the source into OUT/data/",
        description="Read the source into OUT/data/ (runs.parquet, history.parquet, "
                    "excluded_runs.csv, manifest.json); files are rewritten only when the content "
                    "changed. Exit 2 with one line when the source is unusable.")
    snap.add_argument("--source", default=DEFAULT_SOURCE, help=_SOURCE_HELP)
    snap.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    snap.add_argument("--previous", default=None,
                      help="an earlier output directory to fetch W&B runs incrementally against "
                           "(default: --out)")
    snap.add_argument("--workers", type=_positive, default=8,
                      help="parallel run fetches from a W&B server (default: 8)")
    snap.add_argument("--no-progress", action="store_true", help="no progress bar for a W&B fetch")
    snap.add_argument("--no-wait", action="store_true",
                      help="exit 1 at once when another build is writing OUT (default: wait for it)")
    snap.add_argument("--params-dir", default=None,
                      help="the phases' params files: runs no phase selects go to excluded_runs.csv "
                           "(default: select runs by their cbs_<phase>_np<N>_nr<M> name)")
    snap.set_defaults(run=_snapshot)
    shots = commands.add_parser(
        "screenshots", help="screenshots of OUT's index and one report (headless Chromium)",
        description="Render OUT/index.html and one section report with headless Chromium, "
                    "network off, to PNG files in DEST (the README shows them), and what they show "
                    "(each phase's answer, B_noise by target, the data's fingerprint) to "
                    "DEST/screenshots.json, which the suite compares with a fresh demo build.")
    shots.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    shots.add_argument("--dest", default="docs", help="where the PNG files go (default: docs)")
    shots.add_argument("--section", default="p1/02_steps_to_target.html",
                       help="the report to show beside the index (default: p1/02_steps_to_target.html)")
    shots.add_argument("--height", type=_positive, default=2400, help="page height in pixels (default: 2400)")
    shots.set_defaults(run=_screenshots)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
