"""What a run prints and writes for people: progress lines whose speed excludes compilation,
TensorBoard event files without TensorFlow, the compact console and the log file."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from anomaly_core.run import console
from anomaly_core.training.event_writer import EventWriter
from anomaly_core.training.progress import Progress, format_duration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_after_a_long_first_step_comes_from_step_time_only():
    clock = Clock()
    p = Progress(total=420, start=0, clock=clock)
    p.first_step_started("adversarial")
    clock.t += 300.0  # compiling the step: five minutes
    p.first_step_done("adversarial", 1)
    for done in range(2, 21):  # 19 more steps of 0.5 s each
        clock.t += 0.5
        p.step_done(done)
    line = p.line(20, "adversarial", {"d_loss": 1.25, "g_loss": -0.5})
    assert p.rate() == pytest.approx(2.0)
    assert line == "step 20/420 [adversarial] d_loss=1.25 g_loss=-0.5 | 2 steps/s | ETA 3 min 20 s"
    # A checkpoint and a validation pass (30 s) do not slow the measured speed either.
    with p.excluded():
        clock.t += 30.0
    for done in range(21, 41):
        clock.t += 0.5
        p.step_done(done)
    assert p.line(40, "adversarial", {}).endswith("| 2 steps/s | ETA 3 min 10 s")


def test_progress_before_any_counted_step_says_so():
    clock = Clock()
    p = Progress(total=10, start=4, clock=clock)
    p.first_step_started("gon")
    clock.t += 50
    p.first_step_done("gon", 5)
    assert p.line(5, "gon", {"loss": 0.1}) == "step 5/10 [gon] loss=0.1 | speed after the first steps"


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 65, 3600 * 2 + 7 * 60 + 3)] == ["4 s", "1 min 05 s", "2 h 07 min"]


def test_event_files_are_read_by_tensorboard(tmp_path):
    writer = EventWriter(str(tmp_path))
    writer.write_scalars(3, {"loss": np.float32(0.5), "gp": 2.0})
    writer.write_scalars(4, {"loss": 0.25})
    writer.write_images(4, {"progress/samples": np.zeros((1, 8, 12, 3), np.uint8)})
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["gp", "loss"]
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(3, 0.5), (4, 0.25)]
    (image,) = acc.Images("progress/samples")
    assert (image.step, image.width, image.height) == (4, 12, 8)


def test_compact_console_and_full_log_file(tmp_path):
    root = logging.getLogger()
    stream = logging.StreamHandler()
    root.addHandler(stream)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        path = console.setup(str(tmp_path), verbose=False)
        record = logging.LogRecord("anomaly_core.training.train_loop", logging.WARNING, __file__, 1, "penalty high", (), None)
        assert stream.format(record).split(" ", 1)[1] == "warning: penalty high"
        scalars = logging.LogRecord("anomaly_core.scalars", logging.INFO, __file__, 1, "[3] loss=0.5", (), None)
        assert not stream.filter(scalars)  # console: progress lines instead
        logging.getLogger("anomaly_core.scalars").info("[3] loss=0.5")
        for h in root.handlers:
            h.flush()
        assert "[3] loss=0.5" in open(path).read()  # the log file keeps every scalar
    finally:
        root.removeHandler(stream)
        for p, h in list(console._FILE_HANDLERS.items()):
            root.removeHandler(h)
            h.close()
            del console._FILE_HANDLERS[p]
        root.setLevel(old_level)


# Every import of these packages fails (a loader that raises), as if they were absent; a
# mere presence check (importlib.util.find_spec) still sees them, so the test catches real
# imports only.
BLOCK_TENSORFLOW = """
import importlib.machinery, runpy, sys
class Blocked:
    def create_module(self, spec):
        raise ImportError(f'{spec.name} is not installed in the default install (blocked by the test)')
    def exec_module(self, module):
        pass
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'torch'):
            return importlib.machinery.ModuleSpec(name, Blocked())
sys.meta_path.insert(0, Finder())
sys.argv = ['launch.py'] + sys.argv[1:]
runpy.run_path('launch.py', run_name='__main__')
"""


def test_a_run_needs_neither_tensorflow_nor_torch(tmp_path):
    """The main job's path (data, training, checkpoints, TensorBoard, evaluation, report) with
    every import of tensorflow, tensorflow_datasets and torch refused."""
    workdir = str(tmp_path / "run")
    cmd = [sys.executable, "-c", BLOCK_TENSORFLOW, "--config=configs/gon_quickstart.py:digits",
           f"--workdir={workdir}", "--config.model.ngf=4", "--config.train.batch_size=4",
           "--config.train.steps=4", "--config.train.checkpoint_every=2", "--config.train.log_every=2",
           "--config.eval.batch_size=16", "--config.data.digits_per_anomalous_class=1",
           "--config.data.digits_test_fraction=0.1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stderr
    assert "the 'conv_gon' step: waiting for its compilation" in text and "step 4/4 [conv_gon]" in text, text[-3000:]
    assert "Very slow compile" not in text and "] [2] " not in text  # compact console
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(workdir)
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [2, 4]
    assert "[2] latent_norm=" in open(os.path.join(workdir, "log.txt")).read()
    assert os.path.exists(os.path.join(workdir, "eval", "metrics.json"))


def test_corrupted_mnist_without_tensorflow_names_the_extra(monkeypatch):
    from anomaly_core.data import mnist_corrupted
    from anomaly_core.data.records import DataError

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    mnist_corrupted.load_tfds_images.cache_clear()
    with pytest.raises(DataError, match=r"pip install -e '\.\[mnist\]'"):
        mnist_corrupted.load_tfds_images("identity", "train", "", False)
    mnist_corrupted.load_tfds_images.cache_clear()
