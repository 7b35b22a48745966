"""The web admin on the internal port: off unless ``admin.enabled``; a login with
``admin.password`` gets an HMAC-signed session (HttpOnly, SameSite=Strict cookie, or a bearer
token) that every admin API call checks; wrong password or no session is 401; logins are
throttled; nothing of it is on the client port. The development default enables it with a
random password in the banner and serves the demo chat and centrifuge.js on the client port."""

from __future__ import annotations

import http.client
import json
import queue
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import Gateway, base_config, scaled

PASSWORD = "admin-password-for-tests"
ADMIN = {"admin": {"enabled": True, "password": PASSWORD, "secret": "admin-secret-for-tests"}}


def admin_banner(gw: Gateway) -> tuple[str, str, str]:
    """(admin URL, admin password, demo URL) from the development default's banner."""
    deadline = time.monotonic() + scaled(5)
    while not (m := re.search(r"admin\s+(https?://\S+/admin)\s+password\s+(\S+)", gw.banner)
               ) or "demo" not in gw.banner:
        try:
            gw.banner += gw._lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no admin/demo line in the banner:\n{gw.banner}") from None
    demo = re.search(r"demo\s+(https?://\S+/)", gw.banner)
    assert demo, gw.banner
    return m.group(1), m.group(2), demo.group(1)


def http_url(ws_url: str) -> str:
    return "http://" + urlsplit(ws_url).netloc


def call(url: str, body: Any = None, headers: dict[str, str] | None = None,
         method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=scaled(5)) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def login(base: str, password: str) -> tuple[int, dict[str, str], bytes]:
    return call(base + "/admin/login", {"password": password})


def test_admin_session(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(base_config(**ADMIN))
    base = gw.internal_url
    status, headers, page = call(base + "/admin")
    assert status == 200 and b"shardgate admin" in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, _, script = call(base + "/admin/admin.js")
    assert status == 200 and b"/admin/api/" in script

    # No session, a made-up one, and a wrong password: 401.
    assert call(base + "/admin/api/info", {})[0] == 401
    assert call(base + "/admin/api/info", {}, {"Authorization": "Bearer 9999999999.x.y"})[0] == 401
    assert call(base + "/admin/session")[0] == 401
    assert login(base, "wrong")[0] == 401
    assert login(base, "")[0] == 401
    assert call(base + "/admin/login", b"not json")[0] == 400
    # The server API key is not an admin session, nor is a session the API key.
    assert call(base + "/admin/api/info", {}, {"Authorization": "Bearer " + base_config()["http_api"]["key"]})[0] == 401

    status, headers, body = login(base, PASSWORD)
    assert status == 200
    token = json.loads(body)["token"]
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"shardgate_admin={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert base_config()["http_api"]["key"] not in body.decode()

    for auth in ({"Cookie": f"shardgate_admin={token}"}, {"Authorization": f"Bearer {token}"}):
        status, _, body = call(base + "/admin/api/info", {}, auth)
        assert status == 200, body
        assert len(json.loads(body)["result"]["nodes"]) == 2
    bearer = {"Authorization": f"Bearer {token}"}
    assert call(base + "/admin/session", headers=bearer)[0] == 200
    # A tampered token is refused.
    assert call(base + "/admin/api/info", {}, {"Authorization": f"Bearer {token[:-2]}xx"})[0] == 401

    # The server API behind the session: publish, history, channels, presence, disconnect.
    status, _, body = call(base + "/admin/api/publish", {"channel": "adm", "data": {"n": 1}}, bearer)
    assert status == 200 and "offset" in json.loads(body)["result"], body
    history = json.loads(call(base + "/admin/api/history", {"channel": "adm", "limit": -1}, bearer)[2])
    assert [p["data"] for p in history["result"]["publications"]] == [{"n": 1}]
    assert "channels" in json.loads(call(base + "/admin/api/channels", {}, bearer)[2])["result"]
    assert json.loads(call(base + "/admin/api/disconnect", {"user": "nobody"}, bearer)[2]) == {"result": {}}
    assert json.loads(call(base + "/admin/api/nope", {}, bearer)[2])["error"]["code"] == 104
    # The token minter signs with client.token.hmac_secret_key.
    minted = json.loads(call(base + "/admin/api/mint_token", {"user": "alice"}, bearer)[2])["result"]
    assert minted["claims"]["sub"] == "alice" and minted["token"].count(".") == 2
    assert json.loads(call(base + "/admin/api/mint_token", {"exp_seconds": -1}, bearer)[2])["error"]["code"] == 107

    # A browser page on another origin (another port of this host is "same-site" for the
    # SameSite cookie) cannot use the session, nor try passwords.
    cookie_auth = {"Cookie": f"shardgate_admin={token}"}
    for origin in (http_url(gw.url), "http://localhost:5173", "null"):
        cross = {**cookie_auth, "Origin": origin, "Content-Type": "text/plain"}
        assert call(base + "/admin/api/publish", {"channel": "adm", "data": {}}, cross)[0] == 403, origin
        assert call(base + "/admin/login", {"password": PASSWORD}, {"Origin": origin})[0] == 403, origin
    same = {**cookie_auth, "Origin": base}
    assert call(base + "/admin/api/info", {}, same)[0] == 200

    # Logout clears the cookie (the stateless token itself lives until it expires).
    status, headers, _ = call(base + "/admin/logout", b"{}", bearer)
    assert status == 200 and "shardgate_admin=" in headers["Set-Cookie"]

    # Nothing of the admin (nor the demo page, off outside the dev default) on the client port.
    client = http_url(gw.url)
    for path in ("/admin", "/admin/admin.js", "/", "/centrifuge.js"):
        assert call(client + path)[0] == 404, path
    # picows answers any non-GET request 400 before routing.
    assert call(client + "/admin/login", {"password": PASSWORD})[0] in (400, 404)
    assert call(client + "/admin/api/info", {}, bearer)[0] in (400, 404)


def test_admin_login_throttled(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(base_config(**ADMIN), workers=1)
    statuses = [login(gw.internal_url, "wrong")[0] for _ in range(11)]
    assert statuses == [401] * 10 + [429], statuses
    # The right password is throttled too while the window lasts.
    status, headers, _ = login(gw.internal_url, PASSWORD)
    assert status == 429 and int(headers["Retry-After"]) > 0


def test_admin_disabled_is_404(gateway: Gateway) -> None:
    base = gateway.internal_url
    for path in ("/admin", "/admin/admin.js", "/admin/session"):
        assert call(base + path)[0] == 404, path
    assert login(base, PASSWORD)[0] == 404
    assert call(base + "/admin/api/info", {})[0] == 404
    assert call(base + "/")[0] == 404


def test_dev_default_admin_and_demo(gateway_factory: Callable[..., Gateway], tmp_path: Any) -> None:
    gw = Gateway(tmp_path, None, 1)
    try:
        gw.wait_ready()
        admin_url, password, demo_url = admin_banner(gw)
        assert admin_url == gw.internal_url + "/admin"
        assert demo_url == http_url(gw.url) + "/"
        assert login(gw.internal_url, password + "x")[0] == 401
        status, _, body = login(gw.internal_url, password)
        assert status == 200
        token = json.loads(body)["token"]
        # The minter uses the dev secret: the token it makes verifies as a connect token.
        minted = json.loads(call(gw.internal_url + "/admin/api/mint_token", {"user": "bob"},
                                 {"Authorization": f"Bearer {token}"})[2])["result"]["token"]
        import jwt
        assert jwt.decode(minted, gw.dev_secret, algorithms=["HS256"])["sub"] == "bob"
        # / on the internal port leads to the admin.
        conn = http.client.HTTPConnection(urlsplit(gw.internal_url).netloc, timeout=scaled(5))
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 302 and resp.headers["Location"] == "/admin"
        conn.close()
        # The demo chat and the vendored centrifuge-js (MIT header kept) on the client port.
        status, headers, page = call(demo_url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'<script src="/centrifuge.js">' in page
        status, headers, script = call(demo_url + "centrifuge.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert b"The MIT License" in script[:2000] and b"globalThis.Centrifuge=" in script
        assert call(demo_url + "centrifuge.js", b"x", method="POST")[0] in (400, 404)
        assert call(demo_url + "other")[0] == 404
    finally:
        gw.stop()
