"""The web admin's session tokens, login throttle and ``admin`` config table."""

from __future__ import annotations

import pytest

from gateway.api.admin import LoginThrottle, check_password, issue_session, verify_session
from gateway.config import Config, ConfigError, dev_config, parse_config

SECRET = "admin-secret"


def test_session_roundtrip_and_expiry() -> None:
    token = issue_session(SECRET, 60, now=1000)
    assert verify_session(SECRET, token, now=1001)
    assert not verify_session(SECRET, token, now=1060)  # expired
    assert not verify_session("other-secret", token, now=1001)
    assert not verify_session("", token, now=1001)
    assert issue_session(SECRET, 60, now=1000) != token  # a fresh nonce each time


def test_session_tampering() -> None:
    token = issue_session(SECRET, 60, now=1000)
    expires, nonce, sig = token.split(".")
    other = "B" if sig.endswith("A") else "A"  # a last character that really differs
    for bad in (f"9{expires}.{nonce}.{sig}", f"{expires}.{nonce}x.{sig}", f"{expires}.{nonce}.{sig[:-1]}{other}",
                f"{expires}.{nonce}", "", "a.b.c", f"{expires}.{nonce}.{sig}.x", f"-1.{nonce}.{sig}",
                f"{expires}.{nonce}.\udcff"):
        assert not verify_session(SECRET, bad, now=1001), bad


def test_check_password() -> None:
    assert check_password("pw", "pw")
    assert not check_password("pw", "PW")
    assert not check_password("pw", None)
    assert not check_password("pw", 1)
    assert not check_password("", "")  # no password configured: nobody logs in
    assert not check_password("pw", "\udcff")


def test_login_throttle() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_ip=3, total=5, window=60, clock=lambda: now[0])
    assert [throttle.allow("a") for _ in range(4)] == [True, True, True, False]
    assert [throttle.allow("b") for _ in range(3)] == [True, True, False]  # the total cap of 5
    now[0] = 61
    assert throttle.allow("a") and throttle.allow("b")


def test_admin_config() -> None:
    assert Config().admin.enabled is False
    cfg = parse_config({"admin": {"enabled": True, "password": "p", "secret": "s", "session_ttl": "1h"}})
    assert (cfg.admin.enabled, cfg.admin.password, cfg.admin.secret, cfg.admin.session_ttl) == (True, "p", "s", 3600)
    assert cfg.admin.demo_page is False
    for missing in ("password", "secret"):
        table = {"enabled": True, "password": "p", "secret": "s"}
        del table[missing]
        with pytest.raises(ConfigError, match=rf"admin\.{missing}"):
            parse_config({"admin": table})
    with pytest.raises(ConfigError, match=r"admin\.nope"):
        parse_config({"admin": {"nope": 1}})
    # Disabled, an empty password is fine.
    assert parse_config({"admin": {"enabled": False}}).admin.enabled is False


def test_dev_config_admin() -> None:
    dev = dev_config("s3cret", admin_password="pw")
    assert dev.admin.enabled and dev.admin.password == "pw" and dev.admin.secret == "s3cret"
    assert dev.admin.demo_page
    assert dev_config("s3cret").admin.enabled is False  # no password, no admin
