"""The project uses only the public API of Dramatiq, redis-py, peewee and prometheus-client.

Private calls, attributes and key layouts change without notice inside a major version (Dramatiq's
dispatch script's arguments have), so none may appear in the project's code or Lua: each name below
is one that an earlier version of this project used, or one next to it in the same internals.
Comments may name them (to say why not); code, strings and Lua may not.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def installed_packages() -> tuple[str, ...]:
    """The top-level packages setup.cfg ships (``include = name*``), and the benchmarks."""
    text = (ROOT / "setup.cfg").read_text()
    block = text.split("[options.packages.find]", 1)[1].split("\n[", 1)[0]
    return (*re.findall(r"^\s+(\w+)\*$", block, re.M), "bench")


PACKAGES = installed_packages()

# tests may hold a lock from a plain sqlite3 connection (another process, as far as peewee knows)
RAW_TRANSACTIONS = "raw transaction statements beside peewee's transaction stack"

# (pattern, what it is): each pattern is a regular expression matched against code with comments removed
FORBIDDEN = [
    # Dramatiq: the Redis broker's dispatch script, its helpers and its key layout
    (r"\.scripts\s*\[", "Dramatiq's Redis scripts (broker.scripts)"),
    (r"_should_do_maintenance", "RedisBroker._should_do_maintenance"),
    (r"_max_unpack_size", "RedisBroker._max_unpack_size"),
    (r"\bdo_(fetch|ack|nack|requeue|enqueue|dispatch)\b", "RedisBroker's dispatch-script commands"),
    (r"(?<!self)\._dispatch\b", "RedisBroker._dispatch"),
    (r"\bdq_name\b|\bxq_name\b|\bq_name\b", "dramatiq.common's queue-name helpers (undocumented)"),
    (r"dramatiq\.common", "dramatiq.common (undocumented)"),
    (r"\.msgs\b", "Dramatiq's message hash key (<namespace>:<queue>.msgs)"),
    (r"__acks__|__heartbeats__", "Dramatiq's ack sets and heartbeats keys"),
    (r"\.DQ\b|\.XQ\b", "Dramatiq's delay and dead-letter queue names"),
    (r"message_cache|queued_message_ids", "the Redis consumer's private buffers"),
    (r"\bbroker_id\b", "RedisBroker.broker_id (part of its key layout)"),
    # redis-py
    (r"connection_pool\._|\._pool\b|\._sock\b|\._parser\b", "redis-py's private connection internals"),
    # peewee
    (r"__exception_wrapper__", "peewee.__exception_wrapper__"),
    (r"\._state\b|_Connection(State|Local)\b", "peewee's per-thread connection state (Database._state)"),
    (r"peewee\._[a-z]", "peewee's private classes (_atomic, _transaction, _manual ...)"),
    (r"_keepa_write_lock", "an attribute of our own set on peewee's Database"),
    (r"['\"](BEGIN|COMMIT|ROLLBACK)\b", RAW_TRANSACTIONS),
    # prometheus-client
    (r"floatToGoString|prometheus_client\.utils", "prometheus_client.utils (not public)"),
    (r"_names_to_collectors|_collector_to_names|\._value\b|\._metrics\b", "prometheus-client's private state"),
]


def code_of(path: Path) -> str:
    """The file's text without comments (Python: tokenize; Lua: ``--`` to the end of the line)."""
    text = path.read_text()
    if path.suffix == ".lua":
        return "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    lines = text.splitlines(keepends=True)
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:  # a comment never spans lines: blank it where it stands
            row, start = token.start
            line = lines[row - 1]
            lines[row - 1] = line[:start] + " " * (token.end[1] - start) + line[token.end[1]:]
    return "".join(lines)


def offences(code: str) -> list[str]:
    return [what for pattern, what in FORBIDDEN if re.search(pattern, code)]


def project_files(*suffixes: str) -> list[Path]:
    files = []
    for package in PACKAGES:
        for suffix in suffixes or (".py", ".lua"):
            files += sorted((ROOT / package).rglob(f"*{suffix}"))
    return files


def the_tests() -> list[Path]:
    """The tests too, but not this file, which spells the names out to look for them."""
    return [p for p in sorted((ROOT / "tests").glob("*.py")) if p.name != Path(__file__).name]


# modules each library's documentation describes; anything else it ships is its own business
DOCUMENTED_MODULES = {
    "dramatiq": {"dramatiq", "dramatiq.brokers.redis", "dramatiq.brokers.stub", "dramatiq.middleware",
                 "dramatiq.errors", "dramatiq.rate_limits", "dramatiq.rate_limits.backends"},
    "prometheus_client": {"prometheus_client", "prometheus_client.core", "prometheus_client.multiprocess",
                          "prometheus_client.parser"},
    "peewee": {"peewee"},
    "redis": {"redis", "redis.exceptions"},
}


def imported_modules(paths) -> dict[str, set[str]]:
    """Per library, the modules the code imports (``from a.b import c`` counts ``a.b``, and ``a.b.c``
    too when that is itself a module the documentation names)."""
    found: dict[str, set[str]] = {lib: set() for lib in DOCUMENTED_MODULES}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for lib, documented in DOCUMENTED_MODULES.items():
                for i, name in enumerate(names):
                    if (name == lib or name.startswith(lib + ".")) and (i == 0 or name in documented):
                        found[lib].add(name)
    return found


def test_each_library_is_imported_only_from_its_documented_modules():
    found = imported_modules(project_files(".py") + the_tests())
    assert all(found[lib] for lib in DOCUMENTED_MODULES), found   # the walk saw every library imported
    undocumented = {lib: sorted(found[lib] - DOCUMENTED_MODULES[lib]) for lib in DOCUMENTED_MODULES}
    assert undocumented == {lib: [] for lib in DOCUMENTED_MODULES}


def test_the_project_names_nothing_private_to_its_libraries():
    found = {}
    for path in project_files() + the_tests():
        hits = offences(code_of(path))
        if path.parent.name == "tests":
            hits = [what for what in hits if what != RAW_TRANSACTIONS]
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, f"private library internals used: {found}"


def test_the_scan_covers_every_top_level_package_and_the_lua_files():
    scanned = {p.relative_to(ROOT).parts[0] for p in project_files()}
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert scanned == on_disk and "keepa_base" in scanned
    assert any(p.suffix == ".lua" for p in project_files())


@pytest.mark.parametrize("line", [
    'keys = broker.scripts["dispatch"]',
    "flag = broker._should_do_maintenance(command)",
    "from dramatiq.common import dq_name",
    'client.hlen(f"{ns}:peek.msgs")',
    "redis.call('SREM', ns .. ':__acks__.' .. worker, id)",
    "with peewee.__exception_wrapper__:",
    "db._state.reset()",
    'cursor.execute("BEGIN IMMEDIATE")',
    "from prometheus_client.utils import floatToGoString",
])
def test_each_forbidden_use_is_caught(line):
    assert offences(line), line


def test_a_comment_may_name_them_but_code_may_not(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("x = 1  # not broker._should_do_maintenance: it is private\n")
    assert offences(code_of(source)) == []
    source.write_text("x = broker._should_do_maintenance('fetch')\n")
    assert offences(code_of(source)) == ["RedisBroker._should_do_maintenance"]
