"""TLS served natively: wss:// for clients and https:// for the internal port."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import urllib.request
from pathlib import Path

import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import API_KEY, SECRET, base_config, scaled
from tools.token import mint_token


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_wss_and_https(gateway_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed(tmp_path)
    gw = gateway_factory(base_config(http_server={"tls": {"enabled": True, "cert_pem_file": cert,
                                                          "key_pem_file": key}}))
    assert gw.url.startswith("wss://") and gw.internal_url.startswith("https://")
    ctx = ssl.create_default_context(cafile=cert)
    async with websockets.connect(gw.url, ssl=ctx) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, user="tls")}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        assert reply["connect"]["client"]
    with urllib.request.urlopen(gw.internal_url + "/health", context=ctx, timeout=scaled(5)) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def test_server_api_on_the_tls_client_port(gateway_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``http_api.external`` over TLS: the request is handed from the WebSocket edge to HTTP
    after the TLS layer, on the same encrypted connection."""
    cert, key = _self_signed(tmp_path)
    gw = gateway_factory(base_config(http_api={"key": API_KEY, "external": True},
                                     http_server={"tls": {"enabled": True, "cert_pem_file": cert,
                                                          "key_pem_file": key}}))
    ctx = ssl.create_default_context(cafile=cert)
    request = urllib.request.Request(gw.url.replace("wss://", "https://").split("/connection")[0] + "/api/info",
                                     data=b"{}", method="POST", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, context=ctx, timeout=scaled(5)) as resp:
        assert json.loads(resp.read())["result"]["nodes"]
