"""The fossil delta format (Centrifugo's ``delta: "fossil"``), pure Python.

A delta turns a *source* (the previous publication's payload) into a *target* (the new
one). Its format is the one fossil SCM publishes (``www/delta_format.wiki``) and every
Centrifugo SDK applies (centrifuge-js ``fossil.ts``, centrifuge-go, ...):

- a header: the target's length, then ``\\n``;
- commands: ``N@O,`` copies N bytes of the source from offset O; ``N:`` followed by N raw
  bytes inserts them; ``C;`` ends the delta, C being :func:`checksum` of the target.

Integers are written in base 64 with the digits ``0-9 A-Z _ a-z ~``, most significant
first. Everything but inserted bytes is ASCII.

:func:`create` is our own encoder of that format (the appliers only need a valid delta,
not fossil's exact bytes): it indexes the source's aligned 16-byte blocks by value, scans
the target for them and grows each hit both ways with slice comparisons (memcmp speed), so
the Python-level loop runs once per byte only where the target does not match the source.
Any match of 31 bytes or more is found. :func:`apply` is the reference applier, used by the
tests and never on the hot path (clients apply deltas, the server only makes them).
"""

from __future__ import annotations

import sys
from array import array

__all__ = ["create", "apply", "checksum", "FossilError"]

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUE = {d: i for i, d in enumerate(_DIGITS)}
_BLOCK = 16  # fossil's NHASH: source blocks indexed, and the shortest copy worth looking for
_CANDIDATES = 8  # source blocks tried per target position (fossil tries up to 250 by hash chain)
_NEAR = 8  # how far past a copy its diagonal is tried again


class FossilError(ValueError):
    """A delta that does not apply to the given source."""


def _encode_int(n: int) -> bytes:
    if n == 0:
        return b"0"
    out = bytearray()
    while n:
        out.append(_DIGITS[n & 63])
        n >>= 6
    out.reverse()
    return bytes(out)


_SMALL = [_encode_int(n) for n in range(4096)]  # every 1- and 2-digit number


def _int(n: int) -> bytes:
    return _SMALL[n] if n < 4096 else _encode_int(n)


def _digits(n: int) -> int:
    """How many digits :func:`_int` writes for ``n``."""
    return (n.bit_length() + 5) // 6 or 1


def checksum(data: bytes) -> int:
    """fossil's 32-bit checksum: the sum, modulo 2**32, of ``data`` read as big-endian
    32-bit words, the last one padded with zero bytes."""
    pad = -len(data) % 4
    words = array("I", data + b"\0" * pad if pad else data)
    if words.itemsize != 4:  # pragma: no cover - every platform we run on has a 4-byte 'I'
        raise RuntimeError("array('I') is not 32-bit here")
    if sys.byteorder == "little":
        words.byteswap()
    return sum(words) & 0xFFFFFFFF


def _forward(a: bytes, x: int, b: bytes, y: int) -> int:
    """How many bytes ``a[x:]`` and ``b[y:]`` have in common at their start."""
    limit = len(a) - x
    if len(b) - y < limit:
        limit = len(b) - y
    n = 0
    step = _BLOCK
    # Gallop in doubling steps while whole chunks match, then halve back down.
    while n < limit:
        if step > limit - n:
            step = limit - n
        if a[x + n:x + n + step] == b[y + n:y + n + step]:
            n += step
            step *= 2
        elif step == 1:
            break
        else:
            step //= 2
    return n


def _backward(a: bytes, x: int, b: bytes, y: int, limit: int) -> int:
    """How many bytes (at most ``limit``) ``a[:x]`` and ``b[:y]`` have in common at their end."""
    if x < limit:
        limit = x
    if y < limit:
        limit = y
    n = 0
    step = _BLOCK
    while n < limit:
        if step > limit - n:
            step = limit - n
        if a[x - n - step:x - n] == b[y - n - step:y - n]:
            n += step
            step *= 2
        elif step == 1:
            break
        else:
            step //= 2
    return n


def create(source: bytes, target: bytes) -> bytes:
    """A fossil delta that turns ``source`` into ``target``.

    Never fails; when nothing of ``source`` is worth copying the delta is ``target`` as one
    insert (a few bytes longer than ``target``: callers compare sizes and send the full
    payload instead when the delta is not smaller).
    """
    n_out = len(target)
    out = [_int(n_out), b"\n"]
    base = 0
    if len(source) > _BLOCK and n_out > _BLOCK:
        index: dict[bytes, list[int]] = {}
        for at in range(0, len(source) - _BLOCK + 1, _BLOCK):
            block = index.setdefault(source[at:at + _BLOCK], [])
            if len(block) < _CANDIDATES:
                block.append(at)
        get = index.get
        pos = 0  # where the next match may start
        last = n_out - _BLOCK
        shift = 0  # source offset minus target offset of the last copy (its diagonal)
        while pos <= last:
            key = target[pos:pos + _BLOCK]
            hits = get(key)
            if hits is None and pos - base <= _NEAR:
                # Just after a copy, first try the same diagonal a little further on, and its
                # neighbours: a changed value of the same or a close length, the common case
                # between two versions of one JSON document, resumes there at once instead
                # of at the next aligned source block.
                for at in (pos + shift, pos + shift + 1, pos + shift - 1):
                    if 0 <= at <= len(source) - _BLOCK and source[at:at + _BLOCK] == key:
                        hits = [at]
                        break
            if hits is None:
                pos += 1
                continue
            best_cnt = 0
            best_src = best_start = 0
            for at in hits:
                ahead = _BLOCK + _forward(source, at + _BLOCK, target, pos + _BLOCK)
                behind = _backward(source, at, target, pos, pos - base)
                cnt = ahead + behind
                if cnt > best_cnt:
                    best_cnt, best_src, best_start = cnt, at - behind, pos - behind
            literal = best_start - base
            # A copy command costs its digits; keep it only when it saves bytes (as fossil does).
            cost = _digits(best_cnt) + _digits(best_src) + 2
            if literal:
                cost += _digits(literal) + 1
            if best_cnt < cost:
                pos += 1
                continue
            if literal:
                out += (_int(literal), b":", target[base:best_start])
            out += (_int(best_cnt), b"@", _int(best_src), b",")
            base = pos = best_start + best_cnt
            shift = best_src - best_start
    if base < n_out:
        out += (_int(n_out - base), b":", target[base:])
    out += (_int(checksum(target)), b";")
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def number(self) -> int:
        data, pos, n = self.data, self.pos, 0
        start = pos
        while pos < len(data):
            v = _VALUE.get(data[pos])
            if v is None:
                break
            n = (n << 6) | v
            pos += 1
        if pos == start:
            raise FossilError("integer expected")
        self.pos = pos
        return n

    def char(self) -> int:
        if self.pos >= len(self.data):
            raise FossilError("unterminated delta")
        c = self.data[self.pos]
        self.pos += 1
        return c


def apply(source: bytes, delta: bytes) -> bytes:
    """``target`` from ``source`` and a delta :func:`create` (or fossil) made.

    Raises:
        FossilError: a malformed delta, one that copies past the source, a size or
            checksum that does not match.
    """
    r = _Reader(delta)
    size = r.number()
    if r.char() != 0x0A:
        raise FossilError("size not terminated by newline")
    out = bytearray()
    while r.pos < len(delta):
        cnt = r.number()
        op = r.char()
        if op == 0x40:  # '@'
            ofst = r.number()
            if r.char() != 0x2C:
                raise FossilError("copy not terminated by ','")
            if ofst + cnt > len(source):
                raise FossilError("copy past the end of the source")
            out += source[ofst:ofst + cnt]
        elif op == 0x3A:  # ':'
            if r.pos + cnt > len(delta):
                raise FossilError("insert past the end of the delta")
            out += delta[r.pos:r.pos + cnt]
            r.pos += cnt
        elif op == 0x3B:  # ';'
            if len(out) != size:
                raise FossilError("size does not match")
            if cnt != checksum(bytes(out)):
                raise FossilError("bad checksum")
            return bytes(out)
        else:
            raise FossilError("unknown operator")
        if len(out) > size:
            raise FossilError("output larger than announced")
    raise FossilError("unterminated delta")
