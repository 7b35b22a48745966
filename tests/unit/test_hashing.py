"""Channel ownership hashing: FNV-1a 64, jump consistent hash and pinned owner() vectors."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sharding.hashing import fnv1a64, jump_hash, owner

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- FNV-1a 64 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xCBF29CE484222325),
        (b"a", 0xAF63DC4C8601EC8C),
        (b"foobar", 0x85944171F73967E8),
    ],
)
def test_fnv1a64_standard_vectors(data: bytes, expected: int) -> None:
    assert fnv1a64(data) == expected


def test_fnv1a64_is_64_bit() -> None:
    for i in range(200):
        h = fnv1a64(os.urandom(i))
        assert 0 <= h < 2**64


# -- jump hash ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    [
        (1, 1, 0),
        (42, 57, 43),
        (0xDEAD10CC, 1, 0),
        (0xDEAD10CC, 666, 361),
        (256, 1024, 520),
    ],
)
def test_jump_hash_reference_vectors(key: int, buckets: int, expected: int) -> None:
    # From github.com/dgryski/go-jump jump_test.go.
    assert jump_hash(key, buckets) == expected


@pytest.mark.parametrize("buckets", [0, -1])
def test_jump_hash_rejects_non_positive_buckets(buckets: int) -> None:
    with pytest.raises(ValueError):
        jump_hash(1, buckets)


def test_jump_hash_in_range() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        key = rng.getrandbits(64)
        buckets = rng.randint(1, 300)
        assert 0 <= jump_hash(key, buckets) < buckets


def test_jump_hash_masks_key_to_64_bits() -> None:
    assert jump_hash(2**64 + 42, 57) == jump_hash(42, 57)


# -- owner(): golden vectors ---------------------------------------------------------------------

BUCKETS = (1, 2, 3, 4, 8, 16)

# Computed once with the reference implementation; pins placement across versions (a
# change here would move channels between workers and break a rolling upgrade).
GOLDEN_OWNERS: dict[str, list[int]] = {
    "news": [0, 1, 2, 3, 3, 3],
    "chat:index": [0, 0, 0, 0, 0, 0],
    "$private": [0, 0, 2, 2, 2, 2],
    "ns:chan": [0, 1, 1, 1, 1, 1],
    "$user:secret": [0, 0, 0, 0, 0, 0],
    "a": [0, 1, 2, 2, 2, 12],
    "": [0, 1, 1, 1, 1, 13],
    "привет": [0, 1, 1, 3, 3, 3],
    "频道": [0, 0, 0, 0, 6, 9],
    "emoji🎉": [0, 0, 0, 0, 0, 0],
    "personal:#42": [0, 1, 1, 3, 3, 3],
    "channel-1": [0, 0, 2, 2, 2, 2],
    "user#42": [0, 1, 2, 2, 2, 13],
    "orders:eu-west-1": [0, 1, 1, 3, 4, 4],
    "long:" + "abc" * 300: [0, 0, 2, 3, 5, 9],
    "x" * 1000: [0, 0, 0, 0, 0, 0],
    "Ωmega:канал": [0, 0, 0, 0, 0, 8],
    "news\x00": [0, 1, 1, 1, 4, 4],
}

GOLDEN_FNV: dict[str, int] = {
    "channel-1": 0xA82BC2F50932D5CE,
    "user#42": 0xB99D91A5089D7A45,
    "orders:eu-west-1": 0x65324AE3A1AB4A92,
    "long:" + "abc" * 300: 0x4C73B713053D94AB,
    "x" * 1000: 0xE1ADD1D93134D2C5,
    "Ωmega:канал": 0x2E693B465C89D028,
}


@pytest.mark.parametrize("channel", list(GOLDEN_OWNERS), ids=lambda c: repr(c)[:24])
def test_owner_golden_vectors(channel: str) -> None:
    assert [owner(channel, n) for n in BUCKETS] == GOLDEN_OWNERS[channel]


@pytest.mark.parametrize("channel", list(GOLDEN_FNV), ids=lambda c: repr(c)[:24])
def test_fnv_golden_vectors_over_utf8(channel: str) -> None:
    assert fnv1a64(channel.encode("utf-8")) == GOLDEN_FNV[channel]


def test_owner_is_jump_of_fnv_of_utf8() -> None:
    for channel in GOLDEN_OWNERS:
        for n in BUCKETS[1:]:
            assert owner(channel, n) == jump_hash(fnv1a64(channel.encode("utf-8")), n)


def test_owner_single_worker_is_zero() -> None:
    for channel in GOLDEN_OWNERS:
        assert owner(channel, 1) == 0


def test_owner_rejects_zero_workers() -> None:
    with pytest.raises(ValueError):
        owner("news", 0)


_SUBPROCESS_SCRIPT = """
import json, sys
from sharding.hashing import owner
channels = json.loads(sys.stdin.read())
print(json.dumps([[owner(c, n) for n in (1, 2, 3, 4, 8, 16, 64)] for c in channels]))
"""


def _owners_under_hashseed(seed: str, channels: list[str]) -> list[list[int]]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SCRIPT],
        input=json.dumps(channels), capture_output=True, text=True, env=env,
        cwd=REPO_ROOT, timeout=60, check=True,
    )
    result: list[list[int]] = json.loads(proc.stdout)
    return result


def test_owner_independent_of_pythonhashseed() -> None:
    channels = list(GOLDEN_OWNERS) + [f"chan:{i}" for i in range(200)]
    a = _owners_under_hashseed("1", channels)
    b = _owners_under_hashseed("4242", channels)
    assert a == b
    here = [[owner(c, n) for n in (1, 2, 3, 4, 8, 16, 64)] for c in channels]
    assert a == here


# -- consistency property ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 15])
def test_growing_buckets_moves_keys_only_to_new_bucket(n: int) -> None:
    keys = [f"channel:{i}" for i in range(10_000)]
    moved = 0
    for key in keys:
        before, after = owner(key, n), owner(key, n + 1)
        if before != after:
            assert after == n, f"{key!r} moved {before} -> {after}, not to the new bucket {n}"
            moved += 1
    expected = len(keys) / (n + 1)
    # Binomial std dev is at most 50 for 10k keys; allow a generous band.
    assert abs(moved - expected) < max(0.2 * expected, 300), (moved, expected)


def test_owner_distribution_roughly_uniform() -> None:
    n = 8
    counts = [0] * n
    for i in range(16_000):
        counts[owner(f"user:{i}", n)] += 1
    for c in counts:
        assert 1600 < c < 2400, counts


def test_owner_cache_agrees_with_owner_and_stays_bounded() -> None:
    from sharding.hashing import OwnerCache

    cache = OwnerCache(workers=5, size=10)
    names = [f"ch-{i}" for i in range(25)]
    assert [cache(n) for n in names] == [owner(n, 5) for n in names]
    assert len(cache._owners) <= 10
    assert [cache(n) for n in names] == [owner(n, 5) for n in names]
