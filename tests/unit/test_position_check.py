"""The periodic position check: a stream ahead of what was delivered, still ahead at the
recheck, or under another epoch, makes the channel's subscribers recover; publications in
flight and read errors do not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import ClientError
from gateway.core.model import Done, StreamPosition
from gateway.engine.position_check import PositionCheck


@dataclass
class Local:
    epoch: str
    offset: int


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[..., Any], tuple[Any, ...]]] = []

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any:
        self.timers.append((delay, fn, args))
        return self

    def cancel(self) -> None:
        pass

    def fire(self) -> float:
        delay, fn, args = self.timers.pop(0)
        fn(*args)
        return delay


class Harness:
    def __init__(self, delay: float = 40.0, recheck: float = 5.0) -> None:
        self.loop = FakeLoop()
        self.delivered: dict[str, Local] = {}
        self.tops: dict[str, StreamPosition | ClientError] = {}
        self.lost: list[str] = []
        self.check = PositionCheck(self.loop, delay, lambda: self.delivered, self.read,  # type: ignore[arg-type]
                                   self.lost.append, recheck=recheck)
        self.check.start()

    def read(self, channel: str, done: Done[StreamPosition]) -> None:
        top = self.tops[channel]
        if isinstance(top, ClientError):
            done(None, top)
        else:
            done(top, None)

    def round(self) -> float:
        return self.loop.fire()


def test_in_step_channels_are_left_alone() -> None:
    h = Harness()
    h.delivered["a"] = Local("E", 5)
    h.tops["a"] = StreamPosition(5, "E")
    assert h.loop.timers[0][0] == 40.0
    h.round()
    assert h.lost == []
    assert h.loop.timers[0][0] == 40.0  # nothing suspect: the next round after the full delay


def test_a_publication_in_flight_is_rechecked_not_reported() -> None:
    h = Harness()
    h.delivered["a"] = Local("E", 5)
    h.tops["a"] = StreamPosition(6, "E")
    h.round()
    assert h.lost == [] and h.loop.timers[0][0] == 5.0  # a quick recheck
    h.delivered["a"].offset = 6  # it arrived
    h.tops["a"] = StreamPosition(7, "E")  # and another is in flight now
    h.round()
    assert h.lost == []


def test_a_publication_that_never_arrives_is_a_loss() -> None:
    h = Harness()
    h.delivered["a"] = Local("E", 5)
    h.tops["a"] = StreamPosition(6, "E")
    h.round()
    h.round()
    assert h.lost == ["a"]
    assert h.check.losses == 1


def test_another_epoch_is_a_loss_at_once() -> None:
    h = Harness()
    h.delivered["a"] = Local("OLD", 5)
    h.tops["a"] = StreamPosition(1, "NEW")
    h.round()
    assert h.lost == ["a"]


def test_read_errors_and_unpositioned_channels_are_skipped() -> None:
    h = Harness()
    h.delivered["a"] = Local("E", 5)
    h.delivered["plain"] = Local("", 0)  # no positions: never read
    h.tops["a"] = ClientError(100, "engine unavailable", temporary=True)
    h.round()
    assert h.lost == []


def test_zero_delay_disables_the_check() -> None:
    h = Harness(delay=0)
    assert h.loop.timers == []
