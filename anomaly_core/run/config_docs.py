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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Files that define the shared settings, the defaults first (their comments say what a setting
# means; the experiment configs' comments say why they chose a value), and, for functions that
# build one section, which section that is. Each method adds its own (Method.settings_files).
DEFINING = (
    ("configs/common.py", {"eval_config": "eval", "checkpoint_config": "checkpoint",
                           "distributed_config": "distributed"}),
    ("anomaly_core/data/config.py", {"default_data_config": "data"}),
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


def meanings(method_files: tuple = ()) -> dict[str, str]:
    """{'train.batch_size': meaning, ...} from the files that define the shared settings and
    `method_files` (Method.settings_files); an experiment config's comments say why it chose
    a value, not what the setting means."""
    return dict(_meanings(tuple((path, tuple(functions.items())) for path, functions in method_files)))


@functools.lru_cache(maxsize=4)
def _meanings(method_files: tuple) -> tuple:
    found: dict[str, str] = {}
    for path, functions in (*DEFINING, *((p, dict(f)) for p, f in method_files)):
        _scan(path, functions, found)
    return tuple(found.items())


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def describe(config, method_files: tuple = ()) -> str:
    """One line per setting: `config.<name> = <value>  # <meaning>`, the meanings read from
    the shared defining files and `method_files` (the method's Method.settings_files)."""
    known = meanings(method_files)
    lines = []
    for name, value in flatten(config).items():
        shown = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
        meaning = known.get(name, "")
        lines.append(f"config.{name} = {shown}" + (f"  # {meaning}" if meaning else ""))
    return "\n".join(lines)
