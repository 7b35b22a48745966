"""Several nodes: who is out there, and server API actions that must reach every node.

With the Redis engine, nodes talk over one control channel (``<prefix>.control``). Slot 0 of
every node subscribes to it and runs this module for its node; any worker may publish.

- Every ``announce_interval`` each node's slot 0 surveys its own workers and announces the
  node (id, name, its workers' stats); a node silent for ``node_ttl`` drops out of ``info``.
- A per-user action of the server API (disconnect, subscribe, unsubscribe, refresh) runs on
  the node that took the call and is broadcast as a command the other nodes run on theirs.
- A cluster survey (``channels``) asks every live node and collects the answers for at most
  ``survey_timeout``; a node that does not answer in time is left out (and named).

Messages are JSON objects: ``{"t": "node" | "cmd" | "survey" | "reply", "from": node id, ...}``.
A message from this node, or for another node, is ignored; a malformed one is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ClusterDirectory", "ANNOUNCE_INTERVAL", "NODE_TTL"]

log = logging.getLogger("shardgate.cluster")

ANNOUNCE_INTERVAL = 3.0  # as Centrifugo's node info
NODE_TTL = 10.0
SURVEY_TIMEOUT = 1.0
_MAX_NODES = 1024

#: ``survey(method, body) -> [(slot, result or None)]`` over this node's workers.
LocalSurvey = Callable[[str, dict[str, Any]], Awaitable[list[tuple[int, dict[str, Any] | None]]]]


@dataclass(slots=True)
class _Survey:
    replies: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: set[str] = field(default_factory=set)


class ClusterDirectory:
    """This node's view of the others (run by slot 0), and the cluster-wide actions."""

    def __init__(self, node_id: str, name: str, loop: asyncio.AbstractEventLoop, clock: Callable[[], float],
                 publish: Callable[[bytes], Awaitable[None]], local_survey: LocalSurvey,
                 announce_interval: float = ANNOUNCE_INTERVAL, node_ttl: float = NODE_TTL) -> None:
        self.node_id = node_id
        self.name = name
        self.loop = loop
        self.clock = clock
        self._publish = publish
        self._local_survey = local_survey
        self.announce_interval = announce_interval
        self.node_ttl = node_ttl
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}  # other node id -> (seen at, info)
        self._surveys: dict[str, _Survey] = {}
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = self.loop.create_task(self._announce_forever())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in self._tasks:
            task.cancel()

    async def _announce_forever(self) -> None:
        while True:
            try:
                workers = [stats for _, stats in await self._local_survey("stats", {}) if stats is not None]
                await self._send({"t": "node", "name": self.name, "workers": workers})
            except Exception as exc:  # Redis away: the next round tries again
                log.debug("node announcement failed: %r", exc)
            await asyncio.sleep(self.announce_interval)

    async def _send(self, message: dict[str, Any]) -> None:
        message["from"] = self.node_id
        await self._publish(orjson.dumps(message))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what other nodes say -------------------------------------------------------------------

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Other live nodes' last announcements, by node id."""
        now = self.clock()
        for node_id in [n for n, (seen, _) in self._nodes.items() if now - seen > self.node_ttl]:
            del self._nodes[node_id]
        return {node_id: info for node_id, (_, info) in self._nodes.items()}

    def on_control(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            kind, origin = message["t"], message["from"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("dropped a malformed control message")
            return
        if origin == self.node_id:
            return
        if kind == "node":
            if origin in self._nodes or len(self._nodes) < _MAX_NODES:
                self._nodes[origin] = (self.clock(), {"name": message.get("name", ""),
                                                      "workers": message.get("workers") or []})
        elif kind == "cmd":
            self._spawn(self._run_command(str(message.get("method")), message.get("body") or {}))
        elif kind == "survey":
            self._spawn(self._answer_survey(str(message.get("id")), origin, str(message.get("method")),
                                            message.get("body") or {}))
        elif kind == "reply" and message.get("to") == self.node_id:
            survey = self._surveys.get(str(message.get("id")))
            if survey is not None:
                survey.replies[origin] = message.get("result")
                if survey.expected <= set(survey.replies):
                    survey.done.set()

    async def _run_command(self, method: str, body: dict[str, Any]) -> None:
        await self._local_survey(method, body)

    async def _answer_survey(self, survey_id: str, origin: str, method: str, body: dict[str, Any]) -> None:
        results = [result for _, result in await self._local_survey(method, body) if result is not None]
        await self._send({"t": "reply", "id": survey_id, "to": origin, "result": results})

    # -- asking the others ----------------------------------------------------------------------

    async def broadcast(self, method: str, body: dict[str, Any]) -> None:
        """Have every other node run control action ``method`` on its workers."""
        await self._send({"t": "cmd", "method": method, "body": body})

    async def survey(self, method: str, body: dict[str, Any],
                     timeout: float = SURVEY_TIMEOUT) -> dict[str, list[dict[str, Any]]]:
        """Every other live node's workers' answers to ``method``, by node id."""
        expected = set(self.nodes())
        if not expected:
            return {}
        survey_id = uuid.uuid4().hex
        survey = self._surveys[survey_id] = _Survey(expected=expected)
        try:
            await self._send({"t": "survey", "id": survey_id, "method": method, "body": body})
            try:
                async with asyncio.timeout(timeout):
                    await survey.done.wait()
            except TimeoutError:
                log.warning("survey %s: no answer from %s", method, sorted(expected - set(survey.replies)))
            return {node_id: list(result or []) for node_id, result in survey.replies.items()}
        finally:
            del self._surveys[survey_id]
