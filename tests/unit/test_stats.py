"""Per-worker stats: the request path's combined ``replied`` reports exactly what the separate
``sent("reply")`` and ``command_done`` calls would."""

from __future__ import annotations

from gateway.obs.stats import DURATION_BUCKETS, Histogram, Stats


def test_replied_equals_sent_and_command_done() -> None:
    combined, separate = Stats(), Stats()
    for size, method, seconds in [(10, "rpc", 0.0004), (25, "rpc", 0.3), (7, "publish", 0.0001), (3, "rpc", 9.0)]:
        combined.replied(size, method, seconds)
        separate.sent("reply", size)
        separate.command_done(method, seconds)
    assert combined.snapshot() == separate.snapshot()
    snap = combined.snapshot()
    assert snap["messages_out"] == {"reply": 4}
    assert snap["bytes_out"] == {"reply": 45}
    assert snap["commands"]["rpc"]["count"] == 3


def test_replies_add_to_other_reply_counts_and_stay_apart_from_other_kinds() -> None:
    stats = Stats()
    stats.sent("reply", 5)  # a reply written by another path (the protobuf codec, say)
    stats.sent("error", 9)
    stats.replied(10, "rpc", 0.001)
    snap = stats.snapshot()
    assert snap["messages_out"] == {"reply": 2, "error": 1}
    assert snap["bytes_out"] == {"reply": 15, "error": 9}


def test_no_reply_key_before_the_first_reply() -> None:
    snap = Stats().snapshot()
    assert snap["messages_out"] == {}
    assert snap["bytes_out"] == {}


def test_replied_histogram_matches_observe_at_bucket_edges() -> None:
    for seconds in [0.0, *DURATION_BUCKETS, 1e9]:
        stats = Stats()
        stats.replied(1, "m", seconds)
        ref = Histogram(DURATION_BUCKETS)
        ref.observe(seconds)
        assert stats.commands["m"].snapshot() == ref.snapshot()
