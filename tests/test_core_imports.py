"""The shared core imports no method package: methods reach it through `method.Method`
(entry points, anomaly_core/program/methods.py), never the other way round."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD_PACKAGES = ("funetgan_jax", "gon_jax")


def imported_modules(path: str) -> list[tuple[int, str]]:
    """(line, module) of every import statement in the file, at any depth (inside functions too)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def core_files() -> list[str]:
    root = os.path.join(REPO, "anomaly_core")
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                  for name in names if name.endswith(".py"))


def test_no_core_module_imports_a_method_package():
    files = core_files()
    assert len(files) > 10, files  # the walk found the package
    offending = [f"{os.path.relpath(path, REPO)}:{line}: {module}" for path in files
                 for line, module in imported_modules(path)
                 if module.split(".")[0] in METHOD_PACKAGES]
    assert not offending, "the core imports a method package:\n" + "\n".join(offending)
