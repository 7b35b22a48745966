"""The timer wheel (pure: no loop, time passed in)."""

from __future__ import annotations

import pytest

from gateway.core.wheel import COMPACT_MIN, Deadline, TimerWheel


def test_fires_never_early_and_at_most_one_bucket_late() -> None:
    wheel = TimerWheel(0.1)
    fired: list[str] = []
    wheel.add(100.0, 0.25, fired.append, "a")
    assert wheel.due(100.2) == []
    assert wheel.due(100.249) == []
    (d,) = wheel.due(100.36)
    assert d.callback is not None
    d.callback(*d.args)
    assert fired == ["a"]
    assert wheel.due(101.0) == [] and wheel.pending == 0


def test_order_within_a_bucket_and_across_buckets() -> None:
    wheel = TimerWheel(1.0)
    for name, delay in (("late", 3.0), ("b", 1.5), ("a", 1.2), ("c", 1.9)):
        wheel.add(0.0, delay, print, name)
    assert [d.args[0] for d in wheel.due(2.0)] == ["b", "a", "c"]
    assert [d.args[0] for d in wheel.due(10.0)] == ["late"]


def test_cancel_drops_the_callback_at_once_and_the_entry_with_its_bucket() -> None:
    wheel = TimerWheel(0.5)
    big = bytearray(10)
    d = wheel.add(0.0, 1.0, big.extend, b"x")
    d.cancel()
    assert d.cancelled() and d.callback is None and d.args == ()
    assert wheel.pending == 1
    assert wheel.due(5.0) == []
    assert wheel.pending == 0


def test_zero_or_negative_delay_fires_on_the_next_bucket_not_a_passed_one() -> None:
    wheel = TimerWheel(0.1)
    wheel.add(10.0, 1.0, print)
    wheel.due(10.5)
    d = wheel.add(10.5, -3.0, print, "now")
    assert wheel.due(10.5) == []
    assert [x.args for x in wheel.due(10.61)] == [("now",)]
    assert d.callback is not None


def test_a_long_stall_visits_only_existing_buckets() -> None:
    wheel = TimerWheel(0.001)
    wheel.add(0.0, 0.5, print, 1)
    wheel.add(0.0, 7200.0, print, 2)
    assert [d.args for d in wheel.due(3600.0)] == [(1,)]  # one hour at 1 ms: no 3.6M-step walk
    assert [d.args for d in wheel.due(7200.1)] == [(2,)]


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TimerWheel(0)


def test_churn_with_long_deadlines_does_not_pile_up_cancelled_entries() -> None:
    # A connection's token expiry an hour away, cancelled when it leaves: 100,000 of them.
    wheel = TimerWheel(0.1)
    live = [wheel.add(0.0, 60.0 + i, print, "live") for i in range(10)]
    now = 0.0
    for _ in range(100_000):
        now += 0.001
        wheel.add(now, 3600.0, print, "expiry").cancel()
        assert wheel.pending <= max(2 * COMPACT_MIN, 2 * len(live)) + 2
    assert all(not d.cancelled() for d in live)
    assert sorted(d.args[0] for d in wheel.due(4000.0)) == ["live"] * 10


def test_a_sweep_keeps_live_deadlines_in_their_buckets_and_order() -> None:
    wheel = TimerWheel(1.0)
    keep = [wheel.add(0.0, 5.5, print, n) for n in range(3)]
    doomed = [wheel.add(0.0, 5.5, print, "x") for _ in range(COMPACT_MIN + 1)]
    for d in doomed[:-1]:
        d.cancel()
    assert wheel.pending == COMPACT_MIN + 4 and wheel.cancelled == COMPACT_MIN  # not yet: at most COMPACT_MIN
    doomed[-1].cancel()
    assert wheel.pending == 3 and wheel.cancelled == 0  # swept: over COMPACT_MIN, and outnumbering the live
    assert wheel.due(5.0) == []  # never early
    assert [d.args[0] for d in wheel.due(6.0)] == [0, 1, 2] and keep[0].callback is print


def test_taking_a_due_deadline_is_not_a_cancellation() -> None:
    wheel = TimerWheel(0.1)
    (d,) = [wheel.add(0.0, 0.1, print, 1)]
    (due,) = wheel.due(1.0)
    assert due.take() == (print, (1,)) and due.take() == (None, ())
    d.cancel()  # its owner cancels it after it fired: nothing to count
    assert wheel.cancelled == 0 and d.cancelled()


def test_cancelled_entries_leaving_with_their_bucket_are_uncounted() -> None:
    wheel = TimerWheel(0.1)
    for _ in range(5):
        wheel.add(0.0, 0.2, print).cancel()
    assert wheel.cancelled == 5 and wheel.pending == 5
    assert wheel.due(1.0) == []
    assert wheel.cancelled == 0 and wheel.pending == 0


def test_a_deadline_made_outside_a_wheel_cancels_alone() -> None:
    d = Deadline(print, ("x",))
    d.cancel()
    assert d.cancelled()
