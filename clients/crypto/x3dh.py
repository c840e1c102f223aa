"""X3DH (Signal's X3DH spec, revision 1) over X25519 and SHA-256.

The initiator (Alice) fetches the responder's (Bob's) bundle, checks the signed
prekey's signature, and computes, with a fresh ephemeral key EK_A:

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
    DH4 = DH(EK_A, OPK_B)   (only if the bundle had a one-time prekey)
    SK  = HKDF(salt = 32 zero bytes, IKM = 32 x 0xFF || DH1 || DH2 || DH3 [|| DH4],
               info = "doormat X3DH v1")
    AD  = Encode(IK_A) || Encode(IK_B)

and sends Bob a *prekey message* (the spec's "initial message"): her identity, EK_A and
which of Bob's prekeys she used. Bob repeats the computation from his side.

IK here is the device's *pair* of identity keys (``identity.py``): DH uses the X25519
half; the signature on SPK_B is checked with the Ed25519 half; Encode(IK) is the whole
pair, so the associated data binds both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wire.b64 import B64Error, b64decode

from .errors import MalformedInput
from .identity import (
    ENCODED_IDENTITY_BYTES,
    KEY_BYTES,
    SIGNATURE_BYTES,
    IdentityKeyPair,
    PublicIdentity,
    check_x25519_public,
    dh,
    x25519_public_bytes,
)
from .kdf import x3dh_secret
from .prekeys import signed_prekey_message

PREKEY_MESSAGE_VERSION = 1
# version | identity | EK_A | SPK id | has OPK | OPK id
_PREKEY_MESSAGE = struct.Struct(f">B{ENCODED_IDENTITY_BYTES}s{KEY_BYTES}sIBI")
PREKEY_MESSAGE_BYTES = _PREKEY_MESSAGE.size


def associated_data(initiator: PublicIdentity, responder: PublicIdentity) -> bytes:
    """AD = Encode(IK_A) || Encode(IK_B) (X3DH §3.3). Both encodings are fixed-length."""
    return initiator.encode() + responder.encode()


@dataclass(frozen=True)
class PrekeyMessage:
    """What Bob needs to run his half of X3DH (X3DH §3.3)."""

    identity: PublicIdentity
    base_key: bytes  # EK_A, the initiator's ephemeral public key; also names the session
    signed_prekey_id: int
    one_time_prekey_id: int | None

    def encode(self) -> bytes:
        has_opk = self.one_time_prekey_id is not None
        return _PREKEY_MESSAGE.pack(
            PREKEY_MESSAGE_VERSION,
            self.identity.encode(),
            self.base_key,
            self.signed_prekey_id,
            1 if has_opk else 0,
            self.one_time_prekey_id or 0,
        )

    @classmethod
    def decode(cls, data: bytes) -> PrekeyMessage:
        if len(data) != PREKEY_MESSAGE_BYTES:
            raise MalformedInput(
                f"a prekey message is {PREKEY_MESSAGE_BYTES} bytes, not {len(data)}"
            )
        version, ident, base_key, spk_id, has_opk, opk_id = _PREKEY_MESSAGE.unpack(data)
        if version != PREKEY_MESSAGE_VERSION:
            raise MalformedInput(f"unknown prekey message version {version}")
        # Strict: no flag value or id may be set that means nothing, so every bit counts.
        if has_opk not in (0, 1) or (has_opk == 0 and opk_id != 0):
            raise MalformedInput("prekey message has an invalid one-time prekey field")
        return cls(
            PublicIdentity.decode(ident),
            check_x25519_public(base_key, "prekey message base key"),
            spk_id,
            opk_id if has_opk else None,
        )


@dataclass(frozen=True)
class Bundle:
    """One entry of the directory's ``bundles`` answer, parsed and shape-checked."""

    device: str | None
    identity: PublicIdentity
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    one_time_prekey_id: int | None
    one_time_prekey: bytes | None

    @classmethod
    def from_json(cls, obj: Any) -> Bundle:
        if not isinstance(obj, dict):
            raise MalformedInput("a prekey bundle must be a JSON object")
        device = obj.get("device")
        if device is not None and not isinstance(device, str):
            raise MalformedInput("bundle field 'device' must be a string")
        spk = obj.get("signed_prekey")
        if not isinstance(spk, dict):
            raise MalformedInput("bundle lacks its 'signed_prekey' object")
        opk = obj.get("one_time_prekey")
        if opk is not None and not isinstance(opk, dict):
            raise MalformedInput("bundle field 'one_time_prekey' must be an object or null")
        return cls(
            device=device,
            identity=PublicIdentity.decode(_b64_field(obj, "identity")),
            signed_prekey_id=_id_field(spk, "signed_prekey.id"),
            signed_prekey=check_x25519_public(
                _b64_field(spk, "key", "signed_prekey.key"), "signed prekey"
            ),
            signed_prekey_signature=_b64_field(spk, "sig", "signed_prekey.sig", SIGNATURE_BYTES),
            one_time_prekey_id=None if opk is None else _id_field(opk, "one_time_prekey.id"),
            one_time_prekey=None
            if opk is None
            else check_x25519_public(
                _b64_field(opk, "key", "one_time_prekey.key"), "one-time prekey"
            ),
        )

    def verify(self) -> None:
        """BadSignature unless the signed prekey is signed by the bundle's identity."""
        self.identity.verify(
            self.signed_prekey_signature,
            signed_prekey_message(self.signed_prekey_id, self.signed_prekey),
            "signed prekey in bundle",
        )


def _b64_field(
    obj: dict[str, Any], key: str, name: str | None = None, length: int | None = None
) -> bytes:
    name = name or key
    try:
        return b64decode(obj.get(key), f"bundle field {name!r}", length=length)
    except B64Error as exc:
        raise MalformedInput(str(exc)) from None


def _id_field(obj: dict[str, Any], name: str) -> int:
    value = obj.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**32:
        raise MalformedInput(f"bundle field {name!r} must be an integer in [1, 2^32)")
    return value


@dataclass(frozen=True)
class Initiated:
    """Alice's result: the shared secret, the AD, and the message that lets Bob follow."""

    shared_secret: bytes
    associated_data: bytes
    prekey_message: PrekeyMessage


def initiate(own: IdentityKeyPair, bundle: Bundle) -> Initiated:
    """Alice's side. Verifies the bundle first: BadSignature before any key is used."""
    bundle.verify()
    ephemeral = X25519PrivateKey.generate()
    outputs = [
        dh(own.dh_private, bundle.signed_prekey),
        dh(ephemeral, bundle.identity.dh_key),
        dh(ephemeral, bundle.signed_prekey),
    ]
    if bundle.one_time_prekey is not None:
        outputs.append(dh(ephemeral, bundle.one_time_prekey))
    # The ephemeral private key goes out of scope here and is never stored (X3DH §3.3:
    # "Alice deletes her ephemeral private key and the DH outputs").
    return Initiated(
        shared_secret=x3dh_secret(outputs),
        associated_data=associated_data(own.public, bundle.identity),
        prekey_message=PrekeyMessage(
            identity=own.public,
            base_key=x25519_public_bytes(ephemeral),
            signed_prekey_id=bundle.signed_prekey_id,
            one_time_prekey_id=bundle.one_time_prekey_id,
        ),
    )


def respond(
    own: IdentityKeyPair,
    signed_prekey: X25519PrivateKey,
    one_time_prekey: X25519PrivateKey | None,
    message: PrekeyMessage,
) -> tuple[bytes, bytes]:
    """Bob's side: (SK, AD). The caller picks the prekeys the message names."""
    outputs = [
        dh(signed_prekey, message.identity.dh_key),
        dh(own.dh_private, message.base_key),
        dh(signed_prekey, message.base_key),
    ]
    if one_time_prekey is not None:
        outputs.append(dh(one_time_prekey, message.base_key))
    return x3dh_secret(outputs), associated_data(message.identity, own.public)
