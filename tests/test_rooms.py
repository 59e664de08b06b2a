"""The rooms of docs/DESIGN.md, checked on the source: engine/ imports no api/, sim/, web
framework or database; api/ imports no sim/ (the demo seeds itself through `sim demo`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "engine": {"api", "sim", "client", "benchmarks", "litestar", "sqlmodel", "sqlalchemy"},
    "api": {"sim", "benchmarks"},
}


def imported_roots(path: Path) -> set[str]:
    """The top-level package of every absolute import in a module, wherever it sits (inside
    functions too)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from sim.demo import demo_clips\n")
    assert imported_roots(module) == {"os", "sim"}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_nothing_it_may_not(room: str) -> None:
    modules = sorted((ROOT / room).rglob("*.py"))
    assert modules, room
    trespass = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[room])
        for path in modules
    }
    assert {path: names for path, names in trespass.items() if names} == {}
