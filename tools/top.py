"""``shardgate top``: the status table, refreshed live (curses), for an 80x24 terminal over SSH.

Keys: ``q`` quits, ``r`` refreshes now, Ctrl-C quits too. The first sample is taken before the
screen is set up, so a gateway that is down (or a wrong key) is one line on stderr, not a blank
screen. Later failures show in the footer and the next refresh tries again. With
``--iterations N`` (or ``--once``) it exits after N refreshes and leaves the last frame printed
on the terminal; ``--batch`` prints frames as plain text without curses (pipes, logs).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

from tools.ctl_api import CtlError
from tools.ctl_status import Sample, human_bytes, status_rows, status_table_lines, take_sample

__all__ = ["frame_lines", "run_top"]


def frame_lines(api_url: str, current: Sample, previous: Sample | None, interval: float,
                width: int | None, height: int | None, error: str | None = None) -> list[str]:
    """One screen: header, per-worker rows, totals, footer; cut to fit ``width`` x ``height``."""
    rows, totals = status_rows(current, previous)
    clock = time.strftime("%H:%M:%S")
    header = f"shardgate top  {api_url}  {clock}  {totals['workers']} workers  every {interval:g}s"
    summary = (f"conns {totals['connections']}  users {totals['users']}  subs {totals['subscriptions']}  "
               f"owned chans {totals['owned_channels']}  rss {human_bytes(totals['rss'])}")
    table = status_table_lines(rows, totals, width)
    head, body, tail = table[:1], table[1:-2], table[-2:]
    if error:
        footer = f"! {error}"
    elif previous is None:
        footer = "collecting rates...  q quit"
    else:
        footer = "q quit  r refresh"
    fixed = [header, summary, "", *head]
    end = [*tail, "", footer]
    if height is not None:
        room = height - len(fixed) - len(end)
        if room < len(body):
            if room <= 0:
                body = []
            else:
                hidden = len(body) - (room - 1)
                body = [*body[: room - 1], f"... {hidden} more workers (enlarge the terminal)"]
    lines = [*fixed, *body, *end]
    if height is not None and len(lines) > height:
        # Tiny terminal: keep the header and the totals, drop the rest.
        lines = [header, *tail[-1:], footer][:height] if height > 0 else []
    if width is not None:
        lines = [line[:width] for line in lines]
    return lines


def _batch(api: Any, api_url: str, first: Sample, interval: float, iterations: int | None) -> int:
    previous, count = first, 0
    try:
        while iterations is None or count < iterations:
            time.sleep(interval)
            current = take_sample(api)
            if count:
                print()
            print("\n".join(frame_lines(api_url, current, previous, interval, None, None)), flush=True)
            previous, count = current, count + 1
    except KeyboardInterrupt:
        pass
    return 0


def run_top(api: Any, api_url: str, interval: float, iterations: int | None, batch: bool) -> int:
    interval = max(interval, 0.05)
    first = take_sample(api)  # fails here, before curses, when the gateway is down
    if batch:
        return _batch(api, api_url, first, interval, iterations)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CtlError("top needs an interactive terminal; use `top --batch` or `status`", exit_code=2)
    import curses

    last: list[str] = []

    def ui(stdscr: Any) -> None:
        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        stdscr.timeout(100)
        previous: Sample | None = None
        current, error = first, None
        refreshes = 0
        next_at = time.monotonic() + interval
        redraw = True
        while True:
            now = time.monotonic()
            if now >= next_at:
                try:
                    previous, current, error = current, take_sample(api), None
                    refreshes += 1
                except CtlError as exc:
                    error = exc.message
                next_at = time.monotonic() + interval
                redraw = True
            if redraw:
                last[:] = _draw(stdscr, api_url, current, previous, interval, error)
                redraw = False
                if iterations is not None and refreshes >= iterations:
                    return
            key = stdscr.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == ord("r"):
                next_at = 0.0
            elif key == curses.KEY_RESIZE:
                redraw = True

    try:
        curses.wrapper(ui)
    except KeyboardInterrupt:
        return 0
    except curses.error as exc:
        raise CtlError(f"cannot run the terminal UI (TERM={os.environ.get('TERM', '')!r}): {exc}; "
                       f"use `top --batch`", exit_code=2) from None
    if iterations is not None and last:
        if not last[-1].startswith("!"):
            last = last[:-2]  # the key help means nothing once the screen is gone
        print("\n".join(last), flush=True)
    return 0


def _draw(stdscr: Any, api_url: str, current: Sample, previous: Sample | None, interval: float,
          error: str | None) -> list[str]:
    import curses

    height, width = stdscr.getmaxyx()
    # The last cell of the screen cannot be written without an error: keep one column free.
    lines = frame_lines(api_url, current, previous, interval, max(width - 1, 1), height, error)
    stdscr.erase()
    for y, line in enumerate(lines):
        attr = curses.A_NORMAL
        if y == 0:
            attr = curses.A_REVERSE
        elif line.startswith(("total", "!")):
            attr = curses.A_BOLD
        with contextlib.suppress(curses.error):
            stdscr.addnstr(y, 0, line, max(width - 1, 1), attr)
    stdscr.refresh()
    return lines
