"""Go-style duration parsing for configuration values.

Centrifugo configs spell time spans the way Go's ``time.ParseDuration`` does
(``"25s"``, ``"720h"``, ``"1m30s"``), so a config written for Centrifugo must
load here unchanged. Plain numbers are accepted too and mean seconds, because
that is the natural reading in JSON/TOML and what the rest of the gateway uses.

This module knows nothing about config files: it raises :class:`DurationError`
(a :class:`ValueError`) and :mod:`gateway.config` turns that into a ``ConfigError``
carrying the dotted key.
"""

from __future__ import annotations

import math
import re

__all__ = ["DurationError", "parse_duration"]

# Seconds per unit. Both micro signs (U+00B5 and U+03BC) are accepted, as Go does.
_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

# One "<number><unit>" component; longest units first so "ms" is not read as "m".
_COMPONENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class DurationError(ValueError):
    """A value that is not a valid non-negative duration.

    ``key`` names the setting being parsed so callers can report it; ``message``
    is the reason alone, without the key, so it can be re-wrapped without repetition.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


def parse_duration(value: object, key: str) -> float:
    """Return ``value`` as seconds.

    Accepts non-negative finite ``int``/``float`` (seconds; ``bool`` is rejected
    because ``True`` is never a meaningful duration) and Go duration strings:
    one or more ``<number><unit>`` components with units ns, us/µs, ms, s, m, h,
    or the bare ``"0"``. Negative or malformed values raise :class:`DurationError`.
    """
    if isinstance(value, bool):
        raise DurationError(key, "expected duration")
    if isinstance(value, int):
        if value < 0:
            raise DurationError(key, "must not be negative")
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DurationError(key, "must be finite")
        if value < 0:
            raise DurationError(key, "must not be negative")
        return value
    if not isinstance(value, str):
        raise DurationError(key, "expected duration")
    return _parse_string(value, key)


def _parse_string(text: str, key: str) -> float:
    """Parse a Go duration string; the grammar mirrors ``time.ParseDuration``."""
    body = text
    negative = False
    if body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise DurationError(key, f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _COMPONENT.match(body, pos)
        if match is None:
            raise DurationError(key, f'invalid duration {text!r} (expected e.g. "25s", "1m30s", "500ms")')
        number, unit = match.group(1), match.group(2)
        total += float(number) * _UNITS[unit]
        pos = match.end()
    if not math.isfinite(total):
        raise DurationError(key, f"duration {text!r} is too large")
    if negative and total != 0.0:
        raise DurationError(key, "must not be negative")
    return total
