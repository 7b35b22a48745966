"""gateway.consume.message: the consumer message format, typed requests, error classification,
and the dispatcher over a fake executor. No sockets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from gateway.config.consumers import PublicationDataMode
from gateway.consume.backoff import backoff_delay
from gateway.consume.message import (
    BroadcastRequest,
    Dispatcher,
    HistoryRemoveRequest,
    Method,
    Outcome,
    PublishRequest,
    Refused,
    UserRequest,
    Verdict,
    classify,
    classify_broadcast,
    decode_amqp,
    decode_outbox_row,
    parse_command,
    parse_publication,
)
from gateway.core.errors import ClientError

MODE = PublicationDataMode(enabled=True)


# -- the {"method", "payload"} envelope --------------------------------------------------------


def test_publish_envelope() -> None:
    req = parse_command(b'{"method": "publish", "payload": {"channel": "chat", "data": {"a": 1}, "tags": {"k": "v"}}}')
    assert req == PublishRequest("chat", {"a": 1}, tags={"k": "v"})
    assert req.params() == {"channel": "chat", "data": {"a": 1}, "tags": {"k": "v"}}


def test_broadcast_envelope_keeps_its_idempotency_key() -> None:
    body = {"method": "broadcast", "payload": {"channels": ["a", "b"], "data": 1, "idempotency_key": "k1"}}
    req = parse_command(orjson.dumps(body))
    assert isinstance(req, BroadcastRequest)
    assert req.params() == {"channels": ["a", "b"], "data": 1, "idempotency_key": "k1"}


def test_payload_as_json_string_is_decoded_like_centrifugo() -> None:
    # Debezium writes jsonb as a JSON string holding JSON (Centrifugo's JSONRawOrString)
    body = {"method": "publish", "payload": '{"channel": "c", "data": "x"}'}
    assert parse_command(orjson.dumps(body)) == PublishRequest("c", "x")


def test_method_given_outside_the_body() -> None:
    assert parse_command({"channel": "c"}, "history_remove") == HistoryRemoveRequest("c")
    req = parse_command(b'{"user": "42", "client": "c1"}', "disconnect")
    assert req == UserRequest(Method.DISCONNECT, "42", {"client": "c1"})
    assert req.params() == {"client": "c1", "user": "42"}


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "message is not JSON"),
    (b"[1, 2]", "message must be a JSON object"),
    (b'{"method": "publish"}', "payload required"),
    (b'{"payload": {}}', "method required"),
    (b'{"method": "nope", "payload": {}}', "unknown method 'nope'"),
    (b'{"method": "history", "payload": {"channel": "c"}}', "does not change state"),
    (b'{"method": "presence", "payload": {"channel": "c"}}', "does not change state"),
    (b'{"method": "publish", "payload": {"channel": "c"}}', "data required"),
    (b'{"method": "publish", "payload": {"channel": "c", "b64data": "eA=="}}', "JSON only"),
    (b'{"method": "publish", "payload": {"data": 1}}', "channel required"),
    (b'{"method": "publish", "payload": {"channel": 5, "data": 1}}', "channel must be a string"),
    (b'{"method": "publish", "payload": {"channel": "c", "data": 1, "tags": {"a": 1}}}', "tags must map"),
    (b'{"method": "publish", "payload": {"channel": "c", "data": 1, "skip_history": "yes"}}', "boolean"),
    (b'{"method": "broadcast", "payload": {"channels": [], "data": 1}}', "channels required"),
    (b'{"method": "broadcast", "payload": {"channels": ["a", 2], "data": 1}}', "channels required"),
    (b'{"method": "subscribe", "payload": {"channel": "c"}}', "user required"),
    (b'{"method": "publish", "payload": "not json"}', "payload is not JSON"),
    (b'{"method": "publish", "payload": [1]}', "payload must be a JSON object"),
])
def test_malformed_messages_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(Refused) as info:
        parse_command(body)
    assert reason in info.value.reason


def test_refused_reason_is_one_bounded_line() -> None:
    assert Refused("a\nb   c" + "x" * 1000).reason.startswith("a b c") and len(Refused("y" * 1000).reason) == 500


# -- publication data mode ---------------------------------------------------------------------


def test_publication_data_mode_one_channel() -> None:
    headers = {"centrifugo-channels": b"chat", "centrifugo-idempotency-key": "k", "centrifugo-delta": "true",
               "centrifugo-tag-kind": b"news", "other": "x"}
    req = parse_publication(b'{"text": "hi"}', headers, MODE)
    assert req == PublishRequest("chat", {"text": "hi"}, "k", {"kind": "news"}, delta=True)


def test_publication_data_mode_several_channels_is_a_broadcast() -> None:
    req = parse_publication(b"1", {"centrifugo-channels": "a, b,,c"}, MODE)
    assert req == BroadcastRequest(("a", "b", "c"), 1)


@pytest.mark.parametrize(("body", "headers", "reason"), [
    (b"1", {}, "no channels in header 'centrifugo-channels'"),
    (b"1", {"centrifugo-channels": " , "}, "no channels"),
    (b"{bad", {"centrifugo-channels": "a"}, "publication data is not JSON"),
    (b"1", {"centrifugo-channels": "a", "centrifugo-delta": "maybe"}, "must be a boolean"),
    (b"1", {"centrifugo-channels": b"\xff"}, "not UTF-8"),
])
def test_publication_data_mode_refusals(body: bytes, headers: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused) as info:
        parse_publication(body, headers, MODE)
    assert reason in info.value.reason


# -- transports: AMQP and outbox rows ----------------------------------------------------------


def test_amqp_message_id_is_the_idempotency_key_unless_the_message_has_one() -> None:
    body = b'{"method": "publish", "payload": {"channel": "c", "data": 1}}'
    req = decode_amqp(body, {}, "m-1", method_header="centrifugo-method", data_mode=PublicationDataMode())
    assert isinstance(req, PublishRequest) and req.idempotency_key == "amqp:m-1"
    own = b'{"method": "publish", "payload": {"channel": "c", "data": 1, "idempotency_key": "mine"}}'
    req = decode_amqp(own, {}, "m-1", method_header="centrifugo-method", data_mode=PublicationDataMode())
    assert isinstance(req, PublishRequest) and req.idempotency_key == "mine"
    req = decode_amqp(body, {}, "", method_header="centrifugo-method", data_mode=PublicationDataMode())
    assert isinstance(req, PublishRequest) and req.idempotency_key == ""


def test_amqp_method_header_and_data_mode() -> None:
    req = decode_amqp(b'{"channel": "c", "data": 2}', {"centrifugo-method": b"publish"}, "id",
                      method_header="centrifugo-method", data_mode=PublicationDataMode())
    assert req == PublishRequest("c", 2, "amqp:id")
    req = decode_amqp(b"3", {"centrifugo-channels": "a,b"}, "id", method_header="centrifugo-method", data_mode=MODE)
    assert req == BroadcastRequest(("a", "b"), 3, "amqp:id")
    # a non-publication keeps no key
    req = decode_amqp(b'{"user": "u"}', {"centrifugo-method": "disconnect"}, "id",
                      method_header="centrifugo-method", data_mode=PublicationDataMode())
    assert req == UserRequest(Method.DISCONNECT, "u", {})


def test_outbox_row_id_is_the_idempotency_key() -> None:
    assert decode_outbox_row("box", 7, "publish", {"channel": "c", "data": 1}) == PublishRequest("c", 1, "outbox:box:7")
    envelope = {"method": "broadcast", "payload": {"channels": ["a"], "data": 1}}
    assert decode_outbox_row("box", 8, "", envelope) == BroadcastRequest(("a",), 1, "outbox:box:8")


# -- classification: which errors dead-letter, which retry -------------------------------------


@pytest.mark.parametrize(("exc", "verdict"), [
    (Refused("bad"), Verdict.REFUSED),
    (ClientError(100, "internal server error"), Verdict.RETRY),
    (ClientError(100, "internal server error", temporary=True), Verdict.RETRY),
    (ClientError(111, "too many requests", temporary=True), Verdict.RETRY),
    (ClientError(102, "unknown channel"), Verdict.REFUSED),
    (ClientError(107, "bad request"), Verdict.REFUSED),
    (ClientError(108, "not available"), Verdict.REFUSED),
    (RuntimeError("boom"), Verdict.RETRY),
    (TimeoutError(), Verdict.RETRY),
])
def test_classify(exc: Exception, verdict: Verdict) -> None:
    assert classify(exc).verdict is verdict


def test_classify_reason_names_the_code() -> None:
    assert classify(ClientError(102, "unknown channel")) == Outcome(Verdict.REFUSED, "102: unknown channel")


def test_classify_broadcast() -> None:
    ok = {"result": {}}
    internal = {"error": {"code": 100, "message": "internal server error"}}
    unknown = {"error": {"code": 102, "message": "unknown channel"}}
    assert classify_broadcast({"responses": [ok, ok]}).verdict is Verdict.APPLIED
    assert classify_broadcast({"responses": [ok, unknown]}).verdict is Verdict.APPLIED
    assert classify_broadcast({"responses": [unknown, unknown]}) == Outcome(Verdict.REFUSED, "102: unknown channel")
    assert classify_broadcast({"responses": [ok, internal, unknown]}).verdict is Verdict.RETRY


# -- the dispatcher over a fake executor -------------------------------------------------------


class FakeExecutor:
    def __init__(self, *answers: Any) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers = list(answers)

    async def execute(self, method: str, params: Any) -> dict[str, Any]:
        self.calls.append((method, params))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, Exception):
            raise answer
        result: dict[str, Any] = answer
        return result


def test_dispatcher_applies_through_the_executor() -> None:
    executor = FakeExecutor({"offset": 1, "epoch": "e"}, ClientError(102, "unknown channel"),
                            ClientError(100, "internal server error"),
                            {"responses": [{"error": {"code": 100, "message": "x"}}]})
    dispatcher = Dispatcher(executor)

    async def go() -> list[Outcome]:
        return [await dispatcher.apply(PublishRequest("c", {"a": 1}, "k")),
                await dispatcher.apply(PublishRequest("ns:c", 1)),
                await dispatcher.apply(HistoryRemoveRequest("c")),
                await dispatcher.apply(BroadcastRequest(("a",), 1))]

    outcomes = asyncio.run(go())
    assert [o.verdict for o in outcomes] == [Verdict.APPLIED, Verdict.REFUSED, Verdict.RETRY, Verdict.RETRY]
    assert executor.calls[0] == ("publish", {"channel": "c", "data": {"a": 1}, "idempotency_key": "k"})
    assert executor.calls[2] == ("history_remove", {"channel": "c"})
    assert executor.calls[3] == ("broadcast", {"channels": ["a"], "data": 1})


def test_backoff_grows_to_its_ceiling() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.1, 2.0, rng) for n in range(1, 12)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(1.0 <= d <= 2.0 for d in delays[6:])
