"""Per-worker counters the node and sessions update on the hot path.

Plain integers in dicts: cheap to bump, and the exporter (Prometheus, the info API)
reads them when asked instead of the hot path calling into a metrics library.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Stats"]


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.connections_accepted = 0
        self.disconnects: Counter[int] = Counter()
        self.reply_errors: Counter[tuple[str, int]] = Counter()
        self.recovered: Counter[bool] = Counter()
        self.subscriptions_accepted = 0
        self.bus_dropped = 0
        self.bus_bad_envelopes = 0

    def connected(self) -> None:
        self.connections += 1
        self.connections_accepted += 1

    def disconnected_client(self) -> None:
        self.connections -= 1

    def disconnected(self, code: int) -> None:
        self.disconnects[code] += 1

    def reply_error(self, method: str, code: int) -> None:
        self.reply_errors[(method, code)] += 1

    def subscribed(self, recovering: bool, recovered: bool) -> None:
        self.subscriptions_accepted += 1
        if recovering:
            self.recovered[recovered] += 1
