"""The library's import graph has no circle, function-level and TYPE_CHECKING imports included (issue 28):
every layer imports only from the layers below it (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "selftrain"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:  # `import selftrain.x.y` names a module or a package
                    target = target.rpartition(".")[0]
                if target.startswith("selftrain") and target != name:
                    graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_library_has_no_import_circle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_circle():
    """The check above could pass by seeing no edges: a made-up circle must be found."""
    graph = _graph()
    assert graph["selftrain.recipes"] >= {"selftrain.config", "selftrain.methods", "selftrain.judges"}
    graph["selftrain.spec"].add("selftrain.recipes")  # spec -> recipes -> config -> placement -> spec
    assert _find_cycle(graph) is not None


@pytest.mark.parametrize("low", ["selftrain.config.load", "selftrain.config.recipe", "selftrain.spec"])
def test_config_and_spec_import_no_registry(low):
    """Config knows no registry: the names a recipe gives are checked in selftrain.recipes."""
    registries = {"selftrain.methods", "selftrain.judges", "selftrain.pairs", "selftrain.data.sources"}
    graph, seen, todo = _graph(), set(), [low]
    while todo:
        node = todo.pop()
        seen.add(node)
        todo.extend(graph[node] - seen)
    assert not (seen & registries), f"{low} reaches {sorted(seen & registries)}"
