"""What a stolen copy of one device's crypto state opens: the measurement behind the
exposure report's device-image row (docs/threat-model.md).

The device's own code, handed a copy of its state, opens what the device itself would
still open: messages sealed *to* it that it has not received yet, until the ratchet
heals. A thief is not bound by that code. From the same bytes it also reads

* **the device's own later messages.** Each session's sending chain key is in the state;
  every message the device seals in that chain after the theft has its key a few
  one-way steps further on. That lasts until the device's next DH ratchet step in the
  session, which uses a key pair made after the theft;
* **first-contact messages, by redoing X3DH as the responder** with the identity key,
  the signed prekeys and the one-time prekeys in the state, whatever the device's
  replay list says: a prekey message that names prekeys still in the state opens, and
  so does the rest of the initiator's first chain (sent before the device answered).
  If the device still holds that session in its first sending chain, the redone root
  key also reaches the device's own answers in that chain, those sent before the
  theft included. What closes these is deletion: a one-time prekey is deleted once used, a signed
  prekey once rotated out and past its grace period (``DeviceCrypto.
  expire_signed_prekeys``). A first message that came *without* a one-time prekey (the
  directory had none left, or withheld it) depends only on the signed prekey: it stays
  open to a thief until that prekey is deleted.

Nothing else: every other key was deleted or never existed here, and each read is an
AEAD tag that verified. ``tests/crypto/test_crypto_stolen.py`` checks it against the
library tests' exhaustive attacker, which tries every key in the state on everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .aead import unseal
from .device import DeviceCrypto
from .errors import CryptoError
from .identity import dh
from .kdf import kdf_ck, kdf_rk
from .ratchet import Header, RatchetState
from .sealed import Sealed
from .sessions import Session
from .x3dh import PrekeyMessage, respond

# A thief walks a chain forward as far as it likes; a bound keeps a forged header (N
# near 2^32) from making the reader loop for hours.
MAX_CHAIN_STEPS = 100_000


@dataclass
class _SendingChain:
    """One session's sending chain as it was in the state: message ``n`` has the key at
    ``keys[n - start]``."""

    ratchet_key: bytes  # our ratchet public key: in the header of every message of it
    ad_prefix: bytes
    start: int
    chain_key: bytes  # the chain key of message start + len(keys)
    keys: list[bytes] = field(default_factory=list)

    def key(self, n: int) -> bytes | None:
        if n < self.start or n - self.start >= MAX_CHAIN_STEPS:
            return None
        while len(self.keys) <= n - self.start:
            mk, self.chain_key = kdf_ck(self.chain_key)
            self.keys.append(mk)
        return self.keys[n - self.start]


class StolenState:
    """A thief's reader for one device's stolen state (``DeviceCrypto.to_bytes()``).

    ``open(sender, recipient, sealed)`` is the plaintext of one captured message, or
    None. Feed it everything captured, in capture order: reading follows the ratchet
    forward as the device would (a DH step from the peer opens that peer's next chain),
    so what opens can depend on what came before, never on the order of anything
    else."""

    def __init__(self, state: bytes) -> None:
        # The ratchet as the device would run it, moving forward as messages open.
        self._live = DeviceCrypto.from_bytes(state)
        self.device_id = self._live.device_id
        # The keys exactly as taken (the live copy spends one-time prekeys).
        taken = DeviceCrypto.from_bytes(state)
        self._identity = taken._identity
        self._prekeys = taken._prekeys
        self._sessions = taken._sessions
        self._sending: dict[str, list[_SendingChain]] = {}
        for peer, sessions in taken._sessions.items():
            for session in sessions:
                ratchet: RatchetState = session.ratchet
                if ratchet.cks is not None:
                    self._sending.setdefault(peer, []).append(
                        _SendingChain(ratchet.dhs_pub, session.ad_prefix, ratchet.ns, ratchet.cks)
                    )
        # Sessions rebuilt by redoing X3DH, by the initiator's base key.
        self._redone: dict[bytes, Session] = {}

    def open(self, sender: str, recipient: str, sealed: Sealed) -> bytes | None:
        if recipient == self.device_id:
            try:
                return self._live.decrypt(sender, sealed)
            except CryptoError:
                return self._redo_x3dh(sealed)
        if sender == self.device_id:
            return self._own(recipient, sealed)
        return None

    def _own(self, recipient: str, sealed: Sealed) -> bytes | None:
        """A message this device sealed, from the sending chains in the state."""
        try:
            header = Header.decode(sealed.header)
        except CryptoError:
            return None
        for chain in self._sending.get(recipient, []):
            if chain.ratchet_key != header.dh:
                continue
            mk = chain.key(header.n)
            if mk is None:
                continue
            try:
                return unseal(mk, chain.ad_prefix, sealed.header, sealed.body)
            except CryptoError:
                continue
        return None

    def _redo_x3dh(self, sealed: Sealed) -> bytes | None:
        """X3DH as the responder with the prekeys in the state, replay list or not."""
        if sealed.prekey is None:
            return None
        try:
            message = PrekeyMessage.decode(sealed.prekey)
            session = self._redone.get(message.base_key)
            if session is None:
                spk = self._prekeys.signed.get(message.signed_prekey_id)
                if spk is None:
                    return None  # rotated out and deleted
                opk = None
                if message.one_time_prekey_id is not None:
                    opk = self._prekeys.one_time.get(message.one_time_prekey_id)
                    if opk is None:
                        return None  # used, hence deleted: DH4 is out of reach
                secret, ad = respond(self._identity, spk.private, opk, message)
                self._first_answers(message.base_key, secret, spk.private, sealed.header)
                session = Session(
                    RatchetState.responder(secret, spk.private),
                    ad,
                    message.identity,
                    message.base_key,
                    initiator=False,
                    prekey_message=sealed.prekey,
                    pending_prekey=False,
                )
                plaintext = session.decrypt(sealed.header, sealed.body)
                self._redone[message.base_key] = session
                return plaintext
            return session.decrypt(sealed.header, sealed.body)
        except CryptoError:
            return None

    def _first_answers(
        self, base_key: bytes, secret: bytes, spk: X25519PrivateKey, header: bytes
    ) -> None:
        """The redone root key, followed one step: if the state still holds the session
        this prekey message started, in its first sending chain (its receiving ratchet
        key is still the initiator's first), that chain from message 0 on."""
        remote = Header.decode(header).dh
        root, _ = kdf_rk(secret, dh(spk, remote))  # the initiator's first chain's step
        for peer, sessions in self._sessions.items():
            for session in sessions:
                ratchet = session.ratchet
                if session.base_key != base_key or ratchet.dhr != remote:
                    continue
                _, chain_key = kdf_rk(root, dh(ratchet.dhs, remote))
                self._sending.setdefault(peer, []).append(
                    _SendingChain(ratchet.dhs_pub, session.ad_prefix, 0, chain_key)
                )
