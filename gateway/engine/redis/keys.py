"""Redis key and pub/sub channel names, laid out like Centrifugo's Redis engine.

Keeping Centrifugo's layout (``P.stream.<ch>``, ``P.stream.meta.<ch>``, ``P.client.<ch>``, …)
makes the data readable with the same tooling and habits. In cluster mode the channel is
wrapped in a hash tag ``{<ch>}`` so every key of one channel hashes to one slot: the Lua
scripts touch several of them atomically, which Redis Cluster allows only within a slot.
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    """Names for one prefix; ``cluster`` adds the per-channel hash tag."""

    __slots__ = ("client_prefix", "cluster", "control", "prefix", "probe_prefix", "sio_node_prefix")

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        self.prefix = prefix
        self.cluster = cluster
        self.client_prefix = f"{prefix}.client."
        self.control = f"{prefix}.control"
        self.probe_prefix = f"{prefix}.probe."
        # Socket.IO recovery keys share one hash tag in cluster mode: the take script reads a
        # session's key and its node's liveness key together.
        self.sio_node_prefix = f"{prefix}.sio.{{sio}}.node." if cluster else f"{prefix}.sio.node."

    def _ch(self, channel: str) -> str:
        return f"{{{channel}}}" if self.cluster else channel

    def stream(self, channel: str) -> str:
        return f"{self.prefix}.stream.{self._ch(channel)}"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}.stream.meta.{self._ch(channel)}"

    def result(self, channel: str, idempotency_key: str) -> str:
        return f"{self.prefix}.result.{self._ch(channel)}.{idempotency_key}"

    def presence_data(self, channel: str) -> str:
        return f"{self.prefix}.presence.data.{self._ch(channel)}"

    def presence_expire(self, channel: str) -> str:
        return f"{self.prefix}.presence.expire.{self._ch(channel)}"

    def sio_session(self, pid: str) -> str:
        """A Socket.IO session's recovery state (``gateway.socketio.recovery``), by pid."""
        return f"{self.prefix}.sio.{{sio}}.pid.{pid}" if self.cluster else f"{self.prefix}.sio.pid.{pid}"

    def sio_node(self, node_id: str) -> str:
        """Present while the node ``node_id`` is alive (its workers refresh it)."""
        return self.sio_node_prefix + node_id

    def pubsub(self, channel: str) -> str:
        """The pub/sub channel; no hash tag (plain PUBLISH is cluster-wide, not slotted)."""
        return self.client_prefix + channel

    def channel_of(self, pubsub_channel: str) -> str | None:
        """The gateway channel behind a pub/sub channel name, or None for anything else."""
        if pubsub_channel.startswith(self.client_prefix):
            return pubsub_channel[len(self.client_prefix):]
        return None
