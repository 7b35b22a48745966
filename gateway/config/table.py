"""Strict, typed access to one table of a config document.

Every getter records the key it read; :meth:`Table.finish` then reports a key nobody asked for
as unknown (with a "did you mean" suggestion), unless the key table (``gateway.config.keys``)
knows it as a Centrifugo key shardgate does not implement: that one is accepted and listed in a
warning. Every problem is a :class:`ConfigError` naming the dotted key, on one line.

A table read under a :class:`Problems` collector (what ``parse_config`` uses) records problems
and carries on with defaults, so a whole file is checked at once; without one, the first
problem raises.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import TypeVar

from gateway.config.durations import DurationError, parse_duration
from gateway.config.keys import KeyNode, ListOf, node_at

__all__ = ["ConfigError", "ConfigErrors", "Problems", "Table", "as_table", "read_table"]

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


class ConfigErrors(ConfigError):
    """Several problems at once; ``errors`` holds each as a :class:`ConfigError`.

    ``key`` and ``message`` are the first problem's, so code that handles one ConfigError still
    works; ``str()`` is one line per problem."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(errors[0].key, errors[0].message)
        self.errors = list(errors)
        self.args = (self.errors,)  # so it pickles: ConfigErrors(*args)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class Problems:
    """What reading one document found: errors, and the known keys shardgate ignores."""

    def __init__(self, known: KeyNode) -> None:
        self.known = known
        self.errors: list[ConfigError] = []
        self.unimplemented: list[str] = []

    def add(self, error: ConfigError) -> None:
        if not any(e.key == error.key and e.message == error.message for e in self.errors):
            self.errors.append(error)

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)

    def warning(self) -> str:
        """One line naming every ignored key, sorted; "" when there is none."""
        if not self.unimplemented:
            return ""
        return ("config: keys shardgate does not implement (accepted, no effect): "
                + ", ".join(sorted(set(self.unimplemented))))


class Table:
    """One config table being read: typed getters that remember which keys were used.

    ``finish()`` then reports the first key nobody asked for as unknown, which is
    how typos are caught without a separate schema.
    """

    __slots__ = ("_data", "_path", "_problems", "_seen")

    def __init__(self, data: Mapping[str, object], path: str, problems: Problems | None = None) -> None:
        self._data = data
        self._path = path
        self._seen: set[str] = set()
        self._problems = problems

    @property
    def path(self) -> str:
        return self._path

    @property
    def problems(self) -> Problems | None:
        return self._problems

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def error(self, name: str, message: str) -> None:
        """Report a problem with key ``name``: recorded under a collector, else raised."""
        self.report(ConfigError(self.key(name), message))

    def report(self, exc: ConfigError) -> None:
        if self._problems is None:
            raise exc
        self._problems.add(exc)

    def _get(self, name: str) -> object:
        self._seen.add(name)
        return self._data.get(name, _MISSING)

    def has(self, name: str) -> bool:
        return name in self._data

    def names(self) -> list[str]:
        """Every key of a free-form table (its keys are data, not settings)."""
        return [str(name) for name in self._data]

    def _get_bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "expected bool")
        return value

    def _get_int(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), "expected integer")
        _check_range(self.key(name), value, minimum, maximum)
        return value

    def _get_float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.key(name), "expected number")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key(name), f"must be >= {minimum}")
        return float(value)

    def _get_str(self, name: str, default: str, *, choices: tuple[str, ...] = ()) -> str:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), "expected string")
        if choices and value not in choices:
            raise ConfigError(self.key(name), f"must be one of {', '.join(choices)}")
        return value

    def _duration(self, name: str, default: float, *, positive: bool = False) -> float:
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

    def _str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(self.key(name), "expected list of strings")
        return tuple(value)

    def _str_or_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A string or a list of strings (Centrifugo accepts both for address keys)."""
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            return (value,) if value else ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(self.key(name), "expected string or list of strings")
        return tuple(value)


    def get_bool(self, name: str, default: bool) -> bool:
        try:
            return self._get_bool(name, default)
        except ConfigError as exc:
            self.report(exc)
            return default

    def get_int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None,
                from_string: bool = False) -> int:
        """An integer; ``from_string`` also takes one written as a string ("9000"), as Centrifugo does."""
        try:
            if from_string:
                value = self._data.get(name)
                if isinstance(value, str) and value.strip().isdigit():
                    self._seen.add(name)
                    number = int(value.strip())
                    _check_range(self.key(name), number, minimum, maximum)
                    return number
            return self._get_int(name, default, minimum=minimum, maximum=maximum)
        except ConfigError as exc:
            self.report(exc)
            return default

    def get_float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        try:
            return self._get_float(name, default, minimum=minimum)
        except ConfigError as exc:
            self.report(exc)
            return default

    def get_str(self, name: str, default: str, *, choices: tuple[str, ...] = ()) -> str:
        try:
            return self._get_str(name, default, choices=choices)
        except ConfigError as exc:
            self.report(exc)
            return default

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        try:
            return self._duration(name, default, positive=positive)
        except ConfigError as exc:
            self.report(exc)
            return default

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return self._str_list(name, default)
        except ConfigError as exc:
            self.report(exc)
            return default

    def str_or_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return self._str_or_list(name, default)
        except ConfigError as exc:
            self.report(exc)
            return default

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is _MISSING:
            return Table({}, self.key(name), self._problems)
        try:
            return as_table(value, self.key(name), self._problems)
        except ConfigError as exc:
            self.report(exc)
            return Table({}, self.key(name), self._problems)

    def table_list(self, name: str) -> list[Table]:
        value = self._get(name)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self.error(name, "expected list of tables")
            return []
        tables = []
        for i, item in enumerate(value):
            try:
                tables.append(as_table(item, f"{self.key(name)}[{i}]", self._problems))
            except ConfigError as exc:
                self.report(exc)
        return tables

    def mark_all_seen(self) -> None:
        """After a reader gave up half-way: keys it did not get to are not "unknown"."""
        self._seen.update(str(name) for name in self._data)

    def finish(self) -> None:
        """Report every key nobody read: known Centrifugo keys as ignored, others as unknown."""
        known = node_at(self._problems.known, self._path) if self._problems is not None else None
        candidates = set(self._seen) | (set(known) if isinstance(known, dict) else set())
        for name in self._data:
            if name in self._seen:
                continue
            if isinstance(known, dict) and name in known:
                assert self._problems is not None
                _ignored(self._problems, self.key(name), known[name], self._data[name])
                continue
            hint = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
            self.error(name, f"unknown key (did you mean {hint[0]!r}?)" if hint else "unknown key")


def _ignored(problems: Problems, key: str, node: KeyNode, value: object) -> None:
    """Record a known key nobody reads; inside it, still report keys Centrifugo does not have."""
    if isinstance(node, dict) and isinstance(value, Mapping) and value:
        for name, sub in value.items():
            sub_key = f"{key}.{name}"
            if name in node:
                _ignored(problems, sub_key, node[name], sub)
            else:
                hint = difflib.get_close_matches(str(name), sorted(node), n=1, cutoff=0.6)
                problems.add(ConfigError(sub_key, f"unknown key (did you mean {hint[0]!r}?)"
                                         if hint else "unknown key"))
        return
    if isinstance(node, ListOf) and isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                for name in item:
                    if name not in node.item:
                        hint = difflib.get_close_matches(str(name), sorted(node.item), n=1, cutoff=0.6)
                        problems.add(ConfigError(f"{key}[{i}].{name}", f"unknown key (did you mean {hint[0]!r}?)"
                                                 if hint else "unknown key"))
    problems.unimplemented.append(key)


_MISSING = object()


def as_table(value: object, key: str, problems: Problems | None = None) -> Table:
    if not isinstance(value, Mapping):
        raise ConfigError(key or "<root>", "expected table")
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(key or "<root>", f"non-string key {name!r}")
    return Table(value, key, problems)


def _check_range(key: str, value: int, minimum: int | None, maximum: int | None) -> None:
    if minimum is not None and maximum is not None:
        if not minimum <= value <= maximum:
            raise ConfigError(key, f"must be in {minimum}..{maximum}")
    elif minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}")
    elif maximum is not None and value > maximum:
        raise ConfigError(key, f"must be <= {maximum}")


def read_table(table: Table, reader: Callable[[Table], _T]) -> _T:
    """Run ``reader`` over ``table`` and then reject any key it did not consume.

    Under a collector, a reader that raises has its error recorded and the table's defaults
    (``reader`` over an empty table) stand in, so the rest of the document is still checked."""
    try:
        result = reader(table)
    except ConfigError as exc:
        if table.problems is None:
            raise
        table.problems.add(exc)
        table.mark_all_seen()
        try:
            return reader(Table({}, table.path, table.problems))
        except ConfigError:
            raise exc from None
    table.finish()
    return result



