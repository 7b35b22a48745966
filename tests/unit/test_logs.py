"""Log hygiene: values from outside cannot forge lines or drive the terminal."""

from __future__ import annotations

import io
import logging

from gateway.obs import logs
from gateway.obs.logs import escape_log_text


def test_escape_keeps_printable_text_and_escapes_the_rest() -> None:
    assert escape_log_text("alice") == "alice"
    assert escape_log_text("Zoë 北京") == "Zoë 北京"
    assert escape_log_text("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert escape_log_text("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert escape_log_text("x\u2028y\u200bz\x00") == "x\\u2028y\\u200bz\\x00"


def test_every_logged_value_is_escaped_in_one_place(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup_logging("info", "text")
        logging.getLogger("shardgate.test").info("disconnect user=%s reason=%s", "eve\nINFO forged", "\x1b[2J")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    out = stream.getvalue()
    assert out.count("\n") == 1 and "\x1b" not in out
    assert "user=eve\\nINFO forged reason=\\x1b[2J" in out
