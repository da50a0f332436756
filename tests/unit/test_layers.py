"""The import direction of the whole tree (DESIGN §1):

    streams  ←  features  ←  policies  ←  {agents, lab}  ←  limitstream (the command)

A package imports only from the floors below it (and from itself); ``agents`` and ``lab`` stand
side by side and never import each other. Beside that, the pure core — ``features`` and
``policies`` — imports neither Faust nor a Kafka client. Every import counts, the ones inside
functions too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = frozenset({"faust", "mode", "aiokafka"})
#: What each package of the project may import from the project.
ALLOWED: dict[str, frozenset[str]] = {
    "streams": frozenset({"streams"}),
    "features": frozenset({"streams", "features"}),
    "policies": frozenset({"streams", "features", "policies"}),
    "agents": frozenset({"streams", "features", "policies", "agents"}),
    "lab": frozenset({"streams", "features", "policies", "lab"}),
    "limitstream": frozenset({"streams", "features", "policies", "agents", "lab",
                              "limitstream"}),
}
PURE = ("features", "policies")


def imported(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", [p for pkg in ALLOWED for p in modules(pkg)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_floors(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = (imported(path) & set(ALLOWED)) - ALLOWED[package]
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}, above or beside it"


@pytest.mark.parametrize("path", [p for pkg in PURE for p in modules(pkg)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_framework(path: Path) -> None:
    assert not imported(path) & FRAMEWORKS, path.name


def test_every_package_is_declared() -> None:
    """A new top-level package gets a floor here before it gets code."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert found == set(ALLOWED)


def test_the_rule_can_fail(tmp_path: Path) -> None:
    """The check sees an arrow that runs back up, lazy or not."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f() -> None:\n    from policies.engine import Engine\n")
    assert "policies" in imported(bad) - ALLOWED["streams"]
