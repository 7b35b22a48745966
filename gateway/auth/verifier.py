"""JWT verification for connection and subscription tokens (Centrifugo-compatible).

Synchronous and clock-free: the caller passes ``now`` (unix seconds) so expiry is decided
against the same instant the connection logic uses, and tests never sleep. Keys are parsed
once, at construction, so a bad PEM fails startup (config validation builds a
:class:`TokenVerifier`) instead of failing every connect later.

JWKS (``jwks_public_endpoint``) is the one exception to "no I/O", and it never blocks the
verify path on the network:

* ``file://`` documents are read synchronously (a local file read is cheap): at construction
  (a missing or malformed file fails startup) and again whenever a refresh is due.
* ``http(s)://`` documents are fetched by a short-lived daemon thread (timeout 1 s, one
  retry, at most 1 MiB). The worker's verifier starts one such fetch at construction
  (``prefetch=True``); afterwards a fetch starts only when a token names a ``kid`` that is
  not cached, or the cached keys are older than 1 h, and at most once per 30 s, one at a
  time. **A token whose ``kid`` is not cached yet is invalid** (connect: disconnect 3500,
  subscribe: error 103) while that fetch runs; the client's retry succeeds once it lands.
* Keys stay in use past their 1 h lifetime until a refresh succeeds, so an outage of the
  JWKS endpoint does not lock every client out; a successful refresh replaces the whole set
  (a key removed from the document stops verifying).
* A JWKS key is looked up by the token's ``kid`` only (keys without ``kid``, ``use`` other
  than ``sig``, and ``kty`` other than RSA/EC/OKP are skipped). A token whose ``kid`` is not
  in the set falls back to the static keys (HMAC/RSA/ECDSA) for its ``alg``, so both
  kinds of key coexist.

HMAC rotation: ``hmac_previous_secret_key`` also verifies HS* tokens while
``now < hmac_previous_secret_key_valid_until``.

Error mapping follows Centrifugo:

* connection token: expired -> ``ClientError 109``; anything else wrong -> ``Disconnect 3500``.
* subscription token: expired -> ``ClientError 109``; anything else wrong -> ``ClientError 103``.

Order of checks also follows Centrifugo: size, signature, claim types, ``exp``, ``nbf``,
``aud``/``iss``, then kind-specific claims.

A claim that cannot be used as it stands makes the token invalid (3500 / 103), never expired
and never a half-accepted connection: a date claim (``exp``, ``nbf``, ``iat``, ``expire_at``)
that is not a number, not finite, or outside ``0..MAX_NUMERIC_DATE`` (``expire_at`` may also be
negative down to ``-MAX_NUMERIC_DATE``: "never", as in Centrifugo), and an ``info`` that cannot
be re-encoded as JSON (an integer beyond 64 bits). So ``exp: 1e20`` is refused here, instead of
failing later while the connect reply is encoded. So a forged token is reported as invalid even
when its ``exp`` is in the past, and an expired genuine token is reported as expired.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

from gateway.auth.jwks import (
    EC_CURVE_ALGORITHM,
    JWKS_ALGORITHMS,
    RSA_ALGORITHMS,
    JwksCache,
    VerifyKey,
    check_jwks_endpoint,
)
from gateway.core.errors import (
    DISCONNECT_INVALID_TOKEN,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ClientError,
    Disconnect,
)

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = [
    "ConnectCredentials",
    "JwksCache",
    "SubscribeCredentials",
    "TokenKeys",
    "TokenVerifier",
    "check_jwks_endpoint",
    "MAX_NUMERIC_DATE",
]

log = logging.getLogger("shardgate.auth")

DEFAULT_MAX_TOKEN_SIZE: Final = 16384

#: The largest date claim accepted: 9999-12-31T23:59:59Z in unix seconds. Beyond it a date is
#: absurd; it would also overflow the reply's ``ttl`` (a 64-bit integer on the wire).
MAX_NUMERIC_DATE: Final = 253402300799


_HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
# ES* names a curve as well as a hash (RFC 7518 §3.4), so one EC key serves one alg only.

# Registered claims are checked by this module (against the injected clock), never by
# pyjwt (which would read the wall clock and reject ``aud`` when no audience is set).
_PYJWT_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}




class TokenKeys(Protocol):
    """The key material a verifier needs; ``gateway.config.TokenConfig`` satisfies it.

    Declared as read-only properties so a frozen dataclass matches structurally, and so
    this module does not import the config module.
    """

    @property
    def hmac_secret_key(self) -> str: ...

    @property
    def rsa_public_key(self) -> str: ...

    @property
    def ecdsa_public_key(self) -> str: ...

    @property
    def hmac_previous_secret_key(self) -> str: ...

    @property
    def hmac_previous_secret_key_valid_until(self) -> int: ...

    @property
    def audience(self) -> str: ...

    @property
    def audience_regex(self) -> str: ...

    @property
    def issuer(self) -> str: ...

    @property
    def issuer_regex(self) -> str: ...

    @property
    def jwks_public_endpoint(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ConnectCredentials:
    """What a verified connection token grants."""

    user: str
    """``sub`` claim; ``""`` is an anonymous user."""
    expire_at: int | None
    """When the connection expires (unix seconds), or ``None`` for never."""
    info: object | None
    """``info`` claim as decoded JSON; sent to other clients in presence and publications."""
    channels: tuple[str, ...]
    """``channels`` claim: server-side subscriptions made at connect."""
    meta: object | None
    """``meta`` claim: server-only data, never sent to clients."""


@dataclass(frozen=True, slots=True)
class SubscribeCredentials:
    """What a verified subscription token grants; the caller checks channel/user/client."""

    user: str
    channel: str
    client: str | None
    expire_at: int | None
    info: object | None
    """``info`` claim; becomes the subscriber's ``chan_info``."""


class _InvalidToken(Exception):
    """Internal: the token is unusable. The message is for logs only (it is the cause)."""


class _ExpiredToken(Exception):
    """Internal: the token is genuine and well-formed but its ``exp`` has passed."""


class TokenVerifier:
    """Verifies connection and subscription JWTs against the configured keys.

    The token header's ``alg`` picks the key, but each algorithm family has its own key
    (HMAC secret, RSA key, EC key) and pyjwt is told to accept only that one algorithm,
    so a token cannot make the verifier use, say, the RSA public key as an HMAC secret.
    An algorithm whose key is not configured, and ``none``, are invalid. A JWKS key
    (picked by ``kid``) likewise verifies only the algorithms its ``kty``/``crv``/``alg``
    allow, never HS*.
    """

    __slots__ = (
        "_audience",
        "_audience_re",
        "_issuer",
        "_issuer_re",
        "_jwks",
        "_keys",
        "_max_token_size",
        "_previous_hmac",
        "_previous_hmac_until",
    )

    def __init__(
        self,
        keys: TokenKeys,
        *,
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        audience: str | None = None,
        issuer: str | None = None,
        prefetch: bool = False,
        jwks: JwksCache | None = None,
    ) -> None:
        """Parse the keys once; raise ``ValueError`` naming the bad setting.

        ``audience``/``issuer``: when set, a token must carry a matching ``aud`` (string
        or list containing it) / ``iss``; when ``None`` they come from ``keys``
        (``""`` there means the claim is not checked). ``audience_regex``/``issuer_regex``
        from ``keys`` must match the whole claim (any element of a list ``aud``).

        ``prefetch``: start fetching an ``http(s)`` JWKS now, in a background thread.
        Only a worker's long-lived verifier asks for it; validation (``check-config``, the
        supervisor before it forks) builds verifiers without starting threads.
        ``jwks``: a ready cache (tests); by default one is built from
        ``keys.jwks_public_endpoint``.
        """
        if max_token_size <= 0:
            raise ValueError(f"max_token_size must be positive, got {max_token_size}")
        self._max_token_size = max_token_size
        self._audience = audience if audience is not None else (keys.audience or None)
        self._issuer = issuer if issuer is not None else (keys.issuer or None)
        self._audience_re = _compile_regex(keys.audience_regex, "audience_regex")
        self._issuer_re = _compile_regex(keys.issuer_regex, "issuer_regex")
        self._keys: dict[str, VerifyKey] = {}
        if keys.hmac_secret_key:
            secret = _load_hmac_secret(keys.hmac_secret_key, "hmac_secret_key")
            for alg in _HMAC_ALGORITHMS:
                self._keys[alg] = secret
        self._previous_hmac: bytes | None = None
        self._previous_hmac_until = float(keys.hmac_previous_secret_key_valid_until)
        if keys.hmac_previous_secret_key:
            if self._previous_hmac_until <= 0:
                raise ValueError(
                    "token hmac_previous_secret_key needs hmac_previous_secret_key_valid_until"
                )
            self._previous_hmac = _load_hmac_secret(
                keys.hmac_previous_secret_key, "hmac_previous_secret_key"
            )
        elif self._previous_hmac_until:
            raise ValueError(
                "token hmac_previous_secret_key_valid_until is set without hmac_previous_secret_key"
            )
        if keys.rsa_public_key:
            rsa_key = _load_rsa_key(keys.rsa_public_key)
            for alg in RSA_ALGORITHMS:
                self._keys[alg] = rsa_key
        if keys.ecdsa_public_key:
            ec_key, ec_alg = _load_ec_key(keys.ecdsa_public_key)
            self._keys[ec_alg] = ec_key
        if jwks is None and keys.jwks_public_endpoint:
            jwks = JwksCache(keys.jwks_public_endpoint)
        self._jwks = jwks
        if jwks is not None:
            jwks.start(prefetch=prefetch)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Algorithms a token may use with this configuration (for startup logs)."""
        algs = dict.fromkeys(self._keys)
        if self._previous_hmac is not None:
            algs.update(dict.fromkeys(_HMAC_ALGORITHMS))
        if self._jwks is not None:
            algs.update(dict.fromkeys(sorted(JWKS_ALGORITHMS)))
        return tuple(algs)

    @property
    def jwks(self) -> JwksCache | None:
        """The JWKS cache, when ``jwks_public_endpoint`` is configured."""
        return self._jwks

    def verify_connect(self, token: str, now: float) -> ConnectCredentials:
        """Verify a connection token; raise ``ClientError 109`` or ``Disconnect 3500``."""
        try:
            claims = self._decode(token, now)
            if _str_claim(claims, "channel"):
                # A subscription token must not double as a connection token.
                raise _InvalidToken("connection token has a channel claim")
            credentials = ConnectCredentials(
                user=_str_claim(claims, "sub") or "",
                expire_at=_expire_at(claims),
                info=_json_claim(claims, "info"),
                channels=_channels_claim(claims),
                meta=claims.get("meta"),
            )
            self._check_registered_claims(claims, now)
            return credentials
        except _ExpiredToken:
            _raise_expired()
        except _InvalidToken as exc:
            raise _fresh_disconnect(DISCONNECT_INVALID_TOKEN) from exc

    def verify_subscribe(self, token: str, now: float) -> SubscribeCredentials:
        """Verify a subscription token; raise ``ClientError 109`` or ``ClientError 103``."""
        try:
            claims = self._decode(token, now)
            channel = _str_claim(claims, "channel")
            if not channel:
                # Without it a connection token could be replayed as a subscription token.
                raise _InvalidToken("subscription token has no channel claim")
            credentials = SubscribeCredentials(
                user=_str_claim(claims, "sub") or "",
                channel=channel,
                client=_str_claim(claims, "client"),
                expire_at=_expire_at(claims),
                info=_json_claim(claims, "info"),
            )
            self._check_registered_claims(claims, now)
            return credentials
        except _ExpiredToken:
            _raise_expired()
        except _InvalidToken as exc:
            raise _fresh_client_error(ERROR_PERMISSION_DENIED) from exc

    def _candidate_keys(self, alg: str, kid: object, now: float) -> list[VerifyKey]:
        """The keys that may verify this token, in order; never blocks on the network."""
        jwks = self._jwks
        if jwks is not None and isinstance(kid, str) and kid:
            jwk = jwks.lookup(kid, now)
            if jwk is not None:
                if alg not in jwk.algorithms:
                    raise _InvalidToken(f"algorithm {alg!r} does not match JWKS key {kid!r}")
                return [jwk.key]
        candidates: list[VerifyKey] = []
        key = self._keys.get(alg)
        if key is not None:
            candidates.append(key)
        if (
            alg in _HMAC_ALGORITHMS
            and self._previous_hmac is not None
            and now < self._previous_hmac_until
        ):
            candidates.append(self._previous_hmac)
        return candidates

    def _decode(self, token: str, now: float) -> dict[str, Any]:
        """Size and signature checks; returns the claims, not yet checked against ``now``."""
        if not isinstance(token, str) or not token:
            raise _InvalidToken("empty or non-string token")
        if len(token) > self._max_token_size:
            raise _InvalidToken(f"token longer than {self._max_token_size} characters")
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            kid = header.get("kid")
            if not isinstance(alg, str):
                raise _InvalidToken(f"algorithm {alg!r} is not configured")
            claims = self._verify_signature(token, alg, kid, now)
            if claims is None and self._refresh_for(kid, now):
                # A file:// JWKS was re-read inline: the kid may be known now.
                claims = self._verify_signature(token, alg, kid, now)
        except jwt.PyJWTError as exc:
            raise _InvalidToken(f"{type(exc).__name__}: {exc}") from exc
        if claims is None:
            raise _InvalidToken(f"no configured key for algorithm {alg!r} and kid {kid!r} verifies the token")
        return claims

    def _verify_signature(self, token: str, alg: str, kid: object, now: float) -> dict[str, Any] | None:
        """The claims if a candidate key verifies the signature; ``None`` if none does.

        Other decoding problems (malformed token, algorithm/key mismatch) raise.
        """
        for key in self._candidate_keys(alg, kid, now):
            try:
                claims: dict[str, Any] = jwt.decode(token, key, algorithms=[alg], options=_PYJWT_OPTIONS)
            except jwt.InvalidSignatureError:
                continue
            return claims
        return None

    def _refresh_for(self, kid: object, now: float) -> bool:
        """No key verified a token naming a ``kid`` that no cached JWKS key has: ask for a
        (rate-limited) refresh. True when it completed inline (``file://``). A ``kid`` that
        is cached never triggers a fetch, so forged tokens cannot make the gateway fetch."""
        jwks = self._jwks
        if jwks is None or not isinstance(kid, str) or not kid or kid in jwks.kids:
            return False
        return jwks.request_refresh(now)

    def _check_registered_claims(self, claims: Mapping[str, Any], now: float) -> None:
        """``exp``, ``nbf``, ``aud``, ``iss``: run after the kind-specific claims parsed,
        so a malformed token is reported invalid even if it has also expired."""
        exp = _numeric_claim(claims, "exp")
        nbf = _numeric_claim(claims, "nbf")
        _numeric_claim(claims, "iat")  # not compared with the clock, but it must be a date
        if exp is not None and exp <= now:
            raise _ExpiredToken
        if nbf is not None and nbf > now:
            raise _InvalidToken("token not valid yet (nbf)")
        aud = claims.get("aud")
        if self._audience is not None and not _has_audience(aud, self._audience):
            raise _InvalidToken("audience mismatch")
        if self._audience_re is not None and not _audience_matches(aud, self._audience_re):
            raise _InvalidToken("audience does not match audience_regex")
        iss = claims.get("iss")
        if self._issuer is not None and iss != self._issuer:
            raise _InvalidToken("issuer mismatch")
        if self._issuer_re is not None and not (
            isinstance(iss, str) and self._issuer_re.fullmatch(iss)
        ):
            raise _InvalidToken("issuer does not match issuer_regex")


def _compile_regex(pattern: str, setting: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"token {setting} is not a valid regular expression: {exc}") from None


def _audience_matches(aud: object, pattern: re.Pattern[str]) -> bool:
    values: Sequence[object] = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else ()
    return any(isinstance(value, str) and pattern.fullmatch(value) for value in values)


def _load_hmac_secret(secret: str, setting: str) -> bytes:
    try:
        return HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError as exc:
        raise ValueError(f"token {setting} is unusable: {exc}") from exc


def _load_public_key(pem: str, setting: str) -> object:
    """Accept a PEM public key (SPKI/PKCS#1) or an X.509 certificate carrying one."""
    data = pem.strip().encode("utf-8")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"token {setting} is not a valid PEM public key or certificate: {exc}") from exc


def _load_rsa_key(pem: str) -> rsa.RSAPublicKey:
    key = _load_public_key(pem, "rsa_public_key")
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"token rsa_public_key holds a {type(key).__name__}, not an RSA public key")
    return key


def _load_ec_key(pem: str) -> tuple[ec.EllipticCurvePublicKey, str]:
    key = _load_public_key(pem, "ecdsa_public_key")
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"token ecdsa_public_key holds a {type(key).__name__}, not an EC public key")
    alg = EC_CURVE_ALGORITHM.get(key.curve.name)
    if alg is None:
        raise ValueError(
            f"token ecdsa_public_key uses curve {key.curve.name}; "
            "expected P-256 (ES256), P-384 (ES384) or P-521 (ES512)"
        )
    return key, alg


def _str_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _InvalidToken(f"claim {name!r} is not a string")


def _numeric_claim(claims: Mapping[str, Any], name: str, *, signed: bool = False) -> float | None:
    """A date claim in ``0..MAX_NUMERIC_DATE`` (``-MAX_NUMERIC_DATE..`` when ``signed``), or
    ``None`` when absent. Anything else -- a string, a bool, NaN, an infinity, 1e20, an
    integer too large for a float -- makes the token invalid."""
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int subclass; JSON true is not a date.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _InvalidToken(f"claim {name!r} is not a number")
    # Compared before any float conversion (a huge int would overflow it); NaN compares false.
    if not (-MAX_NUMERIC_DATE if signed else 0) <= value <= MAX_NUMERIC_DATE:
        raise _InvalidToken(f"claim {name!r} is out of range")
    return float(value)


def _json_claim(claims: Mapping[str, Any], name: str) -> object | None:
    """A JSON claim the gateway re-encodes for other clients (``info``): it must encode."""
    value = claims.get(name)
    if value is not None:
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            raise _InvalidToken(f"claim {name!r} cannot be encoded as JSON") from None
    return value


def _channels_claim(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("channels")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise _InvalidToken("claim 'channels' is not a list of strings")
    return tuple(value)


def _expire_at(claims: Mapping[str, Any]) -> int | None:
    """Centrifugo's rule: ``expire_at`` wins when present (<= 0 means never), else ``exp``.

    ``expire_at`` lets a long-lived session outlive the token used to open it. Fractional
    seconds round up so a token that passed the ``exp`` check never yields a past time.
    """
    if "expire_at" in claims and claims["expire_at"] is not None:
        expire_at = _numeric_claim(claims, "expire_at", signed=True)
        return math.ceil(expire_at) if expire_at is not None and expire_at > 0 else None
    exp = _numeric_claim(claims, "exp")
    return math.ceil(exp) if exp is not None else None


def _has_audience(aud: object, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and expected in aud


def _fresh_client_error(template: ClientError) -> ClientError:
    """A copy, so the shared constant never accumulates a traceback or a cause."""
    return replace(template)


def _fresh_disconnect(template: Disconnect) -> Disconnect:
    return replace(template)


def _raise_expired() -> NoReturn:
    raise _fresh_client_error(ERROR_TOKEN_EXPIRED) from None
