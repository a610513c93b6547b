"""Test-session settings: XLA:CPU compiles fast, and a persistent compilation cache is
shared with subprocesses.

The f-UNetGAN discriminator step (two gradient penalties differentiated again) takes tens
of seconds to compile on a CPU; tests that build the same program in several processes
(resume, multi-process, launch.py runs) reuse the compiled executable from this cache.
"""
import atexit
import importlib.util
import os
import shutil
import tempfile

# The tests check what is computed, not how fast, and compilation dominates their time on a
# CPU: the same programs (same HLO, float32 throughout) compiled without LLVM's optimisation
# passes and with XLA:CPU's classic elemental emitters. The two longest files took 222 s
# instead of 313 s, the suite 548 s instead of 790 s (docs/RESULTS.md); steps run up to 2x
# slower, which the tests' few steps do not feel. Set before JAX creates its CPU client;
# launch.py subprocesses inherit it. A value the caller set for either flag is kept, and
# where a GPU or TPU plugin is installed nothing is changed (the level would apply to its
# kernels too). Runs outside the tests (the quickstart, benchmarks) keep XLA's defaults.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _accelerator_plugin_installed() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("jax_plugins", "libtpu"))


if not _accelerator_plugin_installed() and (os.environ.get("JAX_PLATFORMS") or "cpu").split(",")[0] == "cpu":
    _flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join(
        [_flags] + [f for f in FAST_COMPILE_FLAGS if f.split("=")[0] not in _flags]).strip()

import jax  # noqa: E402 - after XLA_FLAGS
import pytest  # noqa: E402

# Tests never write the user's cache: a config with config.data.root '' builds the demo
# dataset under XDG_CACHE_HOME, here a folder of this test process (and its subprocesses),
# not ~/.cache, where a rebuild with the tests' small parameters would replace the dataset
# under a user's running job.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="funetgan_gon_jax_tests_")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _utf8_safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Reports with file names that are not valid UTF-8 (the hostile-input corpus writes
    some, and the loaders log them) must still cross pytest-xdist's UTF-8-only channel."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(name, _utf8_safe(text)) for name, text in report.sections]
    if report.longrepr is not None:
        text = str(report.longrepr)
        if _utf8_safe(text) != text:
            report.longrepr = _utf8_safe(text)


# Files whose tests compile full training programs, longest first (measured with
# `pytest --durations=0` on a 2-core CPU). pytest-xdist's loadfile mode hands out files in
# collection order (pyproject.toml's addopts turn off its reordering by test count): started
# first, the long files run beside each other and the many short ones fill in after them,
# instead of one long file running alone at the end while the other worker idles.
LONGEST_FILES = ("test_funetgan_program.py", "test_funetgan_dynamics.py", "test_parallel.py", "test_faults.py",
                 "test_scoring_speed.py", "test_parity_funetgan.py", "test_torch_import.py", "test_gon_program.py",
                 "test_gon_variants.py", "test_run_config.py")


def pytest_collection_modifyitems(config, items):
    """Runs the files of LONGEST_FILES first, each file's tests in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))
