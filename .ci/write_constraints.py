"""Writes constraints.txt: the exact installed version of every package the project's default
install and its test, torch, mnist_local and tensorboard extras resolve to here (the
dependency closure, read from the installed metadata).

  python .ci/write_constraints.py      # after a passing .ci/run, in that environment
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys

from packaging.requirements import Requirement

EXTRAS = ("test", "torch", "mnist_local", "tensorboard")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(project: str, extras: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [(project, set(extras))]
    while todo:
        name, wanted = todo.pop()
        dist = md.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            env_ok = any(req.marker is None or req.marker.evaluate({"extra": e}) for e in (wanted or {""}))
            if not env_ok:
                continue
            key = canonical(req.name)
            try:
                version = md.version(req.name)
            except md.PackageNotFoundError:
                continue  # an optional dependency this platform does not install
            if key not in found:
                found[key] = version
                todo.append((req.name, set(req.extras)))
    return found


def main() -> int:
    pins = closure("funetgan-gon-jax", EXTRAS)
    lines = ["# The exact versions .ci/run tested (python .ci/write_constraints.py); reproduce them with",
             "#   pip install -e '.[test]' -c constraints.txt",
             f"# Python {sys.version.split()[0]}, {sys.platform}."]
    lines += [f"{name}=={version.split('+')[0]}" for name, version in sorted(pins.items())]
    with open(os.path.join(ROOT, "constraints.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(pins)} pins written to constraints.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
