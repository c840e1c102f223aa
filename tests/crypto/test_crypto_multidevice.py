"""Sesame-lite: one DeviceCrypto, sessions with several peer devices, and fan-out."""

from __future__ import annotations

import pytest

from clients.crypto import DeviceCrypto, UnknownSession
from tests.crypto.crypto_helpers import assert_refused_unchanged, bundle_of

ALICE_PHONE, ALICE_LAPTOP = "alice@acme.phone", "alice@acme.laptop"
BOB_PHONE, BOB_LAPTOP = "bob@globex.phone", "bob@globex.laptop"


def test_fan_out_to_every_device_of_the_recipient_and_own_other_devices() -> None:
    phone = DeviceCrypto.create(ALICE_PHONE, one_time_prekeys=1)
    others = {
        d: DeviceCrypto.create(d, one_time_prekeys=2) for d in (ALICE_LAPTOP, BOB_PHONE, BOB_LAPTOP)
    }
    for device_id, device in others.items():
        phone.start_session(device_id, bundle_of(device))
    assert all(phone.has_session(d) for d in others)
    assert not phone.has_session("carol@globex.phone")

    for round_ in range(3):
        text = b"to everyone, round %d" % round_
        copies = {d: phone.encrypt(d, text) for d in others}  # one envelope per device
        assert len({c.body for c in copies.values()}) == 3  # independent ratchets
        assert len({c.message_key for c in copies.values()}) == 3
        for device_id, device in others.items():
            # A copy meant for another device opens nowhere else.
            for other_id, sealed in copies.items():
                if other_id != device_id:
                    assert_refused_unchanged(device, ALICE_PHONE, sealed)
            assert device.decrypt(ALICE_PHONE, copies[device_id]) == text
        for device_id, device in others.items():  # each device answers
            reply = b"reply from " + device_id.encode()
            assert phone.decrypt(device_id, device.encrypt(ALICE_PHONE, reply)) == reply

    # All sessions survive a restart of the phone.
    phone = DeviceCrypto.from_bytes(phone.to_bytes())
    for device_id, device in others.items():
        assert device.decrypt(ALICE_PHONE, phone.encrypt(device_id, b"after restart")) == (
            b"after restart"
        )


def test_unknown_peer_device() -> None:
    phone = DeviceCrypto.create(ALICE_PHONE, one_time_prekeys=0)
    laptop = DeviceCrypto.create(ALICE_LAPTOP, one_time_prekeys=1)
    laptop.start_session(BOB_PHONE, bundle_of(DeviceCrypto.create(BOB_PHONE)))
    sealed = laptop.encrypt(BOB_PHONE, b"x")
    with pytest.raises(UnknownSession, match=BOB_PHONE):
        phone.encrypt(BOB_PHONE, b"x")
    assert phone.peer_identity(BOB_PHONE) is None
    assert laptop.peer_identity(BOB_PHONE) is not None
    # The prekey message is for bob's phone: alice's phone holds none of its prekeys.
    assert_refused_unchanged(phone, ALICE_LAPTOP, sealed)
