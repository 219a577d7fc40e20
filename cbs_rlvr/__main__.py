"""`python -m cbs_rlvr <command>`: what the Makefile calls (`--help` on each command).

  snapshot   read a source into OUT/data/ (parquet + manifest); rewritten only when it changed
  plan       print the make rules of the report (which notebooks run for which phases)
  failed     record a failed notebook execution as one line (make calls it)
  html       convert executed notebooks to HTML and write OUT/index.html
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import PROJECT_DIR


def _snapshot(args: argparse.Namespace) -> int:
    """One summary line on success; one error line and exit 2 on failure."""
    from .errors import DataLayerError, describe_error, redact_secrets
    from .snapshot import _DATA_LOG, build_snapshot, snapshot_unchanged, write_snapshot

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    _DATA_LOG.addHandler(handler)
    try:
        options = {"max_workers": args.workers}
        if args.no_progress:
            options["progress"] = False
        snapshot = build_snapshot(args.source, previous_dir=args.previous or args.out,
                                  params_dir=args.params_dir, **options)
        unchanged = snapshot_unchanged(snapshot["manifest"], args.out)
        if not unchanged:
            write_snapshot(snapshot, args.out)
    except DataLayerError as exc:
        print(f"error: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the previous snapshot is unchanged", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- a bug: still one line unless CBS_DEBUG is set
        if os.environ.get("CBS_DEBUG"):
            raise
        print(f"error: unexpected {describe_error(exc)} (set CBS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    finally:
        _DATA_LOG.removeHandler(handler)
    manifest = snapshot["manifest"]
    if unchanged:
        # Leave the files (and their times) alone so `make report` re-runs no notebook.
        print(f"snapshot: unchanged ({manifest['n_runs']} runs, {manifest['n_excluded']} excluded) "
              f"in {Path(args.out) / 'data'}")
        return 0
    print(f"snapshot: {manifest['n_runs']} runs in, {manifest['n_excluded']} excluded, "
          f"{manifest['n_history_rows']} history rows from {manifest['source']} -> {Path(args.out) / 'data'}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .build import report_plan

    sys.stdout.write(report_plan(args.params_dir, args.notebooks_dir, args.out, args.n_bootstrap))
    return 0


def _failed(args: argparse.Namespace) -> int:
    from .build import record_notebook_failure

    print(record_notebook_failure(args.target, args.notebook, args.phase), file=sys.stderr)
    return 1


def _html(args: argparse.Namespace) -> int:
    from .build import convert_reports, write_index

    written = convert_reports(args.out)
    index = write_index(args.out, args.params_dir)
    print(f"html: {len(written)} report(s) converted; index at {index}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line, every command and option with its help text."""
    top = argparse.ArgumentParser(prog="python -m cbs_rlvr", description=__doc__.splitlines()[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="command")
    snap = commands.add_parser("snapshot", help="read a source into OUT/data/ (parquet + manifest)")
    snap.add_argument("--source", default=str(PROJECT_DIR / "data" / "demo"),
                      help="wandb:<entity>/<project>, an offline-runs directory, or an export directory")
    snap.add_argument("--out", default=str(PROJECT_DIR / "outputs"), help="output directory (default: outputs/)")
    snap.add_argument("--previous", default=None,
                      help="earlier snapshot for an incremental W&B fetch (default: --out)")
    snap.add_argument("--workers", type=int, default=8, help="parallel W&B fetches (default: 8)")
    snap.add_argument("--no-progress", action="store_true", help="no progress bar")
    snap.add_argument("--params-dir", default=None,
                      help="the phases' params files: runs no phase selects go to excluded_runs.csv "
                           "(default: select runs by their cbs_<phase>_np<N>_nr<M> name)")
    snap.set_defaults(run=_snapshot)
    plan = commands.add_parser("plan", help="print the make rules of the report")
    plan.add_argument("--params-dir", default="params", help="the phases' params files (default: params)")
    plan.add_argument("--notebooks-dir", default="notebooks", help="the section notebooks (default: notebooks)")
    plan.add_argument("--out", default="outputs", help="output directory (default: outputs)")
    plan.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    plan.set_defaults(run=_plan)
    fail = commands.add_parser("failed", help="record a failed notebook execution (make calls it)")
    fail.add_argument("target", help="the executed notebook that was not written")
    fail.add_argument("--notebook", required=True, help="the section notebook that failed")
    fail.add_argument("--phase", required=True, help="the phase it ran for")
    fail.set_defaults(run=_failed)
    html = commands.add_parser("html", help="convert executed notebooks to HTML and write the index")
    html.add_argument("--out", default="outputs", help="output directory (default: outputs)")
    html.add_argument("--params-dir", default="params", help="the phases' params files (default: params)")
    html.set_defaults(run=_html)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
