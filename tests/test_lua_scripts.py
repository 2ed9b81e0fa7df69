"""The project's Lua lives in ``actors/lua/*.lua``, one script a file, and only there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.lua_scripts import register, source
from tests.test_public_api_only import project_files

ROOT = Path(__file__).resolve().parent.parent
LUA = sorted((ROOT / "actors" / "lua").glob("*.lua"))


def test_no_python_module_of_the_project_carries_lua():
    found = [str(p.relative_to(ROOT)) for p in project_files(".py") if re.search(r"redis\.call\(", p.read_text())]
    assert found == []


def test_every_script_file_is_used_by_name_somewhere_in_the_code():
    code = "\n".join(p.read_text() for p in project_files(".py"))
    unused = [p.stem for p in LUA if f'"{p.stem}"' not in code]
    assert len(LUA) >= 16 and unused == []


@pytest.mark.parametrize("path", LUA, ids=lambda p: p.stem)
def test_each_script_loads_into_a_real_redis(path, redis_server):
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        script = register(client, path.stem)
        assert client.script_load(script.script) == script.sha   # Redis compiles it: no syntax error
    finally:
        client.close()


def test_a_missing_script_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no Lua script 'nope'"):
        source("nope")
