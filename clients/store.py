"""A device's durable state: its crypto state, what it has processed, its chat history
and its outbox, in one SQLite file.

Every state change that must survive a crash happens in one transaction with the
thing it depends on: a received message's plaintext, the fact that it was processed,
and the ratchet state that decrypted it are committed together, and only then is the
relay told (acknowledged). A device killed at any point therefore either has not
processed a message (the relay still holds it and re-sends it) or has processed it
exactly once.

Not everything needs that: a message leaving the outbox once published (``sent``) is
recorded without a commit of its own, in the next transaction (or at ``close``). If
that is lost, the device re-sends the envelope, and the relay de-duplicates it.

A message that would bind its sender to a new or changed identity key is *held*
(``hold``) before it is acknowledged: kept, still sealed, until the device has checked
the identity against the directory's log (clients/identities.py); then it is either
opened and committed like any other (``release``, one transaction with its removal from
``held``) or refused (``refuse_held``). ``peer_identities`` keeps the identity the
device accepted for each peer device, and whether its user verified the safety number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clients.identities import Known
from infra.sqlite import Schema, exists, open_store, transaction

SCHEMA = Schema("device store", """
CREATE TABLE IF NOT EXISTS crypto (one INTEGER PRIMARY KEY CHECK (one = 1), state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS processed (
    sender TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (sender, id));
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    id TEXT NOT NULL, peer_user TEXT NOT NULL, device TEXT NOT NULL,
    ts INTEGER NOT NULL, text BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    kind TEXT NOT NULL, id TEXT NOT NULL, recipient TEXT NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (kind, id, recipient));
CREATE TABLE IF NOT EXISTS undelivered (
    id TEXT NOT NULL, recipient TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (id, recipient));
CREATE TABLE IF NOT EXISTS held (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sender TEXT NOT NULL, id TEXT NOT NULL,
    payload BLOB NOT NULL, held_ms INTEGER NOT NULL, UNIQUE (sender, id));
CREATE TABLE IF NOT EXISTS peer_identities (
    device TEXT PRIMARY KEY, identity TEXT NOT NULL, verified INTEGER NOT NULL,
    how TEXT NOT NULL, updated_ms INTEGER NOT NULL);
""")


@dataclass(frozen=True)
class HistoryEntry:
    direction: str  # "in" or "out"
    id: str
    peer_user: str  # the other user (sender for "in", addressee for "out")
    device: str  # the sending device
    ts: int
    text: bytes
    # For "out": the devices the relay refused the envelope for, and why.
    undelivered: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Incoming:
    """A processed envelope, as committed."""

    sender: str
    peer_user: str
    id: str
    ts: int
    text: bytes | None  # None: it could not be read
    journal: bytes | None = None


class DeviceStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # FULL: a commit is on disk before we acknowledge to the relay.
        self._db = open_store(self.path, SCHEMA, synchronous="FULL")
        self._sent: list[tuple[str, str, str]] = []  # left the outbox, not yet written

    def close(self) -> None:
        if self._sent:
            with self._tx():
                pass
        self._db.close()

    def load_crypto(self) -> bytes | None:
        row = self._db.execute("SELECT state FROM crypto WHERE one = 1").fetchone()
        return None if row is None else bytes(row[0])

    def save_crypto(self, state: bytes) -> None:
        with self._tx():
            self._put_crypto(state)

    def image(self) -> bytes:
        """A consistent copy of the whole store, as bytes of an SQLite file (SQLite's
        online backup): what a forensic image of the device's storage holds."""
        copy = sqlite3.connect(":memory:")
        try:
            self._db.backup(copy)
            return copy.serialize()
        finally:
            copy.close()

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def is_processed(self, sender: str, msg_id: str) -> bool:
        return exists(
            self._db, "SELECT 1 FROM processed WHERE sender = ? AND id = ?", (sender, msg_id)
        )

    def commit_incoming(
        self,
        state: bytes,
        sender: str,
        peer_user: str,
        msg_id: str,
        ts: int,
        text: bytes | None,
        journal: bytes | None = None,
    ) -> None:
        """Record a processed envelope (with its plaintext, or None if it could not be
        read), its journal record if any, and the crypto state after it, atomically."""
        self.commit_incoming_many(state, [Incoming(sender, peer_user, msg_id, ts, text, journal)])

    def commit_incoming_many(self, state: bytes, envelopes: list[Incoming]) -> None:
        """``commit_incoming`` for envelopes opened one after another, in one transaction
        with the crypto state after the last."""
        with self._tx():
            self._put_crypto(state)
            for e in envelopes:
                self._record_incoming(e)

    def _record_incoming(self, e: Incoming) -> None:
        if e.journal is not None:
            self._put_journal(e.id, e.sender, e.journal)
        self._db.execute("INSERT INTO processed (sender, id) VALUES (?, ?)", (e.sender, e.id))
        if e.text is not None:
            self._db.execute(
                "INSERT INTO history (direction, id, peer_user, device, ts, text)"
                " VALUES ('in', ?, ?, ?, ?, ?)",
                (e.id, e.peer_user, e.sender, e.ts, e.text),
            )

    # -- identities and held envelopes ---------------------------------------------------

    def peer_identity(self, device: str) -> Known | None:
        row = self._db.execute(
            "SELECT identity, verified FROM peer_identities WHERE device = ?", (device,)
        ).fetchone()
        return None if row is None else Known(str(row[0]), bool(row[1]))

    def set_peer_identity(
        self, device: str, identity: str, *, verified: bool, how: str, now_ms: int
    ) -> None:
        with self._tx():
            self._put_identity(device, identity, verified, how, now_ms)

    def _put_identity(
        self, device: str, identity: str, verified: bool, how: str, now_ms: int
    ) -> None:
        self._db.execute(
            "INSERT INTO peer_identities (device, identity, verified, how, updated_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET"
            " identity = excluded.identity, verified = excluded.verified,"
            " how = excluded.how, updated_ms = excluded.updated_ms",
            (device, identity, int(verified), how, now_ms),
        )

    def hold(self, envelopes: list[tuple[str, str, bytes]], now_ms: int) -> None:
        """Keep (sender, id, raw envelope) until their sender's identity is checked."""
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO held (sender, id, payload, held_ms) VALUES (?, ?, ?, ?)",
                [(sender, msg_id, payload, now_ms) for sender, msg_id, payload in envelopes],
            )

    def is_held(self, sender: str, msg_id: str) -> bool:
        return exists(self._db, "SELECT 1 FROM held WHERE sender = ? AND id = ?", (sender, msg_id))

    def held(self) -> list[tuple[str, str, bytes]]:
        """(sender, id, raw envelope) of every held envelope, in arrival order."""
        rows = self._db.execute("SELECT sender, id, payload FROM held ORDER BY seq").fetchall()
        return [(str(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def release(
        self,
        state: bytes,
        incoming: Incoming,
        identity: tuple[str, str, bool, str] | None,
        now_ms: int,
    ) -> None:
        """A held envelope, now processed (opened or not): committed like any incoming
        one, with the crypto state after it and the identity accepted (device,
        identity, verified, how), and no longer held, in one transaction."""
        with self._tx():
            self._put_crypto(state)
            self._record_incoming(incoming)
            if identity is not None:
                self._put_identity(*identity, now_ms)
            self._db.execute(
                "DELETE FROM held WHERE sender = ? AND id = ?", (incoming.sender, incoming.id)
            )

    def refuse_held(self, sender: str, msg_id: str) -> None:
        """A held envelope refused: processed (a repeat is dropped), never opened."""
        with self._tx():
            self._db.execute("INSERT INTO processed (sender, id) VALUES (?, ?)", (sender, msg_id))
            self._db.execute("DELETE FROM held WHERE sender = ? AND id = ?", (sender, msg_id))

    def commit_outgoing(
        self,
        state: bytes,
        msg_id: str,
        peer_user: str,
        device: str,
        ts: int,
        text: bytes,
        envelopes: list[tuple[str, bytes]],
        journal: bytes | None = None,
    ) -> None:
        """Record a sent message, its envelopes (the outbox), its journal record for the
        enterprise archive if any, and the crypto state that sealed them, atomically: a
        crash after this re-sends the same bytes."""
        with self._tx():
            self._put_crypto(state)
            self._db.execute(
                "INSERT INTO history (direction, id, peer_user, device, ts, text)"
                " VALUES ('out', ?, ?, ?, ?, ?)",
                (msg_id, peer_user, device, ts, text),
            )
            self._db.executemany(
                "INSERT INTO outbox (kind, id, recipient, payload) VALUES ('msg', ?, ?, ?)",
                [(msg_id, rcpt, env) for rcpt, env in envelopes],
            )
            if journal is not None:
                self._put_journal(msg_id, device, journal)

    def outbox(self) -> list[tuple[str, str, str, bytes]]:
        """(topic kind, message id, recipient, payload) of everything not yet published."""
        rows = self._db.execute("SELECT kind, id, recipient, payload FROM outbox").fetchall()
        gone = set(self._sent)
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows if (r[0], r[1], r[2]) not in gone]

    def sent(self, kind: str, msg_id: str, recipient: str) -> None:
        """The envelope may leave the outbox. Written with the next transaction: a commit
        (an fsync) of its own per envelope would cost more than the rare harmless re-send
        after a crash."""
        self._sent.append((kind, msg_id, recipient))

    def undelivered(self, msg_id: str, recipient: str, reason: str) -> None:
        """The relay refused this message's envelope for ``recipient``, for good."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO undelivered (id, recipient, reason) VALUES (?, ?, ?)",
                (msg_id, recipient, reason),
            )
            self._db.execute(
                "DELETE FROM outbox WHERE kind = 'msg' AND id = ? AND recipient = ?",
                (msg_id, recipient),
            )

    def _put_journal(self, msg_id: str, sender: str, journal: bytes) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (kind, id, recipient, payload)"
            " VALUES ('archive', ?, ?, ?)",
            (msg_id, sender, journal),
        )

    def history(self) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT direction, id, peer_user, device, ts, text FROM history ORDER BY seq"
        ).fetchall()
        refused: dict[str, list[tuple[str, str]]] = {}
        for msg_id, recipient, reason in self._db.execute(
            "SELECT id, recipient, reason FROM undelivered ORDER BY id, recipient"
        ):
            refused.setdefault(msg_id, []).append((recipient, reason))
        return [
            HistoryEntry(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                bytes(r[5]),
                tuple(refused.get(r[1], ())) if r[0] == "out" else (),
            )
            for r in rows
        ]

    def _put_crypto(self, state: bytes) -> None:
        self._db.execute(
            "INSERT INTO crypto (one, state) VALUES (1, ?)"
            " ON CONFLICT (one) DO UPDATE SET state = excluded.state",
            (state,),
        )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction, which also writes what left the outbox since the last one."""
        with transaction(self._db):
            self._flush_sent()
            yield

    def _flush_sent(self) -> None:
        if self._sent:
            self._db.executemany(
                "DELETE FROM outbox WHERE kind = ? AND id = ? AND recipient = ?", self._sent
            )
            self._sent = []
