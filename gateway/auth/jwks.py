"""JWKS: public keys fetched from a JSON Web Key Set (``jwks_public_endpoint``).

The one place in token verification that does I/O, and it never blocks the event loop:
``file://`` documents are read when the verifier is built (cheap), HTTP fetches run in a
background thread, at most one at a time and at most one per 30 s when a token names an
unknown ``kid``; such a token is refused until the refresh lands. Keys stay usable past
their cache time until a refresh succeeds, so a JWKS outage does not lock clients out.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = [
    "EC_CURVE_ALGORITHM",
    "JWKS_ALGORITHMS",
    "RSA_ALGORITHMS",
    "JwksCache",
    "VerifyKey",
    "check_jwks_endpoint",
    "parse_jwks",
]

log = logging.getLogger("shardgate.auth")

RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512")
EC_CURVE_ALGORITHM: Final[Mapping[str, str]] = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
VerifyKey: TypeAlias = (
    bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

JWKS_CACHE_TTL: Final = 3600.0
"""Seconds a fetched JWKS is considered fresh (Centrifugo's 1 h)."""
JWKS_MIN_REFRESH_INTERVAL: Final = 30.0
"""At most one on-demand refresh (unknown ``kid`` or stale cache) starts per this many seconds."""
JWKS_FETCH_TIMEOUT: Final = 1.0
JWKS_FETCH_RETRIES: Final = 1
JWKS_MAX_DOCUMENT_SIZE: Final = 1 << 20
JWKS_KTY: Final = frozenset({"RSA", "EC", "OKP"})
JWKS_ALGORITHMS: Final = frozenset({*RSA_ALGORITHMS, *EC_CURVE_ALGORITHM.values(), "EdDSA"})


# --------------------------------------------------------------------------- JWKS


@dataclass(frozen=True, slots=True)
class _Jwk:
    """One usable JWKS key: the public key and the token algorithms it may verify."""

    key: VerifyKey
    algorithms: frozenset[str]


def check_jwks_endpoint(endpoint: str) -> str:
    """Return the scheme (``http``, ``https`` or ``file``); raise ``ValueError`` otherwise."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        raise ValueError(f"token jwks_public_endpoint {endpoint!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"token jwks_public_endpoint {endpoint!r} has no host")
        return scheme
    if scheme == "file":
        if not parts.path:
            raise ValueError(f"token jwks_public_endpoint {endpoint!r} has no path")
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"token jwks_public_endpoint {endpoint!r}: file URL must be local")
        return scheme
    raise ValueError(
        f"token jwks_public_endpoint {endpoint!r} must be an http://, https:// or file:// URL"
    )


def _fetch_url(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(JWKS_MAX_DOCUMENT_SIZE + 1)
    if len(data) > JWKS_MAX_DOCUMENT_SIZE:
        raise ValueError(f"JWKS document larger than {JWKS_MAX_DOCUMENT_SIZE} bytes")
    return data


def _spawn_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="shardgate-jwks", daemon=True).start()


class JwksCache:
    """The keys of one JWKS document, refreshed without blocking the caller.

    ``lookup`` and ``request_refresh`` are called on the event loop and only read the
    cache or start a job; for ``http(s)`` the job (``fetch`` plus parsing) runs through
    ``spawn`` (a daemon thread by default) and swaps the new key dict in under a lock.
    ``file://`` documents are read inline. ``fetch``, ``spawn`` and ``clock`` are
    injectable so tests control timing without sleeping or a network.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        ttl: float = JWKS_CACHE_TTL,
        min_refresh_interval: float = JWKS_MIN_REFRESH_INTERVAL,
        timeout: float = JWKS_FETCH_TIMEOUT,
        retries: int = JWKS_FETCH_RETRIES,
        fetch: Callable[[str, float], bytes] = _fetch_url,
        spawn: Callable[[Callable[[], None]], None] = _spawn_thread,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self._is_file = check_jwks_endpoint(endpoint) == "file"
        self._ttl = ttl
        self._min_interval = min_refresh_interval
        self._timeout = timeout
        self._retries = retries
        self._fetch = fetch
        self._spawn = spawn
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _Jwk] = {}
        self._loaded_at: float | None = None  # time of the last successful load
        self._next_refresh = -math.inf  # earliest time an on-demand refresh may start
        self._in_flight = False
        self.fetches = 0
        """Number of loads attempted (for tests and logs)."""
        self.last_error: str | None = None

    def start(self, *, prefetch: bool) -> None:
        """Load a ``file://`` document now (raises ``ValueError`` if unusable); for
        ``http(s)`` start a background fetch when ``prefetch`` is true."""
        if self._is_file:
            self._load(self._clock(), raise_errors=True)
        elif prefetch:
            self._start_job(self._clock())

    @property
    def kids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._keys)

    @property
    def refreshing(self) -> bool:
        with self._lock:
            return self._in_flight

    def lookup(self, kid: str, now: float) -> _Jwk | None:
        """The cached key for ``kid``; a stale cache also asks for a refresh (kept meanwhile)."""
        with self._lock:
            jwk = self._keys.get(kid)
            stale = self._loaded_at is not None and now - self._loaded_at >= self._ttl
        if stale:
            self.request_refresh(now)
        return jwk

    def request_refresh(self, now: float) -> bool:
        """Start a refresh unless one runs or one started less than 30 s ago.

        Returns True when the refresh already finished (``file://``, read inline) and
        succeeded; an ``http(s)`` refresh runs in the background and returns False.
        """
        with self._lock:
            if self._in_flight or now < self._next_refresh:
                return False
            self._next_refresh = now + self._min_interval
            self._in_flight = not self._is_file
        if self._is_file:
            return self._load(now, raise_errors=False)
        self._start_job(now)
        return False

    def _start_job(self, now: float) -> None:
        with self._lock:
            self._in_flight = True
        try:
            self._spawn(lambda: self._run_job(now))
        except Exception:  # e.g. RuntimeError: can't start new thread
            log.exception("JWKS %s: cannot start a refresh", self.endpoint)
            with self._lock:
                self._in_flight = False

    def _run_job(self, now: float) -> None:
        try:
            self._load(now, raise_errors=False)
        finally:
            with self._lock:
                self._in_flight = False

    def _read(self) -> bytes:
        if self._is_file:
            path = Path(unquote(urlsplit(self.endpoint).path))
            data = path.read_bytes()
            if len(data) > JWKS_MAX_DOCUMENT_SIZE:
                raise ValueError(f"JWKS document larger than {JWKS_MAX_DOCUMENT_SIZE} bytes")
            return data
        error: Exception | None = None
        for _ in range(1 + self._retries):
            try:
                return self._fetch(self.endpoint, self._timeout)
            except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
                error = exc
        assert error is not None
        raise error

    def _load(self, now: float, *, raise_errors: bool) -> bool:
        self.fetches += 1
        try:
            keys = parse_jwks(self._read())
        except (OSError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            if raise_errors:
                raise ValueError(
                    f"token jwks_public_endpoint {self.endpoint!r} is unusable: {self.last_error}"
                ) from None
            log.warning("JWKS %s: refresh failed, keeping %d cached keys: %s",
                        self.endpoint, len(self._keys), self.last_error)
            return False
        with self._lock:
            self._keys = keys
            self._loaded_at = now
        self.last_error = None
        log.info("JWKS %s: loaded %d keys", self.endpoint, len(keys))
        return True


def parse_jwks(data: bytes) -> dict[str, _Jwk]:
    """``kid`` -> key for each usable signing key; raise ``ValueError`` if not a JWKS."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"JWKS is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('JWKS must be an object with a "keys" list')
    keys: dict[str, _Jwk] = {}
    for entry in document["keys"]:
        parsed = _parse_jwk(entry)
        if parsed is not None:
            kid, jwk = parsed
            keys.setdefault(kid, jwk)
    return keys


def _parse_jwk(entry: object) -> tuple[str, _Jwk] | None:
    """One JWKS entry, or ``None`` for an entry this verifier cannot or must not use."""
    if not isinstance(entry, dict):
        return None
    kid, kty, use = entry.get("kid"), entry.get("kty"), entry.get("use")
    # "oct" (a shared secret) is never accepted from a public endpoint.
    if not isinstance(kid, str) or not kid or kty not in JWKS_KTY or use not in (None, "sig"):
        return None
    explicit_alg = entry.get("alg")
    if explicit_alg is not None and explicit_alg not in JWKS_ALGORITHMS:
        return None
    try:
        key: Any = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        log.warning("JWKS key %r is malformed; skipped", kid)
        return None
    allowed: frozenset[str]
    if isinstance(key, rsa.RSAPublicKey):
        allowed = frozenset(RSA_ALGORITHMS)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve_alg = EC_CURVE_ALGORITHM.get(key.curve.name)
        if curve_alg is None:
            return None
        allowed = frozenset({curve_alg})
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        allowed = frozenset({"EdDSA"})
    else:  # a private key or an unexpected type
        return None
    if explicit_alg is not None:
        allowed &= {explicit_alg}
    if not allowed:
        return None
    return kid, _Jwk(key, allowed)


