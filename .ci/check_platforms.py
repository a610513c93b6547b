"""Asks pip to resolve the default install (pyproject.toml's dependencies, binary wheels only)
for Linux x86_64, Linux aarch64 and macOS arm64 with Python 3.11; exits 1 when any platform
has a requirement without a wheel (pip's resolution error is printed).

  python .ci/check_platforms.py              # needs access to PyPI; nothing is installed
  python .ci/check_platforms.py --extra=mnist

Per platform it prints the number of packages pip would install and whether TensorFlow or
torch is among them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = ("2_28", "2_27", "2_17")  # pip matches the listed manylinux tags exactly
PLATFORMS = {
    "linux x86_64": [f"manylinux_{g}_x86_64" for g in GLIBC] + ["manylinux2014_x86_64"],
    "linux aarch64": [f"manylinux_{g}_aarch64" for g in GLIBC] + ["manylinux2014_aarch64"],
    "macOS arm64": ["macosx_14_0_arm64"],
}


def requirements(extras: list[str]) -> list[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


def resolve(tags: list[str], reqs: list[str], python: str) -> tuple[bool, str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", python, "--target", os.path.join(tmp, "target"), "--report", report,
               *[a for t in tags for a in ("--platform", t)], *reqs]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return False, (proc.stdout + proc.stderr)[-2000:], {}
        with open(report) as f:
            return True, "", json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extra", action="append", default=[], help="also resolve this extra (repeatable)")
    p.add_argument("--python-version", default="3.11")
    args = p.parse_args(argv)
    reqs = requirements(args.extra)
    failed = []
    for name, tags in PLATFORMS.items():
        ok, error, report = resolve(tags, reqs, args.python_version)
        if not ok:
            failed.append(name)
            print(f"{name}: NO RESOLUTION\n{error}")
            continue
        items = report["install"]
        names = {i["metadata"]["name"].lower() for i in items}
        heavy = sorted(names & {"tensorflow", "tensorflow-cpu", "torch"})
        print(f"{name}: {len(items)} packages"
              f"{', includes ' + ', '.join(heavy) if heavy else ', no tensorflow, no torch'}")
    if failed:
        print(f"no binary install for: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
