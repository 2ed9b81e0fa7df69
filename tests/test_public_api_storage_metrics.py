"""storage/ and metrics/ use peewee and prometheus-client through their documented API only.

Private names change without notice within a major version, which the upper bounds in setup.cfg
cannot guard against. So these names, each of which the project once used, are listed here and
looked for in every module of the project; and prometheus-client is imported only from the modules
its documentation describes (``prometheus_client``, ``.core`` for custom collectors,
``.multiprocess``, ``.parser``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import peewee
import pytest

from storage.db import as_peewee_error

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("storage", "metrics", "keepa_deals", "keepa_api", "pipeline", "governor", "simulator", "actors",
            "bench")
FORBIDDEN = {
    "peewee's exception wrapper": r"__exception_wrapper__",
    "peewee's connection state": r"\._state\.(reset|conn|closed|transactions|ctx)\b|_Connection(State|Local)\b",
    "peewee's private transaction classes": r"peewee\._(atomic|transaction|manual|savepoint)\b",
    "an attribute set on the peewee Database": r"_keepa_write_lock",
    "prometheus_client.utils": r"prometheus_client\.utils|floatToGoString",
}
DOCUMENTED_PROMETHEUS_MODULES = {"prometheus_client", "prometheus_client.core", "prometheus_client.multiprocess",
                                 "prometheus_client.parser"}


def project_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_module_uses_a_private_name_of_peewee_or_prometheus_client(what):
    pattern = re.compile(FORBIDDEN[what])
    found = [f"{path.relative_to(ROOT)}:{n}" for path in project_modules()
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == [], f"{what} used in {found}"


def test_prometheus_client_is_imported_only_from_its_documented_modules():
    imported = set()
    for path in [*project_modules(), *sorted((ROOT / "tests").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prometheus_client"):
                imported.add(node.module)
                imported.update(f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in DOCUMENTED_PROMETHEUS_MODULES)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.startswith("prometheus_client"))
    assert "prometheus_client" in imported  # the walk saw the exporter's imports
    assert imported <= DOCUMENTED_PROMETHEUS_MODULES


def test_driver_errors_become_peewees_class_of_the_same_db_api_name():
    import sqlite3

    import psycopg2.errors

    assert type(as_peewee_error(sqlite3.OperationalError("database is locked"))) is peewee.OperationalError
    assert type(as_peewee_error(sqlite3.IntegrityError("UNIQUE"))) is peewee.IntegrityError
    assert type(as_peewee_error(psycopg2.errors.UniqueViolation("dup"))) is peewee.IntegrityError
    assert type(as_peewee_error(psycopg2.errors.UndefinedTable("no table"))) is peewee.ProgrammingError
    unrelated = RuntimeError("not a driver error")
    assert as_peewee_error(unrelated) is unrelated
