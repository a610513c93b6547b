r"""Fault drill: kill a training run at random points and check that nothing is lost.

  python -m tools.fault_drill --config=configs/gon_quickstart.py:digits \
      --workdir=/tmp/drill --kills=10 --config.model.ngf=4 --config.train.steps=24 \
      --config.train.checkpoint_every=2 --config.train.log_every=1

1. 'reference': one straight `launch.py --mode=train` run.
2. 'interrupted': the same command, SIGKILLed `--kills` times at seeded random points
   after it prints its first progress line: either a random time offset, or the moment an
   asynchronous checkpoint write is seen in progress (an `*.orbax-checkpoint-tmp*` folder
   under `<workdir>/checkpoints`). After every kill the same command is run again (it
   resumes); after the last kill it runs to completion. A kill whose run ends before its
   kill point is passed on to the next rerun.
3. The final checkpoints (every array byte, the data-iterator state), `scores.csv` and
   `metrics.json` of both runs are compared bit for bit; a summary is printed and the exit
   code is 0 only when they are identical and every rerun resumed without an error.

Every `--config.*` argument is passed to launch.py unchanged. `--spawn=fork` (default)
forks each run from a server process that has imported the program once, so a run starts
in about a second instead of the ~20 s of importing TensorFlow/JAX on a small machine; the
run is still a separate process executing launch.py, killed with SIGKILL. `--spawn=exec`
starts a fresh `python launch.py` each time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO_ROOT, "launch.py")
TMP_MARKER = ".orbax-checkpoint-tmp"
# A progress line "step <done>/<total> [<stage>] ...": printed once per log_every steps by any method.
PROGRESS = re.compile(r"step (\d+)/\d+ \[\w+\] ")
RESUMED = re.compile(r"resumed from checkpoint step (\d+)")
# Where kill offsets count from: the first progress line, or a resume with no step left to run
# (that run only evaluates, and kills then land in the evaluation).
ANCHOR = re.compile(PROGRESS.pattern + r"|resumed from checkpoint step (\d+) of \2 ")
_RETRIES = 3  # reruns a kill is passed on to when the run ends before its kill point
FELL_BACK = re.compile(r"checkpoint step (\d+) in \S+ is unreadable")
_PRELOAD = ["absl.app", "ml_collections", "numpy", "jax", "flax.linen", "optax", "grain",
            "orbax.checkpoint", "tensorboardX", "sklearn.datasets", "matplotlib.pyplot",
            "anomaly_core.run.run", "anomaly_core.program.program", "gon_jax.train", "funetgan_jax.train"]


# ----------------------------------------------------------------------------------------
# Starting launch.py runs as separate processes


def _forked_launch(args: list[str], log_path: str, cwd: str, env: dict[str, str]) -> None:
    """Body of a forked run: stdout and stderr to `log_path`, then launch.py as __main__."""
    import runpy

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.chdir(cwd)
    os.environ.update(env)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # as `python launch.py` would: its folder first
    sys.argv = [LAUNCH, *args]
    runpy.run_path(LAUNCH, run_name="__main__")  # ends in sys.exit(code)


class Child:
    """A running launch.py process whose output goes to `log_path`."""

    def __init__(self, handle: Any, log_path: str, argv: list[str]):
        self._handle = handle
        self.log_path = log_path
        self.argv = argv

    @property
    def pid(self) -> int:
        return self._handle.pid

    def poll(self) -> int | None:
        """Exit code (negative: killed by that signal) or None while running."""
        if isinstance(self._handle, subprocess.Popen):
            return self._handle.poll()
        return self._handle.exitcode

    def wait(self, timeout: float | None = None) -> int:
        if isinstance(self._handle, subprocess.Popen):
            return self._handle.wait(timeout)
        self._handle.join(timeout)
        if self._handle.exitcode is None:
            raise subprocess.TimeoutExpired(self.argv, timeout)
        return self._handle.exitcode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match | None:
        """First match of `pattern` in the log; None when the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.poll() is not None
            m = pattern.search(self.log())
            if m or exited:
                return m
            time.sleep(0.01)
        return None


class Launcher:
    """Starts `launch.py <args>` in a separate process ('fork' or 'exec', see the module doc)."""

    def __init__(self, spawn: str = "fork", cwd: str | None = None, env: dict[str, str] | None = None):
        if spawn not in ("fork", "exec"):
            raise ValueError(f"--spawn={spawn!r} must be 'fork' or 'exec'")
        self.spawn = spawn
        self.cwd = cwd or os.getcwd()
        self.env = dict(env or {})
        if spawn == "fork":
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(_PRELOAD)

    def start(self, args: Sequence[str], log_path: str) -> Child:
        args = list(args)
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        open(log_path, "ab").close()
        if self.spawn == "exec":
            with open(log_path, "ab") as log:
                proc = subprocess.Popen([sys.executable, LAUNCH, *args], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
            return Child(proc, log_path, args)
        proc = self._ctx.Process(target=_forked_launch, args=(args, log_path, self.cwd, self.env))
        proc.start()
        return Child(proc, log_path, args)

    def run(self, args: Sequence[str], log_path: str, timeout: float = 600) -> tuple[int, str]:
        """Runs to the end: (exit code, log text)."""
        child = self.start(args, log_path)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
            raise RuntimeError(f"launch.py {' '.join(args)} did not finish in {timeout} s (log: {log_path})")
        return code, child.log()


# ----------------------------------------------------------------------------------------
# Results of a finished run


def load_config(config_args: Sequence[str]):
    """The config launch.py builds from the same `--config=...` and `--config.*` arguments."""
    from absl import flags
    from ml_collections import config_flags

    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # config files import `configs.*`, as under launch.py
    fv = flags.FlagValues()
    argv = ["fault_drill", *config_args]
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


@dataclasses.dataclass
class Outputs:
    """What a finished training run leaves behind, for exact comparison."""

    step: int
    arrays: dict[str, np.ndarray]  # state leaves by key path
    data_state: dict
    files: dict[str, bytes]  # scores.csv, metrics.json


def restore_checkpoint(config_args: Sequence[str], workdir: str, step: int | None = None
                       ) -> tuple[int, dict[str, np.ndarray], dict]:
    """(step, state arrays by key path, data-iterator state) of the newest readable checkpoint
    of `workdir` (or of `step`), restored into the method's state shapes as launch.py would."""
    import jax

    from anomaly_core.program import methods, program
    from anomaly_core.training import parallel
    from anomaly_core.training.checkpointing import Checkpointer

    config = load_config(config_args)
    mesh = parallel.make_mesh()
    ckpt = Checkpointer(workdir)
    try:
        restored = ckpt.restore(program.abstract_state(methods.for_config(config), config, mesh), step=step)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    step, state, data_state, _ = restored
    flat = jax.tree_util.tree_flatten_with_path(parallel.fetch(state))[0]
    return step, {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}, data_state


def final_outputs(config_args: Sequence[str], workdir: str) -> Outputs:
    """The newest checkpoint of a finished run and its `scores.csv` and `metrics.json`."""
    step, arrays, data_state = restore_checkpoint(config_args, workdir)
    files = {}
    for name in ("scores.csv", "metrics.json"):
        with open(os.path.join(workdir, "eval", name), "rb") as f:
            files[name] = f.read()
    return Outputs(step, arrays, data_state, files)


def differences(a: Outputs, b: Outputs) -> list[str]:
    """Every way `b` differs from `a`, bit for bit ([] when identical)."""
    out = []
    if a.step != b.step:
        out.append(f"final step {a.step} != {b.step}")
    if a.arrays.keys() != b.arrays.keys():
        out.append(f"state keys differ: {sorted(a.arrays.keys() ^ b.arrays.keys())[:5]}")
    for k in sorted(a.arrays.keys() & b.arrays.keys()):
        x, y = a.arrays[k], b.arrays[k]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            if x.shape != y.shape or x.dtype != y.dtype:
                out.append(f"state{k}: {x.dtype}{list(x.shape)} != {y.dtype}{list(y.shape)}")
                continue
            bits = np.dtype(f"u{x.dtype.itemsize}")  # compares -0.0 with 0.0, and NaN payloads, too
            n = int(np.sum(np.ascontiguousarray(x).view(bits) != np.ascontiguousarray(y).view(bits)))
            out.append(f"state{k}: {n} of {x.size} elements differ")
    if a.data_state != b.data_state:
        out.append(f"data iterator state {a.data_state} != {b.data_state}")
    for name in a.files:
        if a.files[name] != b.files.get(name):
            out.append(f"{name} differs")
    return out


# ----------------------------------------------------------------------------------------
# The drill


@dataclasses.dataclass
class Kill:
    mode: str  # 'time' (an offset after the first progress line) | 'write' (during a checkpoint write)
    # 'time': where the kill falls, as a fraction of its window (see `drill`), in [0, 1).
    fraction: float
    offset_s: float | None = None  # once sent: seconds after the first progress line
    sent: bool = False  # False when the run finished (or failed) before the kill point
    last_step_logged: int | None = None
    during_write: bool = False  # a checkpoint tmp folder of this run existed when the process died
    resumed_from: int | None = None  # step the next run resumed from (None: started afresh)
    fell_back_from: list[int] = dataclasses.field(default_factory=list)
    next_run_ok: bool = False  # the next run resumed and then ran, was killed, or finished with 0
    next_run_problem: str = ""  # when not next_run_ok: its exit code, log and first traceback lines


@dataclasses.dataclass
class DrillReport:
    kills: list[Kill]
    reference_seconds: float
    reruns: int
    final_code: int
    diffs: list[str]

    @property
    def sent(self) -> int:
        return sum(k.sent for k in self.kills)

    @property
    def resumed_ok(self) -> int:
        return sum(k.sent and k.next_run_ok for k in self.kills)

    @property
    def ok(self) -> bool:
        return self.final_code == 0 and not self.diffs and self.resumed_ok == self.sent

    def summary(self) -> str:
        lines = [f"{'#':>3} {'mode':5} {'at_s':>6} {'step':>5} {'mid-write':>9} {'resumed':>7} {'fallback':>8} ok"]
        for i, k in enumerate(self.kills):
            at = "-" if k.offset_s is None else f"{k.offset_s:.2f}"
            lines.append(
                f"{i:>3} {k.mode:5} {at:>6} {str(k.last_step_logged):>5} {str(k.during_write):>9} "
                f"{str(k.resumed_from):>7} {','.join(map(str, k.fell_back_from)) or '-':>8} "
                f"{'yes' if k.next_run_ok else 'NO'}" + ("" if k.sent else "  (the runs ended before the kill)"))
        lines += [f"kill {i}'s next run: {k.next_run_problem}" for i, k in enumerate(self.kills)
                  if k.sent and k.next_run_problem]
        lines.append(
            f"kills sent {self.sent} of {len(self.kills)} planned ({sum(k.during_write for k in self.kills)} "
            f"during a checkpoint write), resumed OK {self.resumed_ok}, runs {self.reruns + 1}, "
            f"final exit code {self.final_code}")
        lines.append("final parameters, data state, scores.csv, metrics.json: "
                     + ("bit-identical to the straight run" if not self.diffs else "DIFFER: " + "; ".join(self.diffs)))
        return "\n".join(lines)


def _problem(code: int | None, log_path: str, text: str) -> str:
    """Why a rerun does not count as resumed OK: its exit code, its log, and its log from the
    first traceback on (at most 40 lines), so a failed drill can be told apart afterwards."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if "Traceback" in line), None)
    # The line before a traceback often says whose it is ("Exception ignored in: ...").
    excerpt = "" if first is None else "\n    " + "\n    ".join(lines[max(first - 1, 0): first + 40])
    return f"exit code {code}, log {log_path}{excerpt}"


def _tmp_folders(workdir: str) -> set[str]:
    try:
        return {e.name for e in os.scandir(os.path.join(workdir, "checkpoints")) if TMP_MARKER in e.name}
    except FileNotFoundError:
        return set()


def _progress_times(child: Child, timeout: float) -> tuple[dict[int, float], float]:
    """Waits for `child` to end, noting when each step's first progress line appeared.

    Returns ({step: seconds after the first progress line}, seconds from it to the end).
    """
    times: dict[int, float] = {}
    t0, pos, tail = None, 0, b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = child.poll() is not None
        with open(child.log_path, "rb") as f:
            f.seek(pos)
            chunk = f.read()
        pos += len(chunk)
        now = time.monotonic()
        *lines, tail = (tail + chunk).split(b"\n")
        for line in lines:
            m = PROGRESS.search(line.decode(errors="replace"))
            if m:
                t0 = now if t0 is None else t0
                times.setdefault(int(m.group(1)), now - t0)
        if exited:
            return times, (time.monotonic() - t0 if t0 is not None else 0.0)
        time.sleep(0.01)
    raise subprocess.TimeoutExpired(child.argv, timeout)


def _kill_at(child: Child, kill: Kill, workdir: str, window: float, timeout: float) -> None:
    """Waits for the kill point of `kill` and SIGKILLs `child` there (if still running).

    `window(step)`: the seconds a run whose first progress line is `step` has left to run
    (None: a run that only evaluates) within which a 'time' kill falls.
    """
    before = _tmp_folders(workdir)
    anchor = child.wait_for(ANCHOR, timeout)
    if anchor is None:
        return
    if anchor.group(2) is not None and kill.mode == "write":
        kill.mode = "time"  # nothing left to train, so no checkpoint write to wait for
    offset = kill.fraction * window(None if anchor.group(2) is not None else int(anchor.group(1)))
    t0 = time.monotonic()
    deadline = t0 + timeout
    while child.poll() is None and time.monotonic() < deadline:
        if kill.mode == "write" and _tmp_folders(workdir) - before:
            break
        if kill.mode == "time" and time.monotonic() - t0 >= offset:
            break
        time.sleep(0.002)
    if child.poll() is not None:
        return
    os.kill(child.pid, signal.SIGKILL)
    kill.sent = True
    kill.offset_s = time.monotonic() - t0
    child.wait()
    kill.during_write = bool(_tmp_folders(workdir) - before)
    steps = [int(s) for s in PROGRESS.findall(child.log())]
    kill.last_step_logged = steps[-1] if steps else None


def drill(
    config_args: Sequence[str],
    workdir: str,
    *,
    kills: int = 10,
    seed: int = 0,
    write_fraction: float = 0.4,
    launcher: Launcher | None = None,
    timeout: float = 600,
    log=print,
) -> DrillReport:
    """Straight run, then a run SIGKILLed `kills` times and resumed; compares both.

    `config_args`: `--config=...` and `--config.*` arguments of launch.py. The runs go to
    `<workdir>/reference` and `<workdir>/interrupted`, their logs to `<workdir>/logs`.
    Kill points: with probability `write_fraction` the first checkpoint write seen, else a
    uniform offset after the run's first progress line (or, for a rerun with no step left,
    after its resume line) in [0, 2 R / (k + 1)]: R = the time the straight run took from
    that step to its end, k = the kills still to come. The kills so spread over training
    and evaluation, and the last ones still land before the end. A run that ends before
    its kill point passes that kill to the next rerun (which then only evaluates), with
    the window halved, up to 3 times.
    """
    launcher = launcher or Launcher()
    rng = np.random.default_rng(seed)
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    reference = os.path.join(workdir, "reference")
    target = os.path.join(workdir, "interrupted")
    for d in (reference, target):
        shutil.rmtree(d, ignore_errors=True)
    t_start = time.monotonic()
    ref = launcher.start([*config_args, f"--workdir={reference}"], os.path.join(logs, "reference.log"))
    times, end = _progress_times(ref, timeout)
    code = ref.wait(timeout)
    reference_seconds = time.monotonic() - t_start
    if code != 0 or not times:
        raise RuntimeError(f"the straight run failed (exit code {code}); log {ref.log_path}:\n{ref.log()[-3000:]}")
    log(f"straight run: {reference_seconds:.1f} s, {end:.1f} s of it after the first progress line")

    args = [*config_args, f"--workdir={target}"]
    plan = [Kill("write" if rng.random() < write_fraction else "time", float(rng.random())) for _ in range(kills)]
    queue, retries, runs, previous = list(enumerate(plan)), 0, 0, None
    while True:
        n, kill = queue[0] if queue else (None, None)
        child = launcher.start(args, os.path.join(logs, f"interrupted_{runs:02d}.log"))
        runs += 1
        if kill is not None:

            def window(step: int | None, left=len(queue), shrink=0.5**retries) -> float:
                start = max((t for s, t in times.items() if step is None or s <= step), default=0.0)
                return shrink * 2 * max(end - start, 0.0) / (left + 1)

            _kill_at(child, kill, target, window, timeout)
        code = child.wait(timeout)
        text = child.log()
        if previous is not None:
            m = RESUMED.search(text)
            previous.resumed_from = int(m.group(1)) if m else None
            previous.fell_back_from = [int(s) for s in FELL_BACK.findall(text)]
            previous.next_run_ok = code in (0, -signal.SIGKILL) and "Traceback" not in text
            if not previous.next_run_ok:
                previous.next_run_problem = _problem(code, child.log_path, text)
            previous = None
        if kill is not None:
            log(f"kill {n}: {kill.mode}, " + (
                f"sent at +{kill.offset_s:.2f} s, last step logged {kill.last_step_logged}, "
                f"mid-write {kill.during_write}" if kill.sent else f"run ended first (code {code})"))
            if kill.sent:
                previous, retries = queue.pop(0)[1], 0
            elif code == 0 and retries < _RETRIES:
                retries += 1  # a rerun (which only evaluates) gets the same kill, aimed earlier
            else:
                queue.pop(0)
                retries = 0
        if code not in (0, -signal.SIGKILL):
            log(f"run {runs - 1} failed with exit code {code}; see {child.log_path}:\n{text[-3000:]}")
            break
        if kill is None or (code == 0 and not queue):
            break  # the final run, or the last kill's run ended before its kill point
    diffs = differences(final_outputs(config_args, reference), final_outputs(config_args, target)) \
        if code == 0 else [f"the interrupted run did not finish (exit code {code})"]
    return DrillReport(plan, reference_seconds, runs - 1, code, diffs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fault_drill", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other --config.* arguments are passed to launch.py unchanged. Example:\n"
               + __doc__.split("\n\n")[1] + "\n\nExit code 0: every kill resumed and the "
               "final outputs are bit-identical;\n1: they differ or a rerun failed; 2: the straight run failed.")
    parser.add_argument("--config", required=True, help="launch.py config, e.g. configs/gon_quickstart.py:digits")
    parser.add_argument("--workdir", required=True, help="folder for both runs and their logs")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs to send, each followed by a rerun")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--write_fraction", type=float, default=0.4,
                        help="share of kills aimed at an asynchronous checkpoint write")
    parser.add_argument("--spawn", choices=("fork", "exec"), default="fork",
                        help="fork runs from a preloaded server (fast) or exec a fresh python each time")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognised arguments: {unknown} (only --config.* overrides are passed to launch.py)")
    if args.kills < 1:
        parser.error(f"--kills={args.kills} must be >= 1")
    if not 0 <= args.write_fraction <= 1:
        parser.error(f"--write_fraction={args.write_fraction} must be in [0, 1]")
    if not os.path.isfile(LAUNCH):
        parser.error(f"{LAUNCH} not found: the drill runs launch.py of a source checkout (pip install -e .)")
    try:
        report = drill([f"--config={args.config}", *rest], os.path.abspath(args.workdir), kills=args.kills,
                       seed=args.seed, write_fraction=args.write_fraction, launcher=Launcher(args.spawn),
                       timeout=args.timeout)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    with open(os.path.join(args.workdir, "drill.json"), "w") as f:
        json.dump({"kills": [dataclasses.asdict(k) for k in report.kills], "diffs": report.diffs,
                   "final_code": report.final_code, "ok": report.ok}, f, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
