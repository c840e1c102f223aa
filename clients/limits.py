"""The largest text a user can send, and the refusal at the sender (issue 12, point 2).

Every size a user can send must work end to end, or be refused at the sender with a
clear message. A text travels in three containers, each with a limit:

* the envelope (``wire.envelope.MAX_ENVELOPE_BYTES``, 64 KiB): the padded ciphertext of
  the largest bucket fits, with the header, the prekey message and the JSON around them;
* a mandated build's ``ext`` (``wire.envelope.MAX_EXT_BYTES``, 4 KiB): the global-key
  build carries a second copy of the padded plaintext there, so under that mandate only
  texts of the smaller buckets fit (a cost of the back door, measured here);
* the journal record an archiving enterprise's device seals for every message it sends
  *or reads* (``clients.archive.JOURNAL_TEXT_MAX``): the sender cannot know whether the
  recipient's enterprise journals, so every sender keeps to it.

``max_text_bytes(build)`` is the smallest of the three for that build, in bytes of the
text as sent (UTF-8); ``check_text`` raises ``TextTooLong`` (with ``size`` and
``limit``) for anything longer, before anything is sealed or stored. The envelope
limits are measured, not estimated: an envelope of each padding bucket is sealed once
(per kind of build) with the longest ids the grammar allows and a first-contact prekey
message, and the largest bucket whose envelope fits is the limit.
"""

from __future__ import annotations

import functools
import json
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from clients.archive import JOURNAL_TEXT_MAX, LONGEST_DEVICE
from clients.backdoors import extensions
from clients.crypto import BUCKETS, DeviceCrypto
from wire.envelope import MAX_ENVELOPE_BYTES, MAX_EXT_BYTES, Envelope
from wire.li.builds import ClientBuild


class TextTooLong(ValueError):
    """A text longer than a user can send (``limit`` bytes): refused at the sender."""

    def __init__(self, size: int, limit: int, why: str) -> None:
        super().__init__(
            f"the message is {size} bytes; the largest a user can send is {limit} bytes "
            f"({why}): shorten it or split it"
        )
        self.size = size
        self.limit = limit


def max_text_bytes(build: ClientBuild | None = None) -> int:
    """The largest text, in bytes, a device running ``build`` may send."""
    return min(limits(build).values())


def limits(build: ClientBuild | None = None) -> dict[str, int]:
    """Each container's limit on the text, in bytes (the smallest one rules)."""
    build = build or ClientBuild()
    return {
        "journal record": JOURNAL_TEXT_MAX,
        "envelope": _envelope_text_max(
            build.escrow_public_key is not None, build.global_key is not None
        ),
    }


def check_text(data: bytes, build: ClientBuild | None = None) -> None:
    """TextTooLong if ``data`` is longer than a user may send with ``build``."""
    if len(data) <= JOURNAL_TEXT_MAX and len(data) < BUCKETS[0]:
        return  # the common case: a short message fits everything
    each = limits(build)
    limit = min(each.values())
    if len(data) > limit:
        why = min(each, key=lambda k: each[k])
        raise TextTooLong(len(data), limit, f"the limit of the {why}")


@functools.cache
def _envelope_text_max(escrow: bool, global_key: bool) -> int:
    """The largest text whose envelope (and ``ext``) fits, for a build with these back
    doors: measured on a real first-contact envelope of each bucket (module doc)."""
    build = ClientBuild(
        "probe",
        escrow_public_key=(
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            if escrow
            else None
        ),
        global_key=os.urandom(32) if global_key else None,
    )
    sender, recipient = LONGEST_DEVICE, LONGEST_DEVICE[:-1] + "d"
    for bucket in sorted(BUCKETS, reverse=True):
        alice = DeviceCrypto.create(sender, one_time_prekeys=1)
        bob = DeviceCrypto.create(recipient, one_time_prekeys=1)
        material = bob.publish_material()
        alice.start_session(
            recipient,
            {
                "device": recipient,
                "identity": material["identity"],
                "signed_prekey": material["signed_prekey"],
                "one_time_prekey": material["one_time_prekeys"][0],
            },
        )
        text = bytes(bucket - 1)
        sealed = alice.encrypt(recipient, text)
        msg_id = "f" * 32
        env = Envelope(
            id=msg_id,
            sender=sender,
            recipient=recipient,
            ts=2**53 - 1,
            header=sealed.header,
            body=sealed.body,
            prekey=sealed.prekey,
            ext=extensions(build, msg_id, sender, recipient, text, sealed),
        )
        # As wire.envelope.parse measures them.
        if len(env.encode()) <= MAX_ENVELOPE_BYTES and len(json.dumps(env.ext)) <= MAX_EXT_BYTES:
            return bucket - 1
    return 0


__all__ = ["TextTooLong", "check_text", "limits", "max_text_bytes"]
