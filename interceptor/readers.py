"""Keys an observer holds, each as a ``Reader`` that tries to open captured envelopes.

The exposure report counts only what these actually open (the AEAD tag verifies), so
an observer's numbers follow from its keys, never from the scenario's mode.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients.backdoors import open_escrow, open_global
from clients.crypto import DeviceCrypto, Sealed
from clients.crypto.errors import CryptoError
from wire.envelope import Envelope


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
        return open_escrow(env, self._key)


class GlobalKeyReader:
    """The one key baked into every client build."""

    def __init__(self, key: bytes, name: str = "global key") -> None:
        self.name = name
        self._key = key

    def try_open(self, env: Envelope) -> bytes | None:
        return open_global(env, self._key)


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
