"""picows' private ``WSProtocol`` constructor, which the client endpoint builds by hand (to
gate connections at TCP accept), must still take the parameters our wrapper passes, in that
order. picows ships its Cython source; read the signature from it, so an upgrade that
changes it fails here, loudly, rather than mis-wiring arguments in production."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import picows
import picows.picows
from multidict import CIMultiDict

from gateway.transport.websocket import MAX_REQUEST_HEAD_SIZE, PICOWS_PROTOCOL_PARAMETERS, new_server_protocol


def _installed_parameters() -> tuple[str, ...]:
    source = Path(picows.__file__).with_name("picows.pyx").read_text()
    start = source.index("cdef class WSProtocol(")
    init = re.search(r"def __init__\(self,(.*?)\):", source[start:], re.S)
    assert init is not None, "picows.pyx: WSProtocol.__init__ not found"
    names = []
    for part in init.group(1).split(","):
        words = part.split("=")[0].split()
        if words:
            names.append(words[-1])
    return tuple(names)


def test_constructor_parameters_match_the_wrapper() -> None:
    assert _installed_parameters() == PICOWS_PROTOCOL_PARAMETERS, (
        f"picows {picows.__version__} changed WSProtocol.__init__; update new_server_protocol()")


async def test_wrapper_builds_a_server_protocol() -> None:
    proto = new_server_protocol(picows.picows.WSProtocol, ws_listener_factory=lambda request: None,
                                logger=logging.getLogger("test"), websocket_handshake_timeout=5, max_frame_size=1024,
                                read_buffer_init_size=1024)
    assert isinstance(proto, picows.picows.WSProtocol)


def test_wrapper_refuses_unknown_or_missing_parameters() -> None:
    import pytest

    with pytest.raises(TypeError, match="unknown"):
        new_server_protocol(picows.picows.WSProtocol, ws_listener_factory=None, logger=None,
                            websocket_handshake_timeout=5, max_frame_size=1, read_buffer_init_size=1, bogus=1)
    with pytest.raises(TypeError, match="missing"):
        new_server_protocol(picows.picows.WSProtocol, logger=None)


def test_request_head_limit_matches_picows() -> None:
    """The gateway answers 431 at MAX_REQUEST_HEAD_SIZE, just before picows' own limit would
    reset the connection; both limits must be the same number. The request-head hooks rely on
    picows' protocol reading through the Python-visible ``get_buffer``/``buffer_updated``."""
    source = Path(picows.__file__).with_name("picows.pyx").read_text()
    found = re.search(r"self\._http_max_size = ([0-9 *]+)\n", source)
    assert found is not None, "picows.pyx: _http_max_size not found"
    assert math.prod(int(factor) for factor in found.group(1).split("*")) == MAX_REQUEST_HEAD_SIZE, (
        f"picows {picows.__version__} changed its request head limit; update MAX_REQUEST_HEAD_SIZE")
    assert "len(data) >= self._http_max_size" in source and "len(raw_headers) >= self._http_max_size" in source
    assert "def get_buffer(self, Py_ssize_t size_hint)" in source
    assert "def buffer_updated(self, Py_ssize_t nbytes)" in source


def test_release_handshake_empties_what_picows_keeps() -> None:
    """release_handshake() writes these attributes of picows' upgrade request and response;
    a picows that renames them must fail here, not at the first connection."""
    from picows import WSUpgradeRequest, WSUpgradeResponse

    from gateway.transport.websocket import release_handshake

    assert {"headers", "path"} <= set(WSUpgradeRequest.__slots__)
    assert {"headers", "body"} <= set(WSUpgradeResponse.__slots__)

    class Transport:
        request = WSUpgradeRequest()
        response = WSUpgradeResponse.create_101_response(extra_headers={"Sec-WebSocket-Protocol": "x"})

    Transport.request.headers = CIMultiDict({"Host": "h", "Cookie": "secret"})
    Transport.request.path = b"/connection/websocket?cf_connect=token"
    release_handshake(Transport)  # type: ignore[arg-type]
    assert len(Transport.request.headers) == 0 and Transport.request.path == b""
    assert len(Transport.response.headers) == 0 and Transport.response.body is None
