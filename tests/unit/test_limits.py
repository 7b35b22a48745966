"""Token buckets and the connection gate, with an injected clock."""

from __future__ import annotations

from gateway.core.limits import ConnectionGate, TokenBucket, Verdict


def test_bucket_allows_burst_then_refuses_then_flags_abuse() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [Verdict.OK] * 5
    assert bucket.take(0.0) is Verdict.OVER
    verdicts = [bucket.take(0.0) for _ in range(10)]
    assert Verdict.ABUSE in verdicts and verdicts.index(Verdict.ABUSE) == 3


def test_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10, burst=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(0.0) is Verdict.OVER
    assert bucket.take(0.25) is Verdict.OK  # 2.5 tokens came back, minus the debt
    for t in range(100):  # a steady 10/s never gets refused
        assert bucket.take(1.0 + t * 0.1) is Verdict.OK


def test_gate_per_ip_open_limit() -> None:
    gate = ConnectionGate(per_ip_limit=2)
    assert gate.admit("1.1.1.1", 0) is None
    assert gate.admit("1.1.1.1", 0) is None
    assert gate.admit("1.1.1.1", 0) == "too many connections from this address"
    assert gate.admit("2.2.2.2", 0) is None
    gate.release("1.1.1.1")
    assert gate.admit("1.1.1.1", 0) is None


def test_gate_per_ip_rate() -> None:
    gate = ConnectionGate(per_ip_rate=2)
    assert gate.admit("ip", 0.0) is None
    gate.release("ip")
    assert gate.admit("ip", 0.0) is None
    gate.release("ip")
    assert gate.admit("ip", 0.0) == "connection rate limit for this address"
    assert gate.admit("ip", 1.0) is None


def test_gate_node_share() -> None:
    gate = ConnectionGate.for_worker(0, 0.0, node_rate_limit=10, workers=4)
    assert gate.node_rate == 3
    results = [gate.admit(f"ip{i}", 0.0) for i in range(5)]
    assert results[:3] == [None] * 3 and results[3] == "connection rate limit"


def test_gate_forgets_idle_addresses() -> None:
    gate = ConnectionGate(per_ip_rate=1)
    for i in range(100):
        assert gate.admit(f"ip{i}", 0.0) is None
        gate.release(f"ip{i}")
    gate.sweep(10.0)
    assert gate.tracked() == 0
