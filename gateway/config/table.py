"""Strict, typed access to one table of a config document.

Every getter records the key it read; :meth:`Table.finish` then reports the first key
nobody asked for as unknown, which is how typos are caught without a separate schema.
Every problem is a :class:`ConfigError` naming the dotted key, on one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from gateway.config.durations import DurationError, parse_duration

__all__ = ["ConfigError", "Table", "as_table", "read_table"]

_T = TypeVar("_T")


class ConfigError(Exception):
    """An invalid or unreadable configuration; ``key`` is the dotted path or file name.

    The text is kept to one line so it reads well as a single log or CLI error line.
    """

    def __init__(self, key: str, message: str) -> None:
        message = " ".join(str(message).split())
        if not key.isprintable():
            key = repr(key)[1:-1]  # a key with control characters stays on one line
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"config: {self.key}: {self.message}"



class Table:
    """One config table being read: typed getters that remember which keys were used.

    ``finish()`` then reports the first key nobody asked for as unknown, which is
    how typos are caught without a separate schema.
    """

    __slots__ = ("_data", "_path", "_seen")

    def __init__(self, data: Mapping[str, object], path: str) -> None:
        self._data = data
        self._path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _get(self, name: str) -> object:
        self._seen.add(name)
        return self._data.get(name, _MISSING)

    def has(self, name: str) -> bool:
        return name in self._data

    def names(self) -> list[str]:
        """Every key of a free-form table (its keys are data, not settings)."""
        return [str(name) for name in self._data]

    def get_bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "expected bool")
        return value

    def get_int(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), "expected integer")
        _check_range(self.key(name), value, minimum, maximum)
        return value

    def get_float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.key(name), "expected number")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key(name), f"must be >= {minimum}")
        return float(value)

    def get_str(self, name: str, default: str, *, choices: tuple[str, ...] = ()) -> str:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), "expected string")
        if choices and value not in choices:
            raise ConfigError(self.key(name), f"must be one of {', '.join(choices)}")
        return value

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        value = self._get(name)
        if value is _MISSING:
            return default
        try:
            seconds = parse_duration(value, self.key(name))
        except DurationError as exc:
            raise ConfigError(self.key(name), exc.message) from None
        if positive and seconds <= 0:
            raise ConfigError(self.key(name), "must be greater than 0")
        return seconds

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(self.key(name), "expected list of strings")
        return tuple(value)

    def str_or_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A string or a list of strings (Centrifugo accepts both for address keys)."""
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            return (value,) if value else ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(self.key(name), "expected string or list of strings")
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is _MISSING:
            return Table({}, self.key(name))
        return as_table(value, self.key(name))

    def table_list(self, name: str) -> list[Table]:
        value = self._get(name)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise ConfigError(self.key(name), "expected list of tables")
        return [as_table(item, f"{self.key(name)}[{i}]") for i, item in enumerate(value)]

    def finish(self) -> None:
        for name in self._data:
            if name not in self._seen:
                raise ConfigError(self.key(str(name)), "unknown key")


_MISSING = object()


def as_table(value: object, key: str) -> Table:
    if not isinstance(value, Mapping):
        raise ConfigError(key or "<root>", "expected table")
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(key or "<root>", f"non-string key {name!r}")
    return Table(value, key)


def _check_range(key: str, value: int, minimum: int | None, maximum: int | None) -> None:
    if minimum is not None and maximum is not None:
        if not minimum <= value <= maximum:
            raise ConfigError(key, f"must be in {minimum}..{maximum}")
    elif minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}")
    elif maximum is not None and value > maximum:
        raise ConfigError(key, f"must be <= {maximum}")


def read_table(table: Table, reader: Callable[[Table], _T]) -> _T:
    """Run ``reader`` over ``table`` and then reject any key it did not consume."""
    result = reader(table)
    table.finish()
    return result


