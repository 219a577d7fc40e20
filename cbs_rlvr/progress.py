"""Progress bars for long loops, shown where someone is watching and nowhere else.

    for table in progress(tables, desc="bootstrap"):        # wraps an iterable
        ...
    with progress(total=n_bootstrap, desc="bootstrap") as bar:  # or counts by hand
        ...
        bar.update(block)

`progress` returns a tqdm bar, or a disabled one (which still iterates, and prints nothing).
It is shown:
  - in JupyterLab (a kernel whose current request allows input, as a person's frontend does): as
    a widget (tqdm.notebook) where ipywidgets is installed (`make lab` installs it), else as a
    line of text updated in place;
  - in a terminal (`python notebooks/NN_x.py`, a script): on stderr, as tqdm does.
It stays silent in the report build (its kernels carry the build's token, handrun.py) and in any
other kernel driven by nbclient (papermill by hand, nbconvert --execute), which never allow
input: no widget state and no stderr in an executed notebook or its HTML. The same goes for a
process whose stderr is not a terminal (logs, pipes). A bar appears only after `delay` seconds,
so quick loops show nothing, and is removed when it ends unless `leave=True`.

Loops that run in worker threads or processes should report from the thread that made the bar:
the kernel's request (what decides "someone is watching") is known there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

#: What makes the build's kernels the build's (handrun.BUILD_TOKEN_ENV; not imported: the
#: analysis modules that use progress import nothing from the build's side).
_BUILD_TOKEN_ENV = "CBS_BUILD_TOKEN"


def _kernel():
    """The running ipykernel, or None (plain Python, or IPython in a terminal)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None)


def where_shown() -> str:
    """"widget", "text" (in a Jupyter frontend), "terminal" or "" (nowhere): where a bar made
    now would appear. The rules are in the module's docstring."""
    if os.environ.get(_BUILD_TOKEN_ENV):
        return ""
    kernel = _kernel()
    if kernel is None:
        try:
            return "terminal" if sys.stderr is not None and sys.stderr.isatty() else ""
        except (AttributeError, ValueError):
            return ""
    try:
        parent = kernel.get_parent() or {}
    except Exception:  # noqa: BLE001 -- an older or unusual kernel: treat as unattended
        return ""
    if not (parent.get("content") or {}).get("allow_stdin", False):
        return ""  # nbclient (papermill, nbconvert --execute) never allows input
    import importlib.util

    return "widget" if importlib.util.find_spec("ipywidgets") is not None else "text"


def progress(iterable: Iterable | None = None, *, total: float | None = None,
             desc: str | None = None, unit: str = "it", leave: bool = False,
             delay: float = 0.5, **options):
    """A tqdm progress bar over `iterable` (or of `total` steps, advanced with `.update(n)`),
    shown only where someone watches (`where_shown`); a context manager and an iterable, as
    tqdm's. `options` go to tqdm (e.g. `unit_scale=True`, `postfix`)."""
    where = where_shown()
    settings = dict(total=total, desc=desc, unit=unit, leave=leave, delay=delay, **options)
    if where == "widget":
        from tqdm.notebook import tqdm as bar
    elif where == "text":
        from tqdm.std import tqdm as bar

        settings.setdefault("file", sys.stdout)  # Lab shows stderr in red; \r updates in place
    else:
        from tqdm.std import tqdm as bar

        settings["disable"] = where == ""
    return bar(iterable, **settings)
