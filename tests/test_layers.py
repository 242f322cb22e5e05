"""One direction of dependency: the package's import graph, read from the source with `ast`.

import-linter (`lint-imports`, run by `.ci/run`) checks the layers declared in pyproject.toml.
This test adds what a layers contract cannot see: a cycle anywhere, function-local imports
included (only imports under `if TYPE_CHECKING:` are type-only and excluded), and the plug-in
folders `callbacks/` and `strategies/` under the names they install as.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {  # installed package name -> folder (pyproject's package-dir)
    "kronos_engine": ROOT / "kronos_engine",
    "kronos_engine.callbacks": ROOT / "callbacks",
    "kronos_engine.strategies": ROOT / "strategies",
}
MAX_LINES = 400  # outside models/ (the networks and their file formats)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _type_only_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for n in ast.walk(node))
    return ids


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, at any depth of its code."""

    def known(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_only_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.startswith("kronos_engine") and (hit := known(target)) and hit != name:
                out.add(hit)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle_even_through_function_local_imports():
    graph = import_graph()
    assert len(graph) > 80  # the walk found the package, plug-ins included
    assert "kronos_engine.training.builder" in graph["kronos_engine.cli.train"]
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_function_local_import(tmp_path):
    """The check above is not blind: a function-local import back up is a cycle."""
    graph = import_graph()
    graph["kronos_engine.config.schema"] = graph["kronos_engine.config.schema"] | {
        "kronos_engine.training.preflight"
    }
    assert any("kronos_engine.config.schema" in c for c in cycles(graph))
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kronos_engine.cli import train\n", encoding="utf-8")
    assert _imported("kronos_engine.x", module, _modules()) == {"kronos_engine.cli.train"}


def test_no_module_imports_a_layer_above_its_own():
    """The same layers as the import-linter contract, checked on this graph (plug-ins too)."""
    layers = [
        ["kronos_engine.cli"],
        ["kronos_engine.callbacks", "kronos_engine.strategies"],
        ["kronos_engine.training", "kronos_engine.callback", "kronos_engine.context",
         "kronos_engine.strategy"],
        ["kronos_engine.evaluation", "kronos_engine.plotting"],
        ["kronos_engine.forecasting"],
        ["kronos_engine.data", "kronos_engine.run"],
        ["kronos_engine.config", "kronos_engine.models"],
        ["kronos_engine.errors", "kronos_engine.fsio", "kronos_engine.distenv",
         "kronos_engine.layout", "kronos_engine.rng", "kronos_engine.registry",
         "kronos_engine.extras"],
    ]  # fmt: skip
    depth = {}
    for level, names in enumerate(layers):
        for name in names:
            depth[name] = len(layers) - level

    def layer_of(module: str) -> int | None:
        while module and module not in depth:
            module = module.rpartition(".")[0]
        return depth.get(module)

    upward = [
        (a, b)
        for a, targets in import_graph().items()
        for b in targets
        if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
    ]
    assert upward == []


def test_the_import_linter_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter (the dev extra) is not installed")
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_the_config_imports_without_torch_numpy_or_pandas():
    loaded = _modules_loaded_by("import kronos_engine.config")
    assert "kronos_engine.config.schema" in loaded
    assert not {"torch", "numpy", "pandas"} & loaded


def test_import_kronos_engine_is_a_cheap_lazy_face():
    loaded = _modules_loaded_by("import kronos_engine")
    assert "torch" not in loaded and "kronos_engine.training" not in loaded
    loaded = _modules_loaded_by("from kronos_engine import Trainer, TrainConfig, TrainCallback")
    assert {"torch", "kronos_engine.training.trainer"} <= loaded
    import kronos_engine

    assert sorted(kronos_engine.__all__) == sorted(kronos_engine._EXPORTS)
    assert set(kronos_engine.__all__) <= set(dir(kronos_engine))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        kronos_engine.Nope  # noqa: B018


def test_no_module_outside_models_is_longer_than_the_limit():
    long = {
        str(path.relative_to(ROOT)): n
        for name, path in _modules().items()
        if not name.startswith("kronos_engine.models")
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
