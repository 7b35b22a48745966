"""What the proxy logic needs from an HTTP client: POST a body, get the 200 body back or a
failure, within the proxy's timeout, through a callback; and a handle to cancel the call
when the connection that asked for it goes away.

The aiohttp implementation is :mod:`gateway.proxy.http` (the one module importing the aiohttp
client); tests give a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.config.proxy import ProxyEndpoint

__all__ = ["CallDone", "CallHandle", "ProxyCaller", "ProxyFailure"]


@dataclass(frozen=True, slots=True)
class ProxyFailure:
    """Why a call got no usable answer: ``timeout``, ``unreachable`` (connection refused,
    reset, DNS ...) or ``status`` (an HTTP status other than 200, in ``status``)."""

    kind: str
    status: int = 0
    detail: str = ""

    def __str__(self) -> str:
        if self.kind == "status":
            return f"HTTP status {self.status}"
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


#: ``done(body, None)`` with the body of a 200 answer, or ``done(None, failure)``; called once,
#: never after the handle was cancelled.
CallDone = Callable[[bytes | None, ProxyFailure | None], None]


class CallHandle(Protocol):
    def cancel(self) -> None:
        """Abandon the call: ``done`` will not be called."""


class ProxyCaller(Protocol):
    def post(self, proxy: ProxyEndpoint, headers: Mapping[str, str], body: bytes, done: CallDone) -> CallHandle:
        """POST ``body`` to ``proxy.endpoint`` with ``headers``; ``done`` within ``proxy.timeout``."""
        ...

    async def close(self) -> None:
        """Release pooled connections (worker shutdown)."""
        ...
