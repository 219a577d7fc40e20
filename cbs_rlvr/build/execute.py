"""Executing section notebooks through papermill, on kernels kept warm across notebooks.

A fresh kernel per notebook costs about two seconds (start the kernel, import pandas,
matplotlib, scipy, the project) before the notebook's first line of analysis, and the report
runs some thirty notebooks. The build therefore runs papermill in its own process, one thread
per job slot, with a papermill engine (`warm`) that keeps that slot's kernel between notebooks:
before each notebook the kernel's namespace is cleared (`%reset -f`), matplotlib's and the
warning filters' and pandas' display options restored, open figures closed, the working directory set back to
`notebooks/` and the execution counter set back to 1, so every notebook
starts as it would in a new kernel, with its imports already loaded. A kernel that saw a
failure is shut down and the next notebook gets a new one.

papermill does the rest as usual: it injects the parameters after the `parameters` cell,
records each cell's timing, and writes the executed notebook, with the error where a cell
failed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..errors import redact_secrets
from ..paths import NOTEBOOKS_DIR, PROJECT_DIR

ENGINE = "cbs_warm"
# Run silently before each notebook: what a new kernel would have, except loaded modules.
_RESET = f"""\
get_ipython().run_line_magic("reset", "-f")
import matplotlib as _cbs_mpl, matplotlib.pyplot as _cbs_plt, os as _cbs_os, warnings as _cbs_warnings
_cbs_plt.close("all"); _cbs_mpl.rcdefaults(); _cbs_warnings.resetwarnings()
_cbs_os.chdir({str(NOTEBOOKS_DIR)!r})
import pandas as _cbs_pd
with _cbs_warnings.catch_warnings():
    _cbs_warnings.simplefilter("ignore")
    _cbs_pd.reset_option("all")
del _cbs_mpl, _cbs_plt, _cbs_os, _cbs_warnings, _cbs_pd
get_ipython().execution_count = 1
import sys as _cbs_sys
if not hasattr(_cbs_sys, "_cbs_writes"):
    def _cbs_audit(event, args, _writes=[], _os=__import__("os")):
        # every file the notebook opens for writing or renames into place (outputs it wrote)
        try:
            if event == "open" and args[2] & (_os.O_WRONLY | _os.O_RDWR) and not isinstance(args[0], int):
                _writes.append(_os.path.abspath(_os.fsdecode(args[0])))
            elif event == "os.rename" and not isinstance(args[1], int):
                _writes.append(_os.path.abspath(_os.fsdecode(args[1])))
        except Exception:
            pass
    _cbs_sys._cbs_writes = _cbs_audit.__defaults__[0]
    _cbs_sys.addaudithook(_cbs_audit)
    del _cbs_audit
_cbs_sys._cbs_writes.clear()
del _cbs_sys
"""
# Asked after each notebook: the files it wrote (a JSON list of absolute paths).
_WRITES_EXPR = "__import__('json').dumps(sorted(set(__import__('sys')._cbs_writes)))"

_local = threading.local()
_connection_dir: Path | None = None
_sockets: Path | None = None  # this build's kernel sockets (ipc transport)
SOCKETS_ROOT, SOCKETS_PREFIX = "/tmp", "cbs-kernels-"
_all_kernels: list = []
_lock = threading.Lock()


def kernel_environment(connection_dir: Path | None = None) -> None:
    """The environment the kernels start with: this checkout first on the import path, a
    non-interactive matplotlib backend, no debugger or platform-dirs chatter on stderr.

    connection_dir: where the kernels' connection files go (the build gives OUT/.build/kernels,
    under its lock). Files there that an earlier, killed build left are removed now; the build
    removes its own at its end (shutdown_kernels), interrupted or not."""
    global _connection_dir
    if connection_dir is not None:
        _connection_dir = Path(connection_dir)
        remove_stale_kernels(_connection_dir)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys(filter(None, [str(PROJECT_DIR), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])))
    os.environ.setdefault("MPLBACKEND", "agg")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")


def _register_engine() -> None:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    class _WarmClient(PapermillNotebookClient):
        def papermill_execute_cells(self):
            reply = self.wait_for_reply(self.kc.execute(_RESET, silent=True, store_history=False))
            if (reply or {}).get("content", {}).get("status") != "ok":
                raise RuntimeError("the kernel could not be reset between notebooks")
            super().papermill_execute_cells()
            reply = self.wait_for_reply(self.kc.execute(
                "", silent=True, store_history=False, user_expressions={"w": _WRITES_EXPR}))
            self.cbs_writes = _parse_writes(reply)

    class WarmKernelEngine(NBClientEngine):
        """papermill's nbclient engine on this thread's kept kernel."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None,
                                     **kwargs):
            from jupyter_client.manager import AsyncKernelManager

            km = getattr(_local, "km", None)
            with _lock:
                if km is None or km not in _all_kernels:  # none yet, or shut down at a build's end
                    km = _local.km = AsyncKernelManager(kernel_name=kernel_name, **_kernel_options())
                    _all_kernels.append(km)
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log_output=log_output,
                                 stdout_file=stdout_file, stderr_file=stderr_file,
                                 resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
                                 # the kernel's own start-up notices would reach the terminal
                                 extra_arguments=["--IPKernelApp.log_level=ERROR"])
            client = _WarmClient(nb_man, km=km, **final)
            try:
                result = client.execute()
                _local.writes = getattr(client, "cbs_writes", None)
                return result
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(ENGINE, WarmKernelEngine)


def _kernel_options() -> dict:
    """Where a new kernel's connection file and sockets go. On Linux and macOS the kernel talks
    over Unix sockets (zmq's ipc transport) in a private directory of this build: TCP ports are
    picked free and bound later by the kernel, so two kernels started at once on one machine (two
    job slots, two builds) could be handed the same port, and the loser dies at start-up
    ("Address already in use") while the build waits a minute for it. A socket file named for its
    kernel cannot be taken by another. (Windows keeps TCP.)"""
    import uuid

    options: dict = {}
    name = f"kernel-{uuid.uuid4()}"
    if _connection_dir is not None:  # else jupyter_client's mkstemp in $TMPDIR
        _connection_dir.mkdir(parents=True, exist_ok=True)
        options["connection_file"] = str(_connection_dir / f"{name}.json")
    if os.name == "posix":
        # a socket's path holds at most ~100 bytes, which OUT/.build/kernels may not leave: a
        # short private directory under the system's temporary one (where /tmp cannot be
        # written, TCP as before)
        try:
            options.update(transport="ipc", ip=str(_socket_dir() / name[:15]))
        except OSError:
            pass
    return options


def _socket_dir() -> Path:
    """This build's directory for kernel sockets (0700, removed by shutdown_kernels). Under /tmp,
    not $TMPDIR: macOS's is too long a path for a socket."""
    global _sockets
    if _sockets is None or not _sockets.is_dir():
        import tempfile

        _sockets = Path(tempfile.mkdtemp(prefix=SOCKETS_PREFIX, dir=SOCKETS_ROOT))
    return _sockets


def _remove_sockets(connection_files: list[str]) -> None:
    """The socket files named in (a killed build's) kernel connection files, and their
    directory once empty."""
    for path in connection_files:
        try:
            info = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        prefix = Path(str(info.get("ip", "")))
        if info.get("transport") != "ipc" or prefix.parent.parent != Path(SOCKETS_ROOT) \
                or not prefix.parent.name.startswith(SOCKETS_PREFIX):
            continue  # never a file this module did not make
        for socket in prefix.parent.glob(f"{prefix.name}-*"):
            socket.unlink(missing_ok=True)
        try:
            prefix.parent.rmdir()
        except OSError:
            pass


def _parse_writes(reply: dict | None) -> list[str] | None:
    """The kernel's answer to _WRITES_EXPR as a list of paths (None when it gave none)."""
    import ast

    try:
        value = reply["content"]["user_expressions"]["w"]
        if value.get("status") != "ok":
            return None
        return list(json.loads(ast.literal_eval(value["data"]["text/plain"])))
    except (KeyError, TypeError, ValueError, SyntaxError):
        return None


def written_files() -> list[str] | None:
    """The files the last notebook executed on this thread wrote (absolute paths), as the
    kernel's audit hook saw them; None when unknown."""
    return getattr(_local, "writes", None)


def _drop_kernel() -> None:
    """Shut this thread's kernel down (after a failure: its state is unknown)."""
    km = getattr(_local, "km", None)
    _local.km = None
    if km is not None:
        _shutdown(km)


def _shutdown(km) -> None:
    from jupyter_core.utils import run_sync

    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    except Exception:  # noqa: BLE001 -- a kernel that is already gone
        pass


def shutdown_kernels() -> None:
    """Shut down every kernel the build kept (at the end of the build)."""
    with _lock:
        kernels, _all_kernels[:] = list(_all_kernels), []
    for km in kernels:
        _shutdown(km)
    remove_connection_files()
    global _sockets
    if _sockets is not None:
        import shutil

        shutil.rmtree(_sockets, ignore_errors=True)
        _sockets = None


def remove_stale_kernels(connection_dir: Path) -> list[str]:
    """What a killed build left in its connection directory (the caller holds OUT's lock, so no
    live build owns these): a kernel still running on a file there is killed (an orphan that
    would otherwise go on writing OUT), and the file removed. Returns the files removed."""
    import signal

    stale = [str(p) for p in Path(connection_dir).glob("kernel-*.json")]
    if not stale:
        return []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(os.fsencode(path) in argv for path in stale):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass
    _remove_sockets(stale)
    for path in stale:
        Path(path).unlink(missing_ok=True)
    return stale


def remove_connection_files() -> None:
    """Remove the kernel connection files in the build's connection directory (they hold a
    kernel's ports and key; none outlives the build that wrote it)."""
    if _connection_dir is None or not _connection_dir.is_dir():
        return
    for path in _connection_dir.glob("kernel-*.json"):
        path.unlink(missing_ok=True)


def execute(source_nb: Path, target: Path, parameters: dict, timeout: int = 1800) -> str | None:
    """Execute one notebook into `target` through papermill (warm kernel). None on success;
    else the one-line error (the partial notebook is left at `partial_path(target)`)."""
    import papermill as pm
    from papermill.engines import papermill_engines

    if ENGINE not in papermill_engines._engines:
        _register_engine()
    partial = partial_path(target)
    _local.writes = None
    try:
        pm.execute_notebook(str(source_nb), str(partial), parameters=parameters,
                            engine_name=ENGINE, kernel_name="python3", progress_bar=False,
                            log_output=False, request_save_on_cell_execute=False,
                            execution_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 -- a failed cell, a dead kernel, a timeout
        _drop_kernel()
        text = getattr(exc, "evalue", None) or str(exc)
        lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
        return redact_secrets(f"{getattr(exc, 'ename', type(exc).__name__)}: {lines[-1] if lines else ''}")
    os.replace(partial, target)
    return None


def partial_path(target: Path) -> Path:
    """Where a notebook is written while it runs (hidden: no listing of reports picks it up)."""
    return target.with_name(f".{target.stem}.partial.ipynb")


def failed_cell(partial: Path) -> tuple[str, str]:
    """(", cell N", "Type: message") of the first failed cell of a partial executed notebook,
    N counting the notebook's code cells (what a reader sees in JupyterLab); ("", "") if none."""
    try:
        nb = json.loads(partial.read_text())
    except (OSError, ValueError):
        return "", ""
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    for index, cell in enumerate(code, start=1):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            lines = [ln for ln in str(errors[0].get("evalue", "")).strip().splitlines() if ln.strip()]
            return f", cell {index}", f"{errors[0].get('ename', 'Error')}: {lines[-1] if lines else ''}"
    return "", ""
