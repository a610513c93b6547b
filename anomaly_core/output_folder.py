"""Output folders that always hold the files of one complete run.

An evaluation or a prediction writes into `<final>.partial-<pid>/` and, once every file is
written, swaps it in place of `<final>/` with two renames (`<final>` -> `<final>.old-<pid>`,
then the new folder -> `<final>`) before the old folder is removed. A run killed at any
point leaves the previous complete folder readable: as `<final>/`, or, if it died between
the two renames, as `<final>.old-<pid>/`, which `recover` (called at the start of the next
run, under the workdir lock) renames back.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil

log = logging.getLogger(__name__)


def recover(final: str) -> None:
    """Removes the leftovers of killed runs next to `final` (their `.partial-*` folders) and
    puts back a previous complete folder that a run killed mid-swap left as `.old-*`.
    Only call while holding the workdir lock: no other process may be writing there."""
    for partial in glob.glob(glob.escape(final) + ".partial-*"):
        shutil.rmtree(partial, ignore_errors=True)
    olds = sorted(glob.glob(glob.escape(final) + ".old-*"), key=os.path.getmtime)
    if olds and not os.path.exists(final):
        os.rename(olds.pop(), final)
        log.warning("restored %s from the folder an interrupted run left mid-swap", final)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def stage(final: str) -> str:
    """A fresh, empty `<final>.partial-<pid>/` to write a run's outputs into (after `recover`)."""
    recover(final)
    partial = f"{final}.partial-{os.getpid()}"
    os.makedirs(partial)
    return partial


def publish(partial: str, final: str) -> None:
    """Swaps the complete folder `partial` in place of `final`; the previous one is removed last."""
    old = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(partial, final)
    shutil.rmtree(old, ignore_errors=True)
