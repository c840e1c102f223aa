"""The Double Ratchet (Signal's Double Ratchet spec, §3), without header
encryption.

State and algorithm follow §3.2-§3.5 name for name: DHs/DHr (our and their ratchet
keys), RK (root key), CKs/CKr (chain keys), Ns/Nr (message numbers), PN (length of the
previous sending chain), MKSKIPPED (keys of messages not yet received).

Two deliberate differences from the spec's pseudocode:

* **Nothing changes until the message has authenticated.** The spec's
  ``RatchetDecrypt`` works on a copy and restores it on an exception (§3.5, "if an
  exception is raised ... discard any changes"). Here decryption computes every new
  value in local variables and assigns them only after the AEAD tag and the padding
  have checked out, which has the same effect without copying the state per message.
  Likewise the new sending ratchet key is generated only after success.
* **Bounds.** At most ``MAX_SKIP`` keys are skipped in any one chain per message (a
  larger gap is refused with TooManySkipped, before any work), and at most
  ``MAX_SKIPPED_KEYS`` skipped keys are stored in all; beyond that the oldest is
  evicted (its message, if it ever arrives, is refused as ReplayError). Both bound the
  memory and CPU a malicious or broken peer can make us spend.

A message key is used once: the in-order key is never stored, a skipped key is removed
from MKSKIPPED when its message decrypts, and chain keys are replaced by their
successors (a one-way step), so an old message key cannot be recomputed from the state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wire.b64 import b64encode

from . import state
from .aead import seal, unseal
from .errors import (
    CryptoError,
    DecryptError,
    MalformedInput,
    ReplayError,
    StateError,
    TooManySkipped,
)
from .identity import KEY_BYTES, check_x25519_public, dh, x25519_public_bytes
from .kdf import kdf_ck, kdf_rk

# How many message keys one incoming message may make us skip in a single chain.
MAX_SKIP = 1000
# How many skipped message keys are kept in all (oldest evicted first).
MAX_SKIPPED_KEYS = 2000
# Remote ratchet keys of closed chains that are remembered, so a replayed message from
# such a chain is named a replay instead of starting a (failing) DH ratchet step.
MAX_PREVIOUS_CHAINS = 32

HEADER_VERSION = 1
_HEADER = struct.Struct(f">B{KEY_BYTES}sII")  # version | DHs public | PN | N
HEADER_BYTES = _HEADER.size
_MAX_COUNTER = 2**32 - 1

SkippedKey = tuple[bytes, int]  # (remote ratchet public key, message number)


@dataclass(frozen=True)
class Header:
    """HEADER(dh_pair, pn, n) of §3.1."""

    dh: bytes
    pn: int
    n: int

    def encode(self) -> bytes:
        return _HEADER.pack(HEADER_VERSION, self.dh, self.pn, self.n)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) != HEADER_BYTES:
            raise MalformedInput(f"a ratchet header is {HEADER_BYTES} bytes, not {len(data)}")
        version, dh_pub, pn, n = _HEADER.unpack(data)
        if version != HEADER_VERSION:
            raise MalformedInput(f"unknown ratchet header version {version}")
        return cls(dh_pub, pn, n)


def _skip(
    chain_key: bytes, start: int, until: int, remote: bytes
) -> tuple[list[tuple[SkippedKey, bytes]], bytes]:
    """SkipMessageKeys of §3.5, on local values: the keys of messages start..until-1."""
    if until - start > MAX_SKIP:
        raise TooManySkipped(
            f"message {until} would skip {until - start} message keys in one chain "
            f"(at most MAX_SKIP={MAX_SKIP})"
        )
    keys = []
    for n in range(start, until):
        mk, chain_key = kdf_ck(chain_key)
        keys.append(((remote, n), mk))
    return keys, chain_key


class RatchetState:
    __slots__ = (
        "ckr",
        "cks",
        "dhr",
        "dhs",
        "dhs_pub",
        "nr",
        "ns",
        "pn",
        "previous_remote",
        "rk",
        "skipped",
    )

    def __init__(
        self,
        dhs: X25519PrivateKey,
        dhr: bytes | None,
        rk: bytes,
        cks: bytes | None,
        ckr: bytes | None,
        ns: int = 0,
        nr: int = 0,
        pn: int = 0,
        skipped: dict[SkippedKey, bytes] | None = None,
        previous_remote: list[bytes] | None = None,
    ) -> None:
        self.dhs = dhs
        self.dhs_pub = x25519_public_bytes(dhs)  # cached: it goes into every header
        self.dhr = dhr
        self.rk = rk
        self.cks = cks
        self.ckr = ckr
        self.ns = ns
        self.nr = nr
        self.pn = pn
        # dicts keep insertion order, which is the eviction order (oldest first).
        self.skipped: dict[SkippedKey, bytes] = skipped if skipped is not None else {}
        self.previous_remote: list[bytes] = previous_remote if previous_remote is not None else []

    @classmethod
    def initiator(cls, shared_secret: bytes, remote_ratchet_key: bytes) -> RatchetState:
        """RatchetInitAlice (§3.3): Bob's signed prekey is his first ratchet key."""
        dhs = X25519PrivateKey.generate()
        rk, cks = kdf_rk(shared_secret, dh(dhs, remote_ratchet_key))
        return cls(dhs, remote_ratchet_key, rk, cks, None)

    @classmethod
    def responder(cls, shared_secret: bytes, signed_prekey: X25519PrivateKey) -> RatchetState:
        """RatchetInitBob (§3.3): his signed prekey pair is his first ratchet key pair."""
        return cls(signed_prekey, None, shared_secret, None, None)

    def encrypt(self, plaintext: bytes, ad_prefix: bytes) -> tuple[bytes, bytes, bytes]:
        """RatchetEncrypt (§3.4) -> (encoded header, body, message key)."""
        if self.cks is None:
            raise CryptoError("this session has no sending chain yet (it has received nothing)")
        if self.ns >= _MAX_COUNTER:
            raise CryptoError("sending chain exhausted; a reply from the peer starts a new one")
        mk, next_ck = kdf_ck(self.cks)
        header = _HEADER.pack(HEADER_VERSION, self.dhs_pub, self.pn, self.ns)
        body = seal(mk, ad_prefix, header, plaintext)  # PlaintextTooLong before we commit
        self.cks = next_ck
        self.ns += 1
        return header, body, mk

    def decrypt(self, header: bytes, body: bytes, ad_prefix: bytes) -> bytes:
        """RatchetDecrypt (§3.5). Raises a CryptoError and changes nothing on failure."""
        if len(header) != HEADER_BYTES:
            raise MalformedInput(f"a ratchet header is {HEADER_BYTES} bytes, not {len(header)}")
        version, remote, pn, n = _HEADER.unpack(header)
        if version != HEADER_VERSION:
            raise MalformedInput(f"unknown ratchet header version {version}")

        # 1. A message we skipped earlier: its key is waiting in MKSKIPPED.
        if self.skipped:
            mk = self.skipped.get((remote, n))
            if mk is not None:
                plaintext = unseal(mk, ad_prefix, header, body)
                del self.skipped[(remote, n)]  # used once, then gone
                return plaintext

        # 2. The current receiving chain (the hot path).
        if remote == self.dhr:
            if self.ckr is None:
                raise DecryptError("no receiving chain for that ratchet key yet")
            if n < self.nr:
                raise ReplayError(
                    f"message {n} of the current chain was already decrypted "
                    "(or its skipped key was evicted)"
                )
            skipped, ck = _skip(self.ckr, self.nr, n, remote) if n > self.nr else ([], self.ckr)
            mk, ck = kdf_ck(ck)
            plaintext = unseal(mk, ad_prefix, header, body)
            self.ckr = ck
            self.nr = n + 1
            if skipped:
                self._store_skipped(skipped)
            return plaintext

        # 3. A new ratchet key from the peer: a DH ratchet step (§3.5 DHRatchet).
        if remote in self.previous_remote:
            raise ReplayError(
                f"message {n} belongs to a closed chain: already decrypted, or its skipped "
                "key was evicted"
            )
        check_x25519_public(remote, "ratchet header key")
        old_chain: list[tuple[SkippedKey, bytes]] = []
        if self.ckr is not None and self.dhr is not None:
            old_chain, _ = _skip(self.ckr, self.nr, pn, self.dhr)
        rk, ckr = kdf_rk(self.rk, dh(self.dhs, remote))
        new_chain, ckr = _skip(ckr, 0, n, remote)
        mk, ckr = kdf_ck(ckr)
        plaintext = unseal(mk, ad_prefix, header, body)

        # Authenticated: complete the step with a fresh sending key pair, then commit.
        dhs = X25519PrivateKey.generate()
        rk, cks = kdf_rk(rk, dh(dhs, remote))
        if self.dhr is not None:
            self.previous_remote.append(self.dhr)
            del self.previous_remote[:-MAX_PREVIOUS_CHAINS]
        self.pn = self.ns
        self.ns = 0
        self.nr = n + 1
        self.dhr = remote
        self.dhs = dhs
        self.dhs_pub = x25519_public_bytes(dhs)
        self.rk = rk
        self.cks = cks
        self.ckr = ckr
        if old_chain or new_chain:
            self._store_skipped(old_chain + new_chain)
        return plaintext

    def _store_skipped(self, keys: list[tuple[SkippedKey, bytes]]) -> None:
        self.skipped.update(keys)
        excess = len(self.skipped) - MAX_SKIPPED_KEYS
        if excess > 0:
            for key in list(self.skipped)[:excess]:
                del self.skipped[key]

    def to_json(self) -> dict[str, Any]:
        def opt(value: bytes | None) -> str | None:
            return None if value is None else b64encode(value)

        return {
            "dhs": b64encode(self.dhs.private_bytes_raw()),
            "dhr": opt(self.dhr),
            "rk": b64encode(self.rk),
            "cks": opt(self.cks),
            "ckr": opt(self.ckr),
            "ns": self.ns,
            "nr": self.nr,
            "pn": self.pn,
            "skipped": [[b64encode(k[0]), k[1], b64encode(mk)] for k, mk in self.skipped.items()],
            "previous_remote": [b64encode(k) for k in self.previous_remote],
        }

    @classmethod
    def from_json(cls, obj: Any) -> RatchetState:
        skipped: dict[SkippedKey, bytes] = {}
        for item in state.get_list(obj, "skipped"):
            if not isinstance(item, list) or len(item) != 3:
                raise StateError("crypto state: a skipped key must be [key, n, mk]")
            remote = state.as_bytes(item[0], "skipped.key", KEY_BYTES)
            skipped[(remote, state.as_int(item[1], "skipped.n"))] = state.as_bytes(
                item[2], "skipped.mk", 32
            )
        return cls(
            dhs=X25519PrivateKey.from_private_bytes(state.get_bytes(obj, "dhs", KEY_BYTES)),
            dhr=state.get_optional_bytes(obj, "dhr", KEY_BYTES),
            rk=state.get_bytes(obj, "rk", 32),
            cks=state.get_optional_bytes(obj, "cks", 32),
            ckr=state.get_optional_bytes(obj, "ckr", 32),
            ns=state.get_int(obj, "ns"),
            nr=state.get_int(obj, "nr"),
            pn=state.get_int(obj, "pn"),
            skipped=skipped,
            previous_remote=[
                state.as_bytes(k, "previous_remote", KEY_BYTES)
                for k in state.get_list(obj, "previous_remote")
            ],
        )
