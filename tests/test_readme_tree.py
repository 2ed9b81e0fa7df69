"""The README's "How it is built" table matches the tree: every path it names exists, and every
module of the project is named, by itself or by a row for its whole directory."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_public_api_only import installed_packages

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = installed_packages()


def table_paths(readme: str) -> list[str]:
    """The paths in the first column of the table. A cell names its first path in full and may go on
    with names in the same directory: ``a/x.py``, ``y.py`` is ``a/x.py`` and ``a/y.py``."""
    section = readme.split("## How it is built", 1)[1].split("\n#", 1)[0]
    paths = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        directory = ""
        for name in re.findall(r"`([^`]+)`", cell):
            if "/" in name:
                directory = name if name.endswith("/") else name.rsplit("/", 1)[0] + "/"
                paths.append(name)
            else:
                paths.append(directory + name)
    return paths


def test_table_paths_reads_a_cell_of_several_names_in_one_directory():
    readme = "## How it is built\n\n| path | what |\n|---|---|\n| `a/x.py`, `y.py` | z |\n| `b/` | w |\n\n### next\n"
    assert table_paths(readme) == ["a/x.py", "a/y.py", "b/"]


def test_every_path_the_table_names_exists():
    paths = table_paths((ROOT / "README.md").read_text())
    assert len(paths) > 20
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_every_module_of_the_project_is_in_the_table():
    named = set(table_paths((ROOT / "README.md").read_text()))
    directories = {p for p in named if p.endswith("/")}
    modules = [p.relative_to(ROOT).as_posix() for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py")]
    unnamed = [m for m in modules
               if m not in named and not any(m.startswith(d) for d in directories)]
    assert unnamed == []
