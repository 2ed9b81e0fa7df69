"""The project's own Redis Lua scripts, one ``.lua`` file each under ``actors/lua/``, as Dramatiq
keeps its own beside its Redis broker. Python never assembles Lua: constants go in as KEYS or ARGV.

Each script is read once at import of the module that uses it and registered on a client with
``redis.Redis.register_script`` (EVALSHA, loading the script again if Redis lost it). The files ship
with the package (``setup.cfg``, ``[options.package_data]``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of ``actors/lua/<name>.lua``; a clear error if there is no such script."""
    path = resources.files("actors").joinpath("lua", f"{name}.lua")
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script {name!r}: expected {path}")
    return path.read_text(encoding="utf-8")


def register(client, name: str):
    """``actors/lua/<name>.lua`` registered on ``client``: call it with ``keys=`` and ``args=``."""
    return client.register_script(source(name))
