"""Harness for the hostile-input suite (``test_hostile.py``).

:class:`Harness` wraps one attack against a live gateway and checks what must hold for
every case, whatever the attack:

* a control client on **every** worker slot (so also on the attacked one) is subscribed
  to a channel with history while a publisher (the HTTP server API, so it is neither
  rate-limited nor counted against the per-IP connection limit) publishes to it every
  20 ms; afterwards every control must have received offsets ``1..N`` with no gap;
* a sampler thread reads the RSS of every worker (psutil) every 10 ms; before / peak /
  after of the attacked worker are reported and the peak growth is bounded;
* no worker restarted: the worker pids are unchanged and the supervisor log gained no
  "restarting" line.

Figures are printed (``pytest -s``) and collected in :data:`RESULTS` for the summary
table printed when the module finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import psutil
from websockets.exceptions import ConnectionClosed

from sharding.ids import slot_of_client
from tests.conftest import API_KEY, SECRET, Gateway, scaled, wait_for
from tests.integration.rawclient import OP_CLOSE, OP_PING, OP_PONG, JsonClient, RawWS
from tools.token import mint_token

__all__ = ["MiB", "RESULTS", "CaseResult", "FrameReader", "Harness", "RssSampler", "connected_raw",
           "print_summary", "raw_on_slot", "token"]

MiB = 1024 * 1024
RSS_BOUND = 64 * MiB  # peak growth of the attacked worker during one case
MAX_LANDING_ATTEMPTS = 60
PUBLISH_INTERVAL = 0.02


def token(user: str = "hostile", exp_seconds: float = 3600) -> str:
    return mint_token(SECRET, user=user, exp_seconds=exp_seconds)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class CaseResult:
    case: str
    code: str = ""
    slot: str = ""
    before: float = 0.0  # MiB
    peak: float = 0.0
    after: float = 0.0
    publications: int = 0
    log_kib: float = 0.0  # supervisor log growth during the case
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def growth(self) -> float:
        return self.peak - self.before


RESULTS: dict[str, CaseResult] = {}


def print_summary() -> None:
    if not RESULTS:
        return
    head = f"{'case':<44} {'code seen':<36} {'slot':<5} {'before':>7} {'peak':>7} {'after':>7} {'growth':>6} " \
           f"{'pubs':>4} {'logKiB':>7}  note"
    print("\n\nhostile-input summary (RSS of the attacked worker, MiB)")
    print(head)
    print("-" * len(head))
    for r in RESULTS.values():
        print(f"{r.case:<44} {r.code:<36} {r.slot:<5} {r.before:7.1f} {r.peak:7.1f} {r.after:7.1f} "
              f"{r.growth:6.1f} {r.publications:4d} {r.log_kib:7.1f}  {r.note}")


# --------------------------------------------------------------------------------------------
# RSS sampling
# --------------------------------------------------------------------------------------------

class RssSampler:
    """Samples the RSS of some pids every ``interval`` seconds on a thread."""

    def __init__(self, pids: Iterable[int], interval: float = 0.01) -> None:
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.interval = interval
        self.before = {pid: self._rss(p) for pid, p in self.procs.items()}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss(proc: psutil.Process) -> int:
        try:
            return int(proc.memory_info().rss)
        except psutil.Error:
            return 0

    def sample(self) -> dict[int, int]:
        now = {pid: self._rss(p) for pid, p in self.procs.items()}
        for pid, rss in now.items():
            if rss > self.peak[pid]:
                self.peak[pid] = rss
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join()
        return self.sample()


# --------------------------------------------------------------------------------------------
# Raw clients
# --------------------------------------------------------------------------------------------

async def connected_raw(gw: Gateway, user: str = "hostile") -> tuple[RawWS, int]:
    """A raw connection that sent ``connect``; returns it with its worker slot."""
    raw = await RawWS.open(gw.url)
    result = await raw.connect(token(user))
    slot = slot_of_client(result["client"])
    assert slot is not None, result
    return raw, slot


async def raw_on_slot(gw: Gateway, slot: int) -> RawWS:
    """A connected raw client whose connection landed on worker ``slot`` (bounded attempts)."""
    seen: list[int] = []
    for _ in range(MAX_LANDING_ATTEMPTS):
        raw, got = await connected_raw(gw)
        if got == slot:
            return raw
        seen.append(got)
        await raw.aclose()
    raise AssertionError(f"no connection landed on slot {slot} in {MAX_LANDING_ATTEMPTS} tries: {seen}")


class FrameReader:
    """Fast bulk parser of server frames on a :class:`RawWS` (for floods: one read, many frames)."""

    def __init__(self, raw: RawWS) -> None:
        self.raw = raw
        self.buf = bytearray()
        self.eof = False

    async def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        data = await asyncio.wait_for(self.raw.reader.read(1 << 20), remaining)
        if not data:
            self.eof = True
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self.buf += data

    def _parse_one(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        n = buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if len(buf) < pos + n:
            return None
        op = buf[0] & 0x0F
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        return op, payload

    async def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            got = self._parse_one()
            if got is not None:
                return got
            await self._fill(deadline)

    async def until_close(self, timeout: float = 5.0) -> tuple[int | None, list[bytes]]:
        """Frames up to the server's CLOSE: (its code, the data messages before it)."""
        deadline = time.monotonic() + scaled(timeout)
        messages: list[bytes] = []
        while True:
            got = self._parse_one()
            if got is None:
                try:
                    await self._fill(deadline)
                except asyncio.IncompleteReadError as exc:
                    raise AssertionError(f"dropped without a CLOSE frame after {len(messages)} messages") from exc
                continue
            op, payload = got
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, messages
            if op not in (OP_PING, OP_PONG):
                messages.append(payload)


def json_lines(messages: Iterable[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for m in messages for line in m.split(b"\n") if line.strip()]


# --------------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------------

_case_ids = itertools.count(1)


class Harness:
    """Controls on every slot + a steady publisher + RSS sampling + restart detection."""

    def __init__(self, gw: Gateway, case: str, rss_bound: int = RSS_BOUND) -> None:
        self.gw = gw
        self.case = case
        self.rss_bound = rss_bound
        self.channel = f"hostile-ctl-{next(_case_ids)}"
        self.controls: dict[int, JsonClient] = {}
        self._spare: list[JsonClient] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._closed: dict[int, BaseException] = {}
        self._publisher: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._stop_publishing = asyncio.Event()
        self.published = 0
        self.attacked: set[int] = set()
        self.result = CaseResult(case)
        self.sampler: RssSampler | None = None
        self.pids_before: list[int] = []
        self.restarts_before = 0
        self.log_before = 0
        self.slot_pids: dict[int, int] = {}

    # -- set-up ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Harness:
        gw = self.gw
        self.pids_before = sorted(gw.worker_pids())
        assert len(self.pids_before) == gw.workers, self.pids_before
        log = gw.log()
        self.restarts_before = log.count("restarting")
        self.log_before = len(log.encode())
        self.slot_pids = gw.slot_pids()
        assert sorted(self.slot_pids.values()) == self.pids_before, (self.slot_pids, self.pids_before)
        for _ in range(MAX_LANDING_ATTEMPTS):
            if len(self.controls) == gw.workers:
                break
            c = await JsonClient.open(gw.url)
            slot = slot_of_client((await c.connect(token("control")))["client"])
            assert slot is not None
            if slot in self.controls:
                self._spare.append(c)
                continue
            await c.subscribe(self.channel)
            self.controls[slot] = c
        for c in self._spare:  # not needed: keep the per-IP count low
            await c.aclose()
        self._spare.clear()
        assert len(self.controls) == gw.workers, f"controls only on slots {sorted(self.controls)}"
        for slot, c in self.controls.items():
            self._pumps.append(asyncio.create_task(self._pump(slot, c)))
        self._http = aiohttp.ClientSession(headers={"X-API-Key": API_KEY})
        await self._publish({"seq": 0})  # the channel exists and has offset 1 before the attack
        self.sampler = RssSampler(self.pids_before)
        self._publisher = asyncio.create_task(self._publish_loop())
        return self

    async def _pump(self, slot: int, c: JsonClient) -> None:
        try:
            while True:
                await c._pump(3600)
        except (ConnectionClosed, OSError) as exc:
            self._closed[slot] = exc

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        """Publish through the HTTP server API; returns its result."""
        assert self._http is not None
        async with self._http.post(self.gw.internal_url + "/api/publish",
                                   json={"channel": channel, "data": data},
                                   timeout=aiohttp.ClientTimeout(total=scaled(5))) as resp:
            body = await resp.json()
        assert resp.status == 200 and "result" in body, (resp.status, body)
        result: dict[str, Any] = body["result"]
        return result

    async def _publish(self, data: Any) -> None:
        result = await self.publish(self.channel, data)
        self.published += 1
        body = {"result": result}
        assert body["result"].get("offset") == self.published, (body, self.published)

    async def _publish_loop(self) -> None:
        seq = 1
        while not self._stop_publishing.is_set():
            await self._publish({"seq": seq})
            seq += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_publishing.wait(), PUBLISH_INTERVAL)

    # -- during the attack ----------------------------------------------------------------------

    def attack_on(self, *slots: int) -> None:
        """Name the slot(s) the attack reached (unknown for pre-handshake attacks: leave it)."""
        self.attacked.update(slots)

    def pid_of(self, slot: int) -> int:
        return self.slot_pids[slot]

    def rss_now(self) -> dict[int, int]:
        assert self.sampler is not None
        return self.sampler.sample()

    # -- checks ---------------------------------------------------------------------------------

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                await self._verify()
        finally:
            await self._teardown()

    async def _verify(self) -> None:
        gw = self.gw
        assert self._publisher is not None and self.sampler is not None
        self._stop_publishing.set()
        await self._publisher
        await self._publish({"final": True})
        final = self.published

        def delivered() -> bool:
            return all(any(p.get("pub", {}).get("offset") == final for p in c.pushes) or slot in self._closed
                       for slot, c in self.controls.items())

        await wait_for(delivered, timeout=10, what=f"[{self.case}] the final publication on every control")
        after = self.sampler.stop()
        assert not self._closed, f"[{self.case}] control connection(s) closed: {self._closed}"
        for slot, c in self.controls.items():
            offsets = [p["pub"].get("offset") for p in c.pushes if p.get("channel") == self.channel and "pub" in p]
            assert offsets == list(range(1, final + 1)), \
                f"[{self.case}] control on slot {slot} saw a gap: {len(offsets)} of {final}: {offsets[:20]}..."

        # RSS of the attacked worker (the worst one when several or none are known).
        slots = sorted(self.attacked) or sorted(self.slot_pids)
        growth = {s: self.sampler.peak[self.pid_of(s)] - self.sampler.before[self.pid_of(s)] for s in slots}
        worst = max(slots, key=lambda s: growth[s])
        pid = self.pid_of(worst)
        r = self.result
        r.slot = ",".join(map(str, slots)) if len(slots) > 1 else str(worst)
        if not self.attacked:
            r.slot = "*" + str(worst)
        r.before = self.sampler.before[pid] / MiB
        r.peak = self.sampler.peak[pid] / MiB
        r.after = after[pid] / MiB
        r.publications = final
        r.log_kib = (len(gw.log().encode()) - self.log_before) / 1024
        RESULTS[self.case] = r
        print(f"\n[{self.case}] code={r.code} slot={r.slot} pid={pid} RSS before={r.before:.1f} MiB "
              f"peak={r.peak:.1f} MiB after={r.after:.1f} MiB growth={r.growth:.1f} MiB; "
              f"{final} publications, no gap on {len(self.controls)} controls; log +{r.log_kib:.1f} KiB {r.note}")
        assert growth[worst] < self.rss_bound, \
            f"[{self.case}] worker slot {worst} RSS grew {growth[worst] / MiB:.1f} MiB (bound {self.rss_bound / MiB})"

        assert sorted(gw.worker_pids()) == self.pids_before, f"[{self.case}] a worker was replaced"
        assert gw.log().count("restarting") == self.restarts_before, f"[{self.case}] supervisor restarted a worker"
        assert gw.proc.poll() is None
        assert gw.health()["status"] == "ok"

    async def _teardown(self) -> None:
        self._stop_publishing.set()
        if self.sampler is not None and self.sampler._thread.is_alive():
            self.sampler.stop()
        for task in [*self._pumps, *([self._publisher] if self._publisher else [])]:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for c in [*self.controls.values(), *self._spare]:
            with contextlib.suppress(Exception):
                await c.aclose()
        if self._http is not None:
            await self._http.close()
