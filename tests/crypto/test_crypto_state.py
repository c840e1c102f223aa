"""State serialisation: versioned, complete (a restarted device carries on), and every
kind of damage is a clear CryptoError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clients.crypto import (
    CryptoError,
    DeviceCrypto,
    ReplayError,
    ReusedPrekey,
    StateError,
    StateVersionError,
)
from tests.crypto.crypto_helpers import ALICE, BOB, assert_refused_unchanged, bundle_of, new_pair

CAROL = "carol@globex.phone"


def reload(device: DeviceCrypto) -> DeviceCrypto:
    return DeviceCrypto.from_bytes(device.to_bytes())


def test_round_trip_mid_conversation_continues() -> None:
    alice, bob = new_pair()
    first = alice.encrypt(BOB, b"first")  # carries the prekey message
    assert bob.decrypt(ALICE, first) == b"first"
    held_back = [alice.encrypt(BOB, b"held %d" % i) for i in range(3)]
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"jump")) == b"jump"  # 3 keys skipped
    pending_prekey = alice.encrypt(BOB, b"still has prekey")
    assert pending_prekey.prekey is not None

    alice, bob = reload(alice), reload(bob)  # both devices restart
    assert alice.to_bytes() == reload(alice).to_bytes()  # the encoding is stable

    assert alice.encrypt(BOB, b"x").prekey is not None  # still waiting for an answer
    assert bob.decrypt(ALICE, held_back[1]) == b"held 1"  # skipped keys survived
    assert bob.decrypt(ALICE, pending_prekey) == b"still has prekey"
    for turn in range(4):
        assert alice.decrypt(BOB, bob.encrypt(ALICE, b"b%d" % turn)) == b"b%d" % turn
        alice = reload(alice)
        assert bob.decrypt(ALICE, alice.encrypt(BOB, b"a%d" % turn)) == b"a%d" % turn
        bob = reload(bob)
    assert bob.decrypt(ALICE, held_back[0]) == b"held 0"
    assert isinstance(assert_refused_unchanged(bob, ALICE, held_back[1]), ReplayError)
    assert isinstance(assert_refused_unchanged(bob, ALICE, first), ReplayError)
    assert bob.safety_number(alice.identity) == alice.safety_number(bob.identity)


def test_spent_one_time_prekeys_stay_spent_after_reload() -> None:
    bob = DeviceCrypto.create(BOB, one_time_prekeys=1)
    bundle = bundle_of(bob)
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    carol = DeviceCrypto.create(CAROL, one_time_prekeys=0)
    alice.start_session(BOB, bundle)
    carol.start_session(BOB, bundle)
    bob.decrypt(ALICE, alice.encrypt(BOB, b"x"))
    bob = reload(bob)
    assert isinstance(assert_refused_unchanged(bob, CAROL, carol.encrypt(BOB, b"y")), ReusedPrekey)


def test_unknown_version_is_a_clear_error() -> None:
    _, bob = new_pair()
    state = json.loads(bob.to_bytes())
    assert state["version"] == 1
    for version in (2, 0, "1", None, True):
        state["version"] = version
        with pytest.raises(StateVersionError, match="version"):
            DeviceCrypto.from_bytes(json.dumps(state).encode())
    del state["version"]
    with pytest.raises(StateVersionError):
        DeviceCrypto.from_bytes(json.dumps(state).encode())


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xff\xfe", b"not json", b"[]", b"{}", b'{"version": 1}', b"null", b"1e999"],
)
def test_garbage_is_a_state_error(garbage: bytes) -> None:
    with pytest.raises(StateError):
        DeviceCrypto.from_bytes(garbage)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*path, i))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(node))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def test_every_damaged_field_is_a_crypto_error() -> None:
    """Replace each field of a real state, one at a time, with values of the wrong type
    or size: loading either works (the value happened to be acceptable) or raises a
    CryptoError — never a KeyError, TypeError or the like from deep inside."""
    alice, bob = new_pair()
    bob.decrypt(ALICE, alice.encrypt(BOB, b"x"))
    alice.encrypt(BOB, b"skipped")
    bob.decrypt(ALICE, alice.encrypt(BOB, b"y"))
    state = json.loads(bob.to_bytes())
    paths = _paths(state)
    assert len(paths) > 40
    refused = 0
    wrong: list[Any] = [None, 7, -1, "", "!!", "AAAA", [], {}, True, 2**40]
    for path in paths:
        for value in wrong:
            damaged = json.dumps(_replace(state, path, value)).encode()
            try:
                DeviceCrypto.from_bytes(damaged)
            except CryptoError:
                refused += 1
            # any other exception fails the test
    assert refused > len(paths) * 5


def test_truncated_state_is_a_crypto_error() -> None:
    _, bob = new_pair()
    data = bob.to_bytes()
    for cut in range(0, len(data), max(1, len(data) // 200)):
        with pytest.raises(CryptoError):
            DeviceCrypto.from_bytes(data[:cut])
