"""Property-based fuzzing of the codec, config parser and durations (hypothesis): no
exception escapes except the typed protocol/config errors."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse_config
from gateway.config.durations import DurationError, parse_duration
from gateway.core.errors import Disconnect
from gateway.protocol.centrifuge_json import METHODS, Command, decode_commands
from sharding.envelope import EnvelopeError, decode

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_random_bytes(data: bytes) -> None:
    try:
        commands = decode_commands(data, 100)
    except Disconnect as exc:
        assert exc.code in (1007, 3501)
        return
    assert all(isinstance(c, Command) for c in commands)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["id", *METHODS, "x"]), json_values, max_size=4), max_size=8))
def test_decode_command_shaped_json(objects: list[dict[str, object]]) -> None:
    data = "\n".join(json.dumps(o) for o in objects).encode()
    try:
        commands = decode_commands(data, 5)
    except Disconnect as exc:
        assert exc.code == 3501
        return
    for cmd in commands:
        assert 0 <= cmd.id < 2**32
        assert cmd.method in METHODS or cmd.method == ""
        assert isinstance(cmd.body, dict)


@FUZZ
@given(st.integers(min_value=1, max_value=200))
def test_deeply_nested_json_is_refused_cleanly(depth: int) -> None:
    data = ('{"id":1,"publish":{"channel":"c","data":' + "[" * depth * 3 + "]" * depth * 3 + "}}").encode()
    try:
        decode_commands(data, 10)
    except Disconnect as exc:
        assert exc.code == 3501  # orjson refuses nesting deeper than 255


@FUZZ
@given(st.dictionaries(st.sampled_from(["http_server", "client", "channel", "shardgate", "websocket", "http_api",
                                        "bogus"]), json_values, max_size=4))
def test_parse_config_random_documents(doc: dict[str, object]) -> None:
    try:
        parse_config(doc)
    except ConfigError as exc:  # several problems: one line each
        for error in getattr(exc, "errors", [exc]):
            assert "\n" not in str(error)


@FUZZ
@given(st.recursive(json_values, lambda c: st.dictionaries(st.sampled_from(
    ["without_namespace", "namespaces", "name", "presence", "history_size", "history_ttl", "force_recovery",
     "ping_interval", "pong_timeout", "token", "hmac_secret_key", "workers", "port"]), c, max_size=5),
    max_leaves=15))
def test_parse_config_plausible_keys(value: object) -> None:
    for top in ("client", "channel", "shardgate", "http_server"):
        with contextlib.suppress(ConfigError):
            parse_config({top: value})


@FUZZ
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_duration(value: object) -> None:
    try:
        seconds = parse_duration(value, "k")
    except DurationError:
        return
    assert seconds >= 0


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_envelope_decode_random_frames(frames: list[bytes]) -> None:
    with contextlib.suppress(EnvelopeError):
        decode(frames)
