"""The HTTP proxy caller: the only module that imports the aiohttp client.

One pooled :class:`aiohttp.ClientSession` per worker, made on the first call, inside the
worker's running loop (so after fork), and closed at shutdown. Each call is one task
bounded by the proxy's timeout; a call whose connection went away is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from gateway.config.proxy import ProxyEndpoint
from gateway.proxy.caller import CallDone, CallHandle, ProxyCaller, ProxyFailure

__all__ = ["HttpProxyCaller"]

# A proxy answer larger than this is refused (it would become a reply or a publication).
MAX_ANSWER_BYTES = 16 * 1024 * 1024


class _Call:
    __slots__ = ("_done", "_task")

    def __init__(self, task: asyncio.Task[tuple[bytes | None, ProxyFailure | None]], done: CallDone) -> None:
        self._task = task
        self._done: CallDone | None = done
        task.add_done_callback(self._finished)

    def cancel(self) -> None:
        self._done = None
        self._task.cancel()

    def _finished(self, task: asyncio.Task[tuple[bytes | None, ProxyFailure | None]]) -> None:
        done, self._done = self._done, None
        if done is None or task.cancelled():
            return
        body, failure = task.result()
        done(body, failure)


class HttpProxyCaller:
    """POSTs JSON to HTTP(S) proxy endpoints over one pooled session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Centrifugo keeps up to 255 idle connections per host; aiohttp's limit is on
            # connections in use, 0 = unbounded (each call is bounded by its timeout instead).
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    def post(self, proxy: ProxyEndpoint, headers: Mapping[str, str], body: bytes, done: CallDone) -> CallHandle:
        task = asyncio.get_running_loop().create_task(self._post(proxy, dict(headers), body))
        return _Call(task, done)

    async def _post(self, proxy: ProxyEndpoint, headers: dict[str, str], body: bytes
                    ) -> tuple[bytes | None, ProxyFailure | None]:
        try:
            async with asyncio.timeout(proxy.timeout):
                async with self._client().post(proxy.endpoint, data=body, headers=headers,
                                               allow_redirects=False) as resp:
                    if resp.status != 200:
                        return None, ProxyFailure("status", resp.status)
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        data += chunk
                        if len(data) > MAX_ANSWER_BYTES:
                            return None, ProxyFailure("unreachable", detail="answer too large")
                    return bytes(data), None
        except TimeoutError:
            return None, ProxyFailure("timeout", detail=f"no answer within {proxy.timeout:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return None, ProxyFailure("unreachable", detail=f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_: type[ProxyCaller] = HttpProxyCaller
