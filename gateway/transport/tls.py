"""The server-side TLS context from ``http_server.tls``: PEM files or inline PEM text.

``ssl.SSLContext.load_cert_chain`` reads only files, so inline ``cert_pem``/``key_pem`` (as
Centrifugo accepts) are written to a private temporary directory (mode 0700, files 0600), loaded,
and deleted at once: the key never stays on disk and no runtime directory is needed.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from gateway.config import TlsConfig

__all__ = ["server_tls_context"]


def server_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if not (tls.cert_pem or tls.key_pem):
        ctx.load_cert_chain(tls.cert_pem_file, tls.key_pem_file)
        return ctx
    with tempfile.TemporaryDirectory(prefix="shardgate-tls-") as tmp:
        paths = []
        for name, text, path in (("cert.pem", tls.cert_pem, tls.cert_pem_file),
                                 ("key.pem", tls.key_pem, tls.key_pem_file)):
            if not text:
                paths.append(path)
                continue
            file = os.path.join(tmp, name)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            paths.append(file)
        ctx.load_cert_chain(paths[0], paths[1])
    return ctx
