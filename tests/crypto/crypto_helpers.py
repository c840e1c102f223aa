"""Helpers for the crypto-core tests: device pairs, bundles, a key-hunting attacker."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients.crypto import CryptoError, DeviceCrypto, Sealed
from clients.crypto.aead import ad_prefix, unseal
from clients.crypto.device import DeviceCrypto as _DC
from clients.crypto.identity import dh
from clients.crypto.kdf import kdf_ck, kdf_rk
from clients.crypto.ratchet import Header
from clients.crypto.x3dh import PrekeyMessage, respond

ALICE = "alice@acme.phone"
BOB = "bob@globex.phone"


def bundle_of(device: DeviceCrypto, *, one_time: bool = True, index: int = 0) -> dict[str, Any]:
    """A directory ``bundles`` entry for ``device``, built from its publish material."""
    pub = device.publish_material()
    return {
        "device": device.device_id,
        "identity": pub["identity"],
        "signed_prekey": pub["signed_prekey"],
        "one_time_prekey": pub["one_time_prekeys"][index] if one_time else None,
    }


def new_pair(*, one_time: bool = True) -> tuple[DeviceCrypto, DeviceCrypto]:
    """Alice has started a session with Bob; nothing has been sent yet."""
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=3)
    bob = DeviceCrypto.create(BOB, one_time_prekeys=3)
    alice.start_session(BOB, bundle_of(bob, one_time=one_time))
    return alice, bob


def talking_pair() -> tuple[DeviceCrypto, DeviceCrypto]:
    """A pair past X3DH: one message each way has been delivered."""
    alice, bob = new_pair()
    assert bob.decrypt(ALICE, alice.encrypt(BOB, b"hi bob")) == b"hi bob"
    assert alice.decrypt(BOB, bob.encrypt(ALICE, b"hi alice")) == b"hi alice"
    return alice, bob


def snapshot(device: DeviceCrypto) -> bytes:
    return device.to_bytes()


def copy_of(device: DeviceCrypto) -> DeviceCrypto:
    return DeviceCrypto.from_bytes(device.to_bytes())


def assert_refused_unchanged(device: DeviceCrypto, peer: str, sealed: Sealed) -> CryptoError:
    """``decrypt`` raises a CryptoError and the device state is byte-for-byte unchanged."""
    before = device.to_bytes()
    with pytest.raises(CryptoError) as info:
        device.decrypt(peer, sealed)
    assert device.to_bytes() == before, f"state changed by a refused message ({info.value!r})"
    return info.value


class Attacker:
    """Holds a stolen copy of a device's state and derives every message key it can.

    It goes beyond what the device's own code does with that state. It takes every
    private X25519 key in it (ratchet keys, signed and one-time prekeys, the identity
    key), every root key, chain key and stored skipped key. It reruns X3DH as responder
    for every prekey message it sees, with every stolen prekey. It combines every
    private key with every ratchet key seen in the headers, through KDF_RK with every
    root key it knows, and repeats that ``rounds`` times with the root keys it gets, so it
    follows the ratchet forward past the theft. It walks every chain key forward as far
    as any captured message could be. A message counts as read if one of those keys
    opens it (the AEAD tag checks out) under the session's associated data.
    """

    def __init__(self, stolen: bytes, rounds: int = 2) -> None:
        self.device: _DC = DeviceCrypto.from_bytes(stolen)
        self.rounds = rounds
        identity = self.device._identity
        prekeys = self.device._prekeys
        self.privates: list[X25519PrivateKey] = [identity.dh_private]
        self.privates += [s.private for s in prekeys.signed.values()]
        self.privates += list(prekeys.one_time.values())
        self.root_keys: set[bytes] = set()
        self.state_chain_keys: set[bytes] = set()
        self.skipped_keys: set[bytes] = set()
        self.ads: set[bytes] = set()
        for sessions in self.device._sessions.values():
            for session in sessions:
                r = session.ratchet
                self.ads.add(session.ad)
                self.privates.append(r.dhs)
                self.root_keys.add(r.rk)
                self.state_chain_keys.update(k for k in (r.cks, r.ckr) if k is not None)
                self.skipped_keys.update(r.skipped.values())

    def _x3dh(self, messages: list[Sealed]) -> None:
        identity = self.device._identity
        prekeys = self.device._prekeys
        for m in messages:
            if m.prekey is None:
                continue
            pm = PrekeyMessage.decode(m.prekey)
            spk = prekeys.signed.get(pm.signed_prekey_id)
            if spk is None:
                continue
            opk = None
            if pm.one_time_prekey_id is not None:
                opk = prekeys.one_time.get(pm.one_time_prekey_id)
                if opk is None:
                    continue  # deleted after use: DH4 is out of reach
            sk, ad = respond(identity, spk.private, opk, pm)
            self.root_keys.add(sk)
            self.ads.add(ad)

    def readable(self, messages: list[Sealed], plaintexts: list[bytes]) -> list[int]:
        """Indexes of the messages this attacker can read (checking it reads them right)."""
        self._x3dh(messages)
        headers = [Header.decode(m.header) for m in messages]
        remotes = {h.dh for h in headers}
        shared = []
        for private in self.privates:
            for remote in remotes:
                try:
                    shared.append(dh(private, remote))
                except CryptoError:
                    continue
        fresh_chains: set[bytes] = set()
        frontier = set(self.root_keys)
        for _ in range(self.rounds):
            new_roots = set()
            for rk in frontier:
                for secret in shared:
                    next_rk, ck = kdf_rk(rk, secret)
                    new_roots.add(next_rk)
                    fresh_chains.add(ck)
            frontier = new_roots - self.root_keys
            self.root_keys |= new_roots
        # A chain born from a DH step holds message n at exactly step n; a chain key
        # taken from the state is at an unknown offset, so walk it as far as possible.
        max_n = max(h.n for h in headers)
        at_index: dict[int, list[bytes]] = {}
        for ck in fresh_chains:
            for n in range(max_n + 1):
                mk, ck = kdf_ck(ck)
                at_index.setdefault(n, []).append(mk)
        anywhere = list(self.skipped_keys)
        for ck in self.state_chain_keys:
            for _ in range(len(messages) + max_n + 1):
                mk, ck = kdf_ck(ck)
                anywhere.append(mk)
        read = []
        for i, (m, h) in enumerate(zip(messages, headers, strict=True)):
            if self._opens(at_index.get(h.n, []) + anywhere, m, plaintexts[i]):
                read.append(i)
        return read

    def _opens(self, candidates: list[bytes], m: Sealed, plaintext: bytes) -> bool:
        for ad in self.ads:
            prefix = ad_prefix(ad)
            for mk in candidates:
                try:
                    opened = unseal(mk, prefix, m.header, m.body)
                except CryptoError:
                    continue
                assert opened == plaintext
                return True
        return False
