"""Input prefetching onto the devices: the next global batches are read and placed ahead of use.

`prefetch_to_device` is flax's `jax_utils.prefetch_to_device` for this project's batches: a
background thread takes process-local numpy batches from the data iterator, stacks the k
batches a step consumes, builds the global `jax.Array`s (`anomaly_core.training.parallel.global_batch`,
batch axis sharded over the mesh) and keeps up to `size` of them queued, so host-side loading
and the transfer overlap the running step instead of preceding it.

Checkpoints stay exact: every queued item carries the iterator state taken right after its
batches were read, and `get_state()` returns that state for the last item handed out, i.e.
the state of the next batch to be CONSUMED. Batches read ahead but not yet consumed never
reach a checkpoint, so a run resumed from it reads them again.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from anomaly_core.training import parallel

_DONE = object()


def global_step_batch(source: Iterator[Mapping[str, np.ndarray]], k: int, mesh: Mesh) -> dict[str, jax.Array]:
    """The next k local batches of `source` as one global batch: (B, ...) for k = 1, else (k, B, ...)."""
    if k == 1:
        return parallel.global_batch(next(source), mesh)
    local = [next(source) for _ in range(k)]
    stacked = {key: np.stack([b[key] for b in local]) for key in local[0]}
    return parallel.global_batch(stacked, mesh, stacked=True)


class DevicePrefetcher:
    """Iterator of global step batches, produced `size` steps ahead by a background thread.

    source: process-local batches with Grain's `get_state()` / `set_state()`; it must not be
    used by anyone else while the prefetcher runs. batches_per_step: how many source batches
    each step takes (one entry per step; its length ends the iteration). size = 0 reads
    synchronously in the caller's thread (no thread, no lookahead).
    Use as a context manager, or call `close()`, so the thread stops when the loop ends early.
    """

    def __init__(self, source: Any, mesh: Mesh, batches_per_step: Iterable[int], *, size: int = 2):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"prefetch size must be an int >= 0, got {size!r}")
        self._source, self._mesh, self._size = source, mesh, size
        self._plan = iter(batches_per_step)
        self._state = source.get_state()  # the state of the next batch to consume
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        if size > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=size)
            self._thread = threading.Thread(target=self._produce, name="prefetch_to_device", daemon=True)
            self._thread.start()

    def _read(self) -> tuple[dict[str, jax.Array], Any]:
        k = next(self._plan)  # StopIteration ends the stream
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"batches_per_step entries must be ints >= 1, got {k!r}")
        batch = global_step_batch(self._source, int(k), self._mesh)
        return batch, self._source.get_state()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._read()
                except StopIteration:
                    self._put(_DONE)
                    return
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            try:
                batch, self._state = self._read()
            except StopIteration:
                self._finished = True
                raise
            return batch
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        batch, self._state = item
        return batch

    def get_state(self) -> Any:
        """The source's state for the next batch to be consumed (what a checkpoint must save)."""
        return self._state

    def close(self) -> None:
        """Stops the background thread (idempotent); queued batches are dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._finished = True

    def __enter__(self) -> DevicePrefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def prefetch_to_device(source: Any, mesh: Mesh, batches_per_step: Iterable[int], *,
                       size: int = 2) -> DevicePrefetcher:
    """Global step batches of `source`, built and placed on `mesh` `size` steps ahead (see DevicePrefetcher)."""
    return DevicePrefetcher(source, mesh, batches_per_step, size=size)
