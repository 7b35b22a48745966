"""Channel ownership: a stable 64-bit hash of the channel name plus jump consistent hash.

Python's built-in string hash is salted per interpreter, so it must never decide ownership: the
ops CLI, a re-exec'd supervisor and another host would all disagree. FNV-1a 64 over the
UTF-8 bytes followed by jump hash is what Centrifugo uses to place channels on Redis
shards (``consistentIndex`` in centrifuge's redis_shard.go), so a channel maps to the
same index here as there. Jump hash moves only about 1/n of the keys when the bucket
count changes from n-1 to n.
"""

from __future__ import annotations

__all__ = ["fnv1a64", "jump_hash", "owner", "OwnerCache"]

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


def jump_hash(key: int, buckets: int) -> int:
    """Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014)."""
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    b, j = -1, 0
    key &= _MASK64
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def owner(channel: str, workers: int) -> int:
    """The slot (shard id) that owns ``channel`` among ``workers`` slots."""
    if workers == 1:
        return 0
    return jump_hash(fnv1a64(channel.encode("utf-8")), workers)


class OwnerCache:
    """``owner(channel, workers)`` remembered per channel (hashing runs once per name on the
    hot path), bounded: past ``size`` names it starts over, a burst of new names just
    recomputes."""

    __slots__ = ("_owners", "size", "workers")

    def __init__(self, workers: int, size: int = 65_536) -> None:
        self.workers = workers
        self.size = size
        self._owners: dict[str, int] = {}

    def __call__(self, channel: str) -> int:
        slot = self._owners.get(channel)
        if slot is None:
            if len(self._owners) >= self.size:
                self._owners.clear()
            slot = self._owners[channel] = owner(channel, self.workers)
        return slot
