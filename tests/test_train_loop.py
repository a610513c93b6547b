"""The shared training loop: resume equals a straight run, divergence, checkpoints, SIGTERM."""
from __future__ import annotations

import os
import re
import shutil
import signal
import threading
from concurrent.futures import Future

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer, CheckpointError, check_workdir_writable
from anomaly_core.training.event_writer import EventWriter
from anomaly_core.training.train_loop import LoopConfig, Preempted, Stage, TrainingDiverged, compile_ahead, train
from tests.data_fixtures import flip_byte_in_largest_file


class CountingIterator:
    """A deterministic data iterator with Grain's get_state/set_state protocol."""

    def __init__(self, batch: int = 4, dim: int = 3, poison_at: int | None = None):
        self.pos, self.batch, self.dim, self.poison_at = 0, batch, dim, poison_at

    def __next__(self):
        rng = np.random.default_rng(self.pos)
        x = rng.normal(size=(self.batch, self.dim)).astype(np.float32)
        if self.poison_at is not None and self.pos == self.poison_at:
            x[0, 0] = np.nan
        self.pos += 1
        return {"x": x, "y": x.sum(-1, keepdims=True) * 2.0 + 1.0}

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, s):
        self.pos = int(s["pos"])


TX = optax.adam(0.05)


def init_state():
    params = {"w": jnp.zeros((3, 1)), "b": jnp.zeros((1,))}
    return {"params": params, "opt": TX.init(params)}


def fit_step(state, batch, rng):
    noise = 1e-3 * jax.random.normal(rng, batch["y"].shape)

    def loss_fn(p):
        return jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"] - noise) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(state["params"])
    upd, opt = TX.update(g, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], upd), "opt": opt}, {"loss": loss}


def stacked_step(state, batches, rng):
    """Two updates per call on a (2, B, ...) stack, like the fused GAN step."""
    for i in range(2):
        state, m = fit_step(state, jax.tree.map(lambda a: a[i], batches), jax.random.fold_in(rng, i))
    return state, m


def abstract_init_state(mesh):
    rep = parallel.replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), jax.eval_shape(init_state))


def run(workdir, steps, *, poison_at=None, checkpoint_every=4, log_every=2, stages=None, writer=None,
        image_fn=None, image_every=0, health_limits=(), ahead=None):
    """ahead: None (no compilation ahead), True (compile_ahead as the program does it), or a
    callable (stages, mesh, iterator, start) -> the futures to pass."""
    mesh = parallel.make_mesh()
    it = CountingIterator(poison_at=poison_at)
    ckpt = Checkpointer(workdir, keep=2)
    stages = stages or [Stage("a", steps, fit_step)]
    if ahead is True:
        ahead = compile_ahead(stages, mesh, 3, abstract_init_state(mesh), it, start=ckpt.latest_step() or 0)
    elif ahead is not None:
        ahead = ahead(stages, mesh, it, ckpt.latest_step() or 0)
    try:
        state, ran = train(
            ahead=ahead,
            state=parallel.replicate(init_state(), mesh),
            stages=stages,
            train_iter=it,
            mesh=mesh,
            checkpointer=ckpt,
            writer=writer or EventWriter(None),
            loop=LoopConfig(seed=3, log_every=log_every, checkpoint_every=checkpoint_every,
                            image_every=image_every, health_limits=health_limits),
            image_fn=image_fn,
        )
    finally:
        ckpt.close()
    return parallel.fetch(state), ran, it.pos


def test_resume_equals_straight_run(tmp_path):
    straight, ran, _ = run(str(tmp_path / "a"), 12)
    assert ran == 12
    # Interrupted after 8 steps (a checkpoint at 8), then the same command again.
    run(str(tmp_path / "b"), 8)
    resumed, ran2, _ = run(str(tmp_path / "b"), 12)
    assert ran2 == 4
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(x, y)
    # The model actually moved towards the target y = 2 sum(x) + 1.
    b = next(CountingIterator(batch=256))
    loss = lambda p: float(np.mean((b["x"] @ p["w"] + p["b"] - b["y"]) ** 2))
    assert loss(straight["params"]) < 0.7 * loss(init_state()["params"])


def test_rerun_after_completion_does_nothing(tmp_path):
    run(str(tmp_path), 4)
    _, ran, pos = run(str(tmp_path), 4)
    assert ran == 0 and pos == 4  # data iterator state restored, no step taken


def test_stages_and_stacked_batches(tmp_path):
    stages = [Stage("one", 3, fit_step), Stage("two", 2, stacked_step, batches_per_step=2)]
    state, ran, pos = run(str(tmp_path), 0, stages=stages)
    assert ran == 5 and pos == 3 + 2 * 2
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 5
    ckpt.close()


TWO_STAGES = [Stage("one", 3, fit_step), Stage("two", 2, stacked_step, batches_per_step=2)]


def test_steps_compiled_ahead_run_as_the_jitted_steps_would(tmp_path, caplog):
    caplog.set_level("INFO")
    plain, ran, pos = run(str(tmp_path / "a"), 0, stages=TWO_STAGES)
    assert "compiling the 'two' step" in caplog.text
    caplog.clear()
    ahead, ran_ahead, pos_ahead = run(str(tmp_path / "b"), 0, stages=TWO_STAGES, ahead=True)
    assert (ran_ahead, pos_ahead) == (ran, pos) == (5, 7)  # the batch read for the shapes was un-read
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(ahead)):
        np.testing.assert_array_equal(x, y)
    assert "the 'one' step: waiting for its compilation" in caplog.text
    assert "the 'two' step was compiled and ran once" in caplog.text
    assert "compiling the" not in caplog.text and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_compile_ahead_skips_finished_stages_and_keeps_the_data_order():
    mesh = parallel.make_mesh()
    it = CountingIterator()
    it.set_state({"pos": 5})
    futures = compile_ahead(TWO_STAGES, mesh, 3, abstract_init_state(mesh), it, start=3)
    assert set(futures) == {"two"} and it.pos == 5
    compiled = futures["two"].result()
    batch = {k: np.stack([v, v]) for k, v in next(CountingIterator()).items()}
    state, _ = compiled(parallel.replicate(init_state(), mesh), parallel.global_batch(batch, mesh, stacked=True),
                        np.int32(3))
    assert jax.tree.structure(state) == jax.tree.structure(init_state())
    assert compile_ahead(TWO_STAGES, mesh, 3, abstract_init_state(mesh), it, start=5) == {}


def test_a_failed_or_unfitting_compilation_ahead_falls_back_to_the_jit(tmp_path, caplog):
    plain, _, _ = run(str(tmp_path / "a"), 0, stages=TWO_STAGES)

    def failing(stages, mesh, it, start):
        failed = Future()
        failed.set_exception(RuntimeError("out of memory while compiling"))
        # Stage 'two' gets stage 'one''s program, compiled for unstacked batches.
        return {"one": failed, "two": compile_ahead(stages[:1], mesh, 3, abstract_init_state(mesh), it)["one"]}

    fallback, ran, pos = run(str(tmp_path / "b"), 0, stages=TWO_STAGES, ahead=failing)
    assert (ran, pos) == (5, 7)
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(fallback)):
        np.testing.assert_array_equal(x, y)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("compiling the 'one' step ahead failed (RuntimeError: out of memory" in w for w in warnings)
    assert any("the 'two' step compiled ahead does not take this state or batch" in w for w in warnings)


def test_compiling_ahead_tells_whether_a_compilation_still_runs():
    from anomaly_core.training import train_loop

    running = Future()
    train_loop._AHEAD.add(running)
    assert train_loop.compiling_ahead()  # run_mode then says why the process does not exit yet
    running.set_result(None)
    assert not train_loop.compiling_ahead() and running not in train_loop._AHEAD


class SigtermWhileLogging(EventWriter):
    """Sends this process SIGTERM while the metrics of `at_step` are written: after the loop
    has decided whether to checkpoint that step, which is when a real preemption often lands."""

    def __init__(self, at_step: int):
        super().__init__(None)
        self.at_step = at_step

    def write_scalars(self, step, scalars):
        super().write_scalars(step, scalars)
        if step == self.at_step and "loss" in scalars:  # the step's metrics, not the progress report
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_a_step_checkpoints_the_step_it_names_and_resumes(tmp_path):
    # Without the loop's handler, SIGTERM would end the test process itself.
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(Preempted, match="SIGTERM received") as info:
        run(str(tmp_path), 12, checkpoint_every=5, log_every=1, writer=SigtermWhileLogging(3))
    named = int(re.search(r"written at step (\d+)", str(info.value)).group(1))
    assert named in (3, 4)
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == named
    ckpt.close()
    # The resumed run ends where a straight run ends.
    resumed, ran, _ = run(str(tmp_path), 12)
    assert ran == 12 - named
    straight, _, _ = run(str(tmp_path / "straight"), 12)
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(x, y)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became non-finite at step 7"):
        run(str(tmp_path), 12, poison_at=6)
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 4
    restored = ckpt.restore(jax.eval_shape(init_state))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored[1]))
    ckpt.close()


def test_corrupted_latest_checkpoint_falls_back(tmp_path, caplog):
    run(str(tmp_path), 8)
    ckpt_dir = tmp_path / "checkpoints" / "8" / "state"
    for root, _, files in os.walk(ckpt_dir):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    ckpt = Checkpointer(str(tmp_path))
    step, *_ = ckpt.restore(jax.eval_shape(init_state))
    assert step == 4
    assert "step 8" in caplog.text and "unreadable" in caplog.text
    ckpt.close()


def _saved_twice(workdir: str) -> tuple[dict, Checkpointer]:
    """Steps 1 and 2 of a state with a 32x32 array (large enough to be stored as compressed
    array data, as real kernels are, rather than inline in Orbax's checksummed index)."""
    mesh = parallel.make_mesh()
    w = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    state = {"params": {"w": w, "b": np.zeros(3, np.float32)}}
    ckpt = Checkpointer(workdir)
    for s in (1, 2):
        ckpt.save(s, parallel.replicate(jax.tree.map(lambda a: a + s, state), mesh), data_state={"pos": s})
        ckpt.wait()
    return state, ckpt


def test_flipped_byte_in_array_data_is_detected_by_name_and_falls_back(tmp_path, caplog):
    state, ckpt = _saved_twice(str(tmp_path))
    abstract = jax.eval_shape(lambda: state)
    flip_byte_in_largest_file(tmp_path / "checkpoints" / "2" / "state")
    step, restored, data, _ = ckpt.restore(abstract)
    ckpt.close()
    assert step == 1 and data == {"pos": 1}
    np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), state["params"]["w"] + 1)
    assert "checkpoint step 2" in caplog.text and "['params']['w'] (digest differs)" in caplog.text
    assert any(p.startswith("2.unreadable-") for p in os.listdir(tmp_path / "checkpoints"))


def test_corrupted_checkpoint_asked_for_by_step_is_an_error_naming_the_leaf(tmp_path):
    state, ckpt = _saved_twice(str(tmp_path))
    flip_byte_in_largest_file(tmp_path / "checkpoints" / "2" / "state")
    with pytest.raises(CheckpointError, match=r"step 2 .*corrupted.*\['params'\]\['w'\]"):
        ckpt.restore(jax.eval_shape(lambda: state), step=2)
    ckpt.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]  # nothing renamed


def test_changed_data_iterator_state_is_detected_and_falls_back(tmp_path, caplog):
    run(str(tmp_path), 8)
    path = tmp_path / "checkpoints" / "8" / "data" / "metadata"
    assert path.read_text() == '{"pos": 8}'
    path.write_text('{"pos": 9}')  # the position a silent resume would start from
    ckpt = Checkpointer(str(tmp_path))
    step, _, data, _ = ckpt.restore(jax.eval_shape(init_state))
    ckpt.close()
    assert step == 4 and data == {"pos": 4}
    assert "data-iterator state (digest differs)" in caplog.text


def test_checkpoint_without_digests_restores_with_a_warning(tmp_path, caplog):
    mesh = parallel.make_mesh()
    state = parallel.replicate(init_state(), mesh)
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, state, data_state={"pos": 1})
    ckpt.wait()
    meta_path = tmp_path / "checkpoints" / "1" / "meta" / "metadata"
    meta_path.write_text("{}")  # what versions before digests wrote
    step, restored, _, _ = ckpt.restore(jax.eval_shape(init_state))
    ckpt.close()
    assert step == 1 and "no digests" in caplog.text


def test_state_digests_name_every_leaf_and_see_one_bit():
    from anomaly_core.training.checkpointing import state_digests

    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.zeros(2, np.int32)],
            "k": jax.random.key(0)}
    d = state_digests(tree)
    assert sorted(d) == ["['a']", "['b'][0]", "['k']"]
    flipped = np.arange(6, dtype=np.float32).reshape(2, 3)
    flipped.view(np.uint32)[1, 2] ^= 1
    assert state_digests({**tree, "a": flipped})["['a']"] != d["['a']"]
    # dtype and shape are part of the digest, not only the bytes.
    assert state_digests({**tree, "a": np.arange(6, dtype=np.float32)})["['a']"] != d["['a']"]
    assert state_digests({**tree, "b": [np.zeros(2, np.float32)]})["['b'][0]"] != d["['b'][0]"]


def test_all_checkpoints_unreadable_is_a_clear_error(tmp_path):
    run(str(tmp_path), 4)
    shutil.rmtree(tmp_path / "checkpoints" / "4" / "state")
    ckpt = Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint could be restored"):
        ckpt.restore(jax.eval_shape(init_state))
    ckpt.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_readonly_workdir_fails_fast(tmp_path):
    os.chmod(tmp_path, 0o500)
    with pytest.raises(CheckpointError, match="not writable"):
        check_workdir_writable(str(tmp_path / "run"))


def test_unwritable_workdir_fails_fast(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="not writable"):
        check_workdir_writable(str(blocker / "run"))


def test_progress_images_every_n_steps_and_at_stage_ends(tmp_path):
    calls = []
    stages = [Stage("a", 5, fit_step), Stage("b", 3, fit_step)]
    run(str(tmp_path), 8, stages=stages, image_fn=lambda state, stage, step: calls.append((stage, step)),
        image_every=2)
    assert calls == [("a", 2), ("a", 4), ("a", 5), ("b", 6), ("b", 8)]


def test_health_warning_names_metric_steps_and_value(tmp_path, caplog):
    caplog.set_level("WARNING")
    run(str(tmp_path), 4, log_every=2, health_limits=(("loss", 1e-9, "the fit is far off"),))
    warnings = [r.getMessage() for r in caplog.records if "training health" in r.getMessage()]
    assert len(warnings) == 2  # one per logging interval (steps 1-2, 3-4)
    assert re.search(r"loss = [0-9.e+-]+ \(mean of steps 1-2\) is above 1e-09: the fit is far off", warnings[0])
    caplog.clear()
    run(str(tmp_path / "quiet"), 4, log_every=2, health_limits=(("loss", 1e9, "never"),))
    assert not [r for r in caplog.records if "training health" in r.getMessage()]


def test_a_checkpoint_of_other_shapes_is_refused_before_any_read_and_prints_nothing_at_exit(tmp_path):
    """A restore into other shapes (another network width) fails before Orbax reads any
    array: a failed read left the others' reads running past the end of Orbax's event loop,
    and they printed tracebacks at interpreter exit, after the program's own clear error."""
    import subprocess
    import sys

    code = f"""
import logging, jax, numpy as np
from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer
logging.basicConfig(level=logging.WARNING, format="%(message)s")
mesh = parallel.make_mesh()
state = {{f"layer{{i}}": np.full((32, 32), i, np.float32) for i in range(12)}}
ckpt = Checkpointer({str(tmp_path)!r})
ckpt.save(1, parallel.replicate(state, mesh), data_state={{"pos": 1}})
ckpt.wait()
wider = jax.eval_shape(lambda: {{**state, "layer7": np.zeros((64, 32), np.float32)}})
try:
    ckpt.restore(wider, step=1)
except Exception as e:
    print("refused:", type(e).__name__, e)
ckpt.close()
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": root},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused: CheckpointUnusable checkpoint step 1" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[-3000:]
    assert "never retrieved" not in out.stderr, out.stderr[-3000:]
    assert "layer7: stored (32, 32), wanted (64, 32)" in out.stdout, out.stdout
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]  # nothing set aside


def test_shape_mismatch_matches_optimizer_fields_stored_as_dict_keys():
    """Orbax's metadata holds an optax state's NamedTuple fields as dict keys; the check
    must still pair them with the state's fields (keystr alone would miss the mismatch)."""
    from anomaly_core.training.checkpointing import shape_mismatch

    sds = jax.ShapeDtypeStruct
    wanted = jax.eval_shape(lambda: {"opt": optax.adam(0.1).init({"w": jnp.zeros(3)})})
    stored = {"opt": [{"count": sds((), jnp.int32), "mu": {"w": sds((4,), jnp.float32)},
                       "nu": {"w": sds((3,), jnp.float32)}}, {}]}
    assert shape_mismatch(stored, wanted) == "opt/0/mu/w: stored (4,), wanted (3,)"
    stored["opt"][0]["mu"]["w"] = sds((3,), jnp.float32)
    assert shape_mismatch(stored, wanted) is None
