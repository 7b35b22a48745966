"""One load-generator process: uvloop + picows connections, driven by the coordinator over a pipe.

Life of a client process (see ``cli.py`` for the coordinator side):

1. *setup*: open the connections of its plan (connect command, subscribe), honouring slot constraints;
   send ``("ready", info)``.
2. wait for ``("go", t0_ns, t_end_ns)``; then run its roles (publishers, rpc callers, connection storm)
   until ``t_end_ns``; subscribers keep counting until ``("stop",)``.
3. every tick send ``("tick", snapshot)``: cumulative counters and the latency samples since the last
   tick as an encoded HDR histogram. At ``("stop",)`` send a last tick and ``("done",)`` and exit.

Three wire dialects are spoken (``Job.proto``): ``centrifugo`` (shardgate; JSON protocol, several
messages per frame joined by ``\\n``), ``raw`` (the peers' trivial framing, see ``peers/README.md``)
and ``socketio`` (Engine.IO v4 + Socket.IO v5 over a WebSocket, for the node socket.io peer).

Every timed payload is the JSON object ``{"t":<CLOCK_MONOTONIC ns>,"p":"xx.."}`` padded to the payload
size; a receiver finds each ``"t":`` in the frame and records ``now - t``. In fixed-rate mode ``t`` is
the *intended* send time of that message (open loop), so a stall shows up as latency instead of
silently lowering the send rate (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

TEXT_PAD = b"x"
NS = 1_000_000_000
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
# Enum members as module constants, compared with ``is``: ``WSMsgType.TEXT`` is a lookup through
# the enum class's descriptor (~50 ns) and ran twice per message received.
_TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE


@dataclass
class Job:
    """Everything a client process needs; picklable (sent to forked processes)."""

    scenario: str                   # connect | fanout | rooms | rpc
    proto: str                      # centrifugo | raw | socketio
    url: str
    secret: str = ""
    payload: int = 64
    rate: float = 0.0               # messages (or connections) per second in total; 0 = max rate
    duration: float = 5.0
    window: int = 64                # max-rate fan-out: publications in flight (end to end)
    inflight: int = 1               # max-rate rpc: calls in flight per connection
    server_workers: int = 0         # for slot placement / channel owners (0 = unknown)
    source_ips: int = 1             # spread client sockets over 127.0.0.1..127.0.0.N
    connect_concurrency: int = 200  # per process, max-rate connect and setup
    setup_timeout: float = 30.0
    read_buffer: int = 16 * 1024
    deflate: bool = False           # offer permessage-deflate (the server needs websocket.compression)
    sio_join: str = '421["s"]'      # socketio: the event that joins the fan-out room (ack id 1)
    client_cpus: list[int] = field(default_factory=list)  # pin the client processes to these CPUs (scaling)


@dataclass
class Plan:
    """What one process does."""

    index: int
    subs: list[str] = field(default_factory=list)       # one channel per subscriber connection
    sub_urls: list[str] = field(default_factory=list)   # URL per subscriber (empty: Job.url); another URL
                                                         # than Job.url counts its latency as "cross"
    sub_slot: int | None = None                          # require subscribers on this worker slot
    pub_conns: int = 0                                   # publisher connections in this process
    pub_channels: list[str] = field(default_factory=list)
    pub_slot: int | None = None
    pub_url: str = ""                                    # publisher URL (empty: Job.url)
    expected_per_pub: int = 0                            # subscribers per publication (flow control)
    rpc_conns: int = 0
    rpc_rate: float = 0.0                                # this process's share of the rpc rate
    connect_conns: int = 0
    connect_rate: float = 0.0
    connect_channels: list[str] = field(default_factory=list)  # connect: subscribe connection i to [i % len]
    user_prefix: str = "bench"


def make_data_fmt(payload: int) -> bytes:
    """``{"t":%d,"p":"xxx"}`` padded so that the JSON object is ``payload`` bytes long."""
    digits = len(str(time.monotonic_ns()))
    base = len(b'{"t":,"p":""}') + digits
    pad = max(0, payload - base)
    return b'{"t":%d,"p":"' + TEXT_PAD * pad + b'"}'


def _slot_of(client_id: str) -> int | None:
    try:
        from sharding.ids import slot_of_client
    except ImportError:  # pragma: no cover - running against a foreign checkout
        return None
    return slot_of_client(client_id)


class Proc:
    """Per-process counters; every connection writes into these."""

    def __init__(self, index: int, shared: Any) -> None:
        self.index = index
        self.shared = shared          # multiprocessing RawArray('q'): delivered counts per process
        self.delivered = 0
        self.published = 0            # publish commands sent
        self.acks = 0                 # publish acks received
        self.rpc_sent = 0
        self.rpc_done = 0
        self.errors = 0               # error replies
        self.disconnects = 0          # unexpected closes during the run
        self.connected = 0
        self.failed = 0
        self.running = False
        self.lat: list[int] = []          # µs samples since the last tick
        self.lat_cross: list[int] = []    # rooms: subscriber on another worker than the channel owner
        self.close_codes: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()


def scan_ts(data: bytes, now: int, append: Any) -> int:
    """Record ``now - t`` (µs) for every ``"t":`` in ``data``; return how many."""
    i = data.find(b'"t":')
    n = 0
    while i >= 0:
        k = data.find(b",", i)
        append((now - int(data[i + 4:k])) // 1000)
        n += 1
        i = data.find(b'"t":', k)
    return n


# Substring tests on replies use bytes.find: ``b"x" in data`` first tries its operand as an
# integer and raises (and formats) a TypeError before searching, ~0.2 us per test per message
# of client CPU that, on a machine the client shares with the server, the server does not get.
def _has_ping_line(data: bytes) -> bool:
    """A Centrifugo server ping is the line ``{}`` (possibly coalesced with other messages)."""
    return data == b"{}" or data.startswith(b"{}\n") or data.endswith(b"\n{}") or data.find(b"\n{}\n") >= 0


class Conn(WSListener):  # type: ignore[misc]
    """One WebSocket connection. ``handle`` is swapped from the setup parser to a role's fast path."""

    def __init__(self, proc: Proc, proto: str) -> None:
        super().__init__()
        self.proc = proc
        self.proto = proto
        self.t: Any = None
        self.waiters: dict[Any, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.closed = False
        self.slot: int | None = None
        self.handle = self._setup_handle
        self.append = proc.lat.append
        self.on_reply: Any = None      # rpc: called with the number of replies
        self.outstanding = 0
        self.sio_open: asyncio.Future[Any] | None = None
        self.sio_join = b'421["s"]'

    # -- picows callbacks ---------------------------------------------------------------------------
    def on_ws_connected(self, transport: Any) -> None:
        self.t = transport
        if self.proto == "socketio":  # the server speaks first ("0{...}"): be ready before ws_connect returns
            self.sio_open = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        mt = frame.msg_type
        if mt is _TEXT or mt is _BINARY:
            if frame.rsv1:  # permessage-deflate, no context takeover: each message inflates alone
                self.handle(zlib.decompressobj(-15).decompress(frame.get_payload_as_bytes() + _DEFLATE_TAIL))
                return
            self.handle(frame.get_payload_as_bytes())
        elif mt is _CLOSE:
            code = frame.get_close_code()
            self.proc.close_codes[str(int(getattr(code, "value", code)))] += 1
            with contextlib.suppress(Exception):
                if not transport.is_close_frame_sent:
                    transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        if self.proc.running:
            self.proc.disconnects += 1
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("disconnected"))
        self.waiters.clear()

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.t.send(_TEXT, data)

    # -- setup (slow path: parses everything) -------------------------------------------------------
    def _setup_handle(self, data: bytes) -> None:
        if self.proto == "centrifugo":
            import orjson
            for line in data.split(b"\n"):
                if line == b"{}":
                    self.send(b"{}")
                    continue
                if not line:
                    continue
                msg = orjson.loads(line)
                fut = self.waiters.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        elif self.proto == "raw":
            fut = self.waiters.pop("raw", None)
            if fut is not None and not fut.done():
                fut.set_result(data)
        else:  # socketio
            if data == b"2":
                self.send(b"3")
            elif data.startswith(b"0{"):
                self.send(b"40")
            elif data.startswith(b"40"):
                if self.sio_open is not None and not self.sio_open.done():
                    self.sio_open.set_result(data)
            elif data.startswith(b"43"):
                fut = self.waiters.pop("ack", None)
                if fut is not None and not fut.done():
                    fut.set_result(data)

    async def request(self, key: Any, data: bytes | None, timeout: float) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters[key] = fut
        if data is not None:
            self.send(data)
        return await asyncio.wait_for(fut, timeout)

    async def _command(self, body: bytes, what: str, timeout: float) -> Any:
        """One Centrifugo command (``body`` is its method field) and its reply; errors raise."""
        self.next_id += 1
        msg = await self.request(self.next_id, b'{"id":%d,%s}' % (self.next_id, body), timeout)
        if "error" in msg:
            raise ConnectionError(f"{what} error {msg['error']}")
        return msg

    async def handshake(self, token: str, timeout: float) -> None:
        """Protocol-level connect after the WebSocket upgrade."""
        if self.proto == "centrifugo":
            msg = await self._command(b'"connect":{"token":"%s"}' % token.encode(), "connect", timeout)
            self.slot = _slot_of(msg["connect"]["client"])
        elif self.proto == "socketio":
            assert self.sio_open is not None
            await asyncio.wait_for(self.sio_open, timeout)

    async def subscribe(self, channel: str, timeout: float) -> None:
        if self.proto == "centrifugo":
            await self._command(b'"subscribe":{"channel":"%s"}' % channel.encode(), "subscribe", timeout)
        elif self.proto == "raw":
            await self.request("raw", b"s", timeout)
        else:
            await self.request("ack", self.sio_join, timeout)

    def _error_reply(self, data: bytes) -> None:
        """Count error replies and keep the first few codes (``error_codes`` in the result)."""
        import orjson
        for line in data.split(b"\n"):
            if b'"error"' in line:
                self.proc.errors += 1
                try:
                    err = orjson.loads(line).get("error", {})
                    self.proc.error_codes[f"{err.get('code')} {err.get('message')}"] += 1
                except (orjson.JSONDecodeError, AttributeError):
                    self.proc.error_codes["unparsable"] += 1

    # -- fast paths ---------------------------------------------------------------------------------
    def sub_handle_cf(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if data.find(b"{}") >= 0 and _has_ping_line(data):
            self.send(b"{}")
        n = scan_ts(data, now, self.append)
        if n:
            proc = self.proc
            proc.delivered += n
            proc.shared[proc.index] = proc.delivered
        elif data.find(b'"error"') >= 0:
            self._error_reply(data)

    def sub_handle_plain(self, data: bytes) -> None:
        now = time.monotonic_ns()
        n = scan_ts(data, now, self.append)
        if n:
            proc = self.proc
            proc.delivered += n
            proc.shared[proc.index] = proc.delivered
        elif data == b"2":
            self.send(b"3")

    def pub_handle(self, data: bytes) -> None:
        if self.proto == "centrifugo":
            if data.find(b"{}") >= 0 and _has_ping_line(data):
                self.send(b"{}")
            self.proc.acks += data.count(b'"publish"')
            if data.find(b'"error"') >= 0:
                self._error_reply(data)
        elif self.proto == "raw":
            if data == b"a":
                self.proc.acks += 1
        else:
            if data.startswith(b'42["a"'):
                self.proc.acks += 1
            elif data == b"2":
                self.send(b"3")

    def rpc_handle_cf(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if data.find(b"{}") >= 0 and _has_ping_line(data):
            self.send(b"{}")
        if data.find(b'"error"') >= 0:
            self._error_reply(data)
        self._rpc_replies(data, now)

    def rpc_handle_plain(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if data == b"2":
            self.send(b"3")
            return
        self._rpc_replies(data, now)

    def _rpc_replies(self, data: bytes, now: int) -> None:
        n = scan_ts(data, now, self.append)
        if n:
            self.proc.rpc_done += n
            self.outstanding -= n
            if self.on_reply is not None:
                self.on_reply(self, n)


# ---------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, job: Job, plan: Plan, pipe: Any, shared: Any) -> None:
        self.job = job
        self.plan = plan
        self.pipe = pipe
        self.proc = Proc(plan.index, shared)
        self.shared = shared
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.subs: list[Conn] = []
        self.pubs: list[Conn] = []
        self.rpcs: list[Conn] = []
        self.storm: list[Conn] = []
        self.data_fmt = make_data_fmt(job.payload)
        # The echo call, formatted in one step per call: (id, t) for the Centrifugo dialect, (t,) else.
        if job.proto == "centrifugo":
            self._rpc_fmt = b'{"id":%d,"rpc":{"method":"echo","data":' + self.data_fmt + b"}}"
        elif job.proto == "raw":
            self._rpc_fmt = b"e" + self.data_fmt
        else:
            self._rpc_fmt = b'42["e",' + self.data_fmt + b"]"
        self.src_i = 0
        self.user_n = 0
        from hdrh.histogram import HdrHistogram
        self.Hdr = HdrHistogram
        self.wire_ids = 0
        self.t0 = 0
        self.t_end = 0
        self.setup_failures: list[str] = []

    def _on_pipe(self) -> None:
        while self.pipe.poll():
            try:
                msg = self.pipe.recv()
            except EOFError:
                self.inbox.put_nowait(("stop",))
                self.loop.remove_reader(self.pipe.fileno())
                return
            self.inbox.put_nowait(msg)

    # -- connections --------------------------------------------------------------------------------
    def _url(self, url: str = "") -> str:
        url = url or self.job.url
        if self.job.proto == "socketio":
            return url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        return url

    async def open_conn(self, timeout: float, url: str = "") -> Conn:
        kwargs: dict[str, Any] = {}
        if self.job.source_ips > 1:
            self.src_i += 1
            kwargs["local_addr"] = (f"127.0.0.{1 + self.src_i % self.job.source_ips}", 0)
        proto = self.job.proto
        proc = self.proc
        if self.job.deflate:
            kwargs["extra_headers"] = {"Sec-WebSocket-Extensions": "permessage-deflate"}
        _, conn = await asyncio.wait_for(ws_connect(
            lambda: Conn(proc, proto), self._url(url), websocket_handshake_timeout=timeout,
            read_buffer_init_size=self.job.read_buffer, **kwargs), timeout)
        conn.sio_join = self.job.sio_join.encode()
        self.user_n += 1
        token = ""
        if proto == "centrifugo":
            from tools.token import mint_token
            token = mint_token(self.job.secret, user=f"{self.plan.user_prefix}-{self.plan.index}-{self.user_n}",
                               exp_seconds=24 * 3600)
        try:
            await conn.handshake(token, timeout)
        except BaseException:
            conn.t.disconnect()
            raise
        return conn  # type: ignore[no-any-return]

    async def open_on_slot(self, slot: int | None, timeout: float, url: str = "") -> Conn:
        """Open a connection; with ``slot`` set, reconnect until SO_REUSEPORT lands it on that worker."""
        attempts = max(1, 30 * max(1, self.job.server_workers))
        for _ in range(attempts):
            conn = await self.open_conn(timeout, url)
            if slot is None or conn.slot is None or conn.slot == slot:
                return conn
            conn.closed = True
            conn.t.disconnect()
        raise ConnectionError(f"could not land a connection on worker slot {slot} in {attempts} tries")

    async def _bounded(self, n: int, make: Any) -> list[Any]:
        sem = asyncio.Semaphore(self.job.connect_concurrency)
        results: list[Any] = []

        async def one(i: int) -> None:
            async with sem:
                try:
                    results.append(await make(i))
                except (Exception, asyncio.TimeoutError) as exc:  # noqa: UP041
                    self.proc.failed += 1
                    if len(self.setup_failures) < 3:
                        self.setup_failures.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(i) for i in range(n)))
        return results

    async def setup(self) -> dict[str, Any]:
        job, plan = self.job, self.plan
        timeout = 10.0
        room_owner: dict[str, int] = {}
        if job.scenario == "rooms" and job.server_workers > 0:
            try:
                from sharding.hashing import owner
                room_owner = {c: owner(c, job.server_workers) for c in set(plan.subs)}
            except ImportError:  # pragma: no cover
                room_owner = {}

        async def make_sub(i: int) -> Conn:
            url = plan.sub_urls[i] if i < len(plan.sub_urls) else ""
            conn = await self.open_on_slot(plan.sub_slot, timeout, url)
            await conn.subscribe(plan.subs[i], timeout)
            if room_owner and conn.slot is not None and room_owner.get(plan.subs[i]) != conn.slot:
                conn.append = self.proc.lat_cross.append
            elif url and url != (plan.pub_url or job.url):
                conn.append = self.proc.lat_cross.append  # another node than the publisher's
            conn.handle = conn.sub_handle_cf if job.proto == "centrifugo" else conn.sub_handle_plain
            return conn

        async def make_pub(i: int) -> Conn:
            conn = await self.open_on_slot(plan.pub_slot, timeout, plan.pub_url)
            conn.handle = conn.pub_handle
            return conn

        async def make_rpc(i: int) -> Conn:
            conn = await self.open_conn(timeout)
            conn.handle = conn.rpc_handle_cf if job.proto == "centrifugo" else conn.rpc_handle_plain
            return conn

        self.subs = await self._bounded(len(plan.subs), make_sub)
        self.pubs = await self._bounded(plan.pub_conns, make_pub)
        self.rpcs = await self._bounded(plan.rpc_conns, make_rpc)
        self.proc.connected = len(self.subs) + len(self.pubs) + len(self.rpcs)
        slots: Counter[str] = Counter(str(c.slot) for c in self.subs + self.pubs + self.rpcs)
        return {"connected": self.proc.connected, "failed": self.proc.failed, "slots": dict(slots),
                "cross_subs": sum(1 for c in self.subs if c.append == self.proc.lat_cross.append),
                "errors": self.setup_failures, "pid": os.getpid()}

    # -- roles --------------------------------------------------------------------------------------
    def _pub_msg(self, i: int, t: int, channel: str) -> bytes:
        data = self.data_fmt % t
        p = self.job.proto
        if p == "centrifugo":
            return b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (i + 1, channel.encode(), data)
        if p == "raw":
            return b"p" + data
        return b'42["p",' + data + b"]"

    def _rpc_msg(self, i: int, t: int) -> bytes:
        if self.job.proto == "centrifugo":
            return self._rpc_fmt % (i + 1, t)
        return self._rpc_fmt % t

    async def run_publishers(self) -> None:
        pubs = [c for c in self.pubs if not c.closed]
        if not pubs:
            return
        chans = self.plan.pub_channels
        proc, job = self.proc, self.job
        npub, nch = len(pubs), len(chans)
        if job.rate > 0:  # open loop: send what is due, stamped with its intended time
            period = NS / job.rate
            i = 0
            while True:
                now = time.monotonic_ns()
                if now >= self.t_end:
                    break
                due = int((now - self.t0) / period) + 1
                while i < due:
                    pubs[i % npub].send(self._pub_msg(i, self.t0 + int(i * period), chans[i % nch]))
                    i += 1
                proc.published = i
                await asyncio.sleep(max(0.0, (self.t0 + i * period - time.monotonic_ns()) / NS))
        else:  # max rate, bounded end to end: at most `window` publications not yet delivered
            k = max(1, self.plan.expected_per_pub)
            window = job.window * k
            shared = self.shared
            n = len(shared)
            i = 0
            while True:
                now = time.monotonic_ns()
                if now >= self.t_end:
                    break
                delivered = sum(shared[j] for j in range(n))
                allowed = (window - (i * k - delivered)) // k
                if allowed > 0:
                    for _ in range(min(allowed, 256)):
                        pubs[i % npub].send(self._pub_msg(i, now, chans[i % nch]))
                        i += 1
                    proc.published = i
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(0.0005)
        proc.published = i

    async def run_rpc(self) -> None:
        conns = [c for c in self.rpcs if not c.closed]
        if not conns:
            return
        proc, job = self.proc, self.job
        if self.plan.rpc_rate > 0:
            period = NS / self.plan.rpc_rate
            i = 0
            nc = len(conns)
            while True:
                now = time.monotonic_ns()
                if now >= self.t_end:
                    break
                due = int((now - self.t0) / period) + 1
                while i < due:
                    c = conns[i % nc]
                    c.outstanding += 1
                    c.send(self._rpc_msg(i, self.t0 + int(i * period)))
                    i += 1
                proc.rpc_sent = i
                await asyncio.sleep(max(0.0, (self.t0 + i * period - time.monotonic_ns()) / NS))
            return
        t_end = self.t_end

        def on_reply(conn: Conn, n: int) -> None:
            now = time.monotonic_ns()
            if now >= t_end:
                return
            for _ in range(n):
                conn.outstanding += 1
                proc.rpc_sent += 1
                conn.send(self._rpc_msg(proc.rpc_sent, now))

        now = time.monotonic_ns()
        for c in conns:
            c.on_reply = on_reply
            for _ in range(job.inflight):
                c.outstanding += 1
                proc.rpc_sent += 1
                c.send(self._rpc_msg(proc.rpc_sent, now))
        await asyncio.sleep(max(0.0, (t_end - time.monotonic_ns()) / NS))

    async def run_storm(self) -> None:
        """connect scenario: open connections at a fixed rate (open loop) or as fast as allowed."""
        plan, proc = self.plan, self.proc
        n = plan.connect_conns
        sem = asyncio.Semaphore(self.job.connect_concurrency)
        timeout = 10.0

        async def one(i: int, intended: int) -> None:
            async with sem:
                if time.monotonic_ns() >= self.t_end:
                    return
                start = intended or time.monotonic_ns()
                try:
                    conn = await self.open_conn(timeout)
                    if plan.connect_channels:
                        await conn.subscribe(plan.connect_channels[i % len(plan.connect_channels)], timeout)
                except (Exception, asyncio.TimeoutError) as exc:  # noqa: UP041
                    proc.failed += 1
                    if len(self.setup_failures) < 3:
                        self.setup_failures.append(f"{type(exc).__name__}: {exc}")
                    return
                self.proc.lat.append((time.monotonic_ns() - start) // 1000)
                proc.connected += 1
                conn.handle = conn.sub_handle_cf if self.job.proto == "centrifugo" else conn.sub_handle_plain
                self.storm.append(conn)

        tasks = []
        if plan.connect_rate > 0:
            period = NS / plan.connect_rate
            for i in range(n):
                intended = self.t0 + int(i * period)
                delay = (intended - time.monotonic_ns()) / NS
                if intended >= self.t_end:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(i, intended)))
        else:
            tasks = [asyncio.ensure_future(one(i, 0)) for i in range(n)]
        if tasks:
            await asyncio.gather(*tasks)
        self.storm_done_at = time.monotonic_ns()

    # -- reporting ----------------------------------------------------------------------------------
    def _encode(self, samples: list[int]) -> str | None:
        if not samples:
            return None
        h = self.Hdr(1, 3_600_000_000, 3)
        for v, c in Counter(samples).items():
            h.record_value(v if v > 0 else 1, c)
        samples.clear()
        enc = h.encode()
        return enc.decode() if isinstance(enc, bytes) else str(enc)

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        p = self.proc
        return {"t": time.monotonic_ns(), "delivered": p.delivered, "published": p.published, "acks": p.acks,
                "rpc_sent": p.rpc_sent, "rpc_done": p.rpc_done, "errors": p.errors,
                "disconnects": p.disconnects, "connected": p.connected, "failed": p.failed,
                "close_codes": dict(p.close_codes), "error_codes": dict(p.error_codes), "hist": self._encode(p.lat),
                "hist_cross": self._encode(p.lat_cross), "final": final,
                "storm_done": getattr(self, "storm_done_at", None), "errors_text": self.setup_failures[:3]}

    async def ticker(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.pipe.send(("tick", self.snapshot()))

    async def main(self) -> None:
        self.loop.add_reader(self.pipe.fileno(), self._on_pipe)
        info = await self.setup()
        self.pipe.send(("ready", info))
        msg = await self.inbox.get()
        if msg[0] != "go":
            return await self.shutdown()
        _, self.t0, self.t_end, tick = msg
        self.proc.running = True
        ticker = asyncio.ensure_future(self.ticker(tick))
        roles = []
        if self.pubs:
            roles.append(asyncio.ensure_future(self.run_publishers()))
        if self.rpcs:
            roles.append(asyncio.ensure_future(self.run_rpc()))
        if self.plan.connect_conns:
            roles.append(asyncio.ensure_future(self.run_storm()))

        async def end_of_run() -> None:
            if not self.plan.connect_conns:  # a storm ends when its connections are open
                await asyncio.sleep(max(0.0, (self.t_end - time.monotonic_ns()) / NS))
            for r in roles:
                with contextlib.suppress(asyncio.CancelledError):
                    await r
            self.pipe.send(("ran", self.snapshot()))

        ender = asyncio.ensure_future(end_of_run())
        while True:
            msg = await self.inbox.get()
            if msg[0] == "stop":
                break
        ender.cancel()
        for r in roles:
            r.cancel()
        ticker.cancel()
        self.proc.running = False
        await self.shutdown()

    async def shutdown(self) -> None:
        self.pipe.send(("tick", self.snapshot(final=True)))
        for c in self.subs + self.pubs + self.rpcs + self.storm:
            if not c.closed:
                with contextlib.suppress(Exception):
                    c.t.disconnect()
        await asyncio.sleep(0.05)
        self.pipe.send(("done",))


def process_main(job: Job, plan: Plan, pipe: Any, shared: Any) -> None:
    """Entry point of a forked client process."""
    import signal
    import warnings

    import uvloop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when we stop
    warnings.filterwarnings("ignore", message=".*HMAC key.*")  # short test secrets are fine for a load tool

    if job.client_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, job.client_cpus)  # off the CPUs the workers pinned themselves to

    async def amain() -> None:
        await Runner(job, plan, pipe, shared).main()

    with contextlib.suppress(BrokenPipeError, EOFError):
        uvloop.run(amain())
    os._exit(0)
