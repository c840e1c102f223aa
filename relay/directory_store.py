"""The key directory's tables in the relay's store: devices, their prekeys, and the
key-transparency log. A view over the store's connection (``Store.directory``), not a
store of its own: it writes through the store's ``Transactions``, so a directory write
inside ``Store.batch()`` commits together with the envelopes of the same batch.

``devices`` (device -> user, enterprise, published identity set once, current signed
prekey), ``one_time_prekeys`` (each handed out once: deleted in the same transaction
that hands it out) and ``spent_prekeys`` (the ids already handed out, so a client
re-publishing an old batch cannot make the relay hand the same key out twice). Key
material is opaque base64 text to the relay.

Key transparency (docs/key-transparency.md): ``kt_log`` holds the directory's Merkle log,
one row per entry, in leaf order. A device's first ``publish`` (the one that sets its
identity) appends its ``add`` entry *in the same transaction*, so the directory never
binds a key the log does not show. ``relay.kt.DirectoryLog`` rebuilds the tree from these
rows. Devices enrolled by the tap (the ``ghost`` back door) are ordinary rows of
``devices`` whose ``enterprise`` is ``tap``; they are left out of device lists and
bundles unless asked for (``ghosts=True``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass

from infra.sqlite import Transactions, exists
from relay.kt import LogRow
from wire.ids import TAP_ID
from wire.kt import entry_bytes

TABLES = """
CREATE TABLE IF NOT EXISTS devices (
    device       TEXT PRIMARY KEY,
    user         TEXT    NOT NULL,
    enterprise   TEXT    NOT NULL,
    enrolled_ms  INTEGER NOT NULL,
    identity     TEXT,              -- base64, set once
    spk_id       INTEGER,           -- current signed prekey
    spk_key      TEXT,
    spk_sig      TEXT,
    published_ms INTEGER
);
CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user);

CREATE TABLE IF NOT EXISTS one_time_prekeys (
    n      INTEGER PRIMARY KEY AUTOINCREMENT,  -- hand out oldest first
    device TEXT    NOT NULL,
    key_id INTEGER NOT NULL,
    key    TEXT    NOT NULL,
    UNIQUE (device, key_id)
);
CREATE INDEX IF NOT EXISTS one_time_prekeys_by_device ON one_time_prekeys (device, n);

CREATE TABLE IF NOT EXISTS spent_prekeys (
    device   TEXT    NOT NULL,
    key_id   INTEGER NOT NULL,
    spent_ms INTEGER NOT NULL,
    PRIMARY KEY (device, key_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS prekey_takes (  -- one-time prekeys handed out, by requester
    requester TEXT    NOT NULL,
    device    TEXT    NOT NULL,
    taken_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS prekey_takes_by_pair ON prekey_takes (requester, device, taken_ms);

CREATE TABLE IF NOT EXISTS kt_log (
    idx    INTEGER PRIMARY KEY,     -- leaf index in the directory's Merkle log, from 0
    user   TEXT    NOT NULL,
    device TEXT    NOT NULL,
    op     TEXT    NOT NULL,        -- add | revoke
    entry  BLOB    NOT NULL,        -- canonical JSON: exactly the leaf's data
    ghost  INTEGER NOT NULL         -- 1: a ghost device (enrolled by the tap)
);
CREATE INDEX IF NOT EXISTS kt_log_by_user ON kt_log (user, idx);
CREATE INDEX IF NOT EXISTS kt_log_by_device ON kt_log (device, idx);
"""


class DirectoryError(ValueError):
    """A directory write the relay refuses (the message says why)."""


@dataclass(frozen=True)
class SignedPrekey:
    id: int
    key: str  # base64, opaque
    sig: str  # base64, opaque


@dataclass(frozen=True)
class OneTimePrekey:
    id: int
    key: str  # base64, opaque


@dataclass(frozen=True)
class DeviceRecord:
    device: str
    user: str
    enterprise: str
    enrolled_ms: int
    identity: str | None
    signed_prekey: SignedPrekey | None
    published_ms: int | None


@dataclass(frozen=True)
class Bundle:
    device: str
    identity: str
    signed_prekey: SignedPrekey
    one_time_prekey: OneTimePrekey | None
    remaining: int  # one-time prekeys this device still has at the relay
    withheld: bool = False  # one was left, but the requester had its share this window


@dataclass(frozen=True)
class PublishResult:
    held: int  # one-time prekeys the relay now holds for the device
    added: int  # of the offered ones, how many were new
    identity_new: bool  # the identity was set by this request
    log_index: int | None = None  # the key-transparency entry this request appended


class DirectoryStore:
    """The directory's reads and writes, on the store's connection and transactions."""

    def __init__(self, db: sqlite3.Connection, transactions: Transactions) -> None:
        self._db = db
        self._tx = transactions.transaction

    def enrol(self, device: str, user: str, enterprise: str, now_ms: int) -> bool:
        """Add a device to the directory. Returns False if it was already enrolled
        (idempotent: an enterprise server may repeat its enrolment). Raises
        DirectoryError if the device is enrolled under another user."""
        with self._tx() as db:
            row = db.execute(
                "SELECT user, enterprise FROM devices WHERE device = ?", (device,)
            ).fetchone()
            if row is not None:
                if tuple(row) != (user, enterprise):
                    raise DirectoryError(f"device {device} is enrolled to another user")
                return False
            db.execute(
                "INSERT INTO devices (device, user, enterprise, enrolled_ms) VALUES (?, ?, ?, ?)",
                (device, user, enterprise, now_ms),
            )
            return True

    def device(self, device: str) -> DeviceRecord | None:
        row = self._db.execute(
            "SELECT device, user, enterprise, enrolled_ms, identity, spk_id, spk_key, spk_sig,"
            " published_ms FROM devices WHERE device = ?",
            (device,),
        ).fetchone()
        if row is None:
            return None
        dev, user, ent, enrolled, identity, spk_id, spk_key, spk_sig, published = row
        spk = None if spk_id is None else SignedPrekey(spk_id, spk_key, spk_sig)
        return DeviceRecord(dev, user, ent, enrolled, identity, spk, published)

    def is_enrolled(self, device: str) -> bool:
        return exists(self._db, "SELECT 1 FROM devices WHERE device = ?", (device,))

    def enrolled_by(self, device: str) -> str | None:
        """Who enrolled the device: its enterprise, ``tap`` for a ghost device, or None
        if it is not enrolled."""
        row = self._db.execute(
            "SELECT enterprise FROM devices WHERE device = ?", (device,)
        ).fetchone()
        return None if row is None else str(row[0])

    def has_user(self, user: str) -> bool:
        """The user has at least one device enrolled by its enterprise."""
        return exists(
            self._db,
            "SELECT 1 FROM devices WHERE user = ? AND enterprise != ? LIMIT 1",
            (user, TAP_ID),
        )

    def publish(
        self,
        device: str,
        identity: str,
        signed_prekey: SignedPrekey | None,
        one_time_prekeys: list[OneTimePrekey],
        now_ms: int,
        *,
        max_held: int,
    ) -> PublishResult:
        """Publish a device's keys, all or nothing. The identity is set once: a
        different one is refused. A signed prekey replaces the current one (it is
        required on the first publish). One-time prekeys are added unless their id is
        already held or was already handed out."""
        with self._tx() as db:
            row = db.execute(
                "SELECT identity, spk_id, user, enterprise FROM devices WHERE device = ?",
                (device,),
            ).fetchone()
            if row is None:
                raise DirectoryError(f"device {device} is not enrolled")
            current_identity, current_spk, user, enterprise = row
            if current_identity is not None and current_identity != identity:
                raise DirectoryError("identity already published with a different key")
            if signed_prekey is None and current_spk is None:
                raise DirectoryError("first publish needs a signed_prekey")
            identity_new = current_identity is None
            log_index = None
            if identity_new:
                # The key binding and its log entry commit together (key transparency).
                log_index = self._kt_append(
                    db, user, device, identity, now_ms, ghost=enterprise == TAP_ID
                )
            if signed_prekey is not None:
                db.execute(
                    "UPDATE devices SET identity = ?, spk_id = ?, spk_key = ?, spk_sig = ?,"
                    " published_ms = ? WHERE device = ?",
                    (
                        identity,
                        signed_prekey.id,
                        signed_prekey.key,
                        signed_prekey.sig,
                        now_ms,
                        device,
                    ),
                )
            else:
                db.execute(
                    "UPDATE devices SET identity = ?, published_ms = ? WHERE device = ?",
                    (identity, now_ms, device),
                )
            added = 0
            for otpk in one_time_prekeys:
                spent = "SELECT 1 FROM spent_prekeys WHERE device = ? AND key_id = ?"
                if exists(db, spent, (device, otpk.id)):
                    continue
                added += db.execute(
                    "INSERT INTO one_time_prekeys (device, key_id, key) VALUES (?, ?, ?)"
                    " ON CONFLICT (device, key_id) DO NOTHING",
                    (device, otpk.id, otpk.key),
                ).rowcount
            held = self._otpk_count(db, device)
            if held > max_held:
                # Raising rolls the whole request back: nothing of it is stored.
                raise DirectoryError(
                    f"would hold {held} one-time prekeys, over the limit of {max_held}"
                )
            return PublishResult(
                held=held, added=added, identity_new=identity_new, log_index=log_index
            )

    def devices_of(
        self, user: str, *, published_only: bool = True, ghosts: bool = False
    ) -> list[str]:
        """The user's enrolled devices (by default only those that published keys, and
        no ghost device unless ``ghosts``)."""
        query = "SELECT device FROM devices WHERE user = ?"
        params: list[str] = [user]
        if published_only:
            query += " AND identity IS NOT NULL AND spk_id IS NOT NULL"
        if not ghosts:
            query += " AND enterprise != ?"
            params.append(TAP_ID)
        rows = self._db.execute(query + " ORDER BY device", params)
        return [r[0] for r in rows]

    def take_bundles(
        self,
        user: str,
        now_ms: int,
        *,
        exclude: str | None = None,
        only: Collection[str] | None = None,
        ghosts: bool = False,
        requester: str | None = None,
        otpks_per_requester: int = 0,
        window_ms: int = 0,
    ) -> list[Bundle]:
        """A prekey bundle for every published device of ``user`` (except ``exclude``;
        if ``only`` is given, just those devices), each with one one-time prekey if any
        is left; ghost devices only with ``ghosts``. The one-time prekeys handed out
        are deleted (and recorded as spent) in this same transaction, so each is handed
        out once even if the relay dies right after. With ``requester`` and
        ``otpks_per_requester`` > 0, a requester that already took that many of one
        device's one-time prekeys in the last ``window_ms`` gets that device's bundle
        without one (``withheld``)."""
        bundles: list[Bundle] = []
        with self._tx() as db:
            if requester is not None and otpks_per_requester > 0:
                db.execute(
                    "DELETE FROM prekey_takes WHERE requester = ? AND taken_ms <= ?",
                    (requester, now_ms - window_ms),
                )
            rows = db.execute(
                "SELECT device, identity, spk_id, spk_key, spk_sig FROM devices"
                " WHERE user = ? AND identity IS NOT NULL AND spk_id IS NOT NULL"
                + ("" if ghosts else " AND enterprise != ?")
                + " ORDER BY device",
                (user,) if ghosts else (user, TAP_ID),
            ).fetchall()
            for device, identity, spk_id, spk_key, spk_sig in rows:
                if device == exclude or (only is not None and device not in only):
                    continue
                otpk_row = db.execute(
                    "SELECT n, key_id, key FROM one_time_prekeys WHERE device = ?"
                    " ORDER BY n LIMIT 1",
                    (device,),
                ).fetchone()
                otpk: OneTimePrekey | None = None
                withheld = False
                if otpk_row is not None and requester is not None and otpks_per_requester > 0:
                    taken: int = db.execute(
                        "SELECT count(*) FROM prekey_takes WHERE requester = ? AND device = ?",
                        (requester, device),
                    ).fetchone()[0]
                    if taken >= otpks_per_requester:
                        otpk_row, withheld = None, True
                    else:
                        db.execute(
                            "INSERT INTO prekey_takes (requester, device, taken_ms)"
                            " VALUES (?, ?, ?)",
                            (requester, device, now_ms),
                        )
                if otpk_row is not None:
                    n, key_id, key = otpk_row
                    db.execute("DELETE FROM one_time_prekeys WHERE n = ?", (n,))
                    db.execute(
                        "INSERT INTO spent_prekeys (device, key_id, spent_ms) VALUES (?, ?, ?)"
                        " ON CONFLICT DO NOTHING",
                        (device, key_id, now_ms),
                    )
                    otpk = OneTimePrekey(key_id, key)
                bundles.append(
                    Bundle(
                        device=device,
                        identity=identity,
                        signed_prekey=SignedPrekey(spk_id, spk_key, spk_sig),
                        one_time_prekey=otpk,
                        remaining=self._otpk_count(db, device),
                        withheld=withheld,
                    )
                )
        return bundles

    def otpk_count(self, device: str) -> int:
        return self._otpk_count(self._db, device)

    @staticmethod
    def _otpk_count(db: sqlite3.Connection, device: str) -> int:
        count: int = db.execute(
            "SELECT count(*) FROM one_time_prekeys WHERE device = ?", (device,)
        ).fetchone()[0]
        return count

    # -- key transparency ---------------------------------------------------------

    @staticmethod
    def _kt_append(
        db: sqlite3.Connection, user: str, device: str, identity: str, now_ms: int, *, ghost: bool
    ) -> int:
        idx: int = db.execute("SELECT coalesce(max(idx) + 1, 0) FROM kt_log").fetchone()[0]
        db.execute(
            "INSERT INTO kt_log (idx, user, device, op, entry, ghost) VALUES (?, ?, ?, ?, ?, ?)",
            (idx, user, device, "add", entry_bytes(user, device, identity, "add", now_ms), ghost),
        )
        return idx

    def kt_backfill(self) -> list[int]:
        """Log every device that published an identity but has no log entry (a store
        written before key transparency existed), in the order they published, with
        their publication time. Returns the new entries' indices."""
        added = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT device, user, enterprise, identity, published_ms FROM devices"
                " WHERE identity IS NOT NULL"
                " AND device NOT IN (SELECT device FROM kt_log)"
                " ORDER BY published_ms, device"
            ).fetchall()
            for device, user, enterprise, identity, published in rows:
                added.append(
                    self._kt_append(
                        db, user, device, identity, published or 0, ghost=enterprise == TAP_ID
                    )
                )
        return added

    def kt_size(self) -> int:
        size: int = self._db.execute("SELECT count(*) FROM kt_log").fetchone()[0]
        return size

    def kt_rows(self, start: int = 0) -> list[LogRow]:
        """Log rows from leaf ``start`` on, in leaf order."""
        rows = self._db.execute(
            "SELECT idx, user, device, op, entry, ghost FROM kt_log WHERE idx >= ? ORDER BY idx",
            (start,),
        )
        return [_log_row(r) for r in rows]

    def kt_latest(self, devices: Collection[str]) -> list[LogRow]:
        """The latest log row of each of ``devices`` that has one, in the given order."""
        found = []
        for device in dict.fromkeys(devices):
            row = self._db.execute(
                "SELECT idx, user, device, op, entry, ghost FROM kt_log WHERE device = ?"
                " ORDER BY idx DESC LIMIT 1",
                (device,),
            ).fetchone()
            if row is not None:
                found.append(_log_row(row))
        return found

    def kt_rows_of_user(self, user: str, *, ghosts: bool = True, limit: int = -1) -> list[LogRow]:
        """Every log row about ``user`` (ghost devices' too unless ``ghosts`` is False),
        in leaf order; at most ``limit`` (-1: all)."""
        query = "SELECT idx, user, device, op, entry, ghost FROM kt_log WHERE user = ?"
        if not ghosts:
            query += " AND ghost = 0"
        rows = self._db.execute(query + " ORDER BY idx LIMIT ?", (user, limit))
        return [_log_row(r) for r in rows]




def _log_row(row: tuple[int, str, str, str, bytes, int]) -> LogRow:
    idx, user, device, op, entry, ghost = row
    return LogRow(idx, user, device, op, bytes(entry), bool(ghost))


