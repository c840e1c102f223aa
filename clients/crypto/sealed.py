"""What ``DeviceCrypto.encrypt`` returns: the three opaque envelope fields, plus two
values that never go on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sealed:
    header: bytes  # encoded ratchet header -> envelope "header"
    body: bytes  # AES-256-GCM ciphertext of the padded plaintext -> envelope "body"
    prekey: bytes | None  # encoded X3DH prekey message -> envelope "prekey", or absent
    # Not sent. Kept for a mandated "escrow" client build (issue 4), which must wrap each
    # message key to a third party; ``open_body(message_key, associated_data, header,
    # body)`` is all such a holder needs. None on a Sealed rebuilt from an envelope.
    message_key: bytes | None = field(default=None, compare=False, repr=False)
    associated_data: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _fast(
        cls,
        header: bytes,
        body: bytes,
        prekey: bytes | None,
        message_key: bytes,
        associated_data: bytes,
    ) -> Sealed:
        """The same object as ``Sealed(...)``, built for the per-message hot path.

        A frozen dataclass's generated ``__init__`` sets each field through
        ``object.__setattr__``, which costs more than the rest of the bookkeeping of an
        encryption; filling the instance dict directly gives an identical object.
        """
        self = object.__new__(cls)
        fields = self.__dict__
        fields["header"] = header
        fields["body"] = body
        fields["prekey"] = prekey
        fields["message_key"] = message_key
        fields["associated_data"] = associated_data
        return self
