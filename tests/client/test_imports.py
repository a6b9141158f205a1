"""The client's modules import one way (STYLE.md: clients -> stream -> transports, never
the reverse, as in httpx), and never import server code.

Read from the source with ``ast``, so imports under ``TYPE_CHECKING`` or inside functions
count too: a type-only import back up the stack is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import safelight.client

CLIENT_DIR = Path(safelight.client.__file__).parent
# What the client may use of the rest of the package (ARCHITECTURE.md: types and errors;
# the bare package for its version).
ALLOWED_OUTSIDE = {"safelight", "safelight.types", "safelight.errors"}


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(CLIENT_DIR.glob("*.py")):
        module = f"safelight.client.{path.stem}"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {name for name in found if name.split(".")[0] == "safelight"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the client's own modules (``__init__`` aside), or None."""
    inside = {
        m: {d for d in deps if d in graph and not d.endswith("__init__")}
        for m, deps in graph.items()
    }
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        trail.append(module)
        for dep in sorted(inside[module]):
            if state.get(dep) == "open":
                return [*trail[trail.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        trail.pop()
        state[module] = "done"
        return None

    for module in sorted(inside):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_client_modules_import_each_other_one_way() -> None:
    graph = _imports()
    assert {"safelight.client.clients", "safelight.client.stream"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # The shape of httpx: the client imports the stream and the transports, never back.
    for lower in ("stream", "transports", "_sync", "models"):
        assert "safelight.client.clients" not in graph[f"safelight.client.{lower}"], lower
    assert "safelight.client.stream" not in graph["safelight.client.transports"]


def test_client_imports_no_server_code() -> None:
    for module, deps in _imports().items():
        outside = {d for d in deps if not d.startswith("safelight.client")}
        assert outside <= ALLOWED_OUTSIDE, f"{module} imports {sorted(outside - ALLOWED_OUTSIDE)}"
