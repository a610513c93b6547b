"""One process per workdir: an exclusive advisory lock (fcntl.flock) on `<workdir>/.lock`.

Two runs writing the same checkpoints, metrics and panels would interleave their files; the
second process is refused at start-up with the holder's pid. The lock is released when the
holder exits, however it exits (the kernel drops it with the file descriptor), so a killed
run never leaves a stale lock behind. `hold_file` locks any other path the same way (an
output folder's lock, `output_folder`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from anomaly_core.training.checkpointing import CheckpointError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold_file(path: str, what: str, other: str) -> Iterator[str]:
    """Holds the lock file `path` (created when absent) for the duration of the block.

    `what` names the locked thing in the refusal ('--workdir=runs/a'), `other` what to choose
    instead ('--workdir'). Raises CheckpointError
    naming the holder's pid when another process holds it, and without touching the file
    when `path` holds anything but a lock's pid (a user's own file of that name).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        content = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if content and not content.isdigit():
            raise CheckpointError(f"{path} exists and is not a lock file this program wrote (it holds "
                                  f"{content[:40]!r}): {what} cannot be locked")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CheckpointError(
                f"{what} is in use by another run (process {holder}, lock {path}): wait for it "
                f"to finish or choose another {other}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[str]:
    """Holds the workdir's lock for the duration of the block; yields the lock file's path.

    Raises CheckpointError naming the holder's pid when another process holds it.
    """
    os.makedirs(workdir, exist_ok=True)
    with hold_file(os.path.join(workdir, LOCK_NAME), f"--workdir={workdir}", "--workdir") as path:
        yield path
