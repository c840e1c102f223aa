"""X3DH: bundles, signatures, one-time prekeys, prekey messages, session (re)starts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients.crypto import (
    BadSignature,
    DeviceCrypto,
    MalformedInput,
    ReplayError,
    ReusedPrekey,
    Sealed,
    UnknownPrekey,
    UnknownSession,
)
from clients.crypto.identity import IdentityKeyPair, dh, x25519_public_bytes
from clients.crypto.kdf import hkdf
from clients.crypto.prekeys import PrekeyStore, signed_prekey_message
from clients.crypto.x3dh import Bundle, PrekeyMessage, initiate, respond
from tests.crypto.crypto_helpers import ALICE, BOB, assert_refused_unchanged, bundle_of, new_pair
from tests.support.encoding import b64

CAROL = "carol@globex.phone"


# -- the computation itself ---------------------------------------------------------


@pytest.mark.parametrize("with_opk", [True, False])
def test_both_sides_derive_the_spec_secret(with_opk: bool) -> None:
    """SK = HKDF(salt = 32 zero bytes, IKM = 32 x 0xFF || DH1 || DH2 || DH3 [|| DH4],
    info = "doormat X3DH v1"), recomputed here from the spec's DH list, equals what
    both sides derive; AD = Encode(IK_A) || Encode(IK_B)."""
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    store = PrekeyStore()
    spk = store.rotate_signed(bob)
    [(opk_id, opk_pub)] = store.new_one_time(1)
    bundle = Bundle(
        device=None,
        identity=bob.public,
        signed_prekey_id=spk.id,
        signed_prekey=spk.public,
        signed_prekey_signature=spk.signature,
        one_time_prekey_id=opk_id if with_opk else None,
        one_time_prekey=opk_pub if with_opk else None,
    )
    started = initiate(alice, bundle)
    opk = store.one_time[opk_id] if with_opk else None
    sk_bob, ad_bob = respond(bob, spk.private, opk, started.prekey_message)

    ek = started.prekey_message.base_key
    dhs = [
        dh(spk.private, alice.public.dh_key),  # DH1 = DH(IK_A, SPK_B)
        dh(bob.dh_private, ek),  # DH2 = DH(EK_A, IK_B)
        dh(spk.private, ek),  # DH3 = DH(EK_A, SPK_B)
    ]
    if with_opk:
        assert opk is not None
        dhs.append(dh(opk, ek))  # DH4 = DH(EK_A, OPK_B)
    expected = hkdf(
        b"\xff" * 32 + b"".join(dhs), salt=bytes(32), info=b"doormat X3DH v1", length=32
    )
    assert started.shared_secret == sk_bob == expected
    assert started.associated_data == ad_bob == alice.public.encode() + bob.public.encode()


def test_session_ad_binds_both_identities() -> None:
    alice, bob = new_pair()
    sealed = alice.encrypt(BOB, b"x")
    assert sealed.associated_data == alice.identity.encode() + bob.identity.encode()


# -- bundles ------------------------------------------------------------------------


def test_bundle_with_bad_signature_is_refused() -> None:
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=1)
    bob = DeviceCrypto.create(BOB, one_time_prekeys=1)
    mallory = DeviceCrypto.create(CAROL, one_time_prekeys=1)
    good = bundle_of(bob)

    forged_sig = json.loads(json.dumps(good))
    sig = bytearray(base64.b64decode(forged_sig["signed_prekey"]["sig"]))
    sig[0] ^= 1
    forged_sig["signed_prekey"]["sig"] = b64(bytes(sig))

    swapped_key = json.loads(json.dumps(good))  # Mallory's prekey under Bob's signature
    swapped_key["signed_prekey"]["key"] = mallory.publish_material()["signed_prekey"]["key"]

    other_identity = json.loads(json.dumps(good))  # Bob's prekey, Mallory's identity
    other_identity["identity"] = mallory.publish_material()["identity"]

    other_id = json.loads(json.dumps(good))  # the signature also covers the prekey id
    other_id["signed_prekey"]["id"] += 1

    before = alice.to_bytes()
    for bad in (forged_sig, swapped_key, other_identity, other_id):
        with pytest.raises(BadSignature):
            alice.start_session(BOB, bad)
    assert not alice.has_session(BOB)
    assert alice.to_bytes() == before
    alice.start_session(BOB, good)
    assert alice.has_session(BOB)


def _mutations(good: dict[str, Any]) -> list[dict[str, Any]]:
    def edit(path: list[str], value: Any) -> dict[str, Any]:
        out = json.loads(json.dumps(good))
        node = out
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return out

    non_canonical = b64(b"\xff" * 32)
    return [
        edit(["identity"], KeyError),
        edit(["identity"], "not base64!"),
        edit(["identity"], b64(b"\x01" * 64)),
        edit(["identity"], 7),
        edit(["signed_prekey"], KeyError),
        edit(["signed_prekey"], [1, 2]),
        edit(["signed_prekey", "id"], "1"),
        edit(["signed_prekey", "id"], True),
        edit(["signed_prekey", "id"], 0),
        edit(["signed_prekey", "key"], b64(b"\x00" * 31)),
        edit(["signed_prekey", "key"], non_canonical),
        edit(["signed_prekey", "sig"], b64(b"\x00" * 63)),
        edit(["one_time_prekey"], "x"),
        edit(["one_time_prekey", "id"], -1),
        edit(["one_time_prekey", "key"], non_canonical),
        edit(["device"], 5),
    ]


def test_malformed_bundles_are_refused() -> None:
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=1)
    good = bundle_of(DeviceCrypto.create(BOB, one_time_prekeys=1))
    before = alice.to_bytes()
    for bad in [*_mutations(good), "not a dict", None]:
        with pytest.raises(MalformedInput):
            alice.start_session(BOB, bad)  # type: ignore[arg-type]
    with pytest.raises(MalformedInput):
        alice.start_session(CAROL, good)  # the bundle names bob's device
    assert alice.to_bytes() == before


def test_low_order_prekey_gives_no_session() -> None:
    """A signed prekey that is a low-order point (all-zero DH output) is refused even
    if correctly signed."""
    bob = IdentityKeyPair.generate()
    store = PrekeyStore()
    spk = store.rotate_signed(bob)
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    zero = bytes(32)
    bundle = {
        "identity": b64(bob.public.encode()),
        "signed_prekey": {
            "id": spk.id,
            "key": b64(zero),
            "sig": b64(bob.sign(signed_prekey_message(spk.id, zero))),
        },
        "one_time_prekey": None,
    }
    with pytest.raises(MalformedInput):
        alice.start_session(BOB, bundle)
    assert not alice.has_session(BOB)


# -- one-time prekeys ---------------------------------------------------------------


def test_reused_one_time_prekey_is_refused() -> None:
    bob = DeviceCrypto.create(BOB, one_time_prekeys=2)
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    carol = DeviceCrypto.create(CAROL, one_time_prekeys=0)
    bundle = bundle_of(bob)  # a directory that hands the same prekey out twice
    alice.start_session(BOB, bundle)
    carol.start_session(BOB, bundle)
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"from alice")) == b"from alice"
    assert bob.one_time_prekeys_left == 1
    err = assert_refused_unchanged(bob, CAROL, carol.encrypt(BOB, b"from carol"))
    assert isinstance(err, ReusedPrekey)
    assert not bob.has_session(CAROL)
    # With a fresh bundle Carol gets through.
    carol.start_session(BOB, bundle_of(bob))
    assert bob.decrypt(CAROL, carol.encrypt(BOB, b"again")) == b"again"
    assert bob.one_time_prekeys_left == 0


def test_unknown_prekeys_are_refused() -> None:
    bob = DeviceCrypto.create(BOB, one_time_prekeys=1)
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    unknown_opk = bundle_of(bob)
    unknown_opk["one_time_prekey"] = {
        "id": 999,
        "key": b64(x25519_public_bytes(X25519PrivateKey.generate())),
    }
    alice.start_session(BOB, unknown_opk)
    err = assert_refused_unchanged(bob, ALICE, alice.encrypt(BOB, b"x"))
    assert isinstance(err, UnknownPrekey)


def test_one_time_prekey_is_spent_only_by_a_message_that_decrypts() -> None:
    alice, bob = new_pair()
    first = alice.encrypt(BOB, b"first")
    forged = Sealed(first.header, first.body[:-1] + bytes([first.body[-1] ^ 1]), first.prekey)
    assert_refused_unchanged(bob, ALICE, forged)
    assert bob.one_time_prekeys_left == 3
    assert bob.decrypt(ALICE, first) == b"first"
    assert bob.one_time_prekeys_left == 2


def test_publish_material_has_the_protocol_shape() -> None:
    device = DeviceCrypto.create(BOB, one_time_prekeys=3)
    material = device.publish_material()
    assert json.loads(json.dumps(material)) == material
    assert set(material) == {"identity", "signed_prekey", "one_time_prekeys"}
    assert len(base64.b64decode(material["identity"])) == 65
    spk = material["signed_prekey"]
    assert set(spk) == {"id", "key", "sig"}
    assert len(base64.b64decode(spk["key"])) == 32
    assert len(base64.b64decode(spk["sig"])) == 64
    assert [set(o) for o in material["one_time_prekeys"]] == [{"id", "key"}] * 3
    more = device.new_one_time_prekeys(2)
    ids = [o["id"] for o in material["one_time_prekeys"] + more]
    assert len(set(ids)) == 5
    assert device.publish_material()["one_time_prekeys"][-2:] == more
    with pytest.raises(ValueError):
        device.new_one_time_prekeys(-1)


# -- prekey messages ----------------------------------------------------------------


def test_prekey_message_is_attached_until_the_peer_answers() -> None:
    alice, bob = new_pair()
    one, two = alice.encrypt(BOB, b"1"), alice.encrypt(BOB, b"2")
    assert one.prekey is not None and one.prekey == two.prekey
    assert bob.decrypt(ALICE, two) == b"2"  # out of order: the second starts the session
    assert bob.decrypt(ALICE, one) == b"1"  # the repeat goes to the same session
    reply = bob.encrypt(ALICE, b"answer")
    assert reply.prekey is None
    three = alice.encrypt(BOB, b"3")
    assert three.prekey is not None  # Alice has not heard back yet
    assert alice.decrypt(BOB, reply) == b"answer"
    assert alice.encrypt(BOB, b"4").prekey is None
    assert bob.decrypt(ALICE, three) == b"3"


def test_no_session_and_no_prekey_is_unknown_session() -> None:
    alice, bob = new_pair()
    first = alice.encrypt(BOB, b"x")
    err = assert_refused_unchanged(bob, ALICE, Sealed(first.header, first.body, None))
    assert isinstance(err, UnknownSession)
    with pytest.raises(UnknownSession):
        bob.encrypt(ALICE, b"x")


def test_replayed_prekey_message_is_refused_even_after_its_session_is_gone() -> None:
    """Without a one-time prekey nothing is spent, so the device remembers the base keys
    of prekey messages it accepted."""
    bob = DeviceCrypto.create(BOB, one_time_prekeys=0)
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    alice.start_session(BOB, bundle_of(bob, one_time=False))
    first = alice.encrypt(BOB, b"first")
    assert bob.decrypt(ALICE, first) == b"first"
    for i in range(5):  # Alice restarts her session five times: the first one is dropped
        alice.start_session(BOB, bundle_of(bob, one_time=False))
        assert bob.decrypt(ALICE, alice.encrypt(BOB, b"%d" % i)) == b"%d" % i
    assert first.prekey is not None
    first_base_key = PrekeyMessage.decode(first.prekey).base_key
    assert all(s.base_key != first_base_key for s in bob._sessions[ALICE])
    err = assert_refused_unchanged(bob, ALICE, first)
    assert isinstance(err, ReplayError)


def test_peer_restarting_its_session_keeps_messages_in_flight_readable() -> None:
    alice, bob = new_pair()
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"old 1")) == b"old 1"
    in_flight = alice.encrypt(BOB, b"old 2")
    alice.start_session(BOB, bundle_of(bob, index=1))  # e.g. Alice lost her state
    fresh = alice.encrypt(BOB, b"new 1")
    assert bob.decrypt(ALICE, fresh) == b"new 1"
    assert bob.decrypt(ALICE, in_flight) == b"old 2"  # the older session still decrypts
    # The session that decrypted last is the one Bob now answers in.
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"reply")) == b"reply"


def test_simultaneous_initiation_converges() -> None:
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=2)
    bob = DeviceCrypto.create(BOB, one_time_prekeys=2)
    alice.start_session(BOB, bundle_of(bob))
    bob.start_session(ALICE, bundle_of(alice))
    a1, b1 = alice.encrypt(BOB, b"a1"), bob.encrypt(ALICE, b"b1")
    assert bob.decrypt(ALICE, a1) == b"a1"
    assert alice.decrypt(BOB, b1) == b"b1"
    for turn in range(6):
        text = b"turn %d" % turn
        assert bob.decrypt(ALICE, alice.encrypt(BOB, text)) == text
        assert alice.decrypt(BOB, bob.encrypt(ALICE, text)) == text
    active_a = alice._sessions[BOB][0]
    active_b = bob._sessions[ALICE][0]
    assert active_a.base_key == active_b.base_key  # both on the same session now


def test_signed_prekey_rotation_keeps_a_window() -> None:
    bob = DeviceCrypto.create(BOB, one_time_prekeys=4)
    stale = bundle_of(bob, index=0)
    bob.rotate_signed_prekey()
    bob.rotate_signed_prekey()
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    alice.start_session(BOB, stale)
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"late")) == b"late"  # 2 rotations: kept
    carol = DeviceCrypto.create(CAROL, one_time_prekeys=0)
    carol.start_session(
        BOB, {**stale, "one_time_prekey": bundle_of(bob, index=1)["one_time_prekey"]}
    )
    bob.rotate_signed_prekey()  # third rotation: the stale signed prekey is deleted
    err = assert_refused_unchanged(bob, CAROL, carol.encrypt(BOB, b"too late"))
    assert isinstance(err, UnknownPrekey)
