"""The training loop both methods share: stages of jitted steps, resume, checks, logging.

A method describes training as a list of `Stage`s (f-UNetGAN: adversarial, then encoder;
GON: one stage). Steps are numbered globally; the stage of a step follows from the stage
lengths, so a checkpoint needs only its step number. Every step's randomness is
`fold_in(key(seed), step)`, and the data iterator's state is saved with the train state,
so a resumed run computes exactly what an uninterrupted run computes.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer, abstract_like
from anomaly_core.training.event_writer import EventWriter
from anomaly_core.training.prefetch import global_step_batch, prefetch_to_device
from anomaly_core.training.progress import Progress

log = logging.getLogger(__name__)

StepFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[Any, Mapping[str, jax.Array]]]


class TrainingDiverged(RuntimeError):
    """A loss or parameter became NaN/inf; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM or Ctrl-C (SIGINT) arrived; a checkpoint was written at the step named in the
    message. `signum`: the signal, so the process can exit with 128 + signum."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = int(signum)


@dataclasses.dataclass(frozen=True)
class Stage:
    """`num_steps` calls of `step_fn(state, batch, rng) -> (state, scalar metrics)`.

    With `batches_per_step = k > 1` each call receives k consecutive batches stacked on a
    new leading axis, (k, B, ...), so k updates can run inside one jitted call.
    """

    name: str
    num_steps: int
    step_fn: StepFn
    batches_per_step: int = 1


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    # Metric (from `validation_fn`) that selects the best checkpoint; None = latest only.
    best_metric: str | None = None
    # Progress images (`image_fn`) every this many steps and at each stage's end; 0 = never.
    image_every: int = 0
    # Training-health limits: a logged metric whose interval mean exceeds its limit is warned
    # about (name, limit, what it means), e.g. a WGAN-GP penalty far from its target.
    health_limits: tuple[tuple[str, float, str], ...] = ()


def step_functions(stages: list[Stage], mesh: jax.sharding.Mesh, seed: int) -> dict[str, Any]:
    """Each stage's jitted step, (state, batch, step index) -> (state, metrics): its
    randomness fold_in(key(seed), step index), the state replicated and donated, the batch
    sharded over the mesh ((k, B, ...) when the stage takes k > 1 batches per step)."""
    rep = parallel.replicated(mesh)
    base_key = jax.random.key(seed)

    def wrap(stage: Stage):
        def step(state, batch, step_index):
            return stage.step_fn(state, batch, jax.random.fold_in(base_key, step_index))

        shard = parallel.batch_sharded(mesh, stacked=stage.batches_per_step > 1)
        return jax.jit(step, in_shardings=(rep, shard, None), out_shardings=(rep, rep), donate_argnums=0)

    return {s.name: wrap(s) for s in stages}


def compile_ahead(stages: list[Stage], mesh: jax.sharding.Mesh, seed: int, abstract_state: Any,
                  train_iter: Any, start: int = 0) -> dict[str, Future]:
    """Starts compiling, in background threads, the step of every stage that has steps left
    after `start`, so that the compilations overlap each other and what runs before training
    (initialisation compiles and runs its own program). Returns {stage name: Future of the
    compiled step} for `train(ahead=...)`.

    `abstract_state`: the state's shapes, dtypes and (replicated) shardings; the batches'
    come from a step batch built as the prefetcher builds it (`prefetch.global_step_batch`) of
    batches of `train_iter` read and then un-read (`get_state` / `set_state`), so the data
    order is unchanged.
    """
    total, todo = 0, []
    for stage in stages:
        total += stage.num_steps
        if total > start:
            todo.append(stage)
    if not todo:
        return {}
    batches = {}
    for k in {stage.batches_per_step for stage in todo}:
        saved = train_iter.get_state()
        batch = global_step_batch(train_iter, k, mesh)
        train_iter.set_state(saved)
        batches[k] = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), batch)
    jitted = step_functions(todo, mesh, seed)
    index = jax.ShapeDtypeStruct((), np.int32)

    def compile_step(stage: Stage):
        with jax.set_mesh(mesh):  # the mesh context is per thread
            return jitted[stage.name].lower(abstract_state, batches[stage.batches_per_step], index).compile()

    pool = ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="compile_ahead")
    try:
        futures = {stage.name: pool.submit(compile_step, stage) for stage in todo}
    finally:
        pool.shutdown(wait=False)  # the threads end with their compilations
    _AHEAD.update(futures.values())
    return futures


_AHEAD: set[Future] = set()  # every compilation compile_ahead started in this process


def compiling_ahead() -> bool:
    """Whether a compilation started by `compile_ahead` is still running (the interpreter
    waits for it before exiting)."""
    _AHEAD.difference_update([f for f in _AHEAD if f.done()])
    return bool(_AHEAD)


def _first_step(future: Future, jitted: Any, name: str, state: Any, batch: Any, index: np.int32) -> tuple[Any, Any]:
    """A stage's first step with the program compiled ahead: (that program, or `jitted` when
    it failed or does not take this state and batch; the step's (state, metrics))."""
    try:
        compiled = future.result()
    except Exception as e:  # noqa: BLE001 - the jit compiles again and raises what is real
        log.warning("compiling the '%s' step ahead failed (%s: %s); compiling it now", name, type(e).__name__, e)
        return jitted, jitted(state, batch, index)
    try:
        # The compiled program checks the arguments' tree, shapes, dtypes and shardings
        # before it runs (and donates the state).
        return compiled, compiled(state, batch, index)
    except (TypeError, ValueError) as e:
        log.warning("the '%s' step compiled ahead does not take this state or batch (%s); compiling it now",
                    name, str(e).splitlines()[0][:300])
        return jitted, jitted(state, batch, index)


def make_writer(workdir: str) -> EventWriter:
    """TensorBoard event files in `workdir` (no TensorFlow needed) + the scalar log; processes
    other than 0 only log."""
    return EventWriter(workdir if jax.process_index() == 0 else None)


def stage_of(stages: list[Stage], step: int) -> Stage:
    end = 0
    for s in stages:
        end += s.num_steps
        if step < end:
            return s
    raise IndexError(step)


class _SigtermFlag:
    """Turns SIGTERM (the preemption signal) and Ctrl-C (SIGINT) into a flag the loop polls
    between steps. A second Ctrl-C stops at once (KeyboardInterrupt), without the checkpoint."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.raised = False
        self.signum = signal.SIGTERM
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SigtermFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised and signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        self.raised, self.signum = True, signum

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train(
    *,
    state: Any,
    stages: list[Stage],
    train_iter: Iterator[Mapping[str, np.ndarray]],
    mesh: jax.sharding.Mesh,
    checkpointer: Checkpointer,
    writer: EventWriter,
    loop: LoopConfig,
    validation_fn: Callable[[Any, str], Mapping[str, float]] | None = None,
    image_fn: Callable[[Any, str, int], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    check_meta: Callable[[str, dict], None] | None = None,
    misfit: Callable[[dict], str | None] | None = None,
    restore_target: Callable[[Any, dict], Any] | None = None,
    ahead: Mapping[str, Future] | None = None,
) -> tuple[Any, int]:
    """Runs (or resumes) all stages. Returns (final state, number of steps run now).

    `state` is the freshly initialised (replicated) state; when `checkpointer` holds a
    checkpoint, training resumes from it instead. `train_iter` yields process-local
    batches and has `get_state()`/`set_state()`. `image_fn(state, stage_name, step)` writes
    progress images (every `loop.image_every` steps and at each stage's end). `check_meta`
    vets a checkpoint's metadata before resuming from it, `misfit` explains one that does not fit
    (`Checkpointer.restore`). `ahead`:
    the stages' steps being compiled in the background (`compile_ahead`); a stage's first
    step waits for its own.
    """
    total = sum(s.num_steps for s in stages)
    start = 0
    restored = checkpointer.restore(abstract_like(state), check_meta=check_meta, target=restore_target, misfit=misfit)
    if restored is not None:
        start, restored_state, data_state, saved_meta = restored
        # Entries an older checkpoint lacks (restore_target) keep the fresh state's values.
        state = {**state, **restored_state} if isinstance(state, dict) else restored_state
        if data_state:
            train_iter.set_state(data_state)
        log.info("resumed from checkpoint step %d of %d (%s)", start, total, saved_meta.get("stage", "?"))
    if start >= total:
        return state, 0

    jitted: dict[str, Any] = step_functions(stages, mesh, loop.seed)
    all_finite = jax.jit(_all_finite)
    progress = Progress(total, start)
    compiled: set[str] = set()  # stages whose step has run once in this process

    pending: list[tuple[int, Mapping[str, jax.Array]]] = []
    last_checked = start

    def flush(step: int) -> None:
        """Fetches the metrics gathered since the last flush (one transfer), checks, writes."""
        nonlocal pending, last_checked
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        by_key: dict[str, list[float]] = {}
        for m in host:
            for k, v in m.items():
                by_key.setdefault(k, []).append(float(v))
        bad = sorted(k for k, vs in by_key.items() if not all(math.isfinite(v) for v in vs))
        if bad:
            first_bad = next(
                s for (s, _), m in zip(pending, host) if any(not math.isfinite(float(m[k])) for k in bad if k in m)
            )
            raise TrainingDiverged(
                f"training diverged: {', '.join(bad)} became non-finite at step {first_bad + 1} "
                f"(checked steps {last_checked + 1}-{step}, stage '{stage_of(stages, first_bad).name}'). "
                f"The last good checkpoint (step {checkpointer.latest_step()}) in {checkpointer.directory} "
                "is kept; lower the learning rate or check the data."
            )
        means = {k: float(np.mean(v)) for k, v in by_key.items()}
        log.info("%s", progress.line(step, stage_of(stages, step - 1).name, means))
        rate = progress.rate()
        writer.write_scalars(step, {**means, **({"steps_per_sec": rate} if rate else {})})
        for name, limit, meaning in loop.health_limits:
            if name in means and means[name] > limit:
                log.warning("training health: %s = %.4g (mean of steps %d-%d) is above %.4g: %s",
                            name, means[name], last_checked + 1, step, limit, meaning)
        pending, last_checked = [], step

    steps_run = 0
    # Batches are read and placed on the devices two steps ahead; `feed.get_state()` is the
    # state of the next batch to consume, so checkpoints ignore what was read ahead.
    feed = prefetch_to_device(train_iter, mesh, (stage_of(stages, s).batches_per_step for s in range(start, total)))
    with _SigtermFlag() as sigterm, feed:
        for step in range(start, total):
            stage = stage_of(stages, step)
            batch = next(feed)
            first = stage.name not in compiled
            future = (ahead or {}).get(stage.name) if first else None
            if first:
                progress.first_step_started(stage.name, ahead=future is not None)
            if future is not None:
                jitted[stage.name], (state, metrics) = _first_step(future, jitted[stage.name], stage.name, state,
                                                                   batch, np.int32(step))
            else:
                state, metrics = jitted[stage.name](state, batch, np.int32(step))
            pending.append((step, metrics))
            steps_run += 1
            done = step + 1
            if first:
                jax.block_until_ready(metrics)
                progress.first_step_done(stage.name, done)
                compiled.add(stage.name)
            else:
                progress.step_done(done)
            stage_end = done == sum(s.num_steps for s in stages[: stages.index(stage) + 1])
            # Read the flag once: a SIGTERM handled after the save decision (e.g. while the
            # metrics below are fetched) must wait for the next step, not exit unsaved.
            preempted = sigterm.raised
            save_now = done % loop.checkpoint_every == 0 or stage_end or preempted
            if done % loop.log_every == 0 or save_now:
                flush(done)
            if image_fn is not None and loop.image_every and (done % loop.image_every == 0 or stage_end):
                with progress.excluded():
                    image_fn(state, stage.name, done)
            if save_now:
                with progress.excluded():
                    if not bool(all_finite(state)):
                        raise TrainingDiverged(
                            f"parameters became non-finite by step {done} (stage '{stage.name}'); the last good "
                            f"checkpoint (step {checkpointer.latest_step()}) in {checkpointer.directory} is kept."
                        )
                    val = dict(validation_fn(state, stage.name)) if (validation_fn and loop.best_metric) else None
                    if not val or loop.best_metric not in val:
                        # This stage has no such metric (e.g. the adversarial stage returns {}). None, not
                        # {}: Orbax's best-checkpoint policy looks the metric up in every non-None dict.
                        val = None
                    if val:
                        writer.write_scalars(done, {f"val/{k}": v for k, v in val.items()})
                    checkpointer.save(
                        done,
                        state,
                        data_state=feed.get_state(),
                        meta={**(meta or {}), "stage": stage.name, "step": done, "total_steps": total,
                              "time": time.time(), **({"validation": val} if val else {})},
                        metrics=val,
                        force=True,
                    )
            if preempted:
                checkpointer.wait()
                writer.flush()
                name = "SIGTERM" if sigterm.signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
                raise Preempted(
                    f"{name} received: checkpoint written at step {done} in {checkpointer.directory}; "
                    "rerun the same command to resume.", sigterm.signum
                )
    checkpointer.wait()
    writer.flush()
    return state, steps_run
