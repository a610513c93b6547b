"""The test session's own settings (tests/conftest.py)."""
from __future__ import annotations

import os

import jax
import pytest


def _conftest(request):
    """tests/conftest.py as pytest loaded it (importing it again would run it again)."""
    return next(p for p in request.config.pluginmanager.get_plugins()
                if getattr(p, "__file__", "").endswith(os.path.join("tests", "conftest.py")))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the fast-compile options are for CPU-only sessions")
def test_a_cpu_session_compiles_with_the_fast_options_and_hands_them_to_subprocesses(request):
    conftest = _conftest(request)
    assert not conftest._accelerator_plugin_installed()
    flags = os.environ["XLA_FLAGS"].split()
    for flag in conftest.FAST_COMPILE_FLAGS:
        assert flags.count(flag) == 1, flags  # in the environment launch.py runs inherit, once
