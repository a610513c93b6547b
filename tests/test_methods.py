"""anomaly_core/program/methods.py: config.method -> the Method its package registers."""
from __future__ import annotations

from importlib import metadata

import pytest

from anomaly_core.program import methods
from anomaly_core.program.method import Method


def test_both_methods_are_registered_and_load():
    assert set(methods.registered()) == {"funetgan", "gon"}
    for name in ("funetgan", "gon"):
        method = methods.load(name)
        assert isinstance(method, Method) and method.name == name


def test_unknown_unregistered_and_wrong_entries_are_named(monkeypatch):
    with pytest.raises(ValueError, match=r"^config.method='nope' is not one of \['funetgan', 'gon'\]$"):
        methods.load("nope")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    with pytest.raises(ValueError, match=r"no method package is registered .* pip install -e \."):
        methods.load("gon")
    fake = metadata.EntryPoint(name="gon", value="anomaly_core.settings:Rule", group=methods.GROUP)
    monkeypatch.setattr(metadata, "entry_points", lambda group: [fake])
    with pytest.raises(TypeError, match="anomaly_core.settings:Rule .* not an anomaly_core.program.method.Method"):
        methods.load("gon")
