"""Interrupted and failing runs through launch.py: SIGKILL, SIGTERM, corrupt checkpoints,
divergence, a full or read-only disk. Nothing may be lost: a resumed run ends bit for bit
where a straight run ends.

Runs are launch.py processes forked from a server that imported the program once
(`fault_drill.Launcher('fork')`), so each starts in about a second instead of ~20 s.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer
from anomaly_core.training.event_writer import EventWriter
from anomaly_core.training.train_loop import LoopConfig, Stage, train
from tests.data_fixtures import flip_byte_in_largest_file
from tools import fault_drill

pytestmark = pytest.mark.faults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 24, 2
CONFIG = [
    "--config=configs/gon_quickstart.py:digits",  # GON digits shrunk: 28x28, ngf 4, batch 4
    "--config.model.ngf=4",
    f"--config.train.steps={STEPS}",
    "--config.train.batch_size=4",
    f"--config.train.checkpoint_every={EVERY}",
    "--config.train.log_every=1",
    "--config.eval.batch_size=16",
    "--config.eval.max_panels=1",
    "--config.data.digits_per_anomalous_class=1",
    "--config.data.digits_test_fraction=0.1",
]


@pytest.fixture(scope="module")
def launcher():
    return fault_drill.Launcher("fork", cwd=ROOT)


@pytest.fixture(scope="module")
def drill(launcher, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("drill"))
    report = fault_drill.drill(CONFIG, root, kills=10, seed=0, launcher=launcher, timeout=300)
    print(report.summary())
    return root, report


@pytest.fixture(scope="module")
def reference(drill):
    workdir = os.path.join(drill[0], "reference")
    return workdir, fault_drill.final_outputs(CONFIG, workdir)


def run(launcher, workdir, log_path, *extra, timeout=300):
    code, text = launcher.run([*CONFIG, f"--workdir={workdir}", *extra], str(log_path), timeout=timeout)
    return code, text


def test_sigkill_ten_times_then_resume_is_bit_identical(drill, reference):
    _, report = drill
    kills = report.kills
    mid_write = sum(k.during_write for k in kills)
    print(f"kills: tried {report.sent}, resumed OK {report.resumed_ok}, during a checkpoint write {mid_write}, "
          f"resumed from steps {[k.resumed_from for k in kills]}")
    assert report.sent == 10, report.summary()
    assert report.resumed_ok == 10, report.summary()
    assert mid_write >= 1, "no kill landed during an asynchronous checkpoint write:\n" + report.summary()
    assert any(k.resumed_from for k in kills), "no rerun resumed from a checkpoint:\n" + report.summary()
    assert report.final_code == 0 and report.diffs == [], report.summary()
    assert reference[1].step == STEPS


def test_drill_report_names_the_log_and_traceback_of_a_rerun_that_failed():
    """A rerun counted as failed shows why in the summary (a flaky drill can be diagnosed
    from the test's output alone)."""
    text = "12:00 resumed from checkpoint step 4 of 24\nException ignored in: <coroutine x>\n" \
           "Traceback (most recent call last):\n  File \"a.py\", line 1\nRuntimeError: boom\n"
    problem = fault_drill._problem(0, "/runs/logs/interrupted_03.log", text)
    assert problem == ("exit code 0, log /runs/logs/interrupted_03.log\n    Exception ignored in: <coroutine x>\n"
                       "    Traceback (most recent call last):\n      File \"a.py\", line 1\n    RuntimeError: boom")
    kills = [fault_drill.Kill("time", 0.5, sent=True, next_run_ok=True),
             fault_drill.Kill("time", 0.5, sent=True, next_run_problem=problem)]
    summary = fault_drill.DrillReport(kills, 1.0, 2, 0, []).summary()
    assert "kill 1's next run: exit code 0, log /runs/logs/interrupted_03.log" in summary
    assert "RuntimeError: boom" in summary and "kill 0's next run" not in summary
    assert fault_drill._problem(1, "x.log", "no traceback") == "exit code 1, log x.log"


@pytest.mark.parametrize("signum,code,name", [(signal.SIGTERM, 143, "SIGTERM"),
                                              (signal.SIGINT, 130, r"Ctrl-C \(SIGINT\)")])
def test_sigterm_or_ctrl_c_writes_a_checkpoint_and_resumes(launcher, reference, tmp_path, signum, code, name):
    workdir = str(tmp_path / "run")
    child = launcher.start([*CONFIG, f"--workdir={workdir}"], str(tmp_path / "first.log"))
    assert child.wait_for(fault_drill.PROGRESS, 300), child.log()[-3000:]
    child.send_signal(signum)
    assert child.wait(300) == code, child.log()[-3000:]
    m = re.search(name + r" received: checkpoint written at step (\d+)", child.log())
    assert m, child.log()[-3000:]
    assert "Traceback" not in child.log()
    step, arrays, _ = fault_drill.restore_checkpoint(CONFIG, workdir)
    assert step == int(m.group(1)) < STEPS
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")

    code, text = run(launcher, workdir, tmp_path / "second.log")
    assert code == 0, text[-3000:]
    assert f"resumed from checkpoint step {step} of {STEPS}" in text
    assert fault_drill.differences(reference[1], fault_drill.final_outputs(CONFIG, workdir)) == []


def _garble_step(step_dir: str) -> None:
    """Truncates or overwrites with random bytes every file of a checkpoint's state and meta."""
    rng = np.random.default_rng(0)
    files = sorted(os.path.join(r, f) for item in ("state", "meta")
                   for r, _, fs in os.walk(os.path.join(step_dir, item)) for f in fs)
    assert files
    for i, path in enumerate(files):
        size = os.path.getsize(path)
        if i % 2:
            with open(path, "wb") as f:
                f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        else:
            os.truncate(path, size // 2)


def test_corrupt_latest_checkpoint_falls_back_and_finishes_identically(launcher, reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir, symlinks=True)
    ckpts = os.path.join(workdir, "checkpoints")
    steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert steps[-1] == STEPS and STEPS - EVERY in steps
    _garble_step(os.path.join(ckpts, str(STEPS)))
    # A write that never finished (the process died): a tmp folder with a partial state.
    partial = os.path.join(ckpts, f"{STEPS + EVERY}.orbax-checkpoint-tmp", "state")
    os.makedirs(partial)
    with open(os.path.join(partial, "_METADATA"), "w") as f:
        f.write('{"tree_metadata": {')

    code, text = run(launcher, workdir, tmp_path / "rerun.log")
    assert f"checkpoint step {STEPS} in {ckpts} is unreadable" in text, text[-3000:]
    assert "falling back to an earlier checkpoint" in text
    assert f"resumed from checkpoint step {STEPS - EVERY} of {STEPS}" in text
    assert code == 0, text[-3000:]
    # The garbled checkpoint is kept for inspection under another name, out of the way of the
    # resumed run, which saved step STEPS again.
    assert f"moved the unreadable checkpoint {os.path.join(ckpts, str(STEPS))} to" in text
    assert [d for d in os.listdir(ckpts) if d.startswith(f"{STEPS}.unreadable-")], os.listdir(ckpts)
    assert fault_drill.differences(reference[1], fault_drill.final_outputs(CONFIG, workdir)) == []


def _eval_files(workdir: str) -> dict[str, bytes]:
    folder = os.path.join(workdir, "eval")
    return {os.path.relpath(os.path.join(r, f), folder): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(folder) for f in fs}


def _scores_agree_with_threshold(files: dict[str, bytes]) -> None:
    import csv
    import io
    import json

    threshold = json.loads(files["metrics.json"])["thresholds"]["image"]["value"]
    rows = list(csv.DictReader(io.StringIO(files["scores.csv"].decode())))
    assert rows and all(int(r["predicted_label"]) == int(float(r["score"]) > threshold) for r in rows)


def test_eval_killed_while_writing_leaves_the_previous_outputs_whole(launcher, reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir, symlinks=True)
    before = _eval_files(workdir)
    assert "scores.csv" in before and "metrics.json" in before
    _scores_agree_with_threshold(before)
    # Re-evaluate with more panels (a longer write) and SIGKILL it once its new outputs are
    # being written, as the earlier layout wrote them beside the previous run's.
    args = [*CONFIG, f"--workdir={workdir}", "--mode=eval", "--config.eval.max_panels=40"]
    child = launcher.start(args, str(tmp_path / "eval.log"))
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if [d for d in os.listdir(workdir) if d.startswith("eval.partial-")]:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    assert child.wait(60) == -signal.SIGKILL, child.log()[-3000:]
    assert _eval_files(workdir) == before  # the previous complete set, untouched
    # The next evaluation clears the leftover and publishes a complete set of its own.
    code, text = run(launcher, workdir, tmp_path / "eval2.log", "--mode=eval", "--config.eval.max_panels=40")
    assert code == 0, text[-3000:]
    assert not [d for d in os.listdir(workdir) if d.startswith("eval.")], os.listdir(workdir)
    after = _eval_files(workdir)
    _scores_agree_with_threshold(after)
    assert after["metrics.json"] == before["metrics.json"] and after["scores.csv"] == before["scores.csv"]
    assert len([n for n in after if n.startswith("panels/")]) > len([n for n in before if n.startswith("panels/")])


def test_flipped_byte_in_newest_checkpoint_is_detected_and_eval_falls_back(launcher, reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir, symlinks=True)
    ckpts = os.path.join(workdir, "checkpoints")
    flip_byte_in_largest_file(os.path.join(ckpts, str(STEPS), "state"))  # compressed kernel data, no checksum
    code, text = run(launcher, workdir, tmp_path / "eval.log", "--mode=eval", "--config.eval.checkpoint=latest")
    assert code == 0, text[-3000:]
    assert re.search(rf"checkpoint step {STEPS} in \S+ is corrupted: .*digest differs", text), text[-3000:]
    assert "falling back to an earlier checkpoint" in text
    metrics = json.loads(open(os.path.join(workdir, "eval", "metrics.json")).read())
    assert metrics["evaluation"]["train_steps"] == STEPS - EVERY


def test_divergence_exits_3_naming_step_and_loss_and_keeps_last_good_checkpoint(launcher, reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir, symlinks=True)
    good = STEPS - 2 * EVERY
    ckpts = os.path.join(workdir, "checkpoints")
    for d in os.listdir(ckpts):
        if not d.isdigit() or int(d) > good:
            shutil.rmtree(os.path.join(ckpts, d))
    # A deliberate change of the run's learning rate: --allow_changes (else the resume is refused).
    code, text = run(launcher, workdir, tmp_path / "diverge.log", "--config.train.lr=1e30", "--allow_changes")
    assert code == 3, text[-3000:]
    m = re.search(r"error: training diverged: ([\w, ]+) became non-finite at step (\d+)", text)
    assert m, text[-3000:]
    assert "loss" in m.group(1) and good < int(m.group(2)) <= good + EVERY
    assert f"last good checkpoint (step {good})" in text
    assert "Traceback" not in text
    step, arrays, data_state = fault_drill.restore_checkpoint(CONFIG, workdir)
    ref_step, ref_arrays, ref_data = fault_drill.restore_checkpoint(CONFIG, reference[0], step=good)
    assert step == ref_step == good and data_state == ref_data
    assert all(arrays[k].tobytes() == ref_arrays[k].tobytes() for k in ref_arrays)


@contextlib.contextmanager
def tmpfs(path: str, options: str):
    os.makedirs(path)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (root ignores chmod, so no unprivileged read-only folder)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


@pytest.mark.parametrize("case, options, reason", [
    ("full", "size=64k", "No space left on device"),
    ("readonly", "ro,size=64k", "Read-only file system"),
])
def test_full_or_readonly_disk_is_a_clear_error_before_training(launcher, tmp_path, case, options, reason):
    with tmpfs(str(tmp_path / case), options) as mnt:
        workdir = os.path.join(mnt, "run")
        code, text = run(launcher, workdir, tmp_path / "run.log")
    assert code == 2, text[-3000:]
    assert f"error: --workdir={workdir!r} is not writable ({reason})" in text, text[-3000:]
    assert "Traceback" not in text and "step 1/" not in text  # not a single training step


def test_disk_full_mid_run_is_a_clear_error_and_the_run_resumes_after(launcher, tmp_path):
    with tmpfs(str(tmp_path / "disk"), "size=64m") as mnt:
        workdir = os.path.join(mnt, "run")
        args = [*CONFIG, f"--workdir={workdir}", "--config.train.steps=400"]
        child = launcher.start(args, str(tmp_path / "full.log"))
        deadline = time.monotonic() + 300
        while child.poll() is None and time.monotonic() < deadline:
            if os.path.isdir(os.path.join(workdir, "checkpoints", str(2 * EVERY))):
                break
            time.sleep(0.005)
        filler = os.path.join(mnt, "filler")
        with contextlib.suppress(OSError), open(filler, "wb") as f:  # the disk fills up while the run trains
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        code = child.wait(300)
        text = child.log()
        assert code == 2, text[-3000:]
        m = re.search(r"error: writing checkpoints in \S+ failed by step (\d+) \(No space left on device\); the "
                      r"checkpoints written before \(newest: step (\d+)\) are kept", text)
        assert m, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        if os.path.exists(filler):
            os.remove(filler)  # space again: the same command resumes from the newest good checkpoint
        code, text = launcher.run(args, str(tmp_path / "resume.log"), timeout=300)
        assert code == 0, text[-3000:]
        assert re.search(r"resumed from checkpoint step \d+ of 400", text), text[-3000:]


def test_workdir_under_a_file_is_a_clear_error(launcher, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, text = run(launcher, str(blocker / "run"), tmp_path / "run.log")
    assert code == 2, text[-3000:]
    assert f"--workdir={str(blocker / 'run')!r} is not writable" in text and "Traceback" not in text


def test_drill_command_line():
    """What a user types: `--help` works, and a stray argument is refused before any run."""
    cmd = [sys.executable, "-m", "tools.fault_drill"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "--kills" in out.stdout and "--spawn {fork,exec}" in out.stdout, out.stderr
    out = subprocess.run([*cmd, "--config=configs/gon_quickstart.py:digits", "--workdir=/nonexistent/x",
                          "--kills=0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "--kills=0 must be >= 1" in out.stderr, out.stderr
    out = subprocess.run([*cmd, "--config=c.py", "--workdir=w", "--bogus=1"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "unrecognised arguments: ['--bogus=1']" in out.stderr, out.stderr


def test_differences_sees_one_changed_bit():
    """The drill's comparison is what makes its 'bit-identical' verdict worth anything."""
    arrays = {"['w']": np.array([1.0, -0.0, 3.5], np.float32)}
    a = fault_drill.Outputs(4, arrays, {"pos": 8}, {"scores.csv": b"x,0.5\n"})
    assert fault_drill.differences(a, a) == []
    flipped = arrays["['w']"].copy()
    flipped.view(np.uint32)[2] ^= 1  # 3.5 -> its float32 neighbour
    b = fault_drill.Outputs(4, {"['w']": flipped}, {"pos": 8}, {"scores.csv": b"x,0.5\n"})
    assert fault_drill.differences(a, b) == ["state['w']: 1 of 3 elements differ"]
    zero = arrays["['w']"].copy()
    zero[1] = 0.0  # +0.0 == -0.0 numerically, but not bit for bit
    c = fault_drill.Outputs(4, {"['w']": zero}, {"pos": 9}, {"scores.csv": b"x,0.50\n"})
    assert fault_drill.differences(a, c) == [
        "state['w']: 1 of 3 elements differ", "data iterator state {'pos': 8} != {'pos': 9}", "scores.csv differs"]


def test_stage_without_the_best_metric_survives_checkpoint_cleanup(tmp_path):
    """f-UNetGAN's shape: validation ('e_loss') only in the second stage, and more first-stage
    checkpoints than `keep`. Orbax's best-checkpoint policy reads the metric of every
    checkpoint when it cleans up; one saved with metrics={} instead of None raised
    KeyError('e_loss') at the second checkpoint of every real f-UNetGAN run."""
    tx = optax.sgd(0.1)

    def step(state, batch, rng):
        loss, g = jax.value_and_grad(lambda w: jnp.mean((batch["x"] * w - 1.0) ** 2))(state["w"])
        upd, opt = tx.update(g, state["opt"])
        return {"w": optax.apply_updates(state["w"], upd), "opt": opt}, {"loss": loss}

    class Batches:
        pos = 0

        def __next__(self):
            self.pos += 1
            return {"x": np.full((2, 1), float(self.pos), np.float32)}

        def get_state(self):
            return {"pos": self.pos}

        def set_state(self, s):
            self.pos = s["pos"]

    def validate(state, stage):
        return {} if stage == "a" else {"e_loss": float(jnp.sum(state["w"] ** 2))}

    mesh = parallel.make_mesh()
    w = jnp.zeros((1,))
    ckpt = Checkpointer(str(tmp_path), keep=2, best_metric="e_loss")
    try:
        _, ran = train(state=parallel.replicate({"w": w, "opt": tx.init(w)}, mesh),
                       stages=[Stage("a", 6, step), Stage("b", 4, step)], train_iter=Batches(), mesh=mesh,
                       checkpointer=ckpt, writer=EventWriter(None),
                       loop=LoopConfig(log_every=2, checkpoint_every=2, best_metric="e_loss"), validation_fn=validate)
        steps = ckpt.all_steps()
    finally:
        ckpt.close()
    assert ran == 10 and steps[-2:] == [8, 10]


@contextlib.contextmanager
def immutable(path: str):
    """`chattr +i path`: no file can be created, renamed or removed in it, also by root
    (which chmod does not stop)."""
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", path], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (needs root and a file system with attributes)")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", path], check=False)


def test_unwritable_checkpoints_folder_mid_run_exits_within_seconds(launcher, tmp_path):
    """Issue 29, item 7: the failed write ended the run with one line, then the process sat
    300 s in Orbax's background threads before exiting."""
    workdir = str(tmp_path / "run")
    args = [*CONFIG, f"--workdir={workdir}", "--config.train.steps=400"]
    child = launcher.start(args, str(tmp_path / "run.log"))
    ckpts = os.path.join(workdir, "checkpoints")
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if os.path.isdir(os.path.join(ckpts, str(2 * EVERY))):
            break
        time.sleep(0.005)
    with immutable(ckpts):
        start = time.monotonic()
        code = child.wait(300)
        took = time.monotonic() - start
    text = child.log()
    print(f"\nunwritable checkpoints folder: exit {code} {took:.1f} s after it became unwritable")
    assert code == 2, text[-3000:]
    assert re.search(r"error: writing checkpoints in \S+ failed by step \d+ \(Operation not permitted\); the "
                     r"checkpoints written before \(newest: step \d+\) are kept", text), text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert took < 15, f"exited {took:.0f} s after the checkpoints folder became unwritable"


def test_full_disk_at_the_last_tensorboard_events_is_one_warning_no_traceback(tmp_path):
    """Issue 29, item 10: tensorboardX closes its event files again at exit and printed the
    failed flush as a 14-line traceback after the program's message."""
    code = f"""
import errno, sys
from anomaly_core.program import program
from anomaly_core.run import run
from anomaly_core.training.event_writer import EventWriter

run.quiet_library_logs()
writer = EventWriter({str(tmp_path)!r})
writer.write_scalars(1, {{"loss": 1.0}})

def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

for files in writer._tb.all_writers.values():  # the disk is full from now on
    files.event_writer._ev_writer.flush = full
program._close(writer)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "could not write the last TensorBoard events: [Errno 28] No space left on device" in out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[-3000:]
