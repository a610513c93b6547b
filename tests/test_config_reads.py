"""One default per setting (issue 30, item 5): the code reads config values without fallback
defaults, and every setting it reads is defined in every shipped config of the method that
reads it; a run saved before a setting existed gets the value it was used with from
run_config's fill (run_config.UNRECORDED_SETTINGS, Method.legacy.unrecorded_settings).

What the static walk (`ast`, no imports of the scanned code) recognises as a config read,
in anomaly_core/ (shared: read by every method), launch.py (shared), funetgan_jax/ and gon_jax/
(read by that method's configs):
  * attribute chains and constant-string subscripts from a config object: `config.train.x`,
    `config.method`, `config.model["dtype"]`, `model_cfg.d_norm`;
  * config objects: the names `config` (a whole config) and SECTION_NAMES (one section), and
    names a function assigns from a config object (`ev = config.eval`, `m = model_cfg`,
    also pairwise in tuple assignments);
  * `.get("x")` on a config object counts as a read of x, and is itself an error, as is
    getattr(<config object>, name, default).
ConfigDict's own methods (`items`, `to_dict`, ...) are not settings; writes and variable
subscripts (`config[section]`) are not reads. A name bound to something else (e.g. `config`
meaning a data section) would be misread; none is in the scanned code, and such a misread
fails this test rather than hiding a read.
"""
from __future__ import annotations

import ast
import glob
import importlib.util
import json
import os
import re
from typing import Any, Iterator

import ml_collections
import pytest

from anomaly_core.program import run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("anomaly_core", "funetgan_jax", "gon_jax")
METHOD_PACKAGES = {"funetgan_jax": "funetgan", "gon_jax": "gon"}  # the rest is shared
SECTION_NAMES = {"model_cfg": "model", "distributed_cfg": "distributed"}
CONFIG_METHODS = frozenset(dir(ml_collections.ConfigDict())) | frozenset(dir(ml_collections.FrozenConfigDict()))
# Shared reads of a setting only some methods have, each behind a guard in the code:
# (file, dotted setting) -> the guard's text, checked to be in the file.
GUARDED = {
    # GON networks have no spectral norm.
    ("anomaly_core/interop/torch_import.py", "model.spectral_norm"): '"spectral_norm" not in config.model',
    # GON has no progress images, so no config.train.image_every.
    ("anomaly_core/program/program.py", "train.image_every"): "if fn is None or not config.train.image_every",
}
GUARDED_IMAGE_EVERY = "int(config.train.image_every) if image_fn is not None else 0"
# (method, section) whose settings depend on config.model.kind: GON's model settings per kind
# (gon_jax/build.py _DEFAULTS; its model_rules check them per kind). A read of one must be in
# some config of the method, not in all.
BY_KIND = {("gon", "model")}


# ----------------------------------------------------------------------------- the shipped configs
def _presets(path: str) -> list[str]:
    """'' and every preset the config file's docstring or its own 'known: ...' lists name."""
    with open(path) as f:
        source = f.read()
    doc = ast.get_docstring(ast.parse(source)) or ""
    name = os.path.basename(path)
    found = set(re.findall(r"`:(\w+)`", doc)) | set(re.findall(re.escape(name) + r":(\w+)", doc))
    for listed in re.findall(r"known: ([\w, ]+)", doc + source):
        found |= {p.strip() for p in listed.split(",") if p.strip()}
    return ["", *sorted(found)]


def _load(path: str, preset: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"cfg_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def shipped_configs() -> list[tuple[str, ml_collections.ConfigDict]]:
    """(name 'configs/x.py:preset', config) of every config file and each of its presets."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        if path.endswith(("__init__.py", "common.py", "_base.py")):
            continue
        for preset in _presets(path):
            out.append((f"configs/{os.path.basename(path)}:{preset}".rstrip(":"), _load(path, preset)))
    return out


def test_every_docstring_preset_loads_and_the_walk_sees_both_methods():
    configs = shipped_configs()
    names = [n for n, _ in configs]
    assert {"configs/mvtec_bottle.py:cpu", "configs/mvtec_bottle.py:reference", "configs/gon_mvtec.py:tiny",
            "configs/quickstart.py:long", "configs/gon_quickstart.py:texture_cae"} <= set(names)
    assert {c.method for _, c in configs} == set(METHOD_PACKAGES.values())


# ----------------------------------------------------------------------------- the reads in the code
def _chain(node: ast.AST) -> tuple[ast.AST, list[str]]:
    """(base expression, names) of `base.a.b["c"]` -> (base, ['a', 'b', 'c'])."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str)):
            parts.append(node.slice.value)
            node = node.value
        else:
            return node, parts[::-1]


class _Reads(ast.NodeVisitor):
    """Collects (line, setting path, is_get_fallback) of one module."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, tuple[str, ...], bool]] = []
        self.scopes: list[dict[str, tuple[str, ...]]] = [{}]

    def _resolve(self, node: ast.AST) -> tuple[str, ...] | None:
        """The setting path `node` stands for ((): the whole config), or None if not a config object."""
        base, parts = _chain(node)
        if not isinstance(base, ast.Name):
            return None
        if base.id == "config":
            prefix: tuple[str, ...] = ()
        elif base.id in SECTION_NAMES:
            prefix = (SECTION_NAMES[base.id],)
        elif base.id in self.scopes[-1]:
            prefix = self.scopes[-1][base.id]
        else:
            return None
        path = list(prefix)
        for p in parts:
            if p in CONFIG_METHODS:
                break
            path.append(p)
        return tuple(path)

    def _function(self, node: ast.AST) -> None:
        args = node.args
        params = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg) if a}
        self.scopes.append({k: v for k, v in self.scopes[-1].items() if k not in params})
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        pairs = []
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs += list(zip(target.elts, node.value.elts))
            else:
                pairs.append((target, node.value))
        for target, value in pairs:
            if isinstance(target, ast.Name):
                path = self._resolve(value) if isinstance(value, (ast.Name, ast.Attribute, ast.Subscript)) else None
                if path is not None:
                    self.scopes[-1][target.id] = path
                else:
                    self.scopes[-1].pop(target.id, None)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get":
            owner = self._resolve(func.value)
            if owner is not None and node.args:
                key = node.args[0].value if isinstance(node.args[0], ast.Constant) else "<variable>"
                self.reads.append((node.lineno, (*owner, str(key)), True))
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) == 3:
            owner = self._resolve(node.args[0])
            if owner is not None:
                self.reads.append((node.lineno, (*owner, "<getattr>"), True))
        self.generic_visit(node)

    def _read(self, node: ast.AST) -> None:
        if not isinstance(node.ctx, ast.Load) and self._resolve(node) is not None:
            return  # a write (or del) of a setting
        if isinstance(node.ctx, ast.Load):
            path = self._resolve(node)
            if path:
                self.reads.append((node.lineno, path, False))
                return  # the chain's inner parts are the same read
        self.generic_visit(node)

    visit_Attribute = visit_Subscript = _read


def scanned_files() -> list[str]:
    files = ["launch.py"]
    for package in SCANNED:
        files += sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, package, "**", "*.py"),
                                                                      recursive=True))
    return files


def reads_of(source: str) -> list[tuple[int, tuple[str, ...], bool]]:
    visitor = _Reads()
    visitor.visit(ast.parse(source))
    return visitor.reads


def all_reads() -> Iterator[tuple[str, int, tuple[str, ...], bool]]:
    for rel in scanned_files():
        with open(os.path.join(ROOT, rel)) as f:
            for line, path, fallback in reads_of(f.read()):
                yield rel, line, path, fallback


def test_the_walk_recognises_the_read_forms():
    source = '''
def f(config, model_cfg):
    ev = config.eval
    m, n = model_cfg, 3
    a = config.train.lr + ev.kappa + m.width + config.model["dtype"] + config.method
    config.train.steps = 3
    b = config.eval.get("image_score", "x")
    c = getattr(config.train, "g", 0)
    for k, v in config.model.items():
        pass
    return config[a], n.foo
'''
    found = {(".".join(path), fallback) for _, path, fallback in reads_of(source)}
    assert found == {("eval", False), ("train.lr", False), ("eval.kappa", False), ("model.width", False),
                     ("model.dtype", False), ("method", False), ("eval.image_score", True),
                     ("train.<getattr>", True), ("train", False), ("model", False)}


def test_no_fallback_default_on_a_config_read():
    """A `.get(key, default)` on a config makes a second default beside the shipped configs'."""
    found = [f"{rel}:{line}: config.{'.'.join(path)}" for rel, line, path, fallback in all_reads() if fallback]
    assert not found, ("config reads with a fallback (read config.<section>.<key> directly; the value of runs "
                       "saved before a setting existed belongs in Method.legacy.unrecorded_settings or "
                       "run_config.UNRECORDED_SETTINGS):\n" + "\n".join(found))


def _has(config: ml_collections.ConfigDict, path: tuple[str, ...]) -> bool:
    node: Any = config
    for part in path:
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def test_every_setting_read_is_in_every_config_of_the_method_that_reads_it():
    configs = shipped_configs()
    missing = []
    for rel, line, path, _ in all_reads():
        if "<variable>" in path or "<getattr>" in path or (rel, ".".join(path[:2])) in GUARDED:
            continue
        method = METHOD_PACKAGES.get(rel.split("/")[0])
        if (method, path[0]) in BY_KIND:
            if not any(_has(config, path[:2]) for _, config in configs if config.method == method):
                missing.append(f"{rel}:{line} reads config.{'.'.join(path[:2])}, which no {method} config has")
            continue
        for name, config in configs:
            if method in (None, config.method) and not _has(config, path[:2]):
                missing.append(f"{rel}:{line} reads config.{'.'.join(path[:2])}, which {name} lacks")
    assert not missing, "\n".join(sorted(set(missing)))


def test_the_guarded_reads_are_still_guarded():
    for (rel, setting), guard in GUARDED.items():
        with open(os.path.join(ROOT, rel)) as f:
            source = f.read()
        assert guard in source, (rel, setting)
    with open(os.path.join(ROOT, "anomaly_core", "program", "program.py")) as f:
        assert GUARDED_IMAGE_EVERY in f.read()


# ----------------------------------------------------------------------------- runs saved before a setting
def _quickstart(name: str) -> ml_collections.ConfigDict:
    return _load(os.path.join(ROOT, "configs", name), "")


# (config file, dotted setting, the value the code's fallback gave a config.json without it)
FORMER_FALLBACKS = [
    ("quickstart.py", "config.train.g_ema_decay", 0.0),
    ("quickstart.py", "config.train.encoder_target", "logits"),
    ("quickstart.py", "config.train.latent_weight", 0.0),
    ("quickstart.py", "config.train.image_every", 0),
    ("quickstart.py", "config.eval.critic_weight", 0.0),
    ("quickstart.py", "config.eval.refine_steps", 0),
    ("quickstart.py", "config.eval.refine_lr", 0.05),
    ("gon_quickstart.py", "config.eval.smoothing_sigma", 0.0),
    ("gon_quickstart.py", "config.eval.image_score", "mean_squared_error"),
    *[(name, setting, value) for name in ("quickstart.py", "gon_quickstart.py") for setting, value in (
        ("config.model.dtype", "float32"), ("config.checkpoint.async_save", True),
        ("config.eval.threshold_rule", "auto"), ("config.eval.baseline", True),
        ("config.eval.predict_heatmaps", -1), ("config.eval.checkpoint", "best"),
        ("config.distributed.initialize", False), ("config.distributed.cpu_collectives", None))],
]


@pytest.mark.parametrize("name,setting,value", FORMER_FALLBACKS)
def test_a_config_json_without_a_former_fallback_setting_gets_the_value_it_was_used_with(
        tmp_path, name, setting, value):
    trained = _quickstart(name)
    *parents, key = setting.split(".")[1:]
    node = trained
    for part in parents:
        node = node[part]
    assert key in node  # the shipped config defines it ...
    del node[key]  # ... a run saved before it existed did not
    run_config.write(str(tmp_path), trained)
    got = run_config.for_inference(str(tmp_path), None)  # eval / predict without --config
    node = got
    for part in parents:
        node = node[part]
    assert node[key] == value
    assert type(node[key]) is type(value)
    # With --config, the run's sections (model, train) still come from config.json.
    if parents[0] in run_config.RUN_SECTIONS:
        given = _quickstart(name)
        with_config = run_config.for_inference(str(tmp_path), given, [])
        assert with_config[parents[0]][key] == value


def test_a_config_json_without_the_distributed_section_is_not_initialised(tmp_path):
    """Runs saved before config.distributed existed: launch.py passed None, which initialised nothing."""
    trained = _quickstart("gon_quickstart.py")
    del trained["distributed"]
    run_config.write(str(tmp_path), trained)
    got = run_config.for_inference(str(tmp_path), None)
    assert got.distributed.to_dict() == {"initialize": False, "coordinator_address": None, "num_processes": None,
                                         "process_id": None, "cpu_collectives": None}
    assert set(got.distributed) == set(_quickstart("gon_quickstart.py").distributed)


def test_the_fill_tables_name_settings_of_the_shipped_configs():
    """A fill entry for a setting no config has would fill a setting nobody reads."""
    from anomaly_core.program import methods

    configs = shipped_configs()
    for setting in run_config.UNRECORDED_SETTINGS:
        path = tuple(setting.split(".")[1:])
        assert all(_has(c, path) for _, c in configs), setting
    for method in {c.method for _, c in configs}:
        for setting in methods.load(method).legacy.unrecorded_settings:
            path = tuple(setting.split(".")[1:])
            assert all(_has(c, path) for _, c in configs if c.method == method), setting
    assert json.dumps(run_config.UNRECORDED_SETTINGS)  # JSON values, as config.json holds
