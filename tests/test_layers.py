"""Dependencies point down (DESIGN.md, the parts): nothing imports ``webmail`` or ``gateway``
except ``mss``, and the queue (``spool``) sits below the gateway, the webmail and the mail
store. Every import statement of every module is read with ``ast`` (those inside functions
too), so a lazy import cannot hide a layer going up.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py")
                  if p.parent.name not in ("tests", "bench"))

# (importing file, imported module) still allowed, and why.
# None left: the peers' health (the operator's "Pairs" page) moved to ``peers``.
ALLOWED: set[tuple[str, str]] = set()


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """The absolute names of the modules ``path`` (a file under ``root``) imports."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _edges() -> set[tuple[str, str]]:
    """(importing file, imported module) for every module of the project's packages."""
    edges = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for module in _imports(path):
                edges.add((path.relative_to(ROOT).as_posix(), module))
    return edges


def _top(module: str) -> str:
    return module.partition(".")[0]


def _going_up(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    wrong = set()
    for path, module in edges:
        importer, imported = _top(path.replace("/", ".")), _top(module)
        if importer == imported or importer == "mss":
            continue
        if imported in ("gateway", "webmail"):
            wrong.add((path, module))
        if importer == "spool" and imported in ("mailstore", "mss"):
            wrong.add((path, module))
    return wrong


def test_the_packages_are_found() -> None:
    assert {"core", "spool", "peers", "gateway", "webmail", "mss"} <= set(PACKAGES)


def _covers(entry: tuple[str, str], edge: tuple[str, str]) -> bool:
    """``edge`` (file, module or name imported) is what the allowed ``entry`` names."""
    return edge[0] == entry[0] and (edge[1] == entry[1] or edge[1].startswith(entry[1] + "."))


def test_nothing_but_mss_imports_gateway_or_webmail() -> None:
    wrong = {edge for edge in _going_up(_edges())
             if not any(_covers(entry, edge) for entry in ALLOWED)}
    assert wrong == set()


def test_the_allowed_imports_are_still_there() -> None:
    """An entry nothing needs any more is removed, so the list only shrinks."""
    edges = _edges()
    assert {entry for entry in ALLOWED if not any(_covers(entry, e) for e in edges)} == set()


def test_a_lazy_or_relative_import_going_up_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "spool" / "_layers_probe.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from gateway import accept\n    from . import queue\n")
    found = _imports(module, tmp_path)
    assert found == {"gateway.accept", "spool.queue"}
    assert _going_up({("spool/_layers_probe.py", m) for m in found}) == {
        ("spool/_layers_probe.py", "gateway.accept")}
