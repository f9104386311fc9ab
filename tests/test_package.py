import importlib
import subprocess
import sys

import pytest
from conftest import REPO

import keras_chargen


def test_every_public_name_is_the_object_of_its_module():
    assert keras_chargen.__all__ == sorted(keras_chargen._EXPORTS)
    for name, module in keras_chargen._EXPORTS.items():
        value = getattr(keras_chargen, name)
        assert value is getattr(importlib.import_module(f"keras_chargen.{module}"), name), name
        if callable(value):
            assert value.__name__ == name and value.__module__.startswith(f"keras_chargen.{module}"), name
    assert keras_chargen.MAX_NEW_CHARS == 100_000
    assert keras_chargen.__version__ == "0.1.0"
    with pytest.raises(AttributeError, match="module 'keras_chargen' has no attribute 'nope'"):
        _ = keras_chargen.nope


def test_public_names_are_not_shadowed_by_submodules():
    """Importing every submodule must not replace a re-exported function (e.g. `evaluate`) with a module."""
    code = (
        "import importlib, inspect, pkgutil, keras_chargen as k\n"
        "for m in pkgutil.walk_packages(k.__path__, 'keras_chargen.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "print([n for n in k.__all__ if inspect.ismodule(getattr(k, n))])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_client_does_not_load_tensorflow():
    code = "import sys, keras_chargen.client; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its source (function bodies and `TYPE_CHECKING`
    blocks included). `from a.b import c` counts as importing `a.b.c` when that is a module, else `a.b`;
    the implicit import of a parent package's `__init__` is not counted (it runs first, whatever it imports)."""
    import ast

    root = REPO / "keras_chargen"
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for path in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.level == 0, f"{name}: relative import"
                edges.update(
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                )
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_the_import_graph_has_no_cycle_and_no_core_module_imports_the_cli():
    graph = import_graph()
    assert [m for m, edges in graph.items() if "keras_chargen.cli" in edges] == ["keras_chargen.__main__"]
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            assert state.get(imported) != "open", " -> ".join([*path, module, imported])  # a cycle
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
