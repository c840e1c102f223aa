"""The government's side of a back door: the keys it mandates and keeps.

``Government(backdoor)`` generates what the chosen back door needs, hands the client
vendors the ``ClientBuild`` every device must run, and gives its own tap the readers for
the keys it kept. Stealing any of these keys is the cost the lab measures.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from clients.crypto import DeviceCrypto, new_escrow_key, new_global_key
from interceptor.readers import DeviceReader, EscrowReader, GlobalKeyReader, Reader
from wire.li.builds import BACKDOORS, ClientBuild


class Government:
    def __init__(self, backdoor: str = "none") -> None:
        self.backdoor = "none"
        self.escrow_key: X25519PrivateKey | None = None
        self.global_key: bytes | None = None
        # Ghost devices the government runs, one per user: device id -> its keys.
        self.ghosts: dict[str, DeviceCrypto] = {}
        self._ghost_reader = DeviceReader(self.ghosts, name="ghost devices' keys")
        self.mandate(backdoor)

    def mandate(self, backdoor: str) -> None:
        """Switch the mandated back door. Keys made for an earlier mandate are kept: the
        traffic they opened stays open to whoever holds them."""
        if backdoor not in BACKDOORS:
            raise ValueError(f"unknown back door {backdoor!r}: use one of {', '.join(BACKDOORS)}")
        self.backdoor = backdoor
        if backdoor == "escrow" and self.escrow_key is None:
            self.escrow_key = new_escrow_key()
        elif backdoor == "global-key" and self.global_key is None:
            self.global_key = new_global_key()

    def client_build(self) -> ClientBuild:
        """The build every device must run under the current mandate."""
        if self.backdoor == "escrow" and self.escrow_key is not None:
            public = self.escrow_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            return ClientBuild(name="escrow", escrow_public_key=public)
        if self.backdoor == "global-key" and self.global_key is not None:
            return ClientBuild(name="global-key", global_key=self.global_key)
        # No mandate, or the ghost one, which changes the directory, not the client.
        return ClientBuild()

    def readers(self) -> list[Reader]:
        """Every key the government's own tap holds."""
        readers: list[Reader] = []
        if self.escrow_key is not None:
            readers.append(EscrowReader(self.escrow_key))
        if self.global_key is not None:
            readers.append(GlobalKeyReader(self.global_key))
        if self.ghosts:
            readers.append(self._ghost_reader)
        return readers
