"""Dispatch of launch.py's modes to a method package, with user-facing error handling.

Each mode calls the shared program (`anomaly_core.program.program`; predict and export the
serving layer) with the method's `Method`. Train, eval and predict hold the workdir's lock
(`workdir_lock`). Errors a user can fix (a
bad setting, a missing dataset, a workdir in use or trained with other settings, divergence,
preemption) end with one clear message and a non-zero exit code rather than a traceback.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import NoReturn

from anomaly_core.program import program
from anomaly_core.program.method import Method
from anomaly_core.run import console
from anomaly_core.serving import predict
from anomaly_core.training import workdir_lock
from anomaly_core.training.checkpointing import CheckpointError, check_workdir_writable
from anomaly_core.training.train_loop import Preempted, TrainingDiverged, compiling_ahead

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect from a preempted job
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_GRACE_S = 5.0  # how long a failed run waits for background threads before it ends without them


def _print_summary(results: dict) -> None:
    keys = ("image_auroc", "image_auroc_map_max", "pixel_auroc", "pixel_auprc", "pixel_aupro",
            "image_threshold")
    scalars = results.get("scalars", {})
    flat = {k: round(scalars[k], 4) for k in keys if isinstance(scalars.get(k), (int, float))}
    print("metrics (test split): " + json.dumps(flat))
    base = results.get("baseline")
    if base:
        flat = {k: round(base[k], 4) for k in keys if isinstance(base.get(k), (int, float))}
        print("no-learning baseline, |x - mean training image| (same split): " + json.dumps(flat))
    per_defect = results.get("per_defect")
    if per_defect:
        print("image AUROC per defect type (its images against all normal ones): " + ", ".join(
            f"{name} {entry['image_auroc']:.3f} ({entry['images']})" for name, entry in per_defect.items()))


class _QuietLibraries(logging.Filter):
    """Drops the INFO chatter of Orbax (several lines per checkpoint); keeps its warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" not in record.pathname:
            return True
        # Orbax logs a failed background write with its traceback; the program reports the
        # failure itself in one message (checkpointing.CheckpointError).
        record.exc_info, record.exc_text = None, None
        return record.levelno >= logging.WARNING


def _unraisable(hook):
    """sys.unraisablehook that drops one known harmless message: Orbax's background threads
    signal an asyncio loop that has already closed after a failed or finished write
    ("RuntimeError: Event loop is closed", printed as a traceback with nothing to act on)."""

    def quiet(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            log.debug("ignored in a background thread: %s", unraisable.exc_value)
            return
        hook(unraisable)

    return quiet


def _thread_errors(hook):
    """threading.excepthook that reports a background thread's OSError (a full disk under
    the TensorBoard writer's thread, say) in one line: the main thread reports the failure
    that matters (e.g. the checkpoint that could not be written)."""

    def quiet(args) -> None:
        if isinstance(args.exc_value, OSError) or (
                isinstance(args.exc_value, RuntimeError) and "Event loop is closed" in str(args.exc_value)):
            name = args.thread.name if args.thread is not None else "?"
            print(f"warning: background thread {name}: {args.exc_value}", file=sys.stderr)
            return
        hook(args)

    return quiet


def quiet_library_logs() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
            handler.addFilter(_QuietLibraries())
    if not getattr(sys.unraisablehook, "_quiet", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)
        sys.unraisablehook._quiet = True
    if not getattr(threading.excepthook, "_quiet", False):
        threading.excepthook = _thread_errors(threading.excepthook)
        threading.excepthook._quiet = True


def enable_compilation_cache() -> None:
    """Persistent XLA cache: a resumed or repeated run skips recompiling its steps."""
    import os

    import jax

    default = os.path.join(os.path.expanduser("~"), ".cache", "funetgan_gon_jax", "xla")
    jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", default))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _lingering() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]


def exit_process(code: int) -> NoReturn:
    """Ends the process with `code` (launch.py's last call). After an error, background
    threads still alive get EXIT_GRACE_S seconds, then the process ends without them: a
    failed checkpoint write leaves Orbax's threads waiting 300 s for a signal that never
    comes, and the error is already reported (every write that mattered was waited for).
    Threads compiling the training steps are waited for (XLA cannot stop a compilation)."""
    if code != 0 and not compiling_ahead():
        deadline = time.monotonic() + EXIT_GRACE_S
        while _lingering() and time.monotonic() < deadline:
            time.sleep(0.05)  # polled: Orbax's threads override join() to raise on a timeout
        if stuck := _lingering():
            log.debug("not waiting for background threads: %s", [t.name for t in stuck])
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    sys.exit(code)


def run_mode(method: Method, config, mode: str, workdir: str | None, input_dir: str | None,
             allow_changes: bool = False, verbose: bool = False, output: str | None = None) -> int:
    """Runs `mode`; the console is compact unless `verbose` (console.setup), and the full log
    goes to `<workdir>/log.txt`. Returns the exit code."""
    code = _run_mode(method, config, mode, workdir, input_dir, allow_changes, verbose, output)
    if code != 0 and compiling_ahead():
        # The interpreter waits for those threads before it exits.
        print("the training steps are still compiling in background threads, and XLA cannot stop a "
              "compilation: the program exits when they finish", file=sys.stderr)
    return code


def _run_mode(method: Method, config, mode: str, workdir: str | None, input_dir: str | None,
              allow_changes: bool, verbose: bool, output: str | None) -> int:
    console.setup(None, verbose=verbose)
    quiet_library_logs()
    enable_compilation_cache()
    try:
        if mode == "summary":
            program.check_config(config, method)
            print(method.describe(config))
            return 0
        check_workdir_writable(workdir)
        import jax

        console.setup(workdir, verbose=verbose, process_index=jax.process_index())
        quiet_library_logs()

        with workdir_lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
            if mode == "train":
                _print_summary(program.train_and_evaluate(method, config, workdir, allow_changes=allow_changes))
            elif mode == "eval":
                _print_summary(program.evaluate(method, config, workdir))
            elif mode == "predict":
                print(f"predictions written to {predict.predict(method, config, workdir, input_dir, output)}")
            elif mode == "export":
                from anomaly_core.serving import export

                print(f"exported to {export.export_run(workdir, config)}")
        return 0
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except Preempted as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum  # 143 for SIGTERM (what schedulers expect), 130 for Ctrl-C
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) outside the training steps: nothing was saved by this interruption; "
              "checkpoints already written are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CheckpointError, FileNotFoundError, NotADirectoryError, ValueError, KeyError) as e:
        log.debug("traceback of the error below", exc_info=True)  # shown with --verbosity=1
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a file the run writes (disk full, permissions) outside the checkpoints
        log.debug("traceback of the error below", exc_info=True)
        print(f"error: {e.strerror or e}: {e.filename or ''} (under --workdir={workdir}); checkpoints already "
              "written are kept: fix the cause and rerun the same command to resume", file=sys.stderr)
        return EXIT_USER_ERROR
