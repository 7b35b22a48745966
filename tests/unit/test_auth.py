"""Token verification: claim semantics and Centrifugo's error mapping, with an injected clock."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import ConnectCredentials, SubscribeCredentials, TokenVerifier
from gateway.errors import ClientError, Disconnect
from tools.token import SECRET_ENV, main, mint_token

SECRET = "test-secret-that-is-long-enough-for-hs512-0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Keys:
    """Stands in for gateway.config.TokenConfig (same three read-only attributes)."""

    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""


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
    """The shared constants in gateway.errors must not pick up tracebacks or causes."""
    from gateway.errors import DISCONNECT_INVALID_TOKEN, ERROR_TOKEN_EXPIRED

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
