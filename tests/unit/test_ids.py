"""Client ids: UUID-shaped, carrying the owning slot."""

from __future__ import annotations

import random
import uuid

import pytest

from sharding.ids import make_client_id, slot_of_client

SLOTS = sorted({0, 1, 2, 15, 16, 255, 256, 4095, 4096, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF}
               | set(random.Random(3).sample(range(0x10000), 300)))


@pytest.mark.parametrize("slot", [0, 1, 7, 0xABCD, 0xFFFF])
def test_uuid_shaped(slot: int) -> None:
    rng = random.Random(slot)
    for _ in range(50):
        cid = make_client_id(slot, rng)
        parsed = uuid.UUID(cid)
        assert str(parsed) == cid  # canonical, lower-case, 8-4-4-4-12
        assert [len(p) for p in cid.split("-")] == [8, 4, 4, 4, 12]
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_slot_round_trip_sample() -> None:
    rng = random.Random(0)
    for slot in SLOTS:
        for _ in range(3):
            assert slot_of_client(make_client_id(slot, rng)) == slot


def test_slot_round_trip_all_slots() -> None:
    rng = random.Random(1)
    for slot in range(0x10000):
        assert slot_of_client(make_client_id(slot, rng)) == slot


def test_ids_are_unique_and_deterministic() -> None:
    rng = random.Random(5)
    ids = {make_client_id(3, rng) for _ in range(5000)}
    assert len(ids) == 5000
    assert make_client_id(3, random.Random(9)) == make_client_id(3, random.Random(9))


@pytest.mark.parametrize("slot", [-1, 0x10000, 2**32])
def test_slot_out_of_range(slot: int) -> None:
    with pytest.raises(ValueError):
        make_client_id(slot, random.Random(0))


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        "abc",
        "not-a-uuid",
        "a-b-c-d-e",
        "12345678-1234-4123-8123-1234567890",  # last group too short
        "12345678-1234-4123-8123-1234567890abc",  # last group too long
        "12345678123441238123123456789012",  # uuid hex without dashes
        "12345678-1234-4123-8123-zzzz56789012",  # non-hex slot digits
        "12345678-1234-4123-8123-1234-56789012",  # six groups
        "{12345678-1234-4123-8123-123456789012}",
    ],
)
def test_foreign_ids_give_none(client_id: str) -> None:
    assert slot_of_client(client_id) is None


def test_slot_is_first_four_hex_digits_of_last_group() -> None:
    assert slot_of_client("00000000-0000-4000-8000-abcd00000000") == 0xABCD
    assert slot_of_client("00000000-0000-4000-8000-ABCD00000000") == 0xABCD


@pytest.mark.parametrize(
    "client_id",
    [
        "00000000-0000-4000-8000-+12300000000",
        "00000000-0000-4000-8000-1_2300000000",
        "00000000-0000-4000-8000- 12300000000",
    ],
)
def test_non_hex_slot_digits_are_foreign(client_id: str) -> None:
    assert slot_of_client(client_id) is None
