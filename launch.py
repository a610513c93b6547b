"""Entry point: the only file that defines flags.

  python launch.py --config=configs/quickstart.py --workdir=runs/quickstart
  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/bottle --config.data.root=/data/mvtec
  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/bottle --mode=eval
  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/bottle --mode=predict --input=my_images/
  python launch.py --config=configs/mvtec_bottle.py --mode=summary

`--mode=train` trains (resuming from the latest checkpoint in the workdir) then evaluates; a
workdir whose run was trained with other settings is refused with the differences
(`--allow_changes` continues it deliberately), and one workdir serves one process at a time.
`config.method` selects the method package ('funetgan' or 'gon').
"""
from __future__ import annotations

import logging
import os
import sys

if not any(a.startswith(("-v", "--v=", "--verbosity")) for a in sys.argv[1:]):
    # XLA's C++ log: hides its multi-line "Very slow compile?" alarm (the program announces
    # each compilation and its duration itself); --verbosity=1 shows everything.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags
from ml_collections import config_flags

MODES = ("train", "eval", "predict", "export", "summary", "config")

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and images.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "train (then evaluate) | eval | predict | export (the "
                          "scoring function as StableHLO, <workdir>/export/) | summary | config (every setting, "
                          "resolved, with its meaning; with --workdir, the run's own).")
_INPUT = flags.DEFINE_string("input", None, "Folder of images to score with --mode=predict.")
_OUTPUT = flags.DEFINE_string("output", None, "--mode=predict: folder for predictions.csv, heatmaps and masks "
                              "(default <workdir>/predict); replaced whole by each prediction run.")
_ALLOW_CHANGES = flags.DEFINE_bool(
    "allow_changes", False, "--mode=train in a workdir holding a run trained with other settings (data, seed, "
    "model, optimisation): continue that run with this config deliberately instead of refusing.")


def resolve_method(config):
    """The Method of config.method (anomaly_core.program.methods); a bad name exits naming the config file."""
    from anomaly_core.program import methods

    try:
        return methods.for_config(config)
    except ValueError as e:
        raise SystemExit(f"{e} (in --config={config_flags.get_config_filename(flags.FLAGS['config'])})") from None


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    try:
        config = _CONFIG.value
        if config is not None:
            config.keys()  # a --config file that failed to load reports it on first use
    except OSError as e:  # ml_collections reports a bad --config file lazily, as a chain of OSErrors
        print(f"error: --config={flags.FLAGS['config'].config_filename}: {config_load_error(e)}", file=sys.stderr)
        return 2
    mode = _MODE.value
    if mode not in ("summary", "config") and not _WORKDIR.value:
        raise app.UsageError(f"--workdir is required with --mode={mode}")
    if mode == "predict" and not _INPUT.value:
        raise app.UsageError("--mode=predict needs --input=<folder of images>")
    if mode in ("eval", "predict", "export") or (mode == "config" and _WORKDIR.value):
        from anomaly_core.program import run_config

        try:  # the run's own settings from <workdir>/config.json; --config may then be left out
            config = run_config.for_inference(_WORKDIR.value, config, explicit_overrides(sys.argv))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/quickstart.py (--mode=eval and "
                             "--mode=predict read it from the workdir's config.json when there is one)")

    method = resolve_method(config)
    if mode == "config":
        from anomaly_core.run import config_docs

        print(config_docs.describe(config, method.settings.files))
        return 0
    from anomaly_core.training import parallel  # imports jax: after flag parsing so --help stays fast

    parallel.maybe_initialize_distributed(config.distributed)
    from anomaly_core.run.run import run_mode

    return run_mode(method, config, mode, _WORKDIR.value, _INPUT.value, allow_changes=_ALLOW_CHANGES.value,
                    verbose=flags.FLAGS.verbosity >= 1, output=_OUTPUT.value)


def end(code: int) -> None:
    """Exits with `code`; after an error without waiting long for background threads (run.exit_process)."""
    if code == 0:
        sys.exit(0)
    from anomaly_core.run.run import exit_process

    exit_process(code)


def explicit_overrides(argv: list[str]) -> list[str]:
    """Dotted names (without 'config.') of the --config.* overrides on the command line."""
    return [a[2:].split("=")[0][len("config."):] for a in argv if a.startswith("--config.")]


def config_load_error(error: BaseException) -> str:
    """The one line that says why a config file did not load (missing file, its own error)."""
    lines: list[str] = []
    while error is not None:
        lines += [line.strip() for line in str(error).splitlines() if line.strip()]
        error = error.__cause__ or error.__context__
    for marker in ("[Errno", "Error:", "Error "):
        found = [line for line in lines if marker in line and "earlier failure" not in line]
        if found:
            return found[-1]
    return lines[-1] if lines else "could not be loaded"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; an override naming no config setting is one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # e.g. a preset the config file does not know: its own message, one line
        detail = [line.strip() for line in str(e).splitlines() if line.strip()]
        print(f"FATAL Flags parsing error: {detail[0]} {detail[-1] if len(detail) > 1 else ''}".rstrip(),
              file=sys.stderr)
        sys.exit(1)
    except (AttributeError, KeyError) as e:  # ml_collections raises these, not a flags.Error
        while e.args and isinstance(e.args[0], Exception):
            e = e.args[0]
        detail = str(e.args[0] if e.args else e).replace("\n", ". ")
        names = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        bad = [n for n in names if any(f"'{part}'" in detail for part in n.split(".")[1:])] or names
        print(f"FATAL Flags parsing error: {', '.join(bad)}: no such config setting {detail}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(lambda argv: end(main(argv) or 0), flags_parser=parse_flags)
