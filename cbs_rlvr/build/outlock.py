"""One writer per output directory: an OS lock (fcntl.flock) on the OUT directory itself.

Every command that writes OUT (`report`, `snapshot`) holds it for its whole run. A second
command on the same OUT waits, saying so in one line ("waiting for the build of pid N writing
OUT"), or with `--no-wait` exits 1 at once. The lock belongs to the open directory, so the
kernel releases it when its process ends however it ends (kill -9 included): a lock left by a
killed build never blocks. It is taken on OUT's own descriptor, not on a file inside it, so
nothing a user or a script can delete while a build runs (a lock file could be, letting a
second writer in) undoes it; after waiting, the lock is checked to be on the directory OUT
still names. Where a file system cannot lock a directory (some network mounts), the lock falls
back to the file OUT/.lock, checked by inode the same way. The holder's pid, for the message,
comes from /proc/locks.

Standard library only: the no-op build imports it.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

LOCK_NAME = ".lock"  # the fallback lock file


class OutputBusyError(Exception):
    """OUT is being written by another command and the caller chose not to wait."""


class OutputLockError(Exception):
    """OUT cannot be created or locked at all (not a directory, no permission): one line."""


def _holder(fd: int) -> str:
    """The pid holding the flock on fd's file, from /proc/locks (Linux); "" when unknown. The
    lock is never written, so a build with nothing to do changes no file in OUT."""
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


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _problem(out: Path, exc: OSError) -> OutputLockError:
    what = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        what = "a file is in the way (not a directory)"
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out) else ""
    return OutputLockError(f"cannot use {out} as the output directory: {what}{where}")


class OutputLock:
    """`with OutputLock(out, wait=True):` -- held until the block ends (or the process does)."""

    def __init__(self, out: str | os.PathLike, wait: bool = True, what: str = "build") -> None:
        self.out, self.wait, self.what = Path(out), wait, what
        self.fd: int | None = None

    def _try_lock(self) -> tuple[int, Path, bool]:
        """(descriptor, the path it must still be, whether the lock is taken): OUT itself, or
        OUT/.lock where the file system cannot lock a directory."""
        import fcntl

        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd, path = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY), self.out  # not inherited
        except OSError as exc:
            raise _problem(self.out, exc) from None
        for fallback in (False, True):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd, path, True
            except BlockingIOError:
                return fd, path, False
            except OSError as exc:
                os.close(fd)
                if fallback or exc.errno not in (errno.ENOLCK, errno.EBADF, errno.EOPNOTSUPP, errno.EINVAL):
                    raise _problem(self.out, exc) from None
            path = self.out / LOCK_NAME
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise _problem(self.out, exc) from None
        raise AssertionError("unreachable")

    def __enter__(self) -> OutputLock:
        import fcntl

        while True:
            fd, path, locked = self._try_lock()
            try:
                if not locked:
                    pid = _holder(fd)
                    who = f"the build of pid {pid}" if pid else "another build"
                    if not self.wait:
                        raise OutputBusyError(f"{self.out} is being written by {who}; not waiting "
                                              "(--no-wait)")
                    print(f"waiting for {who} writing {self.out}", file=sys.stderr, flush=True)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                    except OSError as exc:
                        raise _problem(self.out, exc) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                self.fd = fd
                return self
            os.close(fd)  # OUT (or the lock file) was replaced while we waited: lock the new one

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def under_lock(out, wait: bool, work, os_error_tail: str) -> int:
    """work() run holding OUT's lock, its exit status returned; what goes wrong is one line on
    stderr and a status: 1 when another writer holds OUT (and wait is False), 2 when the lock
    cannot be taken or the disk fails (a full disk, a read-only OUT: `os_error_tail` says what is
    kept)."""
    import sys

    from ..errors import describe_os_error

    try:
        with OutputLock(out, wait=wait):
            return work()
    except OutputBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OutputLockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}; {os_error_tail}", file=sys.stderr)
        return 2

