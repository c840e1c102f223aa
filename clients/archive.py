"""An enterprise's disclosed compliance archive (the BES-style journal).

An enterprise that runs one publishes its archive public key (disclosed: every user can
see that their messages are journalled, unlike a ghost). Its devices then seal a copy of
every message they send or read to that key (HPKE, RFC 9180) and send it through the
relay to their enterprise server, which alone can open it (the library's one suite:
``clients.crypto.seal_to`` / ``open_sealed``). This is the one party in
the chain that legitimately holds the content of its own users' messages - and so the
only source of content (CC) for a warrant, checked again by the enterprise itself.

``journal_record`` is what a device does; ``Archive`` is the enterprise side (sans-I/O
but for its SQLite store).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from clients.crypto import CryptoError, open_sealed, pad, seal_to, unpad
from infra.sqlite import Schema, open_store

_INFO = b"doormat compliance archive v1|"  # + the journalling device's id
ARCHIVE_KIND = "archive"  # topic kind: doormat/out/<device>/archive -> doormat/in/<ent>/archive

_SCHEMA = Schema(
    "archive store",
    (
        "CREATE TABLE IF NOT EXISTS records (device TEXT, direction TEXT, id TEXT,"
        " sender TEXT, to_user TEXT, ts INTEGER, text TEXT,"
        " PRIMARY KEY (device, direction, sender, id))",
        "CREATE TABLE IF NOT EXISTS archive_key (private BLOB NOT NULL)",
    ),
)


@dataclass(frozen=True)
class Record:
    """One journalled message, as the archiving device saw it."""

    device: str  # the journalling device
    direction: str  # "out" (it sent it) or "in" (it read it)
    id: str
    sender: str  # sending device
    to_user: str | None  # the addressee (for "out")
    ts: int  # the sender's timestamp, ms
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "direction": self.direction,
            "id": self.id,
            "from": self.sender,
            "to_user": self.to_user,
            "ts": self.ts,
            "text": self.text,
        }


def journal_record(archive_public_key: bytes, record: Record) -> bytes:
    """Seal a record for the enterprise archive (what a device sends)."""
    body = json.dumps(record.to_json(), separators=(",", ":")).encode()
    # Padded like messages, so the relay learns a bucket, not a length.
    return seal_to(archive_public_key, pad(body), info=_INFO + record.device.encode())


class ArchiveError(ValueError):
    """A journal record the archive cannot open or does not accept."""


class Archive:
    """The archive: its private key and the records it opened, in one SQLite store.

    The key lives in the store too, so a restarted enterprise still opens the records
    its devices sealed before the restart (and the public key it handed them at
    activation stays valid)."""

    def __init__(self, enterprise: str, db_path: str | Path, key: X25519PrivateKey | None = None):
        self.enterprise = enterprise
        # Autocommit: a record is committed when ``ingest`` returns, before the Link
        # acknowledges it to the broker (a server killed earlier gets it again).
        try:
            self._db = open_store(db_path, _SCHEMA)
            try:
                self.key = self._load_or_store_key(db_path, key)
            except BaseException:
                self._db.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"{db_path}: not a readable archive store ({exc})") from None

    def _load_or_store_key(
        self, db_path: str | Path, key: X25519PrivateKey | None
    ) -> X25519PrivateKey:
        rows = self._db.execute("SELECT private FROM archive_key").fetchall()
        if not rows:
            key = key if key is not None else X25519PrivateKey.generate()
            raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            self._db.execute("INSERT INTO archive_key VALUES (?)", (raw,))
            return key
        stored = rows[0][0]
        if len(rows) != 1 or not isinstance(stored, bytes) or len(stored) != 32:
            raise ArchiveError(f"{db_path}: corrupt archive key (not one 32-byte X25519 key)")
        loaded = X25519PrivateKey.from_private_bytes(stored)
        if (
            key is not None
            and key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()) != stored
        ):
            # Silently replacing it would orphan every record sealed to the old key.
            raise ArchiveError(f"{db_path}: holds another archive key than the one given")
        return loaded

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def close(self) -> None:
        self._db.close()

    def ingest(self, device: str, sealed: bytes) -> Record:
        """Open and store one record journalled by ``device`` (the relay vouches for the
        topic it came on; the record must name the same device)."""
        return self.ingest_new(device, sealed)[0]

    def ingest_new(self, device: str, sealed: bytes) -> tuple[Record, bool]:
        """``ingest``, and whether the record is new: False for one already archived
        (same device, direction, sender and id: a broker redelivery after a crash, or a
        device re-sending its outbox), which is stored only once."""
        try:
            body = unpad(open_sealed(self.key, sealed, info=_INFO + device.encode()))
            obj = json.loads(body)
            rec = Record(
                device=str(obj["device"]),
                direction=str(obj["direction"]),
                id=str(obj["id"]),
                sender=str(obj["from"]),
                to_user=None if obj["to_user"] is None else str(obj["to_user"]),
                ts=int(obj["ts"]),
                text=str(obj["text"]),
            )
        except (CryptoError, ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"journal record from {device} does not open: {exc}") from None
        if rec.device != device or rec.direction not in ("in", "out"):
            raise ArchiveError(f"journal record from {device} names {rec.device}")
        cur = self._db.execute(
            "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rec.device, rec.direction, rec.id, rec.sender, rec.to_user, rec.ts, rec.text),
        )
        return rec, cur.rowcount == 1

    def records(self) -> list[Record]:
        rows = self._db.execute(
            "SELECT device, direction, id, sender, to_user, ts, text FROM records ORDER BY ts"
        ).fetchall()
        return [Record(*row) for row in rows]
