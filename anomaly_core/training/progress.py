"""Training progress a person can follow: compile notices, and progress lines whose speed
and ETA come from step time only.

The loop tells `Progress` when a stage's first step starts and ends (in a process, that step
includes compiling it: its duration is reported as such and never enters the speed) and
wraps everything that is not a training step (validation, checkpoints, pictures) in
`excluded()`. Steps per second = steps counted / wall time counted; ETA = remaining steps /
that rate (the current stage's rate, so a later stage with another step cost shifts it).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger(__name__)

MAX_METRICS = 6  # metrics shown in a progress line (all of them go to TensorBoard and the log file)


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class Progress:
    """Step timing for `train` (`clock` is injectable for tests). Call `step_done(done)` after
    every step; measurement points (a progress line, entering `excluded()`, a stage's first
    step) count the wall time since the previous point as the time of the steps done since."""

    def __init__(self, total: int, start: int, *, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.clock = clock
        self.counted_steps = 0
        self.counted_time = 0.0
        self._mark = clock()
        self._counted_to = start  # steps done at the last measurement point
        self._done = start
        self._ahead = False  # the stage whose first step runs was compiled ahead

    def _measure(self, count: bool) -> float:
        now = self.clock()
        elapsed, self._mark = now - self._mark, now
        if count and self._done > self._counted_to:
            self.counted_time += elapsed
            self.counted_steps += self._done - self._counted_to
        self._counted_to = self._done
        return elapsed

    def step_done(self, done: int) -> None:
        self._done = done

    def first_step_started(self, stage: str, ahead: bool = False) -> None:
        """Before a stage's first step in this process (it includes compiling the step, or
        with `ahead` waiting for its compilation in the background to finish)."""
        self._measure(count=True)
        self._ahead = ahead
        if ahead:
            log.info("the '%s' step: waiting for its compilation, running in the background since "
                     "before initialisation", stage)
        else:
            log.info("compiling the '%s' step (first run on this machine; the compile cache makes later runs "
                     "faster)", stage)

    def first_step_done(self, stage: str, done: int) -> float:
        """After that step has finished (the caller blocks on it): logs and returns its
        duration, which is never counted as step time."""
        self._done = done
        seconds = self._measure(count=False)
        if self._ahead:
            log.info("the '%s' step was compiled and ran once %s later", stage, format_duration(seconds))
        else:
            log.info("the '%s' step compiled and ran once in %s", stage, format_duration(seconds))
        return seconds

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Time inside is not step time (validation, checkpoints, pictures)."""
        self._measure(count=True)
        try:
            yield
        finally:
            self._measure(count=False)

    def rate(self) -> float | None:
        """Steps per second over the counted steps, None before any."""
        if self.counted_steps == 0 or self.counted_time <= 0:
            return None
        return self.counted_steps / self.counted_time

    def line(self, done: int, stage: str, metrics: Mapping[str, float]) -> str:
        """'step 150/900 [adversarial] d_loss=0.41 g_loss=-0.2 | 3.1 steps/s | ETA 4 min 02 s'."""
        self._done = max(self._done, done)
        self._measure(count=True)
        shown = " ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:MAX_METRICS])
        rate = self.rate()
        speed = "speed after the first steps" if rate is None else \
            f"{rate:.3g} steps/s | ETA {format_duration((self.total - done) / rate)}"
        return f"step {done}/{self.total} [{stage}] {shown} | {speed}"
