"""``StolenState``: what a stolen copy of a device's state opens (issue 12, point 5).

It must open everything the state really opens and nothing else. The oracle is the
library tests' exhaustive ``Attacker`` (crypto_helpers.py), which tries every key in the
state, every DH combination and every chain walked forward on every message: over
hypothesis-chosen conversations, stolen from either side, with and without a one-time
prekey, the two open exactly the same messages, and every plaintext is the one sent.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.crypto import DeviceCrypto, ReplayError, Sealed, StolenState
from tests.crypto.crypto_helpers import ALICE, BOB, Attacker, bundle_of, new_pair

Turns = list[tuple[bool, int]]  # (alice speaks, how many messages)
turns = st.lists(st.tuples(st.booleans(), st.integers(1, 3)), min_size=0, max_size=5)


Log = list[tuple[str, str, Sealed, bytes]]  # sender, recipient, sealed, plaintext


def talk(alice: DeviceCrypto, bob: DeviceCrypto, pattern: Turns, tag: str, log: Log) -> None:
    for k, (alice_speaks, count) in enumerate(pattern):
        sender, receiver = (alice, bob) if alice_speaks else (bob, alice)
        for j in range(count):
            text = f"{tag} {k}.{j}".encode()
            sealed = sender.encrypt(receiver.device_id, text)
            assert receiver.decrypt(sender.device_id, sealed) == text
            log.append((sender.device_id, receiver.device_id, sealed, text))


def opened_by(stolen: bytes, log: Log) -> list[int]:
    thief = StolenState(stolen)
    read = []
    for i, (sender, recipient, sealed, text) in enumerate(log):
        plaintext = thief.open(sender, recipient, sealed)
        if plaintext is not None:
            assert plaintext == text
            read.append(i)
    return read


@settings(max_examples=60, deadline=None)
@given(before=turns, after=turns, steal_bob=st.booleans(), one_time=st.booleans())
def test_opens_exactly_what_the_exhaustive_attacker_opens(
    before: Turns, after: Turns, steal_bob: bool, one_time: bool
) -> None:
    alice, bob = new_pair(one_time=one_time)
    log: Log = []
    talk(alice, bob, [(True, 1), *before], "before", log)
    stolen = (bob if steal_bob else alice).to_bytes()
    talk(alice, bob, after, "after", log)
    expected = Attacker(stolen).readable([m[2] for m in log], [m[3] for m in log])
    assert opened_by(stolen, log) == expected


def test_own_later_messages_open_from_the_sending_chain() -> None:
    """Bob's state after he answered: his next messages in that chain open; after
    Alice's reply (a DH step with a key made after the theft) his next ones do not."""
    alice, bob = new_pair()
    log: Log = []
    talk(alice, bob, [(True, 1), (False, 1)], "before", log)
    stolen = bob.to_bytes()
    mark = len(log)
    talk(alice, bob, [(False, 2), (True, 1), (False, 2)], "after", log)
    # Bob's two messages in the stolen chain, then Alice's reply (the stolen ratchet
    # key opens her DH step), then nothing: Bob's new chain uses a key the thief lacks.
    assert opened_by(stolen, log) == [mark, mark + 1, mark + 2]


def test_first_contact_reopens_by_redoing_x3dh_unless_its_keys_were_deleted() -> None:
    """A first message without a one-time prekey, received *before* the theft, which
    the device's own replay list refuses: redoing X3DH with the stolen identity and
    signed prekey opens it (with the rest of Alice's first chain), until the signed
    prekey was rotated out and deleted. With a one-time prekey it never opens."""
    for one_time in (False, True):
        alice, bob = new_pair(one_time=one_time)
        log: Log = []
        talk(alice, bob, [(True, 2)], "first flight", log)
        with_keys = bob.to_bytes()
        # The device's own code refuses a replay; the thief's reader does not care.
        with pytest.raises(ReplayError):
            DeviceCrypto.from_bytes(with_keys).decrypt(ALICE, log[0][2])
        assert opened_by(with_keys, log) == ([] if one_time else [0, 1])
        # A week later: rotated; the old one kept for a grace period, then deleted.
        day = 86_400_000
        # (First, date the signed prekey that new_pair made without a clock.)
        assert bob.maintain_signed_prekeys(0, rotate_after_ms=7 * day, grace_ms=2 * day) == (
            None,
            [],
        )
        rotated, deleted = bob.maintain_signed_prekeys(
            8 * day, rotate_after_ms=7 * day, grace_ms=2 * day
        )
        assert rotated is not None and deleted == []
        assert opened_by(bob.to_bytes(), log) == ([] if one_time else [0, 1])
        _, deleted = bob.maintain_signed_prekeys(
            10 * day, rotate_after_ms=7 * day, grace_ms=2 * day
        )
        assert deleted == [1]
        assert opened_by(bob.to_bytes(), log) == []


def test_signed_prekey_schedule() -> None:
    """Made at t; rotated once it is rotate_after old; the replaced one still opens a
    late first message during its grace period, and is deleted after it."""
    day = 86_400_000
    bob = DeviceCrypto.create(BOB, one_time_prekeys=0, now_ms=0)
    late = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    late.start_session(BOB, bundle_of(bob, one_time=False))  # fetched before the rotation
    assert bob.maintain_signed_prekeys(6 * day, rotate_after_ms=7 * day, grace_ms=day) == (
        None,
        [],
    )
    rotated, _ = bob.maintain_signed_prekeys(7 * day, rotate_after_ms=7 * day, grace_ms=day)
    assert rotated is not None and rotated["id"] == 2
    assert bob.signed_prekey()["id"] == 2 and bob.signed_prekey_ids == [1, 2]
    # Within the grace period the late first message still opens.
    grace_copy = DeviceCrypto.from_bytes(bob.to_bytes())
    assert grace_copy.decrypt(ALICE, late.encrypt(BOB, b"late")) == b"late"
    assert bob.maintain_signed_prekeys(8 * day - 1, rotate_after_ms=7 * day, grace_ms=day) == (
        None,
        [],
    )
    assert bob.maintain_signed_prekeys(8 * day, rotate_after_ms=7 * day, grace_ms=day) == (
        None,
        [1],
    )
    # A state saved and reloaded keeps the times.
    again = DeviceCrypto.from_bytes(bob.to_bytes())
    week = {"rotate_after_ms": 7 * day, "grace_ms": day}
    assert again.maintain_signed_prekeys(14 * day - 1, **week)[0] is None
    assert again.maintain_signed_prekeys(14 * day, **week)[0] is not None


def test_a_prekey_without_a_time_is_dated_on_first_maintenance() -> None:
    bob = DeviceCrypto.create(BOB, one_time_prekeys=0)  # no clock given
    day = 86_400_000
    assert bob.maintain_signed_prekeys(100 * day, rotate_after_ms=day, grace_ms=day) == (None, [])
    rotated, _ = bob.maintain_signed_prekeys(101 * day, rotate_after_ms=day, grace_ms=day)
    assert rotated is not None


def test_new_session_identity_changes_nothing() -> None:
    alice, bob = new_pair()
    first = alice.encrypt(BOB, b"hello")
    before = bob.to_bytes()
    assert bob.new_session_identity(ALICE, first) == alice.identity
    assert bob.to_bytes() == before  # no session, no one-time prekey spent
    assert bob.decrypt(ALICE, first) == b"hello"
    # A repeat of the prekey message of the session now held starts none.
    assert bob.new_session_identity(ALICE, alice.encrypt(BOB, b"again")) is None
    # A message without a prekey message starts none.
    assert alice.new_session_identity(BOB, bob.encrypt(ALICE, b"answer")) is None
