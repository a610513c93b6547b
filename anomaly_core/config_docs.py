"""What each config setting means, read from where the settings are defined.

`describe(config)` lists every setting of a resolved config as `config.<name> = <value>` with
its meaning: the comment beside (or the comment lines right above) the line that defines it
in the config files and the modules that hold the defaults, or the `Fields:` list of
`default_data_config`'s docstring. `--mode=config` prints it.
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files that define settings, the defaults first (their comments say what a setting means;
# the experiment configs' comments say why they chose a value), and, for functions that
# build one section, which section that is.
DEFINING = (
    ("configs/common.py", {"eval_config": "eval", "checkpoint_config": "checkpoint",
                           "distributed_config": "distributed"}),
    ("anomaly_core/data/config.py", {"default_data_config": "data"}),
    ("funetgan_jax/build.py", {"default_model_config": "model"}),
    ("gon_jax/build.py", {"default_gon_model_config": "model"}),
    ("configs/funetgan_base.py", {}),
    ("configs/gon_base.py", {}),
)
_DEF = re.compile(r"^\s*def (\w+)\(")
_SECTION = re.compile(r"config\.(\w+)\s*=\s*(?:ml_collections\.ConfigDict|common\.\w+|default_\w+|dict)\(")
_ATTR = re.compile(r"^\s*config\.(\w+)\.(\w+)\s*=[^=]")
_TOP = re.compile(r"^\s*config\.(\w+)\s*=[^=]")
_KWARG = re.compile(r"^\s*(\w+)\s*=[^=]")
_FIELD = re.compile(r"^\s{6}(\w+): (.+)")


def _comment(line: str) -> str:
    code, _, comment = line.partition("  # ")
    return comment.strip() if code.strip() else ""


def _scan(path: str, functions: dict[str, str], found: dict[str, str]) -> None:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().splitlines()
    section, above, in_fields, field = None, [], False, None
    for line in lines:
        stripped = line.strip()
        if m := _DEF.match(line):
            section = functions.get(m.group(1))
        if stripped == "Fields:":
            in_fields = True
            continue
        if in_fields and section:
            if m := _FIELD.match(line):
                field = f"{section}.{m.group(1)}"
                found.setdefault(field, m.group(2).strip())
                continue
            if line.startswith(" " * 8) and field and stripped:
                found[field] = found[field] + " " + stripped if found.get(field) else stripped
                continue
            if stripped.startswith('"""') or not stripped:
                in_fields, field = False, None
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        if m := _SECTION.search(line):
            section = m.group(1)
        meaning = _comment(line) or " ".join(above)
        above = []
        if not meaning:
            continue
        if m := _ATTR.search(line):
            found.setdefault(f"{m.group(1)}.{m.group(2)}", meaning)
        elif (m := _TOP.match(line)) and not _SECTION.search(line):
            found.setdefault(m.group(1), meaning)
        elif (m := _KWARG.match(line)) and section:
            found.setdefault(f"{section}.{m.group(1)}", meaning)


@functools.lru_cache(maxsize=1)
def meanings() -> dict[str, str]:
    """{'train.batch_size': meaning, ...} from the files that define the settings (an
    experiment config's comments say why it chose a value, not what the setting means)."""
    found: dict[str, str] = {}
    for path, functions in DEFINING:
        _scan(path, functions, found)
    return found


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def describe(config) -> str:
    """One line per setting: `config.<name> = <value>  # <meaning>`."""
    known = meanings()
    lines = []
    for name, value in flatten(config).items():
        shown = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
        meaning = known.get(name, "")
        lines.append(f"config.{name} = {shown}" + (f"  # {meaning}" if meaning else ""))
    return "\n".join(lines)
