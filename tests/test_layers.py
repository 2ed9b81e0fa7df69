"""The import graph has a bottom: keepa_base imports nothing of the project's, and the wire, storage,
the pipeline and the governor's policy import nothing from the packages standing on them
(keepa_deals, the command line and settings; actors, the Dramatiq processes).

Read from the source with ast, every import counted wherever it stands (inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("keepa_base", "keepa_deals", "keepa_api", "governor", "pipeline", "simulator", "actors", "storage",
           "metrics", "bench", "tests")
LOWER = ("keepa_api", "storage", "pipeline", "governor")
ABOVE_THEM = ("keepa_deals", "actors")


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every module ``path`` imports (relative imports: its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules under {package}/"
    return found


def test_the_reading_sees_every_kind_of_import():
    sample = ROOT / "keepa_api" / "client.py"
    assert {"keepa_base", "keepa_api", "requests"} <= imported_packages(sample)


def test_the_errors_module_imports_nothing_from_the_project():
    assert imported_packages(ROOT / "keepa_base" / "errors.py") & set(PROJECT) == set()


@pytest.mark.parametrize("path", modules("keepa_base"), ids=lambda p: p.name)
def test_the_bottom_layer_imports_only_itself_from_the_project(path):
    assert imported_packages(path) & set(PROJECT) <= {"keepa_base"}


@pytest.mark.parametrize("package", LOWER)
def test_the_lower_packages_import_nothing_from_keepa_deals_or_actors(package):
    offending = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & set(ABOVE_THEM)) for p in modules(package)}
    assert {path: names for path, names in offending.items() if names} == {}
