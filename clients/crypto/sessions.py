"""A session with one peer device: the ratchet plus what X3DH fixed for its lifetime."""

from __future__ import annotations

from typing import Any

from wire.b64 import b64encode

from . import state
from .aead import ad_prefix
from .identity import ENCODED_IDENTITY_BYTES, KEY_BYTES, PublicIdentity
from .ratchet import RatchetState
from .sealed import Sealed
from .x3dh import PREKEY_MESSAGE_BYTES


class Session:
    __slots__ = (
        "ad",
        "ad_prefix",
        "base_key",
        "initiator",
        "peer_identity",
        "pending_prekey",
        "prekey_message",
        "ratchet",
    )

    def __init__(
        self,
        ratchet: RatchetState,
        ad: bytes,
        peer_identity: PublicIdentity,
        base_key: bytes,
        *,
        initiator: bool,
        prekey_message: bytes,
        pending_prekey: bool,
    ) -> None:
        self.ratchet = ratchet
        self.ad = ad  # X3DH associated data: Encode(IK_initiator) || Encode(IK_responder)
        self.ad_prefix = ad_prefix(ad)  # computed once, not per message
        self.peer_identity = peer_identity
        self.base_key = base_key  # the initiator's X3DH ephemeral key: names the session
        self.initiator = initiator
        # The encoded prekey message that started the session. The initiator attaches it
        # to every message until the peer has answered (then the peer surely has the
        # session); the responder keeps it to recognise those repeats byte for byte.
        self.prekey_message = prekey_message
        self.pending_prekey = pending_prekey

    def encrypt(self, plaintext: bytes) -> Sealed:
        header, body, mk = self.ratchet.encrypt(plaintext, self.ad_prefix)
        prekey = self.prekey_message if self.pending_prekey else None
        return Sealed._fast(header, body, prekey, mk, self.ad)

    def decrypt(self, header: bytes, body: bytes) -> bytes:
        plaintext = self.ratchet.decrypt(header, body, self.ad_prefix)
        # Anything that decrypts in this session proves the peer holds it.
        self.pending_prekey = False
        return plaintext

    def to_json(self) -> dict[str, Any]:
        return {
            "initiator": self.initiator,
            "peer_identity": b64encode(self.peer_identity.encode()),
            "ad": b64encode(self.ad),
            "base_key": b64encode(self.base_key),
            "prekey_message": b64encode(self.prekey_message),
            "pending_prekey": self.pending_prekey,
            "ratchet": self.ratchet.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Session:
        # A MalformedInput from decode becomes a StateError in DeviceCrypto.from_bytes.
        peer = PublicIdentity.decode(state.get_bytes(obj, "peer_identity", ENCODED_IDENTITY_BYTES))
        return cls(
            RatchetState.from_json(state.get_dict(obj, "ratchet")),
            state.get_bytes(obj, "ad", 2 * ENCODED_IDENTITY_BYTES),
            peer,
            state.get_bytes(obj, "base_key", KEY_BYTES),
            initiator=state.get_bool(obj, "initiator"),
            prekey_message=state.get_bytes(obj, "prekey_message", PREKEY_MESSAGE_BYTES),
            pending_prekey=state.get_bool(obj, "pending_prekey"),
        )
