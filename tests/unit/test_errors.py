"""Typed protocol errors: reconnect ranges, reply bodies and classify()."""

from __future__ import annotations

import pytest

from gateway.core import errors
from gateway.core.errors import (
    ERROR_INTERNAL,
    ERROR_TOO_MANY_REQUESTS,
    ERROR_UNKNOWN_CHANNEL,
    ClientError,
    Disconnect,
    Unsubscribe,
    classify,
)


@pytest.mark.parametrize("code", [3000, 3001, 3004, 3012, 3499, 4000, 4499, 1000, 1002, 1007, 1009])
def test_disconnect_reconnects(code: int) -> None:
    assert Disconnect(code, "x").reconnect is True


@pytest.mark.parametrize("code", [3500, 3501, 3507, 3999, 4500, 4750, 4999])
def test_disconnect_terminal(code: int) -> None:
    assert Disconnect(code, "x").reconnect is False


@pytest.mark.parametrize("code", [5000, 4000, 3499])
def test_disconnect_range_edges_outside(code: int) -> None:
    assert Disconnect(code, "x").reconnect is True


def test_predefined_disconnects() -> None:
    assert errors.DISCONNECT_SHUTDOWN.reconnect
    assert errors.DISCONNECT_SLOW.reconnect
    assert errors.DISCONNECT_NO_PONG.reconnect
    assert not errors.DISCONNECT_BAD_REQUEST.reconnect
    assert not errors.DISCONNECT_INVALID_TOKEN.reconnect
    assert errors.DISCONNECT_BAD_REQUEST.code == 3501
    assert errors.WS_INVALID_TEXT.code == 1007


def test_disconnect_reasons_fit_close_frame() -> None:
    for value in vars(errors).values():
        if isinstance(value, Disconnect):
            assert len(value.reason.encode()) < 123, value


def test_retired_codes_unused() -> None:
    codes = {v.code for v in vars(errors).values() if isinstance(v, Disconnect)}
    assert not codes & {3002, 3003, 3007}


def test_unsubscribe_codes() -> None:
    assert (errors.UNSUBSCRIBE_SERVER.code, errors.UNSUBSCRIBE_SERVER.reason) == (2000, "server unsubscribe")
    assert errors.UNSUBSCRIBE_INSUFFICIENT_STATE.code == 2500
    for value in vars(errors).values():
        if isinstance(value, Unsubscribe):
            assert 2000 <= value.code <= 2999


def test_client_error_as_dict() -> None:
    assert ERROR_UNKNOWN_CHANNEL.as_dict() == {"code": 102, "message": "unknown channel"}
    assert ERROR_TOO_MANY_REQUESTS.as_dict() == {
        "code": 111, "message": "too many requests", "temporary": True}
    assert ERROR_INTERNAL.as_dict() == {"code": 100, "message": "internal server error", "temporary": True}


def test_str() -> None:
    assert str(ERROR_UNKNOWN_CHANNEL) == "102 unknown channel"
    assert str(Disconnect(3501, "bad request")) == "3501 bad request"


def test_errors_are_raisable_and_comparable() -> None:
    with pytest.raises(ClientError) as info:
        raise ClientError(102, "unknown channel")
    assert info.value == ERROR_UNKNOWN_CHANNEL
    with pytest.raises(Disconnect):
        raise errors.DISCONNECT_SLOW


@pytest.mark.parametrize(
    "exc",
    [ValueError("boom"), KeyError("k"), RuntimeError("secret detail"), ZeroDivisionError(),
     TypeError(), Exception(), OSError(5, "io")],
)
def test_classify_unknown_is_internal(exc: BaseException) -> None:
    out = classify(exc)
    assert isinstance(out, ClientError)
    assert out.code == 100
    assert out.temporary
    assert "secret" not in out.message and "boom" not in out.message


def test_classify_passes_through_typed_errors() -> None:
    err = ClientError(103, "permission denied")
    assert classify(err) is err
    dis = Disconnect(3507, "permission denied")
    assert classify(dis) is dis
    assert classify(ERROR_UNKNOWN_CHANNEL) is ERROR_UNKNOWN_CHANNEL


def test_a_reply_too_large_closes_slow_even_after_crossing_the_bus() -> None:
    from gateway.core.errors import DISCONNECT_SLOW, ERROR_REPLY_TOO_LARGE, ClientError, classify

    rebuilt = ClientError(ERROR_REPLY_TOO_LARGE.code, ERROR_REPLY_TOO_LARGE.message)  # as the router rebuilds it
    assert classify(rebuilt) == DISCONNECT_SLOW
    assert classify(ClientError(106, "limit exceeded")) == ClientError(106, "limit exceeded")
