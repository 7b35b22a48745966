"""What a consumed message asks for, and what became of it: pure, no sockets.

Centrifugo v6's consumer message format (``internal/api/consuming.go``): a JSON object
``{"method": "publish", "payload": {...server API request...}}``; or, when the transport
names the method itself (a ``centrifugo-method`` header, an outbox row's ``method`` column),
the body is the request; or, in *publication data mode*, the body is the publication data
and the channels come from the ``centrifugo-channels`` header (comma-separated), with the
idempotency key, the delta flag and tags in headers of their own.

Only methods that change state are taken (publish, broadcast, subscribe, unsubscribe,
disconnect, refresh, history_remove). Each becomes a typed request that
:class:`Dispatcher` hands to the server API executor, so a consumed message is applied
exactly as the same API call would be (through the channel's owner). :func:`classify` then
says what the consumer does with the message:

- ``APPLIED``: done (ack / delete the row);
- ``REFUSED``: malformed, or the API refused it (unknown channel, bad request...): retrying
  cannot help, so it goes to the dead-letter exchange with the reason (Centrifugo logs and
  skips these);
- ``RETRY``: an internal or temporary error (error 100, an engine or owner that did not answer):
  the same message is applied again later. A publication carries an idempotency key (the
  message's own, else the transport's message id or row id), so a retry after a publication
  that did land is a no-op.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol, TypeAlias

import orjson

from gateway.config.consumers import PublicationDataMode
from gateway.core.errors import ClientError

__all__ = [
    "ApiRequest",
    "BroadcastRequest",
    "Dispatcher",
    "Executor",
    "HistoryRemoveRequest",
    "Method",
    "Outcome",
    "PublishRequest",
    "Refused",
    "UserRequest",
    "Verdict",
    "classify",
    "classify_broadcast",
    "decode_amqp",
    "decode_outbox_row",
    "parse_command",
    "parse_publication",
    "with_idempotency_key",
]


class Method(enum.StrEnum):
    """The server API methods a consumer applies (the ones that change state)."""

    PUBLISH = "publish"
    BROADCAST = "broadcast"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    DISCONNECT = "disconnect"
    REFRESH = "refresh"
    HISTORY_REMOVE = "history_remove"


#: Methods of the server API that only read: refused from a consumer, as in Centrifugo.
_READ_ONLY = frozenset({"presence", "presence_stats", "history", "channels", "info", "batch"})


class Refused(Exception):
    """A message that cannot be applied, ever: malformed, or refused by the API."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = " ".join(reason.split())[:500]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    method: ClassVar[Method] = Method.PUBLISH
    channel: str
    data: object  # decoded JSON
    idempotency_key: str = ""
    tags: Mapping[str, str] | None = None
    skip_history: bool = False
    delta: bool = False

    def params(self) -> dict[str, Any]:
        return _publication_params({"channel": self.channel}, self)


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    method: ClassVar[Method] = Method.BROADCAST
    channels: tuple[str, ...]
    data: object
    idempotency_key: str = ""
    tags: Mapping[str, str] | None = None
    skip_history: bool = False
    delta: bool = False

    def params(self) -> dict[str, Any]:
        return _publication_params({"channels": list(self.channels)}, self)


@dataclass(frozen=True, slots=True)
class UserRequest:
    """subscribe, unsubscribe, disconnect or refresh of a user's connections; the executor
    checks the other fields as it does for the HTTP API."""

    method: Method
    user: str
    body: Mapping[str, object]

    def params(self) -> dict[str, Any]:
        return {**self.body, "user": self.user}


@dataclass(frozen=True, slots=True)
class HistoryRemoveRequest:
    method: ClassVar[Method] = Method.HISTORY_REMOVE
    channel: str

    def params(self) -> dict[str, Any]:
        return {"channel": self.channel}


ApiRequest: TypeAlias = PublishRequest | BroadcastRequest | UserRequest | HistoryRemoveRequest


def _publication_params(params: dict[str, Any], req: PublishRequest | BroadcastRequest) -> dict[str, Any]:
    params["data"] = req.data
    if req.idempotency_key:
        params["idempotency_key"] = req.idempotency_key
    if req.tags:
        params["tags"] = dict(req.tags)
    if req.skip_history:
        params["skip_history"] = True
    if req.delta:
        params["delta"] = True
    return params


# -- parsing -------------------------------------------------------------------------------------


def _json(raw: bytes | str | object, what: str) -> object:
    """Decoded JSON; bytes and strings are parsed (a JSON string holding JSON, as a jsonb
    column written by Debezium, is parsed once more, like Centrifugo's JSONRawOrString)."""
    if isinstance(raw, (bytes, bytearray, memoryview, str)):
        try:
            raw = orjson.loads(bytes(raw) if not isinstance(raw, str) else raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(f"{what} is not JSON: {exc}") from None
    return raw


def _object(raw: bytes | str | object, what: str) -> Mapping[str, object]:
    value = _json(raw, what)
    if isinstance(value, str):
        value = _json(value, what)
    if not isinstance(value, Mapping):
        raise Refused(f"{what} must be a JSON object")
    return value


def _text(body: Mapping[str, object], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise Refused(f"{key} required")
        return ""
    if not isinstance(value, str):
        raise Refused(f"{key} must be a string")
    return value


def _tags(body: Mapping[str, object]) -> Mapping[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise Refused("tags must map strings to strings")
    return dict(tags)


def _flag(body: Mapping[str, object], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise Refused(f"{key} must be a boolean")
    return value


def _publication(method: Method, body: Mapping[str, object]) -> PublishRequest | BroadcastRequest:
    if "data" not in body:
        raise Refused("b64data is binary, this gateway speaks JSON only" if "b64data" in body else "data required")
    common: dict[str, Any] = {"data": body["data"], "idempotency_key": _text(body, "idempotency_key"),
                              "tags": _tags(body), "skip_history": _flag(body, "skip_history"),
                              "delta": _flag(body, "delta")}
    if method is Method.PUBLISH:
        return PublishRequest(channel=_text(body, "channel", required=True), **common)
    channels = body.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise Refused("channels required: a non-empty list of channel names")
    return BroadcastRequest(channels=tuple(channels), **common)


def _request(method_name: object, payload: object) -> ApiRequest:
    if not isinstance(method_name, str) or not method_name:
        raise Refused("method required")
    if method_name in _READ_ONLY:
        raise Refused(f"method {method_name!r} does not change state: not taken from a consumer")
    try:
        method = Method(method_name)
    except ValueError:
        raise Refused(f"unknown method {method_name!r}") from None
    body = _object(payload, "payload")
    if method in (Method.PUBLISH, Method.BROADCAST):
        return _publication(method, body)
    if method is Method.HISTORY_REMOVE:
        return HistoryRemoveRequest(_text(body, "channel", required=True))
    user = _text(body, "user", required=True)
    return UserRequest(method, user, {k: v for k, v in body.items() if k != "user"})


def parse_command(body: bytes | str | object, method: str = "") -> ApiRequest:
    """One command: ``body`` is ``{"method", "payload"}``, or, with ``method`` given, the
    request itself.

    Raises:
        Refused: malformed JSON, a missing or read-only method, a request missing what it needs.
    """
    if method:
        return _request(method, body)
    envelope = _object(body, "message")
    if "payload" not in envelope:
        raise Refused("payload required")
    return _request(envelope.get("method"), envelope["payload"])


def header_text(value: object) -> str:
    """An AMQP / Kafka header value as text (bytes are UTF-8)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise Refused("a header value is not UTF-8") from None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def parse_publication(body: bytes, headers: Mapping[str, object], mode: PublicationDataMode
                      ) -> PublishRequest | BroadcastRequest:
    """Publication data mode: ``body`` is the data, channels and options are in ``headers``.

    Raises:
        Refused: no channels header, data that is not JSON, a delta header that is not a boolean.
    """
    channels = tuple(c.strip() for c in header_text(headers.get(mode.channels_header)).split(",") if c.strip())
    if not channels:
        raise Refused(f"publication data mode: no channels in header {mode.channels_header!r}")
    data = _json(body, "publication data")
    key = header_text(headers.get(mode.idempotency_key_header)) if mode.idempotency_key_header else ""
    delta_text = header_text(headers.get(mode.delta_header)) if mode.delta_header else ""
    if delta_text and delta_text not in _TRUE | _FALSE:
        raise Refused(f"header {mode.delta_header!r} must be a boolean, got {delta_text!r}")
    prefix = mode.tags_header_prefix
    tags = {name[len(prefix):]: header_text(value) for name, value in headers.items()
            if prefix and name.startswith(prefix)} or None
    delta = delta_text in _TRUE
    if len(channels) == 1:
        return PublishRequest(channels[0], data, key, tags, delta=delta)
    return BroadcastRequest(channels, data, key, tags, delta=delta)


def with_idempotency_key(request: ApiRequest, key: str) -> ApiRequest:
    """``request`` with ``key`` as its idempotency key when it is a publication without one."""
    if key and isinstance(request, (PublishRequest, BroadcastRequest)) and not request.idempotency_key:
        return replace(request, idempotency_key=key)
    return request


def decode_amqp(body: bytes, headers: Mapping[str, object], message_id: str, *, method_header: str,
                data_mode: PublicationDataMode) -> ApiRequest:
    """An AMQP message: publication data mode, else a method header, else the envelope. The
    AMQP ``message_id`` is the idempotency key of a publication that names none.

    Raises:
        Refused: see :func:`parse_command` and :func:`parse_publication`.
    """
    request: ApiRequest
    if data_mode.enabled:
        request = parse_publication(body, headers, data_mode)
    else:
        method = header_text(headers.get(method_header)) if method_header else ""
        request = parse_command(body, method)
    return with_idempotency_key(request, f"amqp:{message_id}" if message_id else "")


def decode_outbox_row(consumer: str, row_id: int, method: str, payload: object) -> ApiRequest:
    """An outbox row (Centrifugo's table: ``method`` may be empty, then ``payload`` is the
    envelope). A publication without an idempotency key gets one from the row id, so a row
    applied again after a crash before the commit is not published twice (while the engine
    remembers it: 5 minutes; across nodes only with the Redis engine).

    Raises:
        Refused: see :func:`parse_command`.
    """
    return with_idempotency_key(parse_command(payload, method), f"outbox:{consumer}:{row_id}")


# -- outcome -------------------------------------------------------------------------------------


class Verdict(enum.Enum):
    APPLIED = "applied"
    REFUSED = "refused"  # dead-letter: retrying cannot help
    RETRY = "retry"  # internal or temporary: apply again later


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str = ""


APPLIED = Outcome(Verdict.APPLIED)


def classify(exc: BaseException) -> Outcome:
    """What an error applying a message means for it (the one place that decides)."""
    if isinstance(exc, Refused):
        return Outcome(Verdict.REFUSED, exc.reason)
    if isinstance(exc, ClientError):
        reason = f"{exc.code}: {exc.message}"
        if exc.code == 100 or exc.temporary:
            return Outcome(Verdict.RETRY, reason)
        return Outcome(Verdict.REFUSED, reason)
    return Outcome(Verdict.RETRY, f"internal: {type(exc).__name__}: {exc}")


def classify_broadcast(result: Mapping[str, Any]) -> Outcome:
    """A broadcast answers per channel: any internal error retries the whole message (the
    idempotency key keeps the channels that did get it from getting it twice); when every
    channel refused it, it is refused; when some took it, it is applied."""
    errors = [r["error"] for r in result.get("responses", ()) if isinstance(r, Mapping) and r.get("error")]
    for error in errors:
        if error.get("code") == 100:
            return Outcome(Verdict.RETRY, f"100: {error.get('message', '')}")
    if errors and len(errors) == len(result.get("responses", ())):
        return Outcome(Verdict.REFUSED, f"{errors[0].get('code')}: {errors[0].get('message', '')}")
    return APPLIED


class Executor(Protocol):
    async def execute(self, method: str, params: Any) -> dict[str, Any]: ...


class Dispatcher:
    """Applies typed requests through the server API executor (``gateway.api.executor``)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def apply(self, request: ApiRequest) -> Outcome:
        try:
            result = await self._executor.execute(request.method.value, request.params())
        except Exception as exc:
            return classify(exc)
        if isinstance(request, BroadcastRequest):
            return classify_broadcast(result)
        return APPLIED
