"""The web admin's sessions and login throttle (no aiohttp here: ``gateway.api.http`` serves it).

A session token is ``<expiry>.<nonce>.<signature>``: HMAC-SHA256 with ``admin.secret`` over a
domain-separated message, so any worker (they share the internal port) checks it without
shared state, and it can never pass for a client JWT signed with the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["SESSION_COOKIE", "LoginThrottle", "check_password", "issue_session", "verify_session"]

SESSION_COOKIE = "shardgate_admin"
_DOMAIN = b"shardgate-admin-session-v1:"


def _sign(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), _DOMAIN + message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_session(secret: str, ttl: float, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl)
    message = f"{expires}.{secrets.token_urlsafe(12)}"
    return f"{message}.{_sign(secret, message)}"


def verify_session(secret: str, token: str, now: float | None = None) -> bool:
    """True for a token this secret signed that has not expired."""
    if not secret or token.count(".") != 2:
        return False
    message, _, signature = token.rpartition(".")
    try:
        ok = hmac.compare_digest(signature.encode(), _sign(secret, message).encode())
    except UnicodeEncodeError:
        return False
    expires = message.partition(".")[0]
    return ok and expires.isdigit() and int(expires) > (time.time() if now is None else now)


def check_password(expected: str, given: object) -> bool:
    if not expected or not isinstance(given, str):
        return False
    try:
        return hmac.compare_digest(given.encode(), expected.encode())
    except UnicodeEncodeError:
        return False


class LoginThrottle:
    """At most ``per_ip`` login attempts per ``window`` seconds from one address and ``total``
    from all (per worker: the kernel spreads connections over workers, so the real bound is
    up to ``workers`` times this, still far too few to guess a random password)."""

    def __init__(self, per_ip: int = 10, total: int = 100, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_ip, self.total, self.window, self._clock = per_ip, total, window, clock
        self._hits: dict[str, list[float]] = {}
        self._all: list[float] = []

    def allow(self, address: str) -> bool:
        now = self._clock()
        horizon = now - self.window
        self._all = [t for t in self._all if t > horizon]
        if len(self._hits) > 10_000:  # bounded memory under a spray of addresses
            self._hits = {a: h for a, h in self._hits.items() if h and h[-1] > horizon}
        hits = [t for t in self._hits.get(address, ()) if t > horizon]
        if len(hits) >= self.per_ip or len(self._all) >= self.total:
            self._hits[address] = hits
            return False
        hits.append(now)
        self._hits[address] = hits
        self._all.append(now)
        return True

    def retry_after(self) -> int:
        return int(self.window)
