"""The supervisor: a plain synchronous loop modelled on gunicorn's arbiter.

It forks one worker per slot (no asyncio, no zmq here: those are created in the child),
reaps them, restarts a dead slot under the same slot number with backoff, and stops with
a clear message when a slot keeps failing before it ever gets ready. Signal handlers
only enqueue and wake the loop; the loop acts. SIGTERM drains (workers close clients
with 3001 and exit within ``shardgate.graceful_timeout``), SIGINT/SIGQUIT stop fast.
Workers die with the supervisor (PR_SET_PDEATHSIG in the child), even on SIGKILL.

The supervisor keeps a bound, non-listening SO_REUSEPORT socket on each port. It
reserves the port between worker restarts and resolves port 0 to one real port that
every worker then shares. Before that it makes sure no one else serves the port (see
``reserve_port``): SO_REUSEPORT would otherwise let a second gateway of the same user
join the first one's sockets, and the kernel would spread clients over both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Config, ConfigError
from gateway.process.systemd import Notifier, watchdog_interval
from gateway.process.worker import EXIT_BOOT_ERROR, WorkerSpec, handoff_file, run_worker
from sharding.bus import endpoint_path

__all__ = ["ListenError", "Supervisor", "reserve_port"]

log = logging.getLogger("shardgate.supervisor")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
_FAST_STOP_TIMEOUT = 3.0
_BACKOFF_MAX = 5.0
_SUCCESSOR_TIMEOUT = 30.0


class ListenError(Exception):
    """The supervisor cannot have ``host:port``: in use by another process, or not bindable."""

    def __init__(self, host: str, port: int, key: str, reason: str) -> None:
        super().__init__(f"cannot listen on {host or '*'}:{port} ({key}): {reason}")
        self.host, self.port, self.key = host, port, key


def reserve_port(host: str, port: int, key: str = "port") -> socket.socket:
    """Hold ``host:port`` for the workers: bound with SO_REUSEPORT, not listening.

    SO_REUSEPORT lets every socket of the same uid join the port, so a second
    ``shardgate serve`` on it would start silently and share the clients. Hence the
    probe first: a socket *without* SO_REUSEPORT (but with SO_REUSEADDR, so connections
    of an earlier run in TIME_WAIT do not block a restart) cannot bind next to a
    listening socket of anyone, whatever its uid or its address (0.0.0.0 overlaps
    127.0.0.1). The kernel is the judge, so this also works across users, containers
    sharing the network and private /tmp, where a lock file would not. The reservation
    itself is made *without* SO_REUSEADDR: that makes it conflict with another
    supervisor's probe too, so a gateway that is still booting (reserved, no worker
    listening yet) is found as well. Our workers (SO_REUSEPORT, same uid) still join it,
    and a restarted worker binds beside its siblings; only a fresh supervisor probes.
    Port 0 asks the kernel for a free port: nothing to probe."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ListenError(host, port, key, "address already in use (another shardgate or another "
                                                   "server listens on it)") from None
            raise ListenError(host, port, key, exc.strerror or str(exc)) from None
        finally:
            probe.close()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(host, port, key, exc.strerror or str(exc)) from None
    return sock


@dataclass(slots=True)
class _Slot:
    number: int
    pid: int = 0
    ready: bool = False
    started_at: float = 0.0
    boot_failures: int = 0
    restart_at: float = 0.0
    last_beat: float = 0.0
    killed_stuck: bool = False
    generation: int = 0  # bumps with every worker started in this slot: names its bus endpoint
    endpoint: str = ""
    successor_pid: int = 0  # reload: the new worker waiting for this slot's state
    successor_since: float = 0.0


class Supervisor:
    def __init__(self, config: Config, on_ready: Callable[[Supervisor], None] | None = None,
                 reload_config: Callable[[], Config] | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.reload_config = reload_config
        self.notifier = notifier or Notifier()
        self._watchdog = watchdog_interval()
        self._last_watchdog = 0.0
        self._reload_queue: list[int] = []  # slots still to replace in a rolling reload
        self._reloading = False
        self._reload_current: int | None = None
        self._reload_old_pid = 0
        self._retiring: dict[int, int] = {}  # pid -> slot of workers draining after a handoff
        self.workers = config.worker_count()
        self.host = config.http_server.address
        self.port = config.http_server.port
        self.internal_host = config.http_server.internal_address
        self.internal_port = config.http_server.internal_port
        self.on_ready = on_ready
        self.slots = [_Slot(i) for i in range(self.workers)]
        self._signals: list[int] = []
        self._stopping: str | None = None  # None, "graceful", "fast"
        self._announced = False
        self._runtime_dir = ""
        self._owns_runtime_dir = False
        self.exit_code = 0

    # -- signals --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            if sig == signal.SIGCHLD:
                continue
            if sig == signal.SIGTERM:
                self._begin_stop("graceful")
            elif sig in (signal.SIGINT, signal.SIGQUIT):
                self._begin_stop("fast")
            elif sig == signal.SIGHUP:
                self._begin_reload()

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; the exit code. Raises :class:`ListenError` before starting
        anything when a port cannot be had."""
        self._holds = [reserve_port(self.host, self.port, "http_server.port")]
        try:
            self._holds.append(reserve_port(self.internal_host, self.internal_port, "http_server.internal_port"))
        except ListenError:
            self._holds[0].close()
            raise
        self.port = self._holds[0].getsockname()[1]
        self.internal_port = self._holds[1].getsockname()[1]
        runtime = self.config.shardgate.runtime_dir
        if runtime:
            os.makedirs(runtime, mode=0o700, exist_ok=True)
            self._runtime_dir = runtime
        else:
            self._runtime_dir = tempfile.mkdtemp(prefix="shardgate-")
            self._owns_runtime_dir = True
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._ready_r, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        for sig in _SIGNALS:
            signal.signal(sig, self._on_signal)
        self._pid = os.getpid()
        self._write_pid_file()
        log.info("supervisor pid %d starting %d workers on %s:%d", self._pid, self.workers, self.host, self.port)
        for slot in self.slots:
            slot.endpoint = endpoint_path(self._runtime_dir, slot.number, 1)
            slot.generation = 0
        try:
            for slot in self.slots:
                self._spawn(slot)
            self._loop()
        finally:
            self._cleanup()
        return self.exit_code

    def _write_pid_file(self) -> None:
        path = self.config.shardgate.pid_file
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{self._pid}\n")
            os.replace(tmp, path)

    def _remove_pid_file(self) -> None:
        path = self.config.shardgate.pid_file
        if path:
            with contextlib.suppress(OSError):
                with open(path) as f:
                    if f.read().strip() != str(self._pid):
                        return
                os.unlink(path)

    def _remove_runtime_files(self) -> None:
        """In a configured runtime_dir (kept across runs: systemd's RuntimeDirectory), remove what
        this run put there: reload handoff files, and the ipc endpoints a killed worker left."""
        for slot in self.slots:
            paths = [handoff_file(self._runtime_dir, slot.number)]
            paths += [endpoint_path(self._runtime_dir, slot.number, g) for g in range(1, slot.generation + 1)]
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _spawn(self, slot: _Slot, successor: bool = False) -> None:
        slot.generation += 1
        slot.endpoint = endpoint_path(self._runtime_dir, slot.number, slot.generation)
        spec = WorkerSpec(self.config, slot.number, self.workers, self.host, self.port, self.internal_host,
                          self.internal_port, self._runtime_dir, self._ready_w, self._pid,
                          endpoints=tuple(s.endpoint or endpoint_path(self._runtime_dir, s.number, 1)
                                          for s in self.slots),
                          successor=successor)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for fd in (self._ready_r, self._wake_r, self._wake_w):
                os.close(fd)
            for hold in self._holds:
                hold.close()
            run_worker(spec)
        if successor:
            slot.successor_pid, slot.successor_since = pid, time.monotonic()
            log.info("slot %d: started successor pid %d for worker %d", slot.number, pid, slot.pid)
            return
        slot.pid, slot.ready, slot.started_at = pid, False, time.monotonic()
        slot.last_beat, slot.killed_stuck = slot.started_at, False
        log.info("slot %d: started worker pid %d", slot.number, pid)

    def _loop(self) -> None:
        buf = b""
        while True:
            self._handle_signals()
            self._reap()
            if self._stopping is not None:
                return
            self._respawn_due()
            self._check_heartbeats()
            self._continue_reload()
            try:
                readable, _, _ = select.select([self._ready_r, self._wake_r], [], [], 0.25)
            except InterruptedError:
                continue
            if self._wake_r in readable:
                self._drain(self._wake_r)
            if self._ready_r in readable:
                buf += self._drain(self._ready_r)
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._on_worker_message(line.decode(errors="replace"))

    @staticmethod
    def _drain(fd: int) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _on_worker_message(self, line: str) -> None:
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("R", "H", "W"):
            return
        number, pid = int(parts[1]), int(parts[2])
        if not 0 <= number < len(self.slots):
            return
        slot = self.slots[number]
        if pid == slot.successor_pid and slot.successor_pid:
            self._on_successor_message(slot, parts[0])
            return
        if slot.pid != pid:
            return
        slot.last_beat = time.monotonic()
        if parts[0] == "R" and not slot.ready:
            slot.ready = True
            slot.boot_failures = 0
            log.info("slot %d: worker %d ready", number, pid)
            if not self._announced and all(s.ready for s in self.slots):
                self._announced = True
                self.notifier.ready(f"{self.workers} workers on {self.host}:{self.port}")
                if self.on_ready is not None:
                    self.on_ready(self)

    def _on_successor_message(self, slot: _Slot, kind: str) -> None:
        if kind == "W":
            # The successor is bound and waiting: tell the current worker where to send its state.
            path = handoff_file(self._runtime_dir, slot.number)
            with open(path, "w") as f:
                f.write(slot.endpoint)
            log.info("reload: slot %d: worker %d hands its channels to %d", slot.number, slot.pid,
                     slot.successor_pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGUSR2)
        elif kind == "R":
            old = slot.pid
            slot.pid, slot.successor_pid = slot.successor_pid, 0
            slot.ready, slot.started_at = True, time.monotonic()
            slot.last_beat, slot.killed_stuck = slot.started_at, False
            log.info("reload: slot %d: worker %d took over; draining %d", slot.number, slot.pid, old)
            # The predecessor read its successor's endpoint before handing over: the file is spent.
            with contextlib.suppress(OSError):
                os.unlink(handoff_file(self._runtime_dir, slot.number))
            if old:
                self._retiring[old] = slot.number
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGTERM)

    # -- liveness -------------------------------------------------------------------------------

    def _check_heartbeats(self) -> None:
        """Kill workers whose event loop stopped beating; feed systemd's watchdog otherwise."""
        now = time.monotonic()
        timeout = self.config.shardgate.heartbeat_timeout
        fresh = True
        for slot in self.slots:
            if not slot.pid or not slot.ready:
                fresh = False
                continue
            if now - slot.last_beat > timeout:
                fresh = False
                if not slot.killed_stuck:
                    log.error("slot %d: worker %d missed heartbeats for %.1fs (loop stuck?); killing it",
                              slot.number, slot.pid, now - slot.last_beat)
                    slot.killed_stuck = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)
        if fresh and self._watchdog is not None and now - self._last_watchdog >= self._watchdog:
            self._last_watchdog = now
            self.notifier.watchdog()

    # -- rolling reload -------------------------------------------------------------------------

    def _begin_reload(self) -> None:
        if self._reloading:
            log.warning("SIGHUP during a reload: the reload in progress continues")
            return
        if self.reload_config is not None:
            try:
                config = self.reload_config()
            except ConfigError as exc:
                log.error("reload refused, keeping the running workers: %s", exc)
                return
            if config.worker_count() != self.workers:
                log.warning("reload: shardgate.workers changed to %d; a worker count change needs a restart "
                            "(slots are shard ids), keeping %d", config.worker_count(), self.workers)
            config = dataclasses.replace(config, shardgate=dataclasses.replace(
                config.shardgate, workers=self.workers))
            self.config = config
        log.info("reload: replacing workers one slot at a time")
        self.notifier.reloading()
        self._reloading = True
        self._reload_queue = [slot.number for slot in self.slots]
        self._reload_current = None

    def _continue_reload(self) -> None:
        if not self._reloading:
            return
        current = self._reload_current
        if current is not None:
            slot = self.slots[current]
            if slot.successor_pid and time.monotonic() - slot.successor_since > _SUCCESSOR_TIMEOUT:
                self._successor_failed(slot, f"not ready after {_SUCCESSOR_TIMEOUT:.0f}s")
                return
            if not (slot.pid and slot.ready and slot.pid != self._reload_old_pid and not slot.successor_pid):
                return  # the replacement is not up yet
            self._reload_current = None
        if not self._reload_queue:
            self._reloading = False
            log.info("reload complete")
            self.notifier.ready(f"{self.workers} workers on {self.host}:{self.port}")
            return
        number = self._reload_queue.pop(0)
        slot = self.slots[number]
        self._reload_current, self._reload_old_pid = number, slot.pid
        self._replace(slot)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if pid in self._retiring:
                log.info("slot %d: previous worker %d retired (exit %d)", self._retiring.pop(pid), pid, code)
                continue
            failed = next((s for s in self.slots if s.successor_pid == pid), None)
            if failed is not None:
                self._successor_failed(failed, f"exit {code}")
                continue
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            if self._stopping is not None:
                continue
            if code == -signal.SIGKILL and slot.killed_stuck:
                how = "killed by signal 9 (by the supervisor: it missed heartbeats)"
            elif code < 0:
                how = f"killed by signal {-code}" + (" (OOM killer?)" if code == -signal.SIGKILL else "")
            else:
                how = f"exited with code {code}"
            if not slot.ready or code == EXIT_BOOT_ERROR:
                slot.boot_failures += 1
            slot.ready = False
            limit = self.config.shardgate.boot_failure_limit
            if slot.boot_failures >= limit:
                log.error("slot %d failed to boot %d times in a row (last: %s); stopping. "
                          "Check the errors logged above.", slot.number, slot.boot_failures, how)
                self.exit_code = 1
                self._begin_stop("fast")
                return
            delay = min(_BACKOFF_MAX, 0.1 * (2 ** slot.boot_failures)) if slot.boot_failures else 0.1
            slot.restart_at = time.monotonic() + delay
            log.warning("slot %d: worker %d %s; restarting in %.1fs", slot.number, pid, how, delay)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid == 0 and slot.restart_at and now >= slot.restart_at:
                slot.restart_at = 0.0
                self._spawn(slot)

    def _replace(self, slot: _Slot) -> None:
        """Start the slot's successor; it takes the channels over, then the old one drains.

        With a single worker there is no bus to hand state over: the worker is drained
        and restarted, and its streams come back with new epochs."""
        if self.workers == 1 or not slot.pid:
            log.info("reload: slot %d: restarting worker %d", slot.number, slot.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGTERM)
            return
        self._spawn(slot, successor=True)

    def _successor_failed(self, slot: _Slot, why: str) -> None:
        """A successor died or hung before taking over. The old worker may already have
        frozen its channels, so it is replaced the ordinary way (new epochs)."""
        log.error("reload: slot %d: successor %d failed (%s); restarting the slot", slot.number,
                  slot.successor_pid, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(slot.successor_pid, signal.SIGKILL)
        slot.successor_pid = 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(slot.pid, signal.SIGTERM)

    def _begin_stop(self, how: str) -> None:
        if self._stopping == "fast" or self._stopping == how:
            return
        self._stopping = how
        self.notifier.stopping()
        sig = signal.SIGTERM if how == "graceful" else signal.SIGQUIT
        log.info("stopping (%s)", how)
        self._signal_all(sig)

    def _signal_all(self, sig: int) -> None:
        pids = [s.pid for s in self.slots] + [s.successor_pid for s in self.slots] + list(self._retiring)
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def _alive(self) -> bool:
        return any(s.pid or s.successor_pid for s in self.slots) or bool(self._retiring)

    def _wait_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._alive() and time.monotonic() < deadline:
            self._handle_signals()
            self._reap_quietly()
            time.sleep(0.02)
        if self._alive():
            log.warning("workers did not stop in %.1fs; killing them", timeout)
            self._signal_all(signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while self._alive() and time.monotonic() < deadline:
                self._reap_quietly()
                time.sleep(0.02)

    def _reap_quietly(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                for slot in self.slots:
                    slot.pid = slot.successor_pid = 0
                self._retiring.clear()
                return
            if pid == 0:
                return
            self._retiring.pop(pid, None)
            for slot in self.slots:
                if slot.pid == pid:
                    slot.pid = 0
                if slot.successor_pid == pid:
                    slot.successor_pid = 0

    def _cleanup(self) -> None:
        if self._stopping is None:
            self._stopping = "fast"
            self._signal_all(signal.SIGQUIT)
        timeout = self.config.shardgate.graceful_timeout + 1.0 if self._stopping == "graceful" \
            else _FAST_STOP_TIMEOUT
        self._wait_workers(timeout)
        for hold in self._holds:
            hold.close()
        self._remove_pid_file()
        if self._owns_runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
        else:
            self._remove_runtime_files()
        for fd in (self._ready_r, self._ready_w, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
        log.info("supervisor stopped")
