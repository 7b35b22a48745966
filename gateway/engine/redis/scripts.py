"""The Lua scripts (``*.lua`` next to this module), registered with redis-py.

Scripts run by EVALSHA inside our own pipelines. redis-py's ``Script`` objects would add a
SCRIPT EXISTS round trip before every pipeline that holds one, which defeats one-round-trip
batching, so we take only the SHA from ``register_script`` and load the bodies ourselves:
once at start, and again when Redis answers NOSCRIPT (a restarted or flushed server).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["SCRIPT_NAMES", "Scripts"]

SCRIPT_NAMES = ("publish", "history", "presence_add", "presence_remove", "presence_get", "presence_stats", "pub",
                "sio_take")


def _read(name: str) -> str:
    return resources.files(__package__ or "gateway.engine.redis").joinpath(f"{name}.lua").read_text("utf-8")


_BODIES = {name: _read(name) for name in SCRIPT_NAMES}


class Scripts:
    """SHA1 per script name for one client (standalone, sentinel or cluster)."""

    __slots__ = ("_client", "sha", "sha_bytes")

    def __init__(self, client: Any) -> None:
        self._client = client
        self.sha: dict[str, str] = {name: client.register_script(body).sha for name, body in _BODIES.items()}
        self.sha_bytes = {name: sha.encode() for name, sha in self.sha.items()}

    async def load(self) -> None:
        """SCRIPT LOAD every body (on a cluster, redis-py sends it to every primary)."""
        for name, body in _BODIES.items():
            sha = await self._client.script_load(body)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != self.sha[name]:
                raise RuntimeError(f"script {name}: Redis answered SHA {sha}, expected {self.sha[name]}")
