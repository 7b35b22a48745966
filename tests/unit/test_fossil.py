"""The fossil delta format: our encoder against our reference applier, against deltas made
by fossil's own C encoder (golden vectors), and against centrifuge-js's applier in node (the
code path a subscription runs for each publication)."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from gateway.core import fossil
from tests.conftest import scaled

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")


def _rnd(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _edit(rng: random.Random, data: bytes, edits: int) -> bytes:
    out = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(out) + 1)
        op = rng.randrange(3)
        if op == 0:
            out[at:at] = _rnd(rng, rng.randrange(1, 40))
        elif op == 1:
            del out[at:at + rng.randrange(1, 40)]
        else:
            out[at:at + 3] = _rnd(rng, 3)
    return bytes(out)


def _doc(i: int, n: int = 40) -> bytes:
    """A JSON document whose versions differ in scattered small values."""
    return orjson.dumps({"seq": i, "ts": 1_700_000_000 + i,
                         "items": [{"id": k, "name": f"item-{k}", "price": (k * 7 + i) % 100} for k in range(n)]})


def binary_cases() -> list[tuple[bytes, bytes]]:
    rng = random.Random(7)
    big = _rnd(rng, 1 << 20)
    cases = [
        (b"", b""), (b"", b"abc"), (b"abc", b""), (b"abc", b"abc"),
        (b"x" * 15, b"x" * 17), (b"y" * 16, b"y" * 16), (b"z" * 100, b"z" * 100),
        (b"a" * 1000, b"b" * 1000), (b"ab" * 500, b"ba" * 500),
        (_rnd(rng, 2000), _rnd(rng, 2000)),  # unrelated
        (big, big[:300_000] + b"inserted" + big[300_000:700_000] + big[700_010:]),  # large
        (big[:5000], big[:5000][::-1]),
    ]
    for _ in range(200):
        src = _rnd(rng, rng.randrange(0, 3000))
        cases.append((src, _edit(rng, src, rng.randrange(0, 12))))
    return cases


def text_cases() -> list[tuple[bytes, bytes]]:
    cases = [(_doc(i), _doc(i + 1)) for i in range(20)]
    cases.append((_doc(1), _doc(1)))
    cases.append((orjson.dumps({"t": "héllo wörld ✓ " * 20}), orjson.dumps({"t": "hello world ✓ " * 20})))
    cases.append((orjson.dumps({"k": list(range(300))}), orjson.dumps({"other": "thing"})))
    return cases


@pytest.mark.parametrize("source,target", binary_cases() + text_cases())
def test_round_trip(source: bytes, target: bytes) -> None:
    delta = fossil.create(source, target)
    assert fossil.apply(source, delta) == target


def test_identical_and_similar_are_small() -> None:
    doc = _doc(3)
    assert len(fossil.create(doc, doc)) < 20
    assert len(fossil.create(_doc(3), _doc(4))) < len(_doc(4)) // 3


def test_unrelated_costs_a_few_bytes_more_than_the_target() -> None:
    rng = random.Random(1)
    target = _rnd(rng, 1000)
    assert len(fossil.create(_rnd(rng, 1000), target)) <= len(target) + 16


@pytest.mark.parametrize("source,target,delta", [
    # Made by fossil's C encoder (delta.c, through PyPI python-fossil-delta).
    (b'{"a":1,"b":"hello world"}' * 10, (b'{"a":1,"b":"hello world"}' * 10).replace(b"1", b"2", 1),
     b'3v\n6:{"a":23R@V,P@0,2wkjwP;'),
    (b"The quick brown fox jumps over the lazy dog. " * 8,
     (b"The quick brown fox jumps over the lazy dog. " * 8)[:100] + b"A CAT "
     + (b"The quick brown fox jumps over the lazy dog. " * 8)[100:],
     b"5j\n1_@0,5:A CAT3O@2G,i@0,qeczO;"),
])
def test_applies_fossils_own_deltas(source: bytes, target: bytes, delta: bytes) -> None:
    assert fossil.apply(source, delta) == target


def _checksum_like_fossil(data: bytes) -> int:
    """delta.c's checksum(), transcribed loop by loop."""
    s0 = s1 = s2 = s3 = 0
    n, z = len(data), 0
    while n >= 4:
        s0 += data[z]
        s1 += data[z + 1]
        s2 += data[z + 2]
        s3 += data[z + 3]
        z += 4
        n -= 4
    s3 += (s2 << 8) + (s1 << 16) + (s0 << 24)
    if n >= 3:
        s3 += data[z + 2] << 8
    if n >= 2:
        s3 += data[z + 1] << 16
    if n >= 1:
        s3 += data[z] << 24
    return s3 & 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 15, 16, 17, 1001])
def test_checksum(size: int) -> None:
    data = bytes((i * 37 + 11) % 256 for i in range(size))
    assert fossil.checksum(data) == _checksum_like_fossil(data)
    assert fossil.checksum(b"\xff" * 4000) == _checksum_like_fossil(b"\xff" * 4000)


@pytest.mark.parametrize("delta,message", [
    (b"", "integer"), (b"3", "unterminated"), (b"3\n3:abc", "unterminated"),
    (b"3\n3:abc0;", "checksum"), (b"4\n3:abc" + b"0;", "size"), (b"3\n3@9,", "past the end"),
    (b"3\n9:ab", "past the end"), (b"3\n3!abc", "operator"), (b"3!", "newline"), (b"2\n3:abc", "larger"),
])
def test_apply_refuses_bad_deltas(delta: bytes, message: str) -> None:
    with pytest.raises(fossil.FossilError, match=message):
        fossil.apply(b"source", delta)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.skipif(NODE is None or not (JS_DIR / "node_modules" / "centrifuge").is_dir(),
                    reason="node and `npm ci --prefix tests/js` are needed for centrifuge-js's applier")
def test_centrifuge_js_applies_our_deltas() -> None:
    """Every delta we make is applied by centrifuge-js exactly: as bytes (its protobuf codec)
    and, for JSON documents, as the JSON string the JSON codec receives."""
    cases = [(s, t, False) for s, t in binary_cases() if len(s) < 100_000]
    # A delta that is not valid UTF-8 never travels as text (the hub sends the payload whole).
    cases += [(s, t, True) for s, t in text_cases() if _utf8(fossil.create(s, t))]
    payload = [{"source": base64.b64encode(s).decode(), "delta": base64.b64encode(fossil.create(s, t)).decode(),
                "text": text} for s, t, text in cases]
    proc = subprocess.run([str(NODE), "fossil_apply.mjs"], cwd=JS_DIR, input=json.dumps(payload),
                          capture_output=True, text=True, timeout=scaled(60))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(cases)
    for (source, target, text), result in zip(cases, results, strict=True):
        assert "error" not in result, (result, source[:40], target[:40], text)
        assert base64.b64decode(result["target"]) == target
