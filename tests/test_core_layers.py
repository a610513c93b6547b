"""anomaly_core is layered: imports run one way, with no cycle and no use of another module's
private names (docs/ARCHITECTURE.md draws the layers).

Every module of anomaly_core/ is parsed with `ast`; every import counts, at any depth (an
import inside a function runs as surely as one at the top, only later). The checks:
- no import cycle between anomaly_core modules;
- a module imports only its own subpackage and the layers below its own (LAYERS: lowest
  first; packages that share a layer do not import each other);
- no `module._name` access and no `from module import _name` across modules of anomaly_core,
  nor from the method packages into anomaly_core;
- the top level holds subpackages and at most TOP_LEVEL_MODULES.
tests/test_core_imports.py keeps the other rule: the core imports no method package.
"""
from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = "anomaly_core"
METHOD_PACKAGES = ("funetgan_jax", "gon_jax")

# The layers, lowest first: a module may import from the layers before its own.
LAYERS = (
    ("settings",),  # settings.Rule and the one config check, which every layer declares its rules with
    ("data", "networks"),  # the data sources and pipelines; the pieces the methods' networks share
    ("training",),  # mesh and global batches, prefetching, the training loop, checkpoints, the workdir's lock
    ("evaluation",),  # scoring whole splits, metrics, thresholds, baseline, reports and pictures, output folders
    ("program",),  # Method, the installed methods, <workdir>/config.json, train / evaluate / restore
    ("serving", "interop"),  # a trained run used (API, predict, export); PyTorch checkpoints
    ("run",),  # the command: a mode -> the program, the console, --mode=config
)
TOP_LEVEL_MODULES = {"settings"}  # besides __init__: the top level is otherwise subpackages


def module_files(package: str, root: str = REPO) -> dict[str, str]:
    """{dotted module name: file path} of every module of `package` (a package is its __init__)."""
    found = {}
    for folder, dirs, names in os.walk(os.path.join(root, package)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = os.path.join(folder, name)
    return found


CORE_MODULES = module_files(CORE)


def parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name of a `from ... import` (relative ones resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def core_imports(module: str, path: str) -> tuple[list[tuple[int, str]], dict[str, str], list[tuple[int, str]]]:
    """(line, imported core module) edges at any depth, {local name: core module} of the names
    bound to modules, and (line, `module._name`) of private names imported from core modules."""
    edges, aliases, private = [], {}, []
    is_package = path.endswith("__init__.py")
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == CORE:
                    edges.append((node.lineno, alias.name))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = absolute(node, module, is_package)
            if source.split(".")[0] != CORE:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in CORE_MODULES:
                    edges.append((node.lineno, submodule))
                    aliases[alias.asname or alias.name] = submodule
                else:
                    edges.append((node.lineno, source))
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((node.lineno, f"{source}.{alias.name}"))
    return edges, aliases, private


def private_uses(module: str, path: str) -> list[str]:
    """`file:line: module._name` for each private name of another core module this file uses."""
    _, aliases, private = core_imports(module, path)
    found = [(line, name) for line, name in private if name.rsplit(".", 1)[0] != module]
    for node in ast.walk(parse(path)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and aliases[node.value.id] != module):
            found.append((node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
    rel = os.path.relpath(path, REPO)
    return [f"{rel}:{line}: {name}" for line, name in sorted(found)]


def graph() -> dict[str, dict[str, int]]:
    """{module: {imported core module: first line}} (self-imports and the root package left out)."""
    edges: dict[str, dict[str, int]] = {}
    for module, path in CORE_MODULES.items():
        out = edges.setdefault(module, {})
        for line, target in core_imports(module, path)[0]:
            if target != module and target != CORE:
                out.setdefault(target, line)
    return edges


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for index, packages in enumerate(LAYERS):
        if parts[1] in packages:
            return index
    return None


def test_every_module_has_a_layer():
    assert len(CORE_MODULES) > 30, CORE_MODULES  # the walk found the package
    missing = sorted(m for m in CORE_MODULES if m != CORE and layer_of(m) is None)
    assert not missing, ("modules outside the layers (add their package to LAYERS, and to docs/ARCHITECTURE.md): "
                         + ", ".join(missing))


def test_top_level_holds_subpackages():
    top = {m.split(".")[1] for m in CORE_MODULES if m.count(".") == 1
           and not CORE_MODULES[m].endswith("__init__.py")}
    assert top <= TOP_LEVEL_MODULES, f"top-level modules beyond {sorted(TOP_LEVEL_MODULES)}: {sorted(top - TOP_LEVEL_MODULES)}"


def test_imports_run_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        own = layer_of(module)
        for target, line in targets.items():
            theirs = layer_of(target)
            if own is None or theirs is None:
                continue
            same_package = module.split(".")[1] == target.split(".")[1]
            if theirs > own or (theirs == own and not same_package):
                wrong.append(f"{os.path.relpath(CORE_MODULES[module], REPO)}:{line}: {module} (layer {own}: "
                             f"{'/'.join(LAYERS[own])}) imports {target} (layer {theirs}: {'/'.join(LAYERS[theirs])})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle (imports inside functions count): " + " -> ".join(cycle)


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1}}) is None


def test_no_private_names_across_modules():
    found = [use for module, path in CORE_MODULES.items() for use in private_uses(module, path)]
    for package in METHOD_PACKAGES:
        found += [use for module, path in module_files(package).items() for use in private_uses(module, path)]
    assert not found, "private names used outside their module (make them public, or move the code):\n" + "\n".join(
        found)
