"""The typed model's binary form: pack/unpack of publications and client infos."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.model import (
    ClientInfo,
    PackError,
    Publication,
    StreamOptions,
    pack_client_info,
    pack_publication,
    unpack_client_info,
    unpack_publication,
)

_HEADER = struct.Struct("!BQIIIIII")
_ABSENT = 0xFFFFFFFF


def roundtrip(pub: Publication) -> Publication:
    return unpack_publication(pack_publication(pub))


# -- publications ---------------------------------------------------------------------------


def test_publication_without_info() -> None:
    pub = Publication(b'{"a":1}', None, 7)
    assert roundtrip(pub) == pub


def test_publication_with_full_info_and_tags() -> None:
    pub = Publication(b'[1,2,"x"]', ClientInfo("alice", "c-1", b'{"c":1}', b'{"ch":true}'), 42,
                      {"k": "v", "other": ""})
    assert roundtrip(pub) == pub


def test_publication_info_with_absent_extra_fields() -> None:
    pub = Publication(b"1", ClientInfo("", "c"), 1)
    back = roundtrip(pub)
    assert back.info == ClientInfo("", "c", None, None)


def test_publication_unicode() -> None:
    pub = Publication('{"t":"héllo ✓ 𝄞"}'.encode(), ClientInfo("юзер", "клиент", '"ü"'.encode()), 3,
                      {"ключ": "значение ✓"})
    back = roundtrip(pub)
    assert back == pub
    assert back.info is not None and back.info.user == "юзер"


def test_publication_null_and_empty_data() -> None:
    assert roundtrip(Publication(b"null")).data == b"null"
    assert roundtrip(Publication(b"")).data == b"null"  # nothing at all reads back as JSON null


@pytest.mark.parametrize("offset", [0, 1, 2**31, 2**32 + 5, 2**53 + 1, 2**64 - 1])
def test_publication_large_offsets(offset: int) -> None:
    assert roundtrip(Publication(b"1", None, offset)).offset == offset


def test_publication_empty_tags_read_back_as_none() -> None:
    assert roundtrip(Publication(b"1", None, 0, {})).tags is None


def test_publication_large_data() -> None:
    data = b'"' + b"x" * 200_000 + b'"'
    assert roundtrip(Publication(data, None, 1)).data == data


def test_publication_trailing_bytes_ignored() -> None:
    pub = Publication(b"1", ClientInfo("u", "c"), 2)
    assert unpack_publication(pack_publication(pub) + b"junk") == pub


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x00" * (_HEADER.size - 1)])
def test_publication_short(raw: bytes) -> None:
    with pytest.raises(PackError):
        unpack_publication(raw)


def test_publication_every_truncation_is_pack_error() -> None:
    raw = pack_publication(Publication(b'{"a":1}', ClientInfo("u", "c", b"1", b"2"), 9, {"t": "x"}))
    for cut in range(len(raw)):
        with pytest.raises(PackError):
            unpack_publication(raw[:cut])


def test_publication_unknown_version() -> None:
    raw = bytearray(pack_publication(Publication(b"1")))
    raw[0] = 3  # 1: plain, 2: marked for delta compression
    with pytest.raises(PackError, match="version"):
        unpack_publication(bytes(raw))


def test_publication_bad_tags() -> None:
    header = _HEADER.pack(1, 0, 1, _ABSENT, _ABSENT, _ABSENT, _ABSENT, 3)
    with pytest.raises(PackError, match="tags"):
        unpack_publication(header + b"1" + b"{x}")


@pytest.mark.parametrize("tags", [b"1", b"[]"])
def test_publication_tags_not_a_string_map_is_pack_error(tags: bytes) -> None:
    """Tags are a string map; anything else is a corrupt message, not a Publication."""
    header = _HEADER.pack(1, 0, 1, _ABSENT, _ABSENT, _ABSENT, _ABSENT, len(tags))
    with pytest.raises(PackError):
        unpack_publication(header + b"1" + tags)


def test_publication_invalid_utf8_user_is_pack_error() -> None:
    """A corrupt user/client field must be refused as PackError like any other corrupt
    input (the receiving side catches only PackError)."""
    header = _HEADER.pack(1, 1, 1, 2, 1, _ABSENT, _ABSENT, _ABSENT)
    with pytest.raises(PackError):
        unpack_publication(header + b"1" + b"\xff\xfe" + b"c")


def _packed_like() -> st.SearchStrategy[bytes]:
    """Bytes with a plausible header (version 1, small lengths) followed by random bytes,
    so the fuzzing reaches the field parsing and not only the version check."""
    small = st.one_of(st.integers(0, 16), st.just(_ABSENT))
    header = st.builds(lambda off, *ls: _HEADER.pack(1, off, *ls), st.integers(0, 2**64 - 1),
                       small, small, small, small, small, small)
    return st.builds(lambda h, body: h + body, header, st.binary(max_size=64))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=128), _packed_like()))
def test_random_bytes_only_raise_pack_error(raw: bytes) -> None:
    try:
        pub = unpack_publication(raw)
    except PackError:
        return
    assert isinstance(pub, Publication) and isinstance(pub.data, bytes)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), user=st.text(max_size=8), client=st.text(max_size=8),
       offset=st.integers(0, 2**64 - 1), tags=st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4),
                                                                            min_size=1, max_size=3))
def test_publication_roundtrip_property(data: bytes, user: str, client: str, offset: int,
                                        tags: dict[str, str] | None) -> None:
    pub = Publication(data or b"null", ClientInfo(user, client), offset, tags)
    assert roundtrip(pub) == pub


# -- client infos ---------------------------------------------------------------------------


@pytest.mark.parametrize("info", [
    ClientInfo("u", "c"),
    ClientInfo("", ""),
    ClientInfo("alice", "c-1", b'{"a":1}', None),
    ClientInfo("alice", "c-1", None, b'{"b":2}'),
    ClientInfo("ü✓", "клиент", b'"\xc3\xbc"', b"[]"),
])
def test_client_info_roundtrip(info: ClientInfo) -> None:
    assert unpack_client_info(pack_client_info(info)) == info


def test_client_info_truncations() -> None:
    raw = pack_client_info(ClientInfo("user", "client", b"{}", b"[]"))
    for cut in range(len(raw)):
        with pytest.raises(PackError):
            unpack_client_info(raw[:cut])


def test_client_info_invalid_utf8_is_pack_error() -> None:
    raw = struct.pack("!IIII", 1, 1, _ABSENT, _ABSENT) + b"\xff" + b"c"
    with pytest.raises(PackError):
        unpack_client_info(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_client_info_random_bytes_only_raise_pack_error(raw: bytes) -> None:
    try:
        info = unpack_client_info(raw)
    except PackError:
        return
    assert isinstance(info, ClientInfo)


# -- plain values ---------------------------------------------------------------------------


def test_stream_options_enabled() -> None:
    assert StreamOptions(10, 60.0, 3600.0).enabled
    assert not StreamOptions(0, 60.0, 3600.0).enabled
    assert not StreamOptions(10, 0.0, 3600.0).enabled


def test_publication_delta_mark_travels() -> None:
    """The delta mark (delta_publish / the publish API's delta) crosses the bus and Redis."""
    pub = Publication(b'{"a":1}', ClientInfo("u", "c"), 4, {"t": "x"}, delta=True)
    back = unpack_publication(pack_publication(pub))
    assert back == pub and back.delta
    assert not unpack_publication(pack_publication(Publication(b"1"))).delta
