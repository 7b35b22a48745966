"""shardgate: a sharded WebSocket gateway speaking the Centrifugo client protocol."""

__version__ = "0.1.0"
