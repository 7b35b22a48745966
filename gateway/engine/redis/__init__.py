"""The Redis store: history streams, presence and pub/sub in Redis (Centrifugo's key layout
and Lua scripts), batched into one pipeline per shard per loop tick. No gateway wiring here:
the engine adapts :class:`RedisStore` to the Broker/PresenceManager seam."""

from __future__ import annotations

from gateway.engine.redis.keys import Keys
from gateway.engine.redis.pipeline import StoreError, StoreUnavailable
from gateway.engine.redis.store import MIN_REDIS_VERSION, RedisStore, check_since, check_version
from gateway.engine.redis.wire import MessageKind, RedisMessage, parse_message

__all__ = [
    "MIN_REDIS_VERSION",
    "Keys",
    "MessageKind",
    "RedisMessage",
    "RedisStore",
    "StoreError",
    "StoreUnavailable",
    "check_since",
    "check_version",
    "parse_message",
]
