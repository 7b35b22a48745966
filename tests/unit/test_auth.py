"""Token verification: claim semantics and Centrifugo's error mapping, with an injected clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth import ConnectCredentials, SubscribeCredentials, TokenVerifier
from gateway.auth.jwks import JwksCache, parse_jwks
from gateway.auth.verifier import MAX_NUMERIC_DATE
from gateway.config import ConfigError, TokenConfig, parse_config
from gateway.core.errors import ClientError, Disconnect
from tools.token import SECRET_ENV, main, mint_token

SECRET = "test-secret-that-is-long-enough-for-hs512-0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Keys:
    """Stands in for gateway.config.TokenConfig (same read-only attributes)."""

    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: int = 0
    audience: str = ""
    audience_regex: str = ""
    issuer: str = ""
    issuer_regex: str = ""
    jwks_public_endpoint: str = ""


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(Keys(hmac_secret_key=SECRET))


def hs(claims: Mapping[str, object], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(dict(claims), secret, algorithm=alg)


def assert_invalid_connect(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(Disconnect) as info:
        verifier.verify_connect(token, NOW)
    assert info.value.code == 3500
    assert info.value.reason == "invalid token"
    assert not info.value.reconnect


def assert_expired(exc: pytest.ExceptionInfo[ClientError]) -> None:
    assert exc.value.code == 109
    assert exc.value.message == "token expired"


# --- connection tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_valid(verifier: TokenVerifier, alg: str) -> None:
    token = hs({"sub": "42", "exp": int(NOW) + 60, "info": {"name": "Ann"}, "meta": [1]}, alg=alg)
    creds = verifier.verify_connect(token, NOW)
    assert creds == ConnectCredentials(
        user="42", expire_at=int(NOW) + 60, info={"name": "Ann"}, channels=(), meta=[1]
    )


def test_minimal_token_is_anonymous_and_never_expires(verifier: TokenVerifier) -> None:
    creds = verifier.verify_connect(hs({}), NOW)
    assert creds == ConnectCredentials(user="", expire_at=None, info=None, channels=(), meta=None)


def test_channels_claim(verifier: TokenVerifier) -> None:
    creds = verifier.verify_connect(hs({"sub": "1", "channels": ["news", "chat:1"]}), NOW)
    assert creds.channels == ("news", "chat:1")


@pytest.mark.parametrize("exp", [int(NOW), int(NOW) - 1, NOW - 0.5])
def test_expired_connect(verifier: TokenVerifier, exp: float) -> None:
    with pytest.raises(ClientError) as info:
        verifier.verify_connect(hs({"sub": "1", "exp": exp}), NOW)
    assert_expired(info)


def test_expiry_follows_injected_clock(verifier: TokenVerifier) -> None:
    token = hs({"sub": "1", "exp": int(NOW) + 10})
    assert verifier.verify_connect(token, NOW + 9.9).expire_at == int(NOW) + 10
    with pytest.raises(ClientError) as info:
        verifier.verify_connect(token, NOW + 10)
    assert_expired(info)


def test_fractional_exp_rounds_up(verifier: TokenVerifier) -> None:
    creds = verifier.verify_connect(hs({"exp": NOW + 0.5}), NOW)
    assert creds.expire_at == int(NOW) + 1


def test_errors_are_fresh_copies(verifier: TokenVerifier) -> None:
    """The shared constants in gateway.core.errors must not pick up tracebacks or causes."""
    from gateway.core.errors import DISCONNECT_INVALID_TOKEN, ERROR_TOKEN_EXPIRED

    with pytest.raises(Disconnect) as bad:
        verifier.verify_connect("garbage", NOW)
    assert bad.value == DISCONNECT_INVALID_TOKEN
    assert bad.value is not DISCONNECT_INVALID_TOKEN
    assert bad.value.__cause__ is not None  # the reason, for logs
    with pytest.raises(ClientError) as expired:
        verifier.verify_connect(hs({"exp": 1}), NOW)
    assert expired.value == ERROR_TOKEN_EXPIRED
    assert expired.value is not ERROR_TOKEN_EXPIRED
    assert DISCONNECT_INVALID_TOKEN.__traceback__ is None
    assert ERROR_TOKEN_EXPIRED.__traceback__ is None


def test_bad_signature(verifier: TokenVerifier) -> None:
    assert_invalid_connect(verifier, hs({"sub": "1"}, secret=SECRET + "x"))


def test_bad_signature_wins_over_expiry(verifier: TokenVerifier) -> None:
    assert_invalid_connect(verifier, hs({"sub": "1", "exp": 1}, secret=SECRET + "x"))


def test_tampered_payload(verifier: TokenVerifier) -> None:
    header, _, signature = hs({"sub": "1"}).split(".")
    forged = jwt.utils.base64url_encode(json.dumps({"sub": "admin"}).encode()).decode()
    assert_invalid_connect(verifier, f"{header}.{forged}.{signature}")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "....", "eyJ.eyJ.", "\x00\xff"])
def test_garbage(verifier: TokenVerifier, token: str) -> None:
    assert_invalid_connect(verifier, token)


def test_non_object_payload(verifier: TokenVerifier) -> None:
    token = jwt.api_jws.encode(b"[1, 2]", SECRET, algorithm="HS256")
    assert_invalid_connect(verifier, token)


def test_alg_none(verifier: TokenVerifier) -> None:
    assert_invalid_connect(verifier, jwt.encode({"sub": "1"}, "", algorithm="none"))
    # Also with a forged "none" header in front of an otherwise valid HS256 token.
    _, payload, signature = hs({"sub": "1"}).split(".")
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    assert_invalid_connect(verifier, f"{header}.{payload}.{signature}")
    assert_invalid_connect(verifier, f"{header}.{payload}.")


def test_oversized(verifier: TokenVerifier) -> None:
    token = hs({"sub": "1", "info": "x" * 20_000})
    assert len(token) > 16384
    assert_invalid_connect(verifier, token)
    small = TokenVerifier(Keys(hmac_secret_key=SECRET), max_token_size=100)
    token = hs({"sub": "1", "info": "x" * 100})
    assert_invalid_connect(small, token)
    assert small.verify_connect(hs({}), NOW).user == ""


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 42},
        {"sub": None, "channels": "news"},
        {"channels": [1]},
        {"exp": "soon"},
        {"exp": True},
        {"expire_at": "later"},
        {"nbf": []},
        {"channel": "news"},
        {"channel": 5},
    ],
)
def test_malformed_claims(verifier: TokenVerifier, claims: dict[str, object]) -> None:
    assert_invalid_connect(verifier, hs(claims))


def test_malformed_claims_win_over_expiry(verifier: TokenVerifier) -> None:
    assert_invalid_connect(verifier, hs({"sub": 42, "exp": 1}))
    assert_invalid_connect(verifier, hs({"channel": "news", "exp": 1}))


def test_empty_channel_claim_is_tolerated(verifier: TokenVerifier) -> None:
    """Centrifugo (Go) cannot tell ``"channel": ""`` from absent; neither do we."""
    assert verifier.verify_connect(hs({"sub": "1", "channel": ""}), NOW).user == "1"


def test_nbf(verifier: TokenVerifier) -> None:
    assert verifier.verify_connect(hs({"nbf": int(NOW)}), NOW).user == ""
    assert_invalid_connect(verifier, hs({"nbf": int(NOW) + 5}))


def test_iat_is_ignored(verifier: TokenVerifier) -> None:
    assert verifier.verify_connect(hs({"iat": int(NOW) + 3600}), NOW).user == ""


# Absurd date claims, as raw JSON: NaN and Infinity are what Python's json (and so pyjwt)
# decodes from the literals, and a 5000-digit integer is beyond what it will parse at all.
ABSURD_DATES = [
    pytest.param("1e20", id="1e20"),
    pytest.param("1e300", id="1e300"),
    pytest.param("1e400", id="overflows-to-inf"),
    pytest.param("Infinity", id="Infinity"),
    pytest.param("-Infinity", id="-Infinity"),
    pytest.param("NaN", id="NaN"),
    pytest.param("9223372036854775808", id="2**63"),
    pytest.param("1" + "0" * 400, id="400-digit-int"),
    pytest.param("1" + "0" * 5000, id="5000-digit-int"),
    pytest.param(str(MAX_NUMERIC_DATE + 1), id="year-10000"),
    pytest.param('"1700000060"', id="string"),
    pytest.param("[1700000060]", id="list"),
    pytest.param("false", id="bool"),
]


def raw_hs(payload: str) -> str:
    """A token signed over raw JSON (pyjwt would refuse to encode some of these)."""
    return jwt.api_jws.encode(payload.encode(), SECRET, algorithm="HS256")


@pytest.mark.parametrize("name", ["exp", "nbf", "iat", "expire_at"])
@pytest.mark.parametrize("value", ABSURD_DATES)
def test_absurd_date_claims_are_invalid(verifier: TokenVerifier, name: str, value: str) -> None:
    """Invalid (3500 / 103), never expired, never accepted with an unencodable ``ttl``."""
    assert_invalid_connect(verifier, raw_hs(f'{{"sub": "1", "{name}": {value}}}'))
    assert_denied(verifier, raw_hs(f'{{"sub": "1", "channel": "c", "{name}": {value}}}'))


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [-1, -1e20, -(10**30)])
def test_negative_dates_are_invalid(verifier: TokenVerifier, name: str, value: float) -> None:
    assert_invalid_connect(verifier, hs({"sub": "1", name: value}))
    assert_denied(verifier, hs({"sub": "1", "channel": "c", name: value}))


def test_negative_expire_at_means_never_within_range(verifier: TokenVerifier) -> None:
    assert verifier.verify_connect(hs({"expire_at": -MAX_NUMERIC_DATE}), NOW).expire_at is None
    assert_invalid_connect(verifier, hs({"expire_at": -MAX_NUMERIC_DATE - 1}))
    assert_invalid_connect(verifier, hs({"expire_at": -1e20}))


def test_largest_date_is_accepted(verifier: TokenVerifier) -> None:
    creds = verifier.verify_connect(hs({"exp": MAX_NUMERIC_DATE, "iat": MAX_NUMERIC_DATE}), NOW)
    assert creds.expire_at == MAX_NUMERIC_DATE
    sub = verifier.verify_subscribe(hs({"channel": "c", "expire_at": MAX_NUMERIC_DATE}), NOW)
    assert sub.expire_at == MAX_NUMERIC_DATE


def test_unencodable_info_is_invalid(verifier: TokenVerifier) -> None:
    """``info`` is re-encoded for other clients; an integer beyond 64 bits cannot be."""
    assert_invalid_connect(verifier, hs({"info": {"n": 2**64}}))
    assert_denied(verifier, hs({"channel": "c", "info": [2**70]}))


# --- expire_at -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"exp": int(NOW) + 60}, int(NOW) + 60),
        ({"exp": int(NOW) + 60, "expire_at": int(NOW) + 3600}, int(NOW) + 3600),
        ({"exp": int(NOW) + 60, "expire_at": 0}, None),
        ({"expire_at": 0}, None),
        ({"expire_at": -1}, None),
        ({"expire_at": int(NOW) + 5}, int(NOW) + 5),
        ({"exp": int(NOW) + 60, "expire_at": None}, int(NOW) + 60),
        # In the past: reported as is; rejecting it (error 110) is the connect handler's job.
        ({"exp": int(NOW) + 60, "expire_at": int(NOW) - 5}, int(NOW) - 5),
    ],
)
def test_expire_at(verifier: TokenVerifier, claims: dict[str, object], expected: int | None) -> None:
    assert verifier.verify_connect(hs(claims), NOW).expire_at == expected
    assert verifier.verify_subscribe(hs({**claims, "channel": "c"}), NOW).expire_at == expected


def test_expire_at_does_not_rescue_expired_token(verifier: TokenVerifier) -> None:
    with pytest.raises(ClientError) as info:
        verifier.verify_connect(hs({"exp": int(NOW) - 1, "expire_at": int(NOW) + 3600}), NOW)
    assert_expired(info)


# --- asymmetric keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rsa(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    verifier = TokenVerifier(Keys(rsa_public_key=_pem(rsa_key)))
    token = jwt.encode({"sub": "7", "exp": int(NOW) + 1}, rsa_key, algorithm=alg)
    assert verifier.verify_connect(token, NOW).user == "7"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_invalid_connect(verifier, jwt.encode({"sub": "7"}, other, algorithm=alg))


def test_ecdsa(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(Keys(ecdsa_public_key=_pem(ec_key)))
    assert verifier.algorithms == ("ES256",)
    token = jwt.encode({"sub": "8", "info": [1, 2]}, ec_key, algorithm="ES256")
    creds = verifier.verify_connect(token, NOW)
    assert (creds.user, creds.info) == ("8", [1, 2])
    other = ec.generate_private_key(ec.SECP256R1())
    assert_invalid_connect(verifier, jwt.encode({"sub": "8"}, other, algorithm="ES256"))


@pytest.mark.parametrize(("curve", "alg"), [(ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")])
def test_ecdsa_curve_selects_algorithm(curve: ec.EllipticCurve, alg: str) -> None:
    key = ec.generate_private_key(curve)
    verifier = TokenVerifier(Keys(ecdsa_public_key=_pem(key)))
    assert verifier.algorithms == (alg,)
    assert verifier.verify_connect(jwt.encode({"sub": "9"}, key, algorithm=alg), NOW).user == "9"


def test_all_keys_together(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(
        Keys(hmac_secret_key=SECRET, rsa_public_key=_pem(rsa_key), ecdsa_public_key=_pem(ec_key))
    )
    assert set(verifier.algorithms) == {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256"}
    for key, alg in ((SECRET, "HS256"), (rsa_key, "RS256"), (ec_key, "ES256")):
        assert verifier.verify_connect(jwt.encode({"sub": alg}, key, algorithm=alg), NOW).user == alg


def test_unconfigured_algorithm(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    hmac_only = TokenVerifier(Keys(hmac_secret_key=SECRET))
    assert_invalid_connect(hmac_only, jwt.encode({"sub": "1"}, rsa_key, algorithm="RS256"))
    assert_invalid_connect(hmac_only, jwt.encode({"sub": "1"}, ec_key, algorithm="ES256"))
    rsa_only = TokenVerifier(Keys(rsa_public_key=_pem(rsa_key)))
    assert_invalid_connect(rsa_only, hs({"sub": "1"}))
    assert_invalid_connect(rsa_only, jwt.encode({"sub": "1"}, rsa_key, algorithm="PS256"))
    nothing = TokenVerifier(Keys())
    assert nothing.algorithms == ()
    assert_invalid_connect(nothing, hs({"sub": "1"}))


def test_rsa_key_cannot_be_used_as_hmac_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    """Algorithm confusion: HS256 signed with the RSA public PEM as secret must not pass."""
    pem = _pem(rsa_key)
    verifier = TokenVerifier(Keys(rsa_public_key=pem))
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(b'{"sub":"admin"}')
    import hashlib
    import hmac

    signing_input = header + b"." + payload
    sig = jwt.utils.base64url_encode(hmac.new(pem.encode(), signing_input, hashlib.sha256).digest())
    assert_invalid_connect(verifier, (signing_input + b"." + sig).decode())


# --- invalid configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        Keys(rsa_public_key="not a pem"),
        Keys(ecdsa_public_key="-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        Keys(rsa_public_key="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    ],
)
def test_invalid_pem(keys: Keys) -> None:
    with pytest.raises(ValueError, match="not a valid PEM"):
        TokenVerifier(keys)


def test_wrong_key_type(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="not an RSA public key"):
        TokenVerifier(Keys(rsa_public_key=_pem(ec_key)))
    with pytest.raises(ValueError, match="not an EC public key"):
        TokenVerifier(Keys(ecdsa_public_key=_pem(rsa_key)))


def test_private_key_pem_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError, match="rsa_public_key"):
        TokenVerifier(Keys(rsa_public_key=private_pem))


def test_unsupported_curve() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ValueError, match="curve"):
        TokenVerifier(Keys(ecdsa_public_key=_pem(key)))


def test_pem_as_hmac_secret_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="hmac_secret_key"):
        TokenVerifier(Keys(hmac_secret_key=_pem(rsa_key)))


def test_certificate_pem_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    verifier = TokenVerifier(Keys(rsa_public_key=cert.public_bytes(serialization.Encoding.PEM).decode()))
    assert verifier.verify_connect(jwt.encode({"sub": "c"}, rsa_key, algorithm="RS256"), NOW).user == "c"


def test_bad_max_token_size() -> None:
    with pytest.raises(ValueError, match="max_token_size"):
        TokenVerifier(Keys(hmac_secret_key=SECRET), max_token_size=0)


# --- audience / issuer ---------------------------------------------------------------------------


def test_aud_iss_ignored_by_default(verifier: TokenVerifier) -> None:
    assert verifier.verify_connect(hs({"sub": "1", "aud": "other", "iss": "other"}), NOW).user == "1"


def test_audience() -> None:
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET), audience="gw")
    assert verifier.verify_connect(hs({"aud": "gw"}), NOW).user == ""
    assert verifier.verify_connect(hs({"aud": ["x", "gw"]}), NOW).user == ""
    for bad in ({"aud": "other"}, {"aud": ["other"]}, {}, {"aud": 1}):
        assert_invalid_connect(verifier, hs(bad))
    with pytest.raises(ClientError) as info:
        verifier.verify_subscribe(hs({"channel": "c", "aud": "other"}), NOW)
    assert info.value.code == 103


def test_issuer() -> None:
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET), issuer="backend")
    assert verifier.verify_connect(hs({"iss": "backend"}), NOW).user == ""
    for bad in ({"iss": "other"}, {}):
        assert_invalid_connect(verifier, hs(bad))
    # pyjwt refuses to encode a non-string iss, so sign the raw JSON.
    assert_invalid_connect(verifier, jwt.api_jws.encode(b'{"iss": ["backend"]}', SECRET, algorithm="HS256"))


# --- subscription tokens -------------------------------------------------------------------------


def assert_denied(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(ClientError) as info:
        verifier.verify_subscribe(token, NOW)
    assert info.value.code == 103
    assert info.value.message == "permission denied"


def test_subscribe_valid(verifier: TokenVerifier) -> None:
    token = hs({"sub": "42", "channel": "$private", "client": "c1", "exp": int(NOW) + 5, "info": {"r": 1}})
    assert verifier.verify_subscribe(token, NOW) == SubscribeCredentials(
        user="42", channel="$private", client="c1", expire_at=int(NOW) + 5, info={"r": 1}
    )


def test_subscribe_minimal(verifier: TokenVerifier) -> None:
    assert verifier.verify_subscribe(hs({"channel": "news"}), NOW) == SubscribeCredentials(
        user="", channel="news", client=None, expire_at=None, info=None
    )


def test_subscribe_expired(verifier: TokenVerifier) -> None:
    with pytest.raises(ClientError) as info:
        verifier.verify_subscribe(hs({"channel": "news", "exp": int(NOW)}), NOW)
    assert_expired(info)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        hs({"channel": "news"}, secret=SECRET + "x"),
        hs({"channel": "news", "exp": 1}, secret=SECRET + "x"),
        jwt.encode({"channel": "news"}, "", algorithm="none"),
        hs({"sub": "1"}),  # a connection token: no channel
        hs({"channel": ""}),
        hs({"channel": 5}),
        hs({"channel": "news", "sub": 1}),
        hs({"channel": "news", "client": 1}),
        hs({"channel": "news", "exp": "x"}),
        hs({"channel": "news", "nbf": int(NOW) + 1}),
        hs({"channel": "news", "info": "x" * 20_000}),
    ],
)
def test_subscribe_invalid(verifier: TokenVerifier, token: str) -> None:
    assert_denied(verifier, token)


# --- tools.token ---------------------------------------------------------------------------------


def test_mint_token_round_trip(verifier: TokenVerifier) -> None:
    token = mint_token(SECRET, user="42", now=NOW, exp_seconds=60, info={"n": 1}, channels=["a"])
    assert verifier.verify_connect(token, NOW) == ConnectCredentials(
        user="42", expire_at=int(NOW) + 60, info={"n": 1}, channels=("a",), meta=None
    )
    sub = mint_token(SECRET, user="42", now=NOW, channel="chat", algorithm="HS512")
    assert verifier.verify_subscribe(sub, NOW).channel == "chat"
    with pytest.raises(Disconnect):
        verifier.verify_connect(sub, NOW)  # a subscription token is not a connection token


def test_mint_token_expiry(verifier: TokenVerifier) -> None:
    assert (
        verifier.verify_connect(mint_token(SECRET, user="1", exp_seconds=None, now=NOW), NOW).expire_at
        is None
    )
    with pytest.raises(ClientError) as info:
        verifier.verify_connect(mint_token(SECRET, user="1", exp_seconds=-1, now=NOW), NOW)
    assert_expired(info)


def test_mint_token_default_clock(verifier: TokenVerifier) -> None:
    import time

    now = time.time()
    creds = verifier.verify_connect(mint_token(SECRET, user="1"), now)
    assert creds.expire_at is not None
    assert now + 3500 < creds.expire_at <= now + 3601


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    return out.strip()


def test_cli_prints_a_verifiable_token(verifier: TokenVerifier, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    token = _cli(capsys, ["--secret", SECRET, "--user", "42", "--info", '{"name": "Ann"}', "--ttl", "600"])
    now = time.time()
    creds = verifier.verify_connect(token, now)
    assert (creds.user, creds.info) == ("42", {"name": "Ann"})
    assert creds.expire_at is not None and now < creds.expire_at <= now + 601


def test_cli_subscription_and_no_exp(verifier: TokenVerifier, capsys: pytest.CaptureFixture[str]) -> None:
    token = _cli(capsys, ["--secret", SECRET, "--channel", "news", "--ttl", "0"])
    assert verifier.verify_subscribe(token, NOW) == SubscribeCredentials(
        user="", channel="news", client=None, expire_at=None, info=None
    )


def test_cli_secret_from_env(
    verifier: TokenVerifier, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert verifier.verify_connect(_cli(capsys, ["--user", "e"]), NOW).user == "e"


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_cli_secret_from_config(
    verifier: TokenVerifier,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    suffix: str,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "wrong-secret-from-env-that-must-not-be-used-0123456789")
    path = tmp_path / f"config{suffix}"
    if suffix == ".toml":
        path.write_text(f'[client.token]\nhmac_secret_key = "{SECRET}"\n')
    else:
        path.write_text(json.dumps({"client": {"token": {"hmac_secret_key": SECRET}}}))
    assert verifier.verify_connect(_cli(capsys, ["--config", str(path), "--user", "c"]), NOW).user == "c"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--secret", SECRET, "--info", "{not json"],
        ["--secret", SECRET, "--config", "x.toml"],
        ["--config", "/nonexistent/shardgate.toml"],
    ],
)
def test_cli_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().out == ""


def test_cli_config_without_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    path = tmp_path / "c.toml"
    path.write_text("[client]\n")
    with pytest.raises(SystemExit):
        main(["--config", str(path)])
    assert "hmac_secret_key" in capsys.readouterr().err


# --- audience / issuer from config, regexes ---------------------------------------------------


def test_audience_and_issuer_from_keys() -> None:
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET, audience="gw", issuer="backend"))
    assert verifier.verify_connect(hs({"aud": ["x", "gw"], "iss": "backend"}), NOW).user == ""
    for bad in ({"aud": "gw"}, {"iss": "backend"}, {"aud": "gw", "iss": "backend2"}, {"aud": "g", "iss": "backend"}):
        assert_invalid_connect(verifier, hs(bad))


def test_audience_regex() -> None:
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET, audience_regex=r"gw-(eu|us)"))
    for good in ("gw-eu", ["other", "gw-us"]):
        assert verifier.verify_connect(hs({"aud": good}), NOW).user == ""
    # Full match only: a prefix or a suffix is not enough.
    for bad in ({"aud": "gw-eu-x"}, {"aud": "xgw-eu"}, {"aud": ["gw"]}, {}, {"aud": 5}, {"aud": [5]}):
        assert_invalid_connect(verifier, hs(bad))
    assert_denied(verifier, hs({"channel": "c", "aud": "nope"}))


def test_issuer_regex() -> None:
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET, issuer_regex=r"https://auth\.example\.com/t/\w+"))
    assert verifier.verify_connect(hs({"iss": "https://auth.example.com/t/acme"}), NOW).user == ""
    for bad in ({"iss": "https://auth.example.com/t/acme/x"}, {"iss": "https://auth.example.com/t/"}, {}):
        assert_invalid_connect(verifier, hs(bad))
    assert_invalid_connect(verifier, jwt.api_jws.encode(b'{"iss": 1}', SECRET, algorithm="HS256"))


def test_exact_and_regex_both_apply() -> None:
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET, audience="gw", audience_regex="g.*"))
    assert verifier.verify_connect(hs({"aud": "gw"}), NOW).user == ""
    assert_invalid_connect(verifier, hs({"aud": "gx"}))


@pytest.mark.parametrize("setting", ["audience_regex", "issuer_regex"])
def test_bad_regex_is_rejected(setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        TokenVerifier(Keys(hmac_secret_key=SECRET, **{setting: "(unclosed"}))  # type: ignore[arg-type]


# --- HMAC key rotation ---------------------------------------------------------------------------

PREVIOUS = "previous-secret-that-is-long-enough-for-hs512-0123456789abcdef0123456789abcd"
UNTIL = int(NOW) + 100


@pytest.fixture
def rotating() -> TokenVerifier:
    return TokenVerifier(
        Keys(hmac_secret_key=SECRET, hmac_previous_secret_key=PREVIOUS, hmac_previous_secret_key_valid_until=UNTIL)
    )


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_previous_key_valid_before_deadline(rotating: TokenVerifier, alg: str) -> None:
    old = hs({"sub": "1"}, secret=PREVIOUS, alg=alg)
    assert rotating.verify_connect(old, NOW).user == "1"
    assert rotating.verify_connect(old, UNTIL - 0.001).user == "1"
    assert rotating.verify_subscribe(hs({"channel": "c"}, secret=PREVIOUS, alg=alg), NOW).channel == "c"


def test_previous_key_rejected_from_deadline(rotating: TokenVerifier) -> None:
    old = hs({"sub": "1"}, secret=PREVIOUS)
    for now in (UNTIL, UNTIL + 1):
        with pytest.raises(Disconnect) as info:
            rotating.verify_connect(old, now)
        assert info.value.code == 3500
        with pytest.raises(ClientError) as sub_info:
            rotating.verify_subscribe(hs({"channel": "c"}, secret=PREVIOUS), now)
        assert sub_info.value.code == 103


def test_current_key_unaffected_by_rotation(rotating: TokenVerifier) -> None:
    for now in (NOW, UNTIL + 10_000):
        assert rotating.verify_connect(hs({"sub": "2"}), now).user == "2"
    assert_invalid_connect(rotating, hs({"sub": "3"}, secret=SECRET + "x"))


def test_previous_key_expired_token_is_109(rotating: TokenVerifier) -> None:
    with pytest.raises(ClientError) as info:
        rotating.verify_connect(hs({"exp": int(NOW) - 1}, secret=PREVIOUS), NOW)
    assert_expired(info)


def test_previous_key_alongside_rsa_key(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(
        Keys(rsa_public_key=_pem(rsa_key), hmac_previous_secret_key=PREVIOUS,
             hmac_previous_secret_key_valid_until=UNTIL)
    )
    assert verifier.verify_connect(hs({"sub": "1"}, secret=PREVIOUS), NOW).user == "1"
    assert verifier.verify_connect(jwt.encode({"sub": "r"}, rsa_key, algorithm="RS256"), NOW).user == "r"
    assert set(verifier.algorithms) >= {"HS256", "RS256"}


def test_rotation_settings_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="hmac_previous_secret_key_valid_until"):
        TokenVerifier(Keys(hmac_secret_key=SECRET, hmac_previous_secret_key=PREVIOUS))
    with pytest.raises(ValueError, match="without hmac_previous_secret_key"):
        TokenVerifier(Keys(hmac_secret_key=SECRET, hmac_previous_secret_key_valid_until=UNTIL))


# --- JWKS ------------------------------------------------------------------------------------------

_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def jwk_of(key: _PrivateKey, kid: str, **extra: object) -> dict[str, object]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    else:
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    return {**data, "kid": kid, **extra}


def signed(key: _PrivateKey, alg: str, claims: Mapping[str, object], kid: str | None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(dict(claims), key, algorithm=alg, headers=headers)


def write_jwks(path: Path, *jwks: dict[str, object]) -> str:
    path.write_text(json.dumps({"keys": list(jwks)}))
    return path.resolve().as_uri()


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def ec384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def test_jwks_file_rsa_ec_okp(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    uri = write_jwks(
        tmp_path / "jwks.json",
        jwk_of(rsa_key, "r1"), jwk_of(ec_key, "e1"), jwk_of(ec384_key, "e3"), jwk_of(ed_key, "ed", use="sig"),
    )
    verifier = TokenVerifier(Keys(jwks_public_endpoint=uri, audience="gw"))
    assert verifier.jwks is not None and verifier.jwks.kids == {"r1", "e1", "e3", "ed"}
    claims = {"sub": "u", "aud": "gw"}
    cases: list[tuple[_PrivateKey, str, str]] = [
        (rsa_key, "RS256", "r1"), (rsa_key, "RS384", "r1"), (rsa_key, "RS512", "r1"),
        (ec_key, "ES256", "e1"), (ec384_key, "ES384", "e3"), (ed_key, "EdDSA", "ed"),
    ]
    for key, alg, kid in cases:
        assert verifier.verify_connect(signed(key, alg, claims, kid), NOW).user == "u", alg
        assert verifier.verify_subscribe(signed(key, alg, {**claims, "channel": "c"}, kid), NOW).channel == "c"
    # Wrong audience with a genuine JWKS signature.
    assert_invalid_connect(verifier, signed(rsa_key, "RS256", {"aud": "x"}, "r1"))


def test_jwks_key_only_verifies_its_own_algorithms(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    uri = write_jwks(tmp_path / "jwks.json", jwk_of(rsa_key, "r1"), jwk_of(ec_key, "e1"),
                     jwk_of(rsa_key, "r256", alg="RS256"))
    verifier = TokenVerifier(Keys(jwks_public_endpoint=uri))
    # Signed by another key under a known kid, and a kid naming a key of another type.
    assert_invalid_connect(verifier, signed(ed_key, "EdDSA", {}, "r1"))
    assert_invalid_connect(verifier, signed(ec_key, "ES256", {}, "r1"))
    assert_invalid_connect(verifier, signed(rsa_key, "RS256", {}, "e1"))
    # An explicit "alg" in the JWK narrows the family.
    assert verifier.verify_connect(signed(rsa_key, "RS256", {}, "r256"), NOW).user == ""
    assert_invalid_connect(verifier, signed(rsa_key, "RS512", {}, "r256"))
    # HS256 with the RSA modulus as a secret can never be chosen via a kid.
    assert_invalid_connect(verifier, jwt.encode({}, "whatever-secret-0123456789abcdef", algorithm="HS256",
                                                headers={"kid": "r1"}))
    # No kid: JWKS keys are looked up by kid only.
    assert_invalid_connect(verifier, signed(rsa_key, "RS256", {}, None))


def test_parse_jwks_skips_unusable_keys(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    document = {
        "keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},  # a shared secret: never from a JWKS
            {**jwk_of(rsa_key, "enc"), "use": "enc"},
            {k: v for k, v in jwk_of(rsa_key, "x").items() if k != "kid"},
            jwk_of(rsa_key, "ps", alg="PS256"),
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            jwk_of(ec_key, "ok"),
            "not an object",
        ]
    }
    assert set(parse_jwks(json.dumps(document).encode())) == {"ok"}
    for bad in (b"not json", b"[]", b'{"keys": 1}', b"\xff"):
        with pytest.raises(ValueError):
            parse_jwks(bad)


def test_jwks_and_static_keys_coexist(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    uri = write_jwks(tmp_path / "jwks.json", jwk_of(rsa_key, "r1"))
    verifier = TokenVerifier(Keys(hmac_secret_key=SECRET, rsa_public_key=_pem(other_rsa), jwks_public_endpoint=uri))
    assert verifier.verify_connect(signed(rsa_key, "RS256", {"sub": "j"}, "r1"), NOW).user == "j"
    assert verifier.verify_connect(signed(other_rsa, "RS256", {"sub": "s"}, None), NOW).user == "s"
    # A kid the JWKS does not know falls back to the static key for the alg.
    assert verifier.verify_connect(signed(other_rsa, "RS256", {"sub": "s"}, "unknown"), NOW).user == "s"
    assert verifier.verify_connect(hs({"sub": "h"}), NOW).user == "h"
    assert verifier.verify_connect(jwt.encode({"sub": "h"}, SECRET, headers={"kid": "r1x"}), NOW).user == "h"


def test_jwks_file_unknown_kid_reloads_inline_at_most_every_30s(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "jwks.json"
    uri = write_jwks(path, jwk_of(rsa_key, "r1"))
    verifier = TokenVerifier(Keys(jwks_public_endpoint=uri))
    jwks = verifier.jwks
    assert jwks is not None and jwks.fetches == 1
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_jwks(path, jwk_of(rsa_key, "r1"), jwk_of(new_key, "r2"))
    # A file is re-read inline, so the very first token with the new kid already verifies.
    assert verifier.verify_connect(signed(new_key, "RS256", {"sub": "2"}, "r2"), NOW).user == "2"
    assert jwks.fetches == 2
    # Unknown kids within 30 s of that refresh do not re-read the file ...
    third = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_jwks(path, jwk_of(third, "r3"))
    assert_invalid_connect(verifier, signed(third, "RS256", {}, "r3"))
    with pytest.raises(Disconnect):
        verifier.verify_connect(signed(third, "RS256", {}, "r3"), NOW + 29.9)
    assert jwks.fetches == 2
    # ... a forged token under a known kid never triggers a read ...
    with pytest.raises(Disconnect):
        verifier.verify_connect(signed(third, "RS256", {}, "r1"), NOW + 31)
    assert jwks.fetches == 2
    # ... and after 30 s the unknown kid reloads; the new set replaces the old one.
    assert verifier.verify_connect(signed(third, "RS256", {"sub": "3"}, "r3"), NOW + 30).user == "3"
    assert jwks.fetches == 3 and jwks.kids == {"r3"}
    with pytest.raises(Disconnect):
        verifier.verify_connect(signed(rsa_key, "RS256", {}, "r1"), NOW + 30)


def test_jwks_file_problems_fail_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jwks_public_endpoint"):
        TokenVerifier(Keys(jwks_public_endpoint=(tmp_path / "missing.json").as_uri()))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="jwks_public_endpoint"):
        TokenVerifier(Keys(jwks_public_endpoint=(tmp_path / "bad.json").as_uri()))
    for url in ("ftp://example.com/jwks", "example.com/jwks", "http:///jwks", "file://otherhost/jwks"):
        with pytest.raises(ValueError, match="jwks_public_endpoint"):
            TokenVerifier(Keys(jwks_public_endpoint=url))


class FakeHttp:
    """Stands in for the network and the thread: documents to serve, jobs to run by hand."""

    def __init__(self) -> None:
        self.documents: list[bytes | Exception] = []
        self.default: bytes | Exception = OSError("no document")
        self.requests: list[tuple[str, float]] = []
        self.jobs: list[Callable[[], None]] = []

    def fetch(self, url: str, timeout: float) -> bytes:
        self.requests.append((url, timeout))
        item = self.documents.pop(0) if self.documents else self.default
        if isinstance(item, Exception):
            raise item
        return item

    def spawn(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run_jobs(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def jwks_bytes(*jwks: dict[str, object]) -> bytes:
    return json.dumps({"keys": list(jwks)}).encode()


def http_verifier(fake: FakeHttp, *, prefetch: bool = True) -> tuple[TokenVerifier, JwksCache]:
    cache = JwksCache("https://auth.example.com/.well-known/jwks.json", fetch=fake.fetch, spawn=fake.spawn,
                      clock=lambda: NOW)
    return TokenVerifier(Keys(), jwks=cache, prefetch=prefetch), cache


def test_jwks_http_never_fetches_on_the_verify_path(rsa_key: rsa.RSAPrivateKey) -> None:
    fake = FakeHttp()
    fake.default = jwks_bytes(jwk_of(rsa_key, "r1"))
    verifier, cache = http_verifier(fake, prefetch=False)
    assert fake.jobs == [] and fake.requests == []  # construction alone starts nothing
    token = signed(rsa_key, "RS256", {"sub": "1"}, "r1")
    # Unknown kid: invalid now, one background job queued, nothing fetched inline.
    assert_invalid_connect(verifier, token)
    assert len(fake.jobs) == 1 and fake.requests == [] and cache.refreshing
    # While it runs, more unknown kids neither fetch nor queue another job.
    with pytest.raises(ClientError) as info:
        verifier.verify_subscribe(signed(rsa_key, "RS256", {"channel": "c"}, "r1"), NOW + 60)
    assert info.value.code == 103
    assert len(fake.jobs) == 1
    fake.run_jobs()
    assert not cache.refreshing
    assert fake.requests == [("https://auth.example.com/.well-known/jwks.json", 1.0)]
    assert verifier.verify_connect(token, NOW + 1).user == "1"


def test_jwks_http_prefetch_and_rate_limit(rsa_key: rsa.RSAPrivateKey) -> None:
    fake = FakeHttp()
    fake.default = jwks_bytes(jwk_of(rsa_key, "r1"))
    verifier, cache = http_verifier(fake)
    assert len(fake.jobs) == 1  # prefetch
    fake.run_jobs()
    assert verifier.verify_connect(signed(rsa_key, "RS256", {"sub": "1"}, "r1"), NOW).user == "1"
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake.default = jwks_bytes(jwk_of(rsa_key, "r1"), jwk_of(new_key, "r2"))
    r2 = signed(new_key, "RS256", {"sub": "2"}, "r2")
    # The prefetch does not count against the 30 s limit: the first unknown kid refreshes.
    assert_invalid_connect(verifier, r2)
    fake.run_jobs()
    assert verifier.verify_connect(r2, NOW).user == "2"
    # A second unknown kid within 30 s of the last on-demand refresh waits.
    r3_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake.default = jwks_bytes(jwk_of(r3_key, "r3"))
    r3 = signed(r3_key, "RS256", {"sub": "3"}, "r3")
    for now in (NOW + 1, NOW + 29.9):
        with pytest.raises(Disconnect):
            verifier.verify_connect(r3, now)
    assert fake.jobs == []
    with pytest.raises(Disconnect):
        verifier.verify_connect(r3, NOW + 30)
    assert len(fake.jobs) == 1
    fake.run_jobs()
    assert verifier.verify_connect(r3, NOW + 30).user == "3"
    assert cache.kids == {"r3"}


def test_jwks_http_retry_once_then_keep_cached_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    fake = FakeHttp()
    fake.documents = [OSError("timeout"), jwks_bytes(jwk_of(rsa_key, "r1"))]
    verifier, cache = http_verifier(fake)
    fake.run_jobs()
    assert len(fake.requests) == 2  # one failure, one retry that succeeded
    token = signed(rsa_key, "RS256", {"sub": "1"}, "r1")
    assert verifier.verify_connect(token, NOW).user == "1"
    # Two failures in a row: the refresh gives up and the cached keys stay in use.
    fake.documents = [OSError("down"), OSError("still down")]
    assert_invalid_connect(verifier, signed(rsa_key, "RS256", {}, "unknown"))
    fake.run_jobs()
    assert len(fake.requests) == 4 and cache.last_error is not None
    assert verifier.verify_connect(token, NOW).user == "1"


def test_jwks_http_cache_expires_after_an_hour(rsa_key: rsa.RSAPrivateKey) -> None:
    fake = FakeHttp()
    fake.default = jwks_bytes(jwk_of(rsa_key, "r1"))
    verifier, cache = http_verifier(fake)
    fake.run_jobs()
    token = signed(rsa_key, "RS256", {"sub": "1"}, "r1")
    assert verifier.verify_connect(token, NOW + 3599).user == "1"
    assert fake.jobs == []
    # Stale: the cached key still verifies (no outage lock-out) and a refresh is started.
    fake.default = jwks_bytes()
    assert verifier.verify_connect(token, NOW + 3600).user == "1"
    assert len(fake.jobs) == 1
    fake.run_jobs()
    assert cache.kids == frozenset()
    assert_invalid_connect(verifier, token)


def test_jwks_http_thread_failure_to_start_is_survivable(rsa_key: rsa.RSAPrivateKey) -> None:
    def no_threads(job: Callable[[], None]) -> None:
        raise RuntimeError("can't start new thread")

    cache = JwksCache("http://127.0.0.1:9/jwks", spawn=no_threads)
    verifier = TokenVerifier(Keys(), jwks=cache, prefetch=True)
    assert not cache.refreshing
    assert_invalid_connect(verifier, signed(rsa_key, "RS256", {}, "r1"))


# --- config validation ---------------------------------------------------------------------------


def token_config(table_name: str = "token", /, **settings: object) -> TokenConfig:
    config = parse_config({"client": {table_name: settings}})
    result: TokenConfig = getattr(config.client, table_name)
    return result


def test_config_reads_token_settings(tmp_path: Path) -> None:
    cfg = token_config(
        hmac_secret_key="a", hmac_previous_secret_key="b", hmac_previous_secret_key_valid_until=UNTIL,
        audience="gw", audience_regex="g.*", issuer="iss", issuer_regex="i.*",
        jwks_public_endpoint="https://auth.example.com/jwks",
    )
    assert cfg == TokenConfig(
        hmac_secret_key="a", hmac_previous_secret_key="b", hmac_previous_secret_key_valid_until=UNTIL,
        audience="gw", audience_regex="g.*", issuer="iss", issuer_regex="i.*",
        jwks_public_endpoint="https://auth.example.com/jwks",
    )
    assert token_config().configured is False
    assert token_config(jwks_public_endpoint="file:///etc/jwks.json").configured
    sub = token_config("subscription_token", jwks_public_endpoint="http://localhost:8080/jwks", audience="a")
    assert sub.configured and sub.audience == "a"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"audience_regex": "(x"}, "client.token.audience_regex"),
        ({"issuer_regex": "[a-"}, "client.token.issuer_regex"),
        ({"hmac_previous_secret_key_valid_until": 5}, "client.token.hmac_previous_secret_key_valid_until"),
        ({"hmac_secret_key": "a", "hmac_previous_secret_key": "b"}, "client.token.hmac_previous_secret_key"),
        ({"hmac_previous_secret_key_valid_until": "soon"}, "client.token.hmac_previous_secret_key_valid_until"),
        ({"hmac_previous_secret_key_valid_until": -1}, "client.token.hmac_previous_secret_key_valid_until"),
        ({"jwks_public_endpoint": "ftp://example.com/jwks"}, "client.token.jwks_public_endpoint"),
        ({"jwks_public_endpoint": "/etc/jwks.json"}, "client.token.jwks_public_endpoint"),
        ({"jwks_public_endpoint": "https:///jwks"}, "client.token.jwks_public_endpoint"),
        ({"jwks_public_endpoint": "file://host/jwks"}, "client.token.jwks_public_endpoint"),
        ({"jwks_public_endpoint": "http://[::1/jwks"}, "client.token.jwks_public_endpoint"),
        ({"jwks_public_endpoint": "http://example.com:99999/jwks"}, "client.token.jwks_public_endpoint"),
        ({"audience": 5}, "client.token.audience"),
        ({"audiences": "typo"}, "client.token.audiences"),
    ],
)
def test_config_rejects_bad_token_settings(settings: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        token_config(**settings)
    assert info.value.key == key
    with pytest.raises(ConfigError) as sub_info:
        token_config("subscription_token", **settings)
    assert sub_info.value.key == key.replace("client.token", "client.subscription_token")
