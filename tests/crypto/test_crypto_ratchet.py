"""The Double Ratchet through DeviceCrypto: delivery, bounds, tampering, FS and PCS."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.crypto import (
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    CryptoError,
    DecryptError,
    DeviceCrypto,
    MalformedInput,
    ReplayError,
    Sealed,
    TooManySkipped,
)
from clients.crypto.kdf import kdf_ck
from clients.crypto.ratchet import Header
from tests.crypto.crypto_helpers import (
    ALICE,
    BOB,
    Attacker,
    assert_refused_unchanged,
    new_pair,
    talking_pair,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ratchet_key(sealed: Sealed) -> bytes:
    return Header.decode(sealed.header).dh


# -- round trips --------------------------------------------------------------------


@FAST
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 4)), min_size=1, max_size=40))
def test_round_trips_across_many_dh_turns(turns: list[tuple[bool, int]]) -> None:
    """Any pattern of who-sends-how-many, delivered in order, reads back exactly; every
    change of direction brings a new ratchet key (a DH ratchet step)."""
    alice, bob = new_pair()
    # Alice speaks first (only she has a session); then hypothesis picks the speakers.
    script = [(True, 1), *turns]
    keys_seen: dict[str, set[bytes]] = {ALICE: set(), BOB: set()}
    for i, (alice_speaks, count) in enumerate(script):
        sender, receiver = (alice, bob) if alice_speaks else (bob, alice)
        for j in range(count):
            text = f"turn {i} message {j}".encode() * (j + 1)
            sealed = sender.encrypt(receiver.device_id, text)
            keys_seen[sender.device_id].add(ratchet_key(sealed))
            assert receiver.decrypt(sender.device_id, sealed) == text
    changes = sum(1 for a, b in itertools.pairwise(script) if a[0] != b[0])
    # Every change of speaker is a DH ratchet step: a fresh sending key for the new speaker.
    assert len(keys_seen[ALICE]) + len(keys_seen[BOB]) == changes + 1


def test_fifty_turns_both_directions() -> None:
    alice, bob = talking_pair()
    previous_keys: set[bytes] = set()
    for turn in range(50):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        for j in range(3):
            sealed = sender.encrypt(receiver.device_id, b"%d/%d" % (turn, j))
            assert receiver.decrypt(sender.device_id, sealed) == b"%d/%d" % (turn, j)
        assert ratchet_key(sealed) not in previous_keys  # a new DH key every turn
        previous_keys.add(ratchet_key(sealed))


def test_chain_step_is_kdf_ck() -> None:
    """The ratchet's per-message keys are exactly KDF_CK's (the function the KAT pins)."""
    alice, bob = talking_pair()
    ck = alice._sessions[BOB][0].ratchet.cks
    assert ck is not None
    for _ in range(3):
        expected, ck = kdf_ck(ck)
        sealed = alice.encrypt(BOB, b"x")
        assert sealed.message_key == expected
        bob.decrypt(ALICE, sealed)


# -- out of order, exactly once -----------------------------------------------------


@FAST
@given(st.permutations(list(range(30))))
def test_any_order_within_one_chain_decrypts_exactly_once(order: list[int]) -> None:
    alice, bob = talking_pair()
    sent = [alice.encrypt(BOB, b"m%d" % i) for i in range(30)]
    for i in order:
        assert bob.decrypt(ALICE, sent[i]) == b"m%d" % i
    for i in order:  # every one again: all refused now
        with pytest.raises(ReplayError):
            bob.decrypt(ALICE, sent[i])
    assert bob._sessions[ALICE][0].ratchet.skipped == {}  # no key left behind


@FAST
@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=6),
    st.data(),
)
def test_any_order_across_dh_turns_decrypts_exactly_once(
    batches: list[int], data: st.DataObject
) -> None:
    """Speakers alternate; of each batch the receiver reads one message at once (so the
    next batch comes from a new ratchet key), and everything else arrives at the end in an
    order hypothesis picks, mixing chains of both directions."""
    alice, bob = new_pair()
    pending: dict[str, list[tuple[Sealed, bytes]]] = {ALICE: [], BOB: []}
    for b, count in enumerate(batches):
        sender, receiver = (alice, bob) if b % 2 == 0 else (bob, alice)
        sent = [
            (sender.encrypt(receiver.device_id, b"%d.%d" % (b, i)), b"%d.%d" % (b, i))
            for i in range(count)
        ]
        first = data.draw(st.integers(0, count - 1), label=f"read at once from batch {b}")
        sealed, text = sent.pop(first)
        assert receiver.decrypt(sender.device_id, sealed) == text
        pending[receiver.device_id] += sent
    for device, peer in ((bob, ALICE), (alice, BOB)):
        late = data.draw(st.permutations(pending[device.device_id]), label="late order")
        for sealed, text in late:
            assert device.decrypt(peer, sealed) == text
        for sealed, _ in late:
            with pytest.raises(ReplayError):
                device.decrypt(peer, sealed)
        assert device._sessions[peer][0].ratchet.skipped == {}
    # And the session still works both ways.
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"after")) == b"after"
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"after")) == b"after"


# -- bounds -------------------------------------------------------------------------


def test_gap_beyond_max_skip_is_refused_and_session_survives() -> None:
    alice, bob = talking_pair()
    sent = [alice.encrypt(BOB, b"%d" % i) for i in range(MAX_SKIP + 2)]
    err = assert_refused_unchanged(bob, ALICE, sent[MAX_SKIP + 1])  # would skip MAX_SKIP + 1
    assert isinstance(err, TooManySkipped)
    assert bob.decrypt(ALICE, sent[MAX_SKIP]) == b"%d" % MAX_SKIP  # skips exactly MAX_SKIP
    assert len(bob._sessions[ALICE][0].ratchet.skipped) == MAX_SKIP
    assert bob.decrypt(ALICE, sent[MAX_SKIP + 1]) == b"%d" % (MAX_SKIP + 1)
    assert bob.decrypt(ALICE, sent[0]) == b"0"
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"still here")) == b"still here"


def test_gap_beyond_max_skip_in_the_previous_chain_is_refused() -> None:
    """The PN of a new chain can demand too many skips of the old chain: refused too."""
    alice, bob = talking_pair()
    sent = [alice.encrypt(BOB, b"%d" % i) for i in range(MAX_SKIP + 2)]
    assert bob.decrypt(ALICE, sent[0]) == b"0"
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"reply")) == b"reply"
    next_chain = alice.encrypt(BOB, b"new chain")  # PN = MAX_SKIP + 2: skips MAX_SKIP + 1
    err = assert_refused_unchanged(bob, ALICE, next_chain)
    assert isinstance(err, TooManySkipped)
    assert bob.decrypt(ALICE, sent[1]) == b"1"  # one fewer to skip now
    assert bob.decrypt(ALICE, next_chain) == b"new chain"


def test_stored_skipped_keys_are_capped_oldest_evicted() -> None:
    alice, bob = talking_pair()
    chains: list[list[Sealed]] = []
    for _ in range(3):  # three chains, each leaving MAX_SKIP keys skipped
        chain = [alice.encrypt(BOB, b"%d" % i) for i in range(MAX_SKIP + 1)]
        assert bob.decrypt(ALICE, chain[-1]) == b"%d" % MAX_SKIP
        assert alice.decrypt(BOB, bob.encrypt(ALICE, b"turn")) == b"turn"
        chains.append(chain)
    skipped = bob._sessions[ALICE][0].ratchet.skipped
    assert len(skipped) == MAX_SKIPPED_KEYS
    # The first chain's keys went first; a message whose key was evicted is refused...
    err = assert_refused_unchanged(bob, ALICE, chains[0][0])
    assert isinstance(err, ReplayError)
    # ...and the newest ones still decrypt.
    assert bob.decrypt(ALICE, chains[2][0]) == b"0"
    assert bob.decrypt(ALICE, chains[1][MAX_SKIP - 1]) == b"%d" % (MAX_SKIP - 1)


# -- replays and key deletion -------------------------------------------------------


def test_replay_is_refused_and_session_survives(pair: tuple[DeviceCrypto, DeviceCrypto]) -> None:
    alice, bob = pair
    first, second = alice.encrypt(BOB, b"one"), alice.encrypt(BOB, b"two")
    assert bob.decrypt(ALICE, first) == b"one"
    assert isinstance(assert_refused_unchanged(bob, ALICE, first), ReplayError)
    assert bob.decrypt(ALICE, second) == b"two"
    assert isinstance(assert_refused_unchanged(bob, ALICE, second), ReplayError)
    # A replay from a chain that is closed (the peer has moved on) is refused too.
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"turn")) == b"turn"
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"new chain")) == b"new chain"
    assert isinstance(assert_refused_unchanged(bob, ALICE, first), ReplayError)
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"three")) == b"three"


def test_message_keys_are_deleted_after_use(pair: tuple[DeviceCrypto, DeviceCrypto]) -> None:
    alice, bob = pair
    sent = [alice.encrypt(BOB, b"%d" % i) for i in range(5)]
    assert bob.decrypt(ALICE, sent[4]) == b"4"  # keys of 0..3 now stored
    stored = bob.to_bytes()
    for s in sent[:4]:
        assert s.message_key is not None
        assert base64.b64encode(s.message_key) in stored
    for s in sent[:4]:
        bob.decrypt(ALICE, s)
    stored = bob.to_bytes()
    for s in sent:
        assert s.message_key is not None
        assert base64.b64encode(s.message_key) not in stored


# -- tampering ----------------------------------------------------------------------


def flips(data: bytes) -> list[bytes]:
    """``data`` with each one of its bits flipped in turn."""
    out = []
    for i in range(len(data) * 8):
        b = bytearray(data)
        b[i // 8] ^= 1 << (i % 8)
        out.append(bytes(b))
    return out


def check_every_flip(receiver: DeviceCrypto, peer: str, sealed: Sealed, text: bytes) -> None:
    for header in flips(sealed.header):
        assert_refused_unchanged(receiver, peer, Sealed(header, sealed.body, sealed.prekey))
    for body in flips(sealed.body):
        assert_refused_unchanged(receiver, peer, Sealed(sealed.header, body, sealed.prekey))
    if sealed.prekey is not None:
        for prekey in flips(sealed.prekey):
            assert_refused_unchanged(receiver, peer, Sealed(sealed.header, sealed.body, prekey))
    # Truncated or extended fields are refused as well.
    for bad in (
        Sealed(sealed.header[:-1], sealed.body, sealed.prekey),
        Sealed(sealed.header + b"\0", sealed.body, sealed.prekey),
        Sealed(sealed.header, sealed.body[:-1], sealed.prekey),
        Sealed(sealed.header, sealed.body + b"\0", sealed.prekey),
        Sealed(sealed.header, b"", sealed.prekey),
    ):
        assert_refused_unchanged(receiver, peer, bad)
    assert receiver.decrypt(peer, sealed) == text  # the genuine one still works


def test_every_flipped_bit_of_a_first_message_is_refused() -> None:
    """Header, body and prekey message of the message that starts the session."""
    alice, bob = new_pair()
    check_every_flip(bob, ALICE, alice.encrypt(BOB, b"first"), b"first")


def test_every_flipped_bit_of_a_repeated_prekey_message_is_refused() -> None:
    """The second message still carries the prekey message; Bob already has the session."""
    alice, bob = new_pair()
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"first")) == b"first"
    second = alice.encrypt(BOB, b"second")
    assert second.prekey is not None
    check_every_flip(bob, ALICE, second, b"second")


def test_every_flipped_bit_in_chain_and_at_a_dh_step_is_refused(
    pair: tuple[DeviceCrypto, DeviceCrypto],
) -> None:
    alice, bob = pair
    # Bob spoke last, so Alice's next message brings a new ratchet key: send one first,
    # so that the message tested below is in a chain Bob already has.
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"new chain")) == b"new chain"
    in_chain = alice.encrypt(BOB, b"same chain")
    assert ratchet_key(in_chain) == bob._sessions[ALICE][0].ratchet.dhr
    check_every_flip(bob, ALICE, in_chain, b"same chain")
    dh_step = bob.encrypt(ALICE, b"new ratchet key")  # Alice must do a DH step for it
    assert ratchet_key(dh_step) != alice._sessions[BOB][0].ratchet.dhr
    check_every_flip(alice, BOB, dh_step, b"new ratchet key")


def test_every_flipped_bit_of_a_skipped_message_is_refused(
    pair: tuple[DeviceCrypto, DeviceCrypto],
) -> None:
    """A message whose key waits in the skipped store: a forgery must not use it up."""
    alice, bob = pair
    late, on_time = alice.encrypt(BOB, b"late"), alice.encrypt(BOB, b"on time")
    assert bob.decrypt(ALICE, on_time) == b"on time"
    assert len(bob._sessions[ALICE][0].ratchet.skipped) == 1
    check_every_flip(bob, ALICE, late, b"late")


def test_a_non_canonical_ratchet_key_is_refused(pair: tuple[DeviceCrypto, DeviceCrypto]) -> None:
    """X25519 ignores the top bit; we refuse it so it cannot be flipped unnoticed."""
    alice, bob = pair
    sealed = bob.encrypt(ALICE, b"x")
    header = bytearray(sealed.header)
    header[32] |= 0x80  # top bit of the ratchet key (bytes 1..32, little-endian)
    err = assert_refused_unchanged(alice, BOB, Sealed(bytes(header), sealed.body, None))
    assert isinstance(err, MalformedInput)


def test_messages_to_one_session_do_not_open_in_another() -> None:
    a1, _b1 = talking_pair()
    _a2, b2 = talking_pair()
    sealed = a1.encrypt(BOB, b"for b1")
    err = assert_refused_unchanged(b2, ALICE, sealed)
    assert isinstance(err, DecryptError)


# -- forward secrecy and post-compromise security -----------------------------------


def conversation(
    alice: DeviceCrypto, bob: DeviceCrypto, pattern: list[tuple[bool, int]], tag: str
) -> tuple[list[Sealed], list[bytes]]:
    """Send and deliver, in order, the messages of ``pattern`` (speaker, count)."""
    sent, texts = [], []
    for k, (alice_speaks, count) in enumerate(pattern):
        sender, receiver = (alice, bob) if alice_speaks else (bob, alice)
        for j in range(count):
            text = f"{tag} {k}.{j}".encode()
            sealed = sender.encrypt(receiver.device_id, text)
            assert receiver.decrypt(sender.device_id, sealed) == text
            sent.append(sealed)
            texts.append(text)
    return sent, texts


def test_forward_secrecy() -> None:
    """A copy of Bob's full state taken after message n reads none of messages 0..n-1
    (both directions, the X3DH first flight included) — and does read what follows in
    the same chain, which shows the attacker is not toothless."""
    alice, bob = new_pair()
    before, before_texts = conversation(
        alice, bob, [(True, 3), (False, 2), (True, 2), (False, 1), (True, 3)], "before"
    )
    stolen = bob.to_bytes()
    after, after_texts = conversation(alice, bob, [(True, 2)], "after")

    read = Attacker(stolen).readable(before + after, before_texts + after_texts)
    assert read == [len(before), len(before) + 1], "read an old message, or nothing new"
    # The device's own code, given a copy of the state, refuses every old message too.
    # (before: Alice sent messages 0-2, 5-6 and 8-10.)
    from_alice = [before[i] for i in (0, 1, 2, 5, 6, 8, 9, 10)]
    for sealed in from_alice:
        with pytest.raises(CryptoError):
            DeviceCrypto.from_bytes(stolen).decrypt(ALICE, sealed)


def test_first_flight_without_one_time_prekey_is_exposed_while_the_signed_prekey_lives() -> None:
    """The X3DH spec's caveat, shown rather than hidden: with no one-time prekey, the
    first messages depend only on Bob's identity and signed prekey, which he keeps; a
    thief of his state can redo X3DH and read them, until the signed prekey has been
    rotated out (we keep the two previous ones for messages in flight)."""
    alice, bob = new_pair(one_time=False)
    first, first_texts = conversation(alice, bob, [(True, 2), (False, 1), (True, 1)], "x")
    read = Attacker(bob.to_bytes()).readable(first, first_texts)
    assert read == [0, 1]  # Alice's first chain, sent before Bob had answered
    for _ in range(3):
        bob.rotate_signed_prekey()
    assert Attacker(bob.to_bytes()).readable(first, first_texts) == []


def test_post_compromise_security() -> None:
    """A copy of Alice's state taken at time t reads Bob's next reply (its DH step uses
    Alice's current key), but after one full round trip (Bob -> Alice, Alice -> Bob)
    fresh DH keys the thief never saw have healed the session: it reads nothing more."""
    alice, bob = new_pair()
    conversation(alice, bob, [(True, 2), (False, 2), (True, 2)], "before")
    stolen = alice.to_bytes()
    reply, reply_texts = conversation(alice, bob, [(False, 2)], "reply")  # round trip 1/2
    answer, answer_texts = conversation(alice, bob, [(True, 2)], "answer")  # round trip 2/2
    later, later_texts = conversation(
        alice, bob, [(False, 3), (True, 1), (False, 1), (True, 2)], "later"
    )
    attacker = Attacker(stolen)
    read = attacker.readable(reply + answer + later, reply_texts + answer_texts + later_texts)
    assert read == [0, 1], "the thief should read exactly Bob's reply, then nothing"
