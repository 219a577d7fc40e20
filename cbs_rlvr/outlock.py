"""One writer per output directory: an OS lock (fcntl.flock) on OUT/.lock.

Every command that writes OUT (`report`, `snapshot`) holds it for its whole run. A second
command on the same OUT waits, saying so in one line ("waiting for the build of pid N writing
OUT"), or with `--no-wait` exits 1 at once. The lock belongs to the open file, so the kernel
releases it when its process ends however it ends (kill -9 included): a lock left by a killed
build never blocks. The file itself stays, empty (removing it would let two builds lock two
different files); the holder's pid, for the message, comes from /proc/locks.

Standard library only: the no-op build imports it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOCK_NAME = ".lock"


class OutputBusyError(Exception):
    """OUT is being written by another command and the caller chose not to wait."""


def _holder(fd: int) -> str:
    """The pid holding the flock on fd's file, from /proc/locks (Linux); "" when unknown. The
    lock file is never written, so a build with nothing to do changes no file in OUT."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF" (a waiter's line has "->")
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        pid, device_inode = fields[4], fields[5]
        if device_inode.rsplit(":", 1)[-1] == str(st.st_ino) and pid.isdigit():
            return pid
    return ""


class OutputLock:
    """`with OutputLock(out, wait=True):` -- held until the block ends (or the process does)."""

    def __init__(self, out: str | os.PathLike, wait: bool = True, what: str = "build") -> None:
        self.out, self.wait, self.what = Path(out), wait, what
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder(fd)
                who = f"the build of pid {pid}" if pid else "another build"
                if not self.wait:
                    raise OutputBusyError(f"{self.out} is being written by {who}; not waiting "
                                          "(--no-wait)") from None
                print(f"waiting for {who} writing {self.out}", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
