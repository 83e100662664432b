"""`mss/` has no import cycle (issue #18): the command's modules used to form a 7-file loop
through ``mss.cli.app_of``, imported back lazily from every sub-command. Every import counts,
also those inside functions and under ``TYPE_CHECKING``: a lazy import only hides a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

MSS = Path(__file__).resolve().parent.parent / "mss"


def _modules() -> dict[str, Path]:
    return {("mss" if p.stem == "__init__" else f"mss.{p.stem}"): p
            for p in sorted(MSS.glob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    """The mss modules one import statement loads (``from mss import cli_x`` loads
    ``mss.cli_x``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level or node.module is None:  # relative imports: none in mss, and none wanted
        raise AssertionError(f"relative import in mss: line {node.lineno}")
    found = {f"{node.module}.{alias.name}" for alias in node.names} & known.keys()
    return found or ({node.module} & known.keys())


def import_graph() -> dict[str, set[str]]:
    """Each mss module and the mss modules it imports anywhere in its body."""
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        graph[name] = set().union(*(_imported(n, known) for n in ast.walk(tree)
                                    if isinstance(n, ast.Import | ast.ImportFrom))) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None (depth-first, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_walker_sees_the_imports() -> None:
    """The graph is not vacuously acyclic: the command imports its sub-commands."""
    graph = import_graph()
    assert {"mss.cli_accounts", "mss.cli_dns", "mss.cli_run"} <= graph["mss.cli"]
    assert {"mss.app", "mss.pair", "mss.run"} <= graph["mss.cli_run"]  # also lazy, TYPE_CHECKING
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_mss_modules_form_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in mss: " + " -> ".join(cycle or [])


def test_sub_commands_import_no_other_sub_command() -> None:
    """``mss.cli`` assembles; a sub-command module (``mss/cli_*.py``) shares with another only
    what lives below them: ``mss.app.app_of`` and ``mss.cli_io``'s file helpers."""
    graph = import_graph()
    commands = {m for m in graph if m.startswith("mss.cli_")} - {"mss.cli_io"}
    crossing = {m: sorted(graph[m] & (commands | {"mss.cli"})) for m in sorted(commands)}
    assert {m: found for m, found in crossing.items() if found} == {}
