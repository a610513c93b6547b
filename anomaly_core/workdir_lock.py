"""One process per workdir: an exclusive advisory lock (fcntl.flock) on `<workdir>/.lock`.

Two runs writing the same checkpoints, metrics and panels would interleave their files; the
second process is refused at start-up with the holder's pid. The lock is released when the
holder exits, however it exits (the kernel drops it with the file descriptor), so a killed
run never leaves a stale lock behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from anomaly_core.checkpointing import CheckpointError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[str]:
    """Holds the workdir's lock for the duration of the block; yields the lock file's path.

    Raises CheckpointError naming the holder's pid when another process holds it.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CheckpointError(
                f"--workdir={workdir} is in use by another run (process {holder}, lock {path}): wait for it "
                "to finish or choose another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
