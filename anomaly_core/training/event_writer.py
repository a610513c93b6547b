"""TensorBoard event files without TensorFlow.

`EventWriter` has the methods of clu's MetricWriter interface the program uses
(write_scalars, write_images, write_texts, write_hparams, flush, close) and writes standard
TensorBoard event files with tensorboardX (pure Python + protobuf), so that the default
install needs no TensorFlow: clu's own writers import it. Every scalar is also logged to
the `anomaly_core.scalars` logger (the run's log file keeps them; the console shows the
progress lines instead, `console`).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

SCALAR_LOG = logging.getLogger("anomaly_core.scalars")


class EventWriter:
    """Scalars, images and text to `<logdir>/events.out.tfevents.*` (process 0; other
    processes pass `logdir=None` and only log)."""

    def __init__(self, logdir: str | None):
        self._tb = None
        if logdir is not None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=logdir, flush_secs=30)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        if values:
            SCALAR_LOG.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=step)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """images: name -> (N, H, W, C) uint8 (or float in [0, 1]), C in {1, 3, 4}."""
        if self._tb is None:
            return
        for k, v in images.items():
            a = np.asarray(v)
            if a.ndim == 3:
                a = a[None]
            self._tb.add_images(k, a, global_step=step, dataformats="NHWC")

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        if self._tb is not None:
            for k, v in texts.items():
                self._tb.add_text(k, v, global_step=step)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.write_texts(0, {"hparams": "\n".join(f"{k}: {v}" for k, v in hparams.items())})

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes the event files; an OSError (a full disk) is raised once."""
        if self._tb is None:
            return
        tb, self._tb = self._tb, None
        try:
            tb.close()
        except OSError:
            # tensorboardX closes its files again at exit (atexit), which would print the same
            # failure as a traceback after the program's own message: they count as closed.
            for writer in (tb.all_writers or {}).values():
                files = writer.event_writer
                files._closed = True  # pylint: disable=protected-access
                with contextlib.suppress(Exception):  # its thread would fail on its next flush anyway
                    files._worker.stop()  # pylint: disable=protected-access
            raise
