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

The record (version 2), padded like a message and sealed::

    {"device":..,"direction":"in"|"out","from":..,"id":..,"to_user":..|null,"ts":..,"v":2}
    <a newline>
    <the message's bytes, as the device has them>

A JSON header of bounded size, a newline, then the text's raw bytes: the record's size is
the text's plus at most ``MAX_HEADER_BYTES``, whatever the text holds. (Version 1 carried
the text inside the JSON, where escaping could make it up to six times longer: a text
that fitted an envelope no longer fitted a journal record, and the reading device's
handler failed on it - issue 12.) So ``JOURNAL_TEXT_MAX`` - the largest text whose
record fits the largest padding bucket - is exact, and a device refuses to send more
(``clients.limits``).

The archive takes nothing on trust from a record, although only a device (or anyone:
the key is public) could have sealed it: the header is strict JSON (no NaN/Infinity,
bounded size and nesting, exactly these fields), every field has its type and range,
and a record that fails is refused with the reason (``ArchiveError``), which the
enterprise server reports and sets aside.
"""

from __future__ import annotations

import re
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

from clients.crypto import MAX_PLAINTEXT, CryptoError, open_sealed, pad, seal_to, unpad
from infra.sqlite import Schema, open_store
from wire import strictjson
from wire.canonical import canonical_bytes
from wire.ids import USER_RE, is_device

_INFO = b"doormat compliance archive v1|"  # + the journalling device's id
ARCHIVE_KIND = "archive"  # topic kind: doormat/out/<device>/archive -> doormat/in/<ent>/archive
RECORD_VERSION = 2
DIRECTIONS = ("in", "out")
_RECORD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = frozenset({"v", "device", "direction", "id", "from", "to_user", "ts"})
MAX_TS = 2**53  # milliseconds, as an envelope's ts

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

    def header(self) -> bytes:
        """The record's JSON header (everything but the text)."""
        fields = self.to_json()
        del fields["text"]
        return canonical_bytes({**fields, "v": RECORD_VERSION})


class ArchiveError(ValueError):
    """A journal record the archive cannot open or does not accept."""


class RecordTooLarge(ArchiveError):
    """A journal record that would not fit the largest padding bucket."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the journal record would be {size} bytes, over the {limit}-byte limit of a "
            f"record (a text of at most {JOURNAL_TEXT_MAX} bytes fits)"
        )
        self.size = size
        self.limit = limit


# The longest header a device can write: the longest ids the grammar allows
# (wire/ids.py: 32 characters a name), the longest message id, the largest timestamp.
LONGEST_DEVICE = f"{'a' * 32}@{'b' * 32}.{'c' * 32}"
MAX_HEADER_BYTES = len(
    Record(LONGEST_DEVICE, "out", "f" * 64, LONGEST_DEVICE, f"{'a' * 32}@{'b' * 32}",
           MAX_TS - 1, "").header()
)  # fmt: skip
#: The largest text whose journal record fits: what an archiving device can journal.
JOURNAL_TEXT_MAX = MAX_PLAINTEXT - MAX_HEADER_BYTES - 1


def record_body(record: Record, text: bytes | None = None) -> bytes:
    """The unsealed record: header, newline, the text's bytes (``text``: as the device
    has them; default ``record.text`` in UTF-8). RecordTooLarge if it cannot fit."""
    raw = record.text.encode("utf-8", "surrogatepass") if text is None else text
    body = b"".join((record.header(), b"\n", raw))
    if len(body) > MAX_PLAINTEXT:
        raise RecordTooLarge(len(body), MAX_PLAINTEXT)
    return body


def journal_record(archive_public_key: bytes, record: Record, text: bytes | None = None) -> bytes:
    """Seal a record for the enterprise archive (what a device sends). RecordTooLarge if
    it cannot fit (a text over ``JOURNAL_TEXT_MAX`` bytes)."""
    # Padded like messages, so the relay learns a bucket, not a length.
    return seal_to(
        archive_public_key, pad(record_body(record, text)), info=_INFO + record.device.encode()
    )


def parse_record(device: str, body: bytes) -> Record:
    """An opened, unpadded record from ``device``, checked field by field; ArchiveError
    saying what is wrong."""
    head, sep, raw = body.partition(b"\n")
    if not sep:
        raise ArchiveError(f"journal record from {device} has no header line")
    try:
        obj = strictjson.loads_object(
            head, "journal record header", max_bytes=MAX_HEADER_BYTES, max_depth=1
        )
    except strictjson.StrictJSONError as exc:
        raise ArchiveError(f"journal record from {device}: {exc}") from None
    if obj.keys() != _FIELDS:
        missing, unknown = sorted(_FIELDS - obj.keys()), sorted(obj.keys() - _FIELDS)
        raise ArchiveError(
            f"journal record from {device}: fields must be exactly {sorted(_FIELDS)} "
            f"(missing {missing}, unknown {[k[:40] for k in unknown]})"
        )
    v, ts, to_user = obj["v"], obj["ts"], obj["to_user"]
    problem = None
    if v != RECORD_VERSION or isinstance(v, bool):
        problem = f"version {v!r} (expected {RECORD_VERSION})"
    elif obj["device"] != device:
        problem = f"names device {str(obj['device'])[:100]!r}"
    elif obj["direction"] not in DIRECTIONS:
        problem = "'direction' must be 'in' or 'out'"
    elif not isinstance(obj["id"], str) or not _RECORD_ID.match(obj["id"]):
        problem = "'id' must be 1 to 64 letters, digits, '-' or '_'"
    elif not is_device(obj["from"]):
        problem = "'from' is not a device id"
    elif not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < MAX_TS:
        problem = f"'ts' must be an integer from 0 to {MAX_TS - 1} (milliseconds)"
    elif obj["direction"] == "out" and not (
        isinstance(to_user, str) and USER_RE.fullmatch(to_user)
    ):
        problem = "'to_user' of a sent message must be a user id"
    elif obj["direction"] == "in" and to_user is not None:
        problem = "'to_user' of a read message must be null"
    if problem is not None:
        raise ArchiveError(f"journal record from {device}: {problem}")
    return Record(
        device=device,
        direction=obj["direction"],
        id=obj["id"],
        sender=obj["from"],
        to_user=to_user,
        ts=ts,
        text=raw.decode("utf-8", errors="replace"),
    )


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
        except CryptoError as exc:
            raise ArchiveError(f"journal record from {device} does not open: {exc}") from None
        rec = parse_record(device, body)
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
