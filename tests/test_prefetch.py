"""prefetch_to_device: same batches as reading synchronously, checkpoints exact despite lookahead."""
from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer
from anomaly_core.training.event_writer import EventWriter
from anomaly_core.training.prefetch import global_step_batch, prefetch_to_device
from anomaly_core.training.train_loop import LoopConfig, Stage, train


class Source:
    """Deterministic batches (value = position) with Grain's get_state/set_state; counts reads."""

    def __init__(self, batch: int = 4, fail_at: int | None = None, delay: float = 0.0):
        self.pos, self.batch, self.fail_at, self.delay = 0, batch, fail_at, delay
        self.threads: set[str] = set()

    def __next__(self):
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and self.pos == self.fail_at:
            raise OSError(f"unreadable record at position {self.pos}")
        time.sleep(self.delay)
        x = np.full((self.batch, 2), self.pos, np.float32) + np.arange(self.batch, dtype=np.float32)[:, None] / 10
        self.pos += 1
        return {"x": x, "index": np.full((self.batch,), self.pos - 1, np.int32)}

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, state):
        self.pos = int(state["pos"])


def _wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_same_batches_and_shardings_as_reading_synchronously():
    mesh = parallel.make_mesh()
    plan = [1, 3, 1, 2]
    reference_source = Source()
    expected = [global_step_batch(reference_source, k, mesh) for k in plan]
    source = Source()
    with prefetch_to_device(source, mesh, plan, size=2) as feed:
        got = list(feed)
    assert len(got) == len(plan)
    for k, e, g in zip(plan, expected, got):
        assert g.keys() == e.keys()
        for key in e:
            assert g[key].shape == e[key].shape == ((4,) if k == 1 else (k, 4)) + e[key].shape[1 + (k > 1):]
            assert g[key].sharding == e[key].sharding
            np.testing.assert_array_equal(np.asarray(g[key]), np.asarray(e[key]))
    # Step 2 (three stacked batches) holds source positions 1, 2, 3.
    np.testing.assert_array_equal(np.asarray(got[1]["index"])[:, 0], [1, 2, 3])
    assert source.pos == sum(plan)  # nothing read beyond the plan
    assert source.threads == {"prefetch_to_device"}  # read off the caller's thread


def test_state_is_that_of_the_next_batch_to_consume_not_of_the_lookahead():
    mesh = parallel.make_mesh()
    source = Source()
    with prefetch_to_device(source, mesh, [2] * 10, size=3) as feed:
        assert feed.get_state() == {"pos": 0}
        next(feed)
        # The thread fills its queue: 1 consumed + 3 queued steps of 2 batches, + 1 in hand.
        _wait_until(lambda: source.pos >= 8)
        assert feed.get_state() == {"pos": 2}
        next(feed)
        assert feed.get_state() == {"pos": 4}
        # A fresh source set to the saved state yields exactly the next unconsumed step.
        resumed = Source()
        resumed.set_state(feed.get_state())
        np.testing.assert_array_equal(np.asarray(next(feed)["x"]),
                                      np.asarray(global_step_batch(resumed, 2, mesh)["x"]))


def test_synchronous_mode_and_errors_reach_the_consumer_in_order():
    mesh = parallel.make_mesh()
    feed = prefetch_to_device(Source(), mesh, [1, 1], size=0)
    assert [int(np.asarray(b["index"])[0]) for b in feed] == [0, 1]
    source = Source(fail_at=3)
    with prefetch_to_device(source, mesh, [1] * 6, size=2) as feed:
        for i in range(3):  # positions 0-2 arrive before the error raised reading position 3
            assert int(np.asarray(next(feed)["index"])[0]) == i
        with pytest.raises(OSError, match="position 3"):
            next(feed)
        assert feed.get_state() == {"pos": 3}
    with pytest.raises(ValueError, match="prefetch size"):
        prefetch_to_device(Source(), mesh, [1], size=-1)


def test_close_stops_the_thread_while_the_queue_is_full():
    mesh = parallel.make_mesh()
    before = threading.active_count()
    feed = prefetch_to_device(Source(), mesh, [1] * 100, size=2)
    next(feed)
    time.sleep(0.1)  # the producer is now blocked on a full queue
    feed.close()
    assert threading.active_count() == before
    with pytest.raises(StopIteration):
        next(feed)


TX = optax.sgd(0.1)


def _init():
    params = {"w": jnp.zeros((2,))}
    return {"params": params, "opt": TX.init(params)}


def _step(state, batch, rng):
    del rng
    grads = {"w": -jnp.mean(batch["x"], axis=tuple(range(batch["x"].ndim - 1)))}
    updates, opt = TX.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, {"loss": jnp.sum(grads["w"])}


def _run(workdir: str, source: Source):
    """3 steps of 2 stacked batches, then 3 of 1 (9 batches); checkpoints at steps 2, 3, 4, 6."""
    mesh = parallel.make_mesh()
    ckpt = Checkpointer(workdir, keep=5, async_save=False)
    stages = [Stage("pairs", 3, _step, batches_per_step=2), Stage("single", 3, _step)]
    try:
        state, _ = train(state=parallel.replicate(_init(), mesh), stages=stages, train_iter=source, mesh=mesh,
                         checkpointer=ckpt, writer=EventWriter(None),
                         loop=LoopConfig(seed=0, log_every=1, checkpoint_every=2))
    finally:
        ckpt.close()
    return parallel.fetch(state)


def test_train_loop_checkpoints_the_consumed_position_and_resumes_bit_exact(tmp_path):
    straight = _run(str(tmp_path / "a"), Source())
    # Reading position 8 (step 6's batch) fails. By then the prefetch thread has read ahead of
    # the step-4 checkpoint (position 7, then the failure), and the checkpoint must not see it.
    crashing = Source(fail_at=8, delay=0.01)
    with pytest.raises(OSError, match="position 8"):
        _run(str(tmp_path / "b"), crashing)
    assert crashing.pos == 8
    ckpt = Checkpointer(str(tmp_path / "b"))
    assert ckpt.all_steps() == [2, 3, 4]
    for step, consumed in ((2, 4), (3, 6), (4, 7)):
        assert ckpt.restore(jax.eval_shape(_init), step=step)[2] == {"pos": consumed}
    ckpt.close()
    resumed = _run(str(tmp_path / "b"), Source())
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert float(np.asarray(straight["params"]["w"])[0]) > 0  # the steps did move the parameters
