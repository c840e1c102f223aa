"""The cost of a back door, as attacks that report numbers.

Each attacker gets real stolen bytes - a copy of a private key, a copy of one device's
SQLite file - and the traffic an attacker can plausibly hold (the relay operator's
store: what an insider, a breach, or a court order against the operator yields). What
it reads is then counted by ``doormat.exposure.assess`` like any other observer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from clients.crypto import MalformedInput, PrekeyMessage
from interceptor.readers import EscrowReader, GlobalKeyReader, Reader, StolenStateReader
from wire import envelope as wire_envelope
from wire.envelope import Envelope, EnvelopeError
from wire.li.builds import ClientBuild


def steal_escrow_key(key: X25519PrivateKey) -> EscrowReader:
    """The escrow private key leaves the government's vault as 32 bytes."""
    stolen = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return EscrowReader(X25519PrivateKey.from_private_bytes(stolen), name="stolen escrow key")


@dataclass
class DeviceImage:
    """What an attacker extracts from one device: a copy of its store, taken at ``taken_at``
    (the number of messages sent so far)."""

    device: str
    path: Path
    taken_at: int

    @classmethod
    def take(cls, device: str, store: Path, into: Path, taken_at: int) -> DeviceImage:
        into.parent.mkdir(parents=True, exist_ok=True)
        # SQLite's online backup: a consistent copy of a live database, as a forensic
        # image of the phone's storage would be.
        with sqlite3.connect(store) as src, sqlite3.connect(into) as dst:
            src.backup(dst)
        return cls(device, into, taken_at)

    def _meta(self, key: str) -> str | None:
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def crypto_state(self) -> bytes:
        """The device's crypto state as it was in the image (every private key)."""
        with sqlite3.connect(self.path) as db:
            (state,) = db.execute("SELECT state FROM crypto").fetchone()
        return bytes(state)

    def ratchet_reader(self) -> StolenStateReader:
        """The device's own keys, as they were in the image, used as a thief would: what
        the ratchet still opens, the sending chains (the victim's own later messages),
        and X3DH redone on first-contact messages with the prekeys still in the image
        (``clients.crypto.StolenState``). Not the plaintext ``history`` table."""
        return StolenStateReader(self.crypto_state(), name=f"{self.device} ratchet state")

    def build_readers(self) -> list[Reader]:
        """Keys baked into the client build found in the image (a mandated build's)."""
        text = self._meta("client_build")
        build = ClientBuild.from_json(json.loads(text)) if text else ClientBuild()
        readers: list[Reader] = []
        if build.global_key is not None:
            readers.append(GlobalKeyReader(build.global_key, name="global key from the image"))
        return readers

    def readers(self) -> list[Reader]:
        return [self.ratchet_reader(), *self.build_readers()]


def first_contacts(
    captured: Iterable[bytes], device: str, keys: set[tuple[str, str]]
) -> list[Envelope]:
    """The envelopes of the messages ``keys`` addressed to ``device`` that carry a prekey
    message (first contacts: each starts, or repeats the start of, a session), in
    capture order."""
    out = []
    for raw in captured:
        try:
            env = wire_envelope.parse(raw)
        except EnvelopeError:
            continue
        if env.recipient == device and env.prekey is not None and (env.sender, env.id) in keys:
            out.append(env)
    return out


def first_contact_exposure(
    captured: Iterable[bytes],
    before: set[tuple[str, str]],
    at_theft: DeviceImage,
    holding_every_key: DeviceImage,
    after_rotation: DeviceImage,
) -> dict[str, Any]:
    """What stolen images open of the first-contact messages the device received before
    the theft (issue 12, point 8), each image through its own keys (``StolenState``):

    * ``opened_by_image``: the image at the theft. A one-time prekey is deleted once
      used, so only a first message that came without one opens (X3DH redone with the
      identity key and the signed prekey), while that signed prekey is in the image;
    * ``opened_if_no_key_were_deleted``: an image taken before those messages arrived,
      which holds every key they used: what deleting them prevents;
    * ``opened_after_rotation``: an image taken after the signed prekey was rotated and
      the replaced one deleted once its grace period was over.
    """
    contacts = first_contacts(captured, at_theft.device, before)
    messages = {(e.sender, e.id) for e in contacts}
    without = set()
    for env in contacts:
        try:
            assert env.prekey is not None
            if PrekeyMessage.decode(env.prekey).one_time_prekey_id is None:
                without.add((env.sender, env.id))
        except MalformedInput:
            continue

    def opened(image: DeviceImage) -> int:
        reader = image.ratchet_reader()
        return len({(e.sender, e.id) for e in contacts if reader.try_open(e) is not None})

    return {
        "device": at_theft.device,
        "messages": len(messages),
        "without_one_time_prekey": len(without),
        "opened_by_image": opened(at_theft),
        "opened_if_no_key_were_deleted": opened(holding_every_key),
        "opened_after_rotation": opened(after_rotation),
    }
