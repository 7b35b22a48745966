"""Centrifugo proxy messages, pure: the JSON requests sent to a backend and the typed
results read from its answers (Centrifugo v6 ``internal/proxyproto``, JSON encoding).

Every request starts with the connection's ``client``, ``transport``, ``protocol`` and
``encoding``; payloads are raw JSON in ``data`` or, with ``binary_encoding``, base64 in
``b64data`` (``encoding`` says which). Every answer is one of ``{"result": {...}}``,
``{"error": {code, message, temporary}}`` (an error reply to the client) or
``{"disconnect": {code, reason}}`` (the connection is closed). :func:`decode` turns the latter
two into :class:`ClientError` / :class:`Disconnect` and anything unreadable into internal
error 100, so the callers only ever see a result or one of those two.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from gateway.config.proxy import ProxyEndpoint
from gateway.core.errors import ClientError, Disconnect, truncate_reason

__all__ = [
    "ConnInfo",
    "ConnectResult",
    "PublishResult",
    "RefreshResult",
    "RpcResult",
    "SubGrant",
    "SubRefreshResult",
    "SubscribeResult",
    "ProxyAnswerError",
    "connect_request",
    "decode",
    "decode_connect",
    "decode_publish",
    "decode_refresh",
    "decode_rpc",
    "decode_sub_refresh",
    "decode_subscribe",
    "publish_request",
    "refresh_request",
    "request_headers",
    "rpc_request",
    "sub_refresh_request",
    "subscribe_request",
]

T = TypeVar("T")

_MISSING = object()


class ProxyAnswerError(Exception):
    """A backend answer that is not a valid proxy response (logged; the client sees 100)."""


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What every proxy request says about the connection."""

    client: str
    user: str = ""
    transport: str = "websocket"
    protocol: str = "json"
    #: Upgrade-request headers kept for the proxies (lower-case names).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The connect command's emulated ``headers`` map (client-controlled).
    emulated_headers: Mapping[str, str] = field(default_factory=dict)
    #: Connection meta (from the token or the connect proxy), a JSON value; never sent to clients.
    meta: Any = None


# -- requests -----------------------------------------------------------------------------------


def request_headers(proxy: ProxyEndpoint, conn: ConnInfo) -> dict[str, str]:
    """HTTP headers of one proxy request: ``http.static_headers``, then the emulated headers
    listed in ``emulated_headers``, then the upgrade headers listed in ``http_headers`` (the
    transport's own value wins), and ``Content-Type``."""
    headers: dict[str, str] = {}
    lower: dict[str, str] = {}  # lower-case name -> the key used in headers

    def put(name: str, value: str) -> None:
        key = name.lower()
        old = lower.pop(key, None)
        if old is not None:
            del headers[old]
        lower[key] = name
        headers[name] = value

    for name, value in proxy.static_headers:
        put(name, value)
    for name, value in conn.emulated_headers.items():
        if name.lower() in proxy.emulated_headers:
            put(name, value)
    for name in proxy.http_headers:
        found = conn.headers.get(name)
        if found is not None:
            put(name, found)
    put("Content-Type", "application/json")
    return headers


def _base(proxy: ProxyEndpoint, conn: ConnInfo) -> dict[str, Any]:
    return {"client": conn.client, "transport": conn.transport, "protocol": conn.protocol,
            "encoding": "binary" if proxy.binary_encoding else "json"}


def _put_data(out: dict[str, Any], proxy: ProxyEndpoint, data: Any) -> None:
    """``data`` (a JSON value; absent stays absent) as raw JSON or as base64 ``b64data``."""
    if data is _MISSING:
        return
    if proxy.binary_encoding:
        out["b64data"] = base64.b64encode(orjson.dumps(data)).decode()
    else:
        out["data"] = data


def _put_meta(out: dict[str, Any], proxy: ProxyEndpoint, conn: ConnInfo) -> None:
    if proxy.include_connection_meta and conn.meta is not None:
        out["meta"] = conn.meta


def connect_request(proxy: ProxyEndpoint, conn: ConnInfo, command: Mapping[str, Any]) -> dict[str, Any]:
    """ConnectRequest from the client's connect command (no token): its ``data``, ``name``,
    ``version``, and ``channels`` (the server-side channels it wants to recover, ``subs``)."""
    out = _base(proxy, conn)
    _put_data(out, proxy, command.get("data", _MISSING))
    for key in ("name", "version"):
        value = command.get(key)
        if isinstance(value, str) and value:
            out[key] = value
    subs = command.get("subs")
    if isinstance(subs, dict) and subs:
        out["channels"] = list(subs)
    return out


def refresh_request(proxy: ProxyEndpoint, conn: ConnInfo) -> dict[str, Any]:
    out = _base(proxy, conn)
    out["user"] = conn.user
    _put_meta(out, proxy, conn)
    return out


def subscribe_request(proxy: ProxyEndpoint, conn: ConnInfo, channel: str, command: Mapping[str, Any]
                      ) -> dict[str, Any]:
    out = _base(proxy, conn)
    out["user"] = conn.user
    out["channel"] = channel
    token = command.get("token")
    if isinstance(token, str) and token:
        out["token"] = token
    _put_meta(out, proxy, conn)
    _put_data(out, proxy, command.get("data", _MISSING))
    return out


def publish_request(proxy: ProxyEndpoint, conn: ConnInfo, channel: str, data: Any) -> dict[str, Any]:
    out = _base(proxy, conn)
    out["user"] = conn.user
    out["channel"] = channel
    _put_meta(out, proxy, conn)
    _put_data(out, proxy, data)
    return out


def rpc_request(proxy: ProxyEndpoint, conn: ConnInfo, method: str, data: Any) -> dict[str, Any]:
    out = _base(proxy, conn)
    out["user"] = conn.user
    out["method"] = method
    _put_meta(out, proxy, conn)
    _put_data(out, proxy, data)
    return out


def sub_refresh_request(proxy: ProxyEndpoint, conn: ConnInfo, channel: str) -> dict[str, Any]:
    out = _base(proxy, conn)
    out["user"] = conn.user
    out["channel"] = channel
    _put_meta(out, proxy, conn)
    return out


# -- answers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubGrant:
    """A server-side subscription granted by the connect proxy (``channels`` or ``subs``)."""

    info: Any = None  # JSON value: the subscriber's chan_info
    data: Any = None  # JSON value: sent in the connect reply's subs entry
    override: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConnectResult:
    user: str
    expire_at: int | None
    info: Any
    data: Any
    subs: Mapping[str, SubGrant]
    meta: Any


@dataclass(frozen=True, slots=True)
class RefreshResult:
    expired: bool
    expire_at: int | None = None
    info: Any = None
    has_info: bool = False
    meta: Any = None


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    expire_at: int | None = None
    info: Any = None
    data: Any = None
    #: presence / join_leave / force_recovery / force_positioning / force_push_join_leave
    override: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishResult:
    data: Any = None
    has_data: bool = False  # data replaced by the backend
    skip_history: bool = False


@dataclass(frozen=True, slots=True)
class RpcResult:
    data: Any = None
    has_data: bool = False


@dataclass(frozen=True, slots=True)
class SubRefreshResult:
    expired: bool
    expire_at: int | None = None
    info: Any = None
    has_info: bool = False


def decode(body: bytes, result: Callable[[dict[str, Any] | None], T]) -> T:
    """Read one proxy answer: ``result`` gets the ``result`` object (``None`` when absent).

    Raises:
        Disconnect: the backend asked for one (code 3000..4999).
        ClientError: the backend answered an error (its code, message, temporary).
        ProxyAnswerError: the body is not a valid answer.
    """
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProxyAnswerError("answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ProxyAnswerError("answer is not a JSON object")
    disconnect = answer.get("disconnect")
    if disconnect is not None:
        if not isinstance(disconnect, dict):
            raise ProxyAnswerError("disconnect is not an object")
        code = disconnect.get("code")
        reason = disconnect.get("reason", "")
        if type(code) is not int or not 3000 <= code <= 4999 or not isinstance(reason, str):
            raise ProxyAnswerError(f"bad disconnect {disconnect!r}")
        raise Disconnect(code, truncate_reason(reason))
    error = answer.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ProxyAnswerError("error is not an object")
        code = error.get("code")
        message = error.get("message", "")
        temporary = error.get("temporary", False)
        if type(code) is not int or code <= 0 or not isinstance(message, str) or not isinstance(temporary, bool):
            raise ProxyAnswerError(f"bad error {error!r}")
        raise ClientError(code, message, temporary)
    res = answer.get("result")
    if res is not None and not isinstance(res, dict):
        raise ProxyAnswerError("result is not an object")
    return result(res)


def _bytes_field(res: Mapping[str, Any], name: str) -> tuple[Any, bool]:
    """A payload field: raw JSON ``name`` or base64 ``b64name`` (holding JSON); (value, present)."""
    b64 = res.get("b64" + name)
    if isinstance(b64, str) and b64:
        try:
            return orjson.loads(base64.b64decode(b64, validate=True)), True
        except (binascii.Error, ValueError):
            raise ProxyAnswerError(f"b64{name} is not base64 of JSON") from None
    if name in res and res[name] is not None:
        return res[name], True
    return None, False


def _expire_at(res: Mapping[str, Any]) -> int | None:
    value = res.get("expire_at", 0)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ProxyAnswerError("expire_at is not a unix time")
    return value or None


_OVERRIDES = ("presence", "join_leave", "force_recovery", "force_positioning", "force_push_join_leave")


def _override(res: Mapping[str, Any]) -> dict[str, bool]:
    """``override: {presence: {value: bool}, ...}`` as a plain dict of what is overridden."""
    raw = res.get("override")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProxyAnswerError("override is not an object")
    out: dict[str, bool] = {}
    for key in _OVERRIDES:
        box = raw.get(key)
        if isinstance(box, dict) and isinstance(box.get("value", False), bool):
            out[key] = bool(box.get("value", False))
    return out


def decode_connect(body: bytes) -> ConnectResult | None:
    """``None`` when the answer has no ``result`` (no credentials)."""
    def read(res: dict[str, Any] | None) -> ConnectResult | None:
        if res is None:
            return None
        user = res.get("user", "")
        if not isinstance(user, str):
            raise ProxyAnswerError("user is not a string")
        subs: dict[str, SubGrant] = {}
        channels = res.get("channels") or []
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ProxyAnswerError("channels is not a list of strings")
        for channel in channels:
            subs[channel] = SubGrant()
        raw_subs = res.get("subs") or {}
        if not isinstance(raw_subs, dict):
            raise ProxyAnswerError("subs is not an object")
        for channel, opts in raw_subs.items():
            if not isinstance(opts, dict):
                raise ProxyAnswerError("subs entry is not an object")
            subs[channel] = SubGrant(_bytes_field(opts, "info")[0], _bytes_field(opts, "data")[0], _override(opts))
        return ConnectResult(user=user, expire_at=_expire_at(res), info=_bytes_field(res, "info")[0],
                             data=_bytes_field(res, "data")[0], subs=subs, meta=res.get("meta"))
    return decode(body, read)


def decode_refresh(body: bytes) -> RefreshResult:
    """No ``result`` means expired, as in Centrifugo."""
    def read(res: dict[str, Any] | None) -> RefreshResult:
        if res is None or res.get("expired"):
            return RefreshResult(expired=True)
        info, has_info = _bytes_field(res, "info")
        return RefreshResult(False, _expire_at(res), info, has_info, res.get("meta"))
    return decode(body, read)


def decode_subscribe(body: bytes) -> SubscribeResult:
    def read(res: dict[str, Any] | None) -> SubscribeResult:
        if res is None:
            return SubscribeResult()
        return SubscribeResult(_expire_at(res), _bytes_field(res, "info")[0], _bytes_field(res, "data")[0],
                               _override(res))
    return decode(body, read)


def decode_publish(body: bytes) -> PublishResult:
    def read(res: dict[str, Any] | None) -> PublishResult:
        if res is None:
            return PublishResult()
        data, has_data = _bytes_field(res, "data")
        return PublishResult(data, has_data, bool(res.get("skip_history")))
    return decode(body, read)


def decode_rpc(body: bytes) -> RpcResult:
    def read(res: dict[str, Any] | None) -> RpcResult:
        if res is None:
            return RpcResult()
        data, has_data = _bytes_field(res, "data")
        return RpcResult(data, has_data)
    return decode(body, read)


def decode_sub_refresh(body: bytes) -> SubRefreshResult:
    def read(res: dict[str, Any] | None) -> SubRefreshResult:
        if res is None or res.get("expired"):
            return SubRefreshResult(expired=True)
        info, has_info = _bytes_field(res, "info")
        return SubRefreshResult(False, _expire_at(res), info, has_info)
    return decode(body, read)
