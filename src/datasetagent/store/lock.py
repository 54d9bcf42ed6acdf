"""The run lock: one process at a time changes a run folder.

``build``, ``review --apply`` and ``export`` hold an exclusive ``flock`` on ``RUN/run.lock``
while they work; the file holds the holder's pid and command, so a second taker is told who
has the run. The operating system drops the lock when the holder exits, however it exits
(``kill -9`` included), so a stale lock never needs cleaning up. The file itself is left in
place: deleting it would let two processes lock two different files of one name.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datasetagent.errors import StoreError, UsageError

LOCK_NAME = "run.lock"


@contextmanager
def run_lock(run_dir: Path, command: str) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (which must exist) for ``command`` while inside; raise a
    one-line error naming the holder's pid when another process holds it."""
    path = run_dir / LOCK_NAME
    # never through a link, and never a FIFO or device: the lock file is truncated and written
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        why = "it is a symbolic link" if os.path.islink(path) else exc.strerror
        raise StoreError(
            f"cannot open the run lock {path}: {why}; remove it (it holds only the pid of the "
            "process that has the run) and try again"
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(
            f"cannot open the run lock {path}: it is not a regular file; remove it and try again"
        )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            who = f"pid {holder[0]}" if holder else "another process"
            doing = f" ({holder[1]})" if len(holder) > 1 else ""
            raise UsageError(
                f"run folder {run_dir} is in use by {who}{doing}: another build, review or "
                "export is changing it; wait for it to finish, or stop it, then try again"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
