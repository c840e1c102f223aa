"""Keys an observer holds, each as a ``Reader`` that tries to open captured envelopes.

The exposure report counts only what these actually open (the AEAD tag verifies), so
an observer's numbers follow from its keys, never from the scenario's mode.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients.crypto import (
    CryptoError,
    DeviceCrypto,
    Sealed,
    StolenState,
    escrow_open,
    global_open,
)
from wire.envelope import Envelope
from wire.li.builds import ESCROW_FIELD, GLOBAL_FIELD, binding_of, mandated_field


class Reader(Protocol):
    """One key an observer holds, and how it tries to open an envelope with it."""

    name: str

    def try_open(self, env: Envelope) -> bytes | None:
        """The plaintext, or None if this key does not open this envelope."""
        ...


class EscrowReader:
    """The escrow private key: opens every envelope a LEAF-style client build wrapped."""

    def __init__(self, private_key: X25519PrivateKey, name: str = "escrow private key") -> None:
        self.name = name
        self._key = private_key

    def try_open(self, env: Envelope) -> bytes | None:
        """Unwrap the message key from ``ext.escrow``, open the body with it."""
        wrapped = mandated_field(env, ESCROW_FIELD)
        if wrapped is None:
            return None
        try:
            return escrow_open(self._key, wrapped, env.header, env.body, binding=binding_of(env))
        except CryptoError:
            # Any failure means "this key does not open this envelope"; the caller counts.
            return None


class GlobalKeyReader:
    """The one key baked into every client build."""

    def __init__(self, key: bytes, name: str = "global key") -> None:
        self.name = name
        self._key = key

    def try_open(self, env: Envelope) -> bytes | None:
        """Open the copy in ``ext.global``."""
        blob = mandated_field(env, GLOBAL_FIELD)
        if blob is None:
            return None
        try:
            return global_open(self._key, blob, binding=binding_of(env))
        except CryptoError:
            return None


class DeviceReader:
    """The ratchet state of devices: opens envelopes addressed to them, in capture order.

    Ratchet decryption consumes keys, so each envelope is decrypted once and the result
    remembered: asking again about the same bytes gives the same answer without
    pretending to decrypt twice.
    """

    def __init__(self, devices: dict[str, DeviceCrypto], name: str) -> None:
        self.name = name
        self._devices = devices
        self._seen: dict[tuple[str, str, str], bytes | None] = {}

    def try_open(self, env: Envelope) -> bytes | None:
        crypto = self._devices.get(env.recipient)
        if crypto is None:
            return None
        key = env.key
        if key not in self._seen:
            sealed = Sealed(header=env.header, body=env.body, prekey=env.prekey)
            try:
                self._seen[key] = crypto.decrypt(env.sender, sealed)
            except CryptoError:
                self._seen[key] = None
        return self._seen[key]


class StolenStateReader:
    """A stolen copy of one device's crypto state, used as a thief would
    (``clients.crypto.StolenState``): besides what the device's own code would open, its
    own later messages (the sending chains in the state) and first-contact messages
    (X3DH redone with the prekeys still in it, replay list or not). Each envelope is
    tried once, in capture order, and the answer remembered."""

    def __init__(self, state: bytes, name: str) -> None:
        self.name = name
        self._thief = StolenState(state)
        self._seen: dict[tuple[str, str, str], bytes | None] = {}

    @property
    def device(self) -> str:
        return self._thief.device_id

    def try_open(self, env: Envelope) -> bytes | None:
        if self.device not in (env.sender, env.recipient):
            return None
        key = env.key
        if key not in self._seen:
            sealed = Sealed(header=env.header, body=env.body, prekey=env.prekey)
            self._seen[key] = self._thief.open(env.sender, env.recipient, sealed)
        return self._seen[key]
