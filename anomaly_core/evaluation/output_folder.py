"""Output folders that always hold the files of one complete run, and only the program's.

Every folder the program writes (`<workdir>/eval/`, a prediction's `--output`, an export)
carries an ownership marker, the file `MARKER`, written first. A run writes into
`<final>.partial-<pid>-<token>/` (the marker holds the same token) and, once every file is
written, swaps it in place of `<final>/` with two renames (`<final>` ->
`<final>.old-<pid>-<token>`, then the new folder -> `<final>`) before the old folder is
removed. Nothing without the marker is ever removed or replaced: a `<final>` that holds
files but no marker is refused (or, for the workdir's own folders written by versions before
the marker, kept beside as `<final>.unmarked-<time>`), and the clean-up of killed runs'
leftovers touches only siblings named as above that carry a marker (the staging folder is
made as `<final>.partial-<pid>-<token>.init/` and renamed once its marker is complete, so a
run killed in between leaves a `.init` folder holding nothing but that marker, which the
clean-up removes too). The whole replacement
runs under a lock, `.<name>.lock` beside it (`workdir_lock.hold_file`), so two runs writing one
output folder at once are refused rather than deleting each other's staging folder.
A run killed at any point leaves the previous complete folder readable: as `<final>/`, or,
if it died between the two renames, as `<final>.old-<pid>-<token>/`, which the next
run's clean-up renames back.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator

from anomaly_core.training import workdir_lock

log = logging.getLogger(__name__)

MARKER = ".anomaly_core_output"  # in every folder this program writes; its text holds the token
_PREFIX = "anomaly_core output folder "
_TOKEN = r"\d+-[0-9a-f]{8}"  # <pid>-<8 random hex digits>


def owner_token(folder: str) -> str | None:
    """The token in `folder`'s ownership marker, or None when it has none (not ours)."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            text = f.read(200)
    except (OSError, UnicodeDecodeError):
        return None
    token = text[len(_PREFIX):].strip() if text.startswith(_PREFIX) else ""
    return token if re.fullmatch(_TOKEN, token) else None


def _leftovers(final: str, kind: str) -> list[str]:
    """This program's `<final>.<kind>-<pid>-<token>` folders (named so and carrying a marker)."""
    pattern = re.compile(re.escape(os.path.basename(final)) + rf"\.{kind}-({_TOKEN})")
    found = []
    for path in glob.glob(glob.escape(final) + f".{kind}-*"):
        m = pattern.fullmatch(os.path.basename(path))
        token = owner_token(path) if m and os.path.isdir(path) and not os.path.islink(path) else None
        # A staging folder's marker holds its own name's token; a backup's holds the token of
        # the run that wrote it.
        if token is not None and (kind != "partial" or token == m.group(1)):
            found.append(path)
    return found


def _unfinished_stagings(final: str) -> list[str]:
    """`<final>.partial-<pid>-<token>.init` folders holding nothing, or only this program's
    marker: a run killed before its staging folder was named (nothing of anyone's in them)."""
    pattern = re.compile(re.escape(os.path.basename(final)) + rf"\.partial-{_TOKEN}\.init")
    found = []
    for path in glob.glob(glob.escape(final) + ".partial-*.init"):
        if not pattern.fullmatch(os.path.basename(path)) or os.path.islink(path) or not os.path.isdir(path):
            continue
        names = os.listdir(path)
        marker = os.path.join(path, MARKER)
        if not names or (names == [MARKER] and os.path.isfile(marker) and not os.path.islink(marker)
                         and _is_marker_text(marker)):
            found.append(path)
    return found


def _is_marker_text(path: str) -> bool:
    """The file holds a prefix of the marker text (a write cut short counts)."""
    try:
        with open(path, "rb") as f:
            data = f.read(200)
    except OSError:
        return False
    return len(data) < 200 and (_PREFIX.encode().startswith(data) or data.startswith(_PREFIX.encode()))


def recover(final: str) -> None:
    """Removes the staging folders of killed runs next to `final` and puts back a previous
    complete folder that a run killed mid-swap left as `.old-*`; touches only folders
    `_leftovers` recognises as this program's. Call under the folder's lock."""
    for partial in _leftovers(final, "partial") + _unfinished_stagings(final):
        shutil.rmtree(partial, ignore_errors=True)
    olds = sorted(_leftovers(final, "old"), key=os.path.getmtime)
    if olds and not os.path.lexists(final):
        os.rename(olds.pop(), final)
        log.warning("restored %s from the folder an interrupted run left mid-swap", final)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(final: str, setting: str, keep_unmarked: bool) -> None:
    """`final` may be replaced: absent, empty, or carrying the marker. An unmarked folder that
    holds anything is refused (ValueError naming `setting`), or with `keep_unmarked` renamed
    aside (kept whole)."""
    if not os.path.lexists(final):
        return
    if not os.path.isdir(final) or os.path.islink(final):
        raise ValueError(f"{setting}={final} is not a folder (a file or a link is there); outputs need a folder")
    if owner_token(final) is not None:
        return
    names = sorted(os.listdir(final))
    if not names:
        os.rmdir(final)  # empty: nothing to keep
        return
    if keep_unmarked:
        kept = f"{final}.unmarked-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        os.rename(final, kept)
        log.warning("%s holds files without the marker %s that this program's output folders carry (written "
                    "by an earlier version, or not by this program): kept as %s", final, MARKER, kept)
        return
    raise ValueError(f"{setting}={final} holds files this program did not write (it has no {MARKER}; e.g. "
                     f"{names[0]!r}); each run replaces its output folder whole, so name a new or empty folder")


def lock_path(final: str) -> str:
    """`<parent>/.<name>.lock`: the lock of the output folder `final` (hidden, beside it)."""
    return os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.lock")


@contextlib.contextmanager
def replacing(final: str, setting: str, *, keep_unmarked: bool = False) -> Iterator[str]:
    """Yields a fresh staging folder (with its marker) whose contents replace `final` whole
    when the block ends without an error; on an error the staging folder is removed and
    `final` is unchanged. `setting` names the folder in errors ('--output');
    `keep_unmarked`: see `_check_replaceable`. Holds `lock_path(final)` throughout."""
    final = os.path.abspath(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if not keep_unmarked:  # a refusal comes first, and before the lock file: it leaves no trace
        _check_replaceable(final, setting, keep_unmarked)
    with workdir_lock.hold_file(lock_path(final), f"{setting}={final}", setting):
        if not keep_unmarked:  # again, under the lock (an unmarked folder to keep is set aside at the swap)
            _check_replaceable(final, setting, keep_unmarked)
        recover(final)
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        partial = f"{final}.partial-{token}"
        # The folder takes its name only with a complete marker: `_leftovers` recognises it then.
        os.makedirs(partial + ".init")
        with open(os.path.join(partial + ".init", MARKER), "w") as f:
            f.write(f"{_PREFIX}{token}\n")
        os.rename(partial + ".init", partial)
        try:
            yield partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        old = f"{final}.old-{token}"
        try:
            _check_replaceable(final, setting, keep_unmarked)  # again: it may have changed since
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if os.path.lexists(final):
            os.rename(final, old)
        os.rename(partial, final)
        if owner_token(old) is not None:
            shutil.rmtree(old, ignore_errors=True)
