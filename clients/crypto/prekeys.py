"""A device's prekeys: the signed prekey(s) and the one-time prekeys it has handed out.

X3DH ("Keys", "Publishing keys"): the responder publishes a *signed prekey* (an X25519
key signed with its identity key, replaced from time to time) and a set of *one-time
prekeys* (X25519 keys, each used for at most one session, then deleted). The private
halves live here until they are used.

Ids are allocated from counters that never go back, so an id below the counter that is
no longer held was issued and then used: that is how a reused one-time prekey is told
apart from one that never existed without remembering every used id.

Signed prekeys carry two times (milliseconds, given by the caller: this package reads no
clock): when each was made and when a newer one replaced it. The device rotates on a
schedule and deletes a replaced one once its grace period for late messages is over
(``expire_signed``): from then on a thief of the device's state cannot redo X3DH for a
first message that used it without a one-time prekey.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wire.b64 import b64encode

from . import state
from .errors import ReusedPrekey, StateError, UnknownPrekey
from .identity import KEY_BYTES, SIGNATURE_BYTES, IdentityKeyPair, x25519_public_bytes

# What the identity's Ed25519 key signs: X3DH's Encode(SPK), made specific to this
# project and bound to the prekey's id, so a signature can't be reused for another id.
_SPK_LABEL = b"doormat signed prekey v1"
_ID = struct.Struct(">I")
# Old signed prekeys kept after a rotation, for prekey messages still in flight.
KEEP_OLD_SIGNED_PREKEYS = 2


def signed_prekey_message(prekey_id: int, public: bytes) -> bytes:
    return _SPK_LABEL + _ID.pack(prekey_id) + public


@dataclass
class SignedPrekey:
    id: int
    private: X25519PrivateKey
    public: bytes
    signature: bytes
    created_ms: int | None = None  # None: made before times were kept, or without a clock
    retired_ms: int | None = None  # when a newer one became current; None while current


class PrekeyStore:
    __slots__ = ("_next_one_time_id", "_next_signed_id", "one_time", "signed")

    def __init__(self) -> None:
        self.signed: dict[int, SignedPrekey] = {}  # insertion order: newest last
        self.one_time: dict[int, X25519PrivateKey] = {}
        self._next_signed_id = 1
        self._next_one_time_id = 1

    @property
    def current_signed(self) -> SignedPrekey:
        return next(reversed(self.signed.values()))

    def rotate_signed(self, identity: IdentityKeyPair, now_ms: int | None = None) -> SignedPrekey:
        """A fresh signed prekey becomes current (made at ``now_ms``); the one it replaces
        is retired at ``now_ms``; the oldest beyond the window is deleted."""
        private = X25519PrivateKey.generate()
        public = x25519_public_bytes(private)
        spk_id = self._next_signed_id
        self._next_signed_id += 1
        spk = SignedPrekey(
            spk_id,
            private,
            public,
            identity.sign(signed_prekey_message(spk_id, public)),
            created_ms=now_ms,
        )
        if self.signed:
            self.current_signed.retired_ms = now_ms
        self.signed[spk_id] = spk
        while len(self.signed) > KEEP_OLD_SIGNED_PREKEYS + 1:
            del self.signed[next(iter(self.signed))]
        return spk

    def expire_signed(self, now_ms: int, grace_ms: int) -> list[int]:
        """Delete every replaced signed prekey retired at least ``grace_ms`` before
        ``now_ms``; the ids deleted. One replaced without a known time (an older state)
        starts its grace period now. The current one is never deleted."""
        current = self.current_signed
        deleted = []
        for spk in list(self.signed.values()):
            if spk is current:
                continue
            if spk.retired_ms is None:
                spk.retired_ms = now_ms
            if now_ms - spk.retired_ms >= grace_ms:
                del self.signed[spk.id]
                deleted.append(spk.id)
        return deleted

    def new_one_time(self, n: int) -> list[tuple[int, bytes]]:
        if n < 0:
            raise ValueError("cannot make a negative number of one-time prekeys")
        out = []
        for _ in range(n):
            private = X25519PrivateKey.generate()
            opk_id = self._next_one_time_id
            self._next_one_time_id += 1
            self.one_time[opk_id] = private
            out.append((opk_id, x25519_public_bytes(private)))
        return out

    def find_signed(self, spk_id: int) -> SignedPrekey:
        spk = self.signed.get(spk_id)
        if spk is None:
            what = "an expired" if spk_id < self._next_signed_id else "no"
            raise UnknownPrekey(f"signed prekey {spk_id} is {what} signed prekey of this device")
        return spk

    def find_one_time(self, opk_id: int) -> X25519PrivateKey:
        """The private key, without consuming it (that happens only once decryption has
        succeeded, so a forged prekey message cannot burn a prekey)."""
        private = self.one_time.get(opk_id)
        if private is None:
            if 0 < opk_id < self._next_one_time_id:
                raise ReusedPrekey(f"one-time prekey {opk_id} was already used")
            raise UnknownPrekey(f"one-time prekey {opk_id} was never issued by this device")
        return private

    def consume_one_time(self, opk_id: int) -> None:
        del self.one_time[opk_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "signed": [
                {
                    "id": s.id,
                    "private": b64encode(s.private.private_bytes_raw()),
                    "signature": b64encode(s.signature),
                    "created_ms": s.created_ms,
                    "retired_ms": s.retired_ms,
                }
                for s in self.signed.values()
            ],
            "one_time": [
                {"id": i, "private": b64encode(k.private_bytes_raw())}
                for i, k in self.one_time.items()
            ],
            "next_signed_id": self._next_signed_id,
            "next_one_time_id": self._next_one_time_id,
        }

    @classmethod
    def from_json(cls, obj: Any) -> PrekeyStore:
        store = cls()
        for item in state.get_list(obj, "signed"):
            private = X25519PrivateKey.from_private_bytes(
                state.get_bytes(item, "private", KEY_BYTES)
            )
            spk_id = state.get_int(item, "id")
            store.signed[spk_id] = SignedPrekey(
                spk_id,
                private,
                x25519_public_bytes(private),
                state.get_bytes(item, "signature", SIGNATURE_BYTES),
                # Absent in states written before signed prekeys had times.
                created_ms=state.get_optional_time(item, "created_ms"),
                retired_ms=state.get_optional_time(item, "retired_ms"),
            )
        if not store.signed:
            raise StateError("crypto state holds no signed prekey")
        for item in state.get_list(obj, "one_time"):
            store.one_time[state.get_int(item, "id")] = X25519PrivateKey.from_private_bytes(
                state.get_bytes(item, "private", KEY_BYTES)
            )
        store._next_signed_id = state.get_int(obj, "next_signed_id")
        store._next_one_time_id = state.get_int(obj, "next_one_time_id")
        if any(i >= store._next_signed_id for i in store.signed) or any(
            i >= store._next_one_time_id for i in store.one_time
        ):
            raise StateError("crypto state has a prekey id beyond its id counter")
        return store
