"""Worker process main: everything stateful is created here, after fork.

One uvloop loop, one zmq Context (inside the bus), the picows listeners bound with
SO_REUSEPORT, the node. The worker tells the supervisor it is ready over an inherited
pipe, exits when the supervisor dies (PR_SET_PDEATHSIG plus a parent-pid check from the
loop), drains on SIGTERM (every client gets CLOSE 3001 "shutdown") and stops at once on
SIGINT/SIGQUIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import uvloop

from gateway.api.executor import ApiExecutor
from gateway.api.http import ClientPortHttp, start_client_port_http, start_http_server
from gateway.config import Config
from gateway.consume.runner import Consumers
from gateway.core.errors import DISCONNECT_SHUTDOWN
from gateway.node import Node
from gateway.socketio.server import start_socketio
from gateway.transport.tls import server_tls_context
from gateway.transport.websocket import start_client_server
from sharding.bus import ZmqBus

__all__ = ["WorkerSpec", "run_worker", "EXIT_BOOT_ERROR"]

log = logging.getLogger("shardgate.worker")

# Reserved exit code: the worker could not start (bind failed, bad config). The supervisor
# stops instead of respawning forever when a slot keeps exiting with it.
EXIT_BOOT_ERROR = 3

_PR_SET_PDEATHSIG = 1
_HEARTBEAT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    config: Config
    slot: int
    workers: int
    host: str
    port: int
    internal_host: str
    internal_port: int
    runtime_dir: str
    ready_fd: int
    supervisor_pid: int
    endpoints: tuple[str, ...] = ()  # every slot's current bus endpoint (this one's included)
    successor: bool = False  # a reload successor: waits for its predecessor's state


def handoff_file(runtime_dir: str, slot: int) -> str:
    """Where the supervisor tells a retiring worker its successor's endpoint."""
    return os.path.join(runtime_dir, f"handoff-{slot}")


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check in the loop still catches it


def _pin_cpu(slot: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[slot % len(cpus)]})
    except (AttributeError, OSError) as exc:
        log.warning("cpu pinning failed: %s", exc)


class Worker:
    def __init__(self, spec: WorkerSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        # One node id for all workers of this supervisor: how other nodes tell nodes apart.
        node_id = f"{socket.gethostname()}-{spec.supervisor_pid}-{spec.port}"
        self.node = Node(spec.config, spec.slot, spec.workers, loop, time.time, random.Random(), node_id=node_id,
                         node_name=f"{socket.gethostname()}:{spec.port}")
        self.bus: ZmqBus | None = None
        self.servers: list[Any] = []
        self.http: Any = None
        self.client_http: ClientPortHttp | None = None
        self.ssl: ssl.SSLContext | None = None
        self.consumers = Consumers(self.node, ApiExecutor(self.node))
        self.stopping = asyncio.Event()
        self.fast = False
        self._ready_sent = False

    async def start(self) -> None:
        spec = self.spec
        successor = spec.successor
        # A successor owns nothing until its predecessor's state arrives.
        self.node.frozen = successor
        await self.node.engine.start()
        if self.node.cluster is not None and spec.slot == 0:
            self.node.cluster.start()
        if spec.workers > 1:
            peers = {slot: path for slot, path in enumerate(spec.endpoints) if slot != spec.slot}
            self.bus = ZmqBus(spec.endpoints[spec.slot], peers, self.loop, self.node.router.on_envelope,
                              self.node.metrics.bus_batch.observe)
            self.node.router.on_peer_change = self._maybe_ready
            self.node.on_handoff_done = self._after_handoff
            self.node.attach_bus(self.bus, announce=not successor)
        # A successor binds the client port now (so the port never goes unbound) but only
        # listens once it holds its predecessor's channels.
        tls = spec.config.http_server.tls
        self.ssl = server_tls_context(tls) if tls.enabled else None
        sio = start_socketio(self.node)
        self.client_http = await start_client_port_http(self.node, sio if sio and sio.cfg.polling else None)
        self.servers.append(await start_client_server(self.node, spec.host, spec.port, start_serving=not successor,
                                                      ssl_context=self.ssl, plain_http=self.client_http, more=sio))
        if not successor:
            self.http = await start_http_server(self.node, spec.internal_host, spec.internal_port, self.ssl)
        self.loop.add_signal_handler(signal.SIGTERM, self.stop, False)
        for sig in (signal.SIGINT, signal.SIGQUIT):
            self.loop.add_signal_handler(sig, self.stop, True)
        self.loop.add_signal_handler(signal.SIGHUP, lambda: None)
        self.loop.add_signal_handler(signal.SIGUSR2, self._hand_off)
        self._watch_parent()
        # Consumers apply messages through the owners; a reload successor starts its own once it
        # holds its predecessor's channels (the predecessor stops its consumers when handing off).
        if not successor:
            self.consumers.start()
        if successor:
            os.write(spec.ready_fd, f"W {spec.slot} {os.getpid()}\n".encode())
        self._maybe_ready()

    def _after_handoff(self) -> None:
        self.loop.create_task(self._serve_after_handoff())

    async def _serve_after_handoff(self) -> None:
        self.node.router.announce(handoff=True)
        self.consumers.start()
        for server in self.servers:
            await server.start_serving()
        self.http = await start_http_server(self.node, self.spec.internal_host, self.spec.internal_port,
                                           self.ssl)
        self._maybe_ready()

    def _hand_off(self) -> None:
        """SIGUSR2 (reload): give owned channels to the successor named in the handoff file.

        From here on this worker refuses owner operations (temporary error; clients and
        backends retry against the successor) so no offset can be assigned twice."""
        if self.bus is None:
            return
        path = handoff_file(self.spec.runtime_dir, self.spec.slot)
        try:
            with open(path) as f:
                target = f.read().strip()
        except OSError as exc:
            log.error("handoff: cannot read %s: %s", path, exc)
            return
        self.loop.create_task(self.consumers.stop_consumers())  # the successor takes them over
        self.node.freeze()
        envelopes = self.node.handoff_envelopes()
        ok = self.bus.send_all_to(target, envelopes, timeout=10.0)
        log.info("handoff: sent %d channels to the successor (%s)", len(envelopes) - 1, "ok" if ok else "FAILED")

    def _maybe_ready(self) -> None:
        if self._ready_sent or (self.bus is not None and not self.node.bus_ready) or self.http is None:
            return
        self._ready_sent = True
        os.write(self.spec.ready_fd, f"R {self.spec.slot} {os.getpid()}\n".encode())
        log.info("slot %d ready", self.spec.slot)

    def _watch_parent(self) -> None:
        """Runs on the event loop every second: proves the loop turns (heartbeat to the
        supervisor) and notices a dead supervisor."""
        if os.getppid() != self.spec.supervisor_pid:
            log.warning("supervisor is gone, stopping")
            self.stop(True)
            return
        if self._ready_sent:
            with contextlib.suppress(OSError):
                os.write(self.spec.ready_fd, f"H {self.spec.slot} {os.getpid()}\n".encode())
        self.loop.call_later(_HEARTBEAT_INTERVAL, self._watch_parent)

    def stop(self, fast: bool) -> None:
        self.fast = self.fast or fast
        self.stopping.set()

    async def run(self) -> None:
        await self.stopping.wait()
        await self.consumers.close()  # first: nothing half-applied is acknowledged after this
        for server in self.servers:
            server.close()
        if not self.fast:
            await self._drain()
        if self.http is not None:
            await self.http.cleanup()
        if self.client_http is not None:
            await self.client_http.close()
        self.node.close()
        if self.node.proxy is not None:
            await self.node.proxy.close()
        if self.node.cluster is not None:
            self.node.cluster.close()
        await self.node.engine.close()
        if self.bus is not None:
            self.bus.close()

    async def _drain(self) -> None:
        """Close every client with 3001 "shutdown" at a random moment within
        ``shardgate.drain_window``, so reconnects do not arrive as one herd."""
        cfg = self.spec.config.shardgate
        rng = self.node.rng
        for session in list(self.node.hub.clients.values()):
            delay = rng.random() * cfg.drain_window
            if delay <= 0:
                session.close(DISCONNECT_SHUTDOWN)
            else:
                self.loop.call_later(delay, session.close, DISCONNECT_SHUTDOWN)
        deadline = self.loop.time() + max(cfg.graceful_timeout, cfg.drain_window)
        while self.node.hub.clients and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # let the CLOSE frames reach the sockets


async def _main(spec: WorkerSpec) -> int:
    loop = asyncio.get_running_loop()
    worker = Worker(spec, loop)
    try:
        await worker.start()
    except Exception as exc:
        log.error("slot %d failed to start: %s", spec.slot, exc)
        return EXIT_BOOT_ERROR
    await worker.run()
    return 0


def run_worker(spec: WorkerSpec) -> NoReturn:
    """Child side of fork(); never returns to the supervisor's code."""
    code = 1
    try:
        _die_with_parent()
        if os.getppid() != spec.supervisor_pid:
            os._exit(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if spec.config.shardgate.cpu_pinning:
            _pin_cpu(spec.slot)
        code = uvloop.run(_main(spec))
    except BaseException:
        log.exception("slot %d crashed", spec.slot)
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
