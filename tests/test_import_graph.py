"""Layers point one way: the runtime path (attention -> primitives -> partitioning ->
platform_primitives -> _cuda_lowering -> FFI) imports no tooling, and no jax_gna modules
import each other in a cycle. Every import counts, including those inside functions (they
run on the same call paths, only later)."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jax_gna"

# Development tools: the tile simulator, the profiler and its timing helpers.
TOOLING = ("jax_gna.simulator", "jax_gna.profile", "jax_gna._timing", "jax_gna._device_trace")
# The call path of a GNA call, top to bottom.
RUNTIME_PATH = ("jax_gna.attention", "jax_gna.primitives", "jax_gna.partitioning",
                "jax_gna.platform_primitives", "jax_gna._cuda_lowering")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_tooling(name: str) -> bool:
    return any(name == t or name.startswith(t + ".") for t in TOOLING)


def import_graph() -> dict[str, set[str]]:
    """{module: jax_gna modules it imports}."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_the_runtime_path():
    graph = import_graph()
    for upper, lower in zip(RUNTIME_PATH, RUNTIME_PATH[1:]):
        assert lower in graph[upper], f"{upper} no longer imports {lower}"


def test_no_import_cycle():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_runtime_imports_no_tooling():
    graph = import_graph()
    bad = sorted(f"{src} -> {dst}" for src, dsts in graph.items() if not _is_tooling(src)
                 for dst in dsts if _is_tooling(dst))
    assert not bad, "runtime modules importing tooling: " + ", ".join(bad)


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
