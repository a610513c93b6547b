"""What a run prints, and the full log it keeps.

The console shows one compact line per event (`HH:MM:SS message`; warnings and errors say
so): compile notices, progress lines (`progress.Progress`), checkpoints, results. The full
log (absl's format, every logged scalar included) goes to `<workdir>/log.txt` (process i > 0:
`log-<i>.txt`), appended by every run. With `--verbosity=1` the console shows the full log.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import logging as absl_logging

from anomaly_core.training.event_writer import SCALAR_LOG


class _Compact(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, rest = text.partition(" ")
            text = f"{stamp} {record.levelname.lower()}: {rest}"
        return text


OWN_LOGGERS = ("anomaly_core", "funetgan_jax", "gon_jax", "configs", "__main__", "absl")


class _NotScalars(logging.Filter):
    """The console shows this program's INFO lines but not the per-metric ones (the progress
    lines stand for them), and only warnings and errors of libraries (JAX's platform
    probing, Orbax's bookkeeping stay in the log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == SCALAR_LOG.name:
            return False
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


class _LogFile(logging.FileHandler):
    """The workdir's log file. When it cannot be written (a full disk), it says so once on
    stderr and stops, instead of logging's traceback for every record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"warning: cannot write the log file {self.baseFilename} ({error}); it stops here\n")

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)


_FILE_HANDLERS: dict[str, logging.Handler] = {}


def setup(workdir: str | None, *, verbose: bool = False, process_index: int = 0) -> str | None:
    """Compact console (unless `verbose`) and the log file in `workdir`; returns its path."""
    root = logging.getLogger()
    if not verbose:
        for handler in root.handlers:
            if not isinstance(handler, logging.FileHandler) and not getattr(handler, "_compact", False):
                handler.setFormatter(_Compact())
                handler.addFilter(_NotScalars())
                handler._compact = True  # type: ignore[attr-defined]
    if workdir is None:
        return None
    path = os.path.abspath(os.path.join(workdir, "log.txt" if process_index == 0 else f"log-{process_index}.txt"))
    if path not in _FILE_HANDLERS:
        handler = _LogFile(path, encoding="utf-8", errors="backslashreplace")  # non-UTF-8 file names
        handler.setFormatter(absl_logging.PythonFormatter())
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
        _FILE_HANDLERS[path] = handler
    return path
