"""The method packages, found by `config.method` without the core importing any of them.

Each method package registers its `method.Method` as an entry point of the group
`funetgan_gon_jax.methods` in pyproject.toml (name = config.method, value =
`package.module:METHOD`); installing the project (pip install -e .) makes them visible.
launch.py, the converter, the Python API and the tools all resolve a method here.
"""
from __future__ import annotations

from importlib import metadata
from typing import Any

from anomaly_core.program.method import Method

GROUP = "funetgan_gon_jax.methods"


def registered() -> dict[str, metadata.EntryPoint]:
    """{config.method name: entry point} of every installed method package."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def load(name: Any):
    """The `Method` registered as `name`; ValueError naming config.method otherwise."""
    found = registered()
    if not found:
        raise ValueError(f"no method package is registered (entry point group {GROUP!r}): install the project "
                         "with pip install -e . from the repository root")
    if name not in found:
        raise ValueError(f"config.method={name!r} is not one of {sorted(found)}")
    method = found[name].load()
    if not isinstance(method, Method):
        raise TypeError(f"entry point {found[name].value} of {GROUP!r} is a {type(method).__name__}, not an "
                        "anomaly_core.program.method.Method")
    return method


def for_config(config) -> Any:
    """The Method of `config.method`; ValueError when the config has none."""
    if "method" not in config:
        raise ValueError(f"the config has no config.method: set it to one of {sorted(registered())}")
    return load(config.method)
