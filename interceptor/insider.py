"""An insider at the interceptor edits its own audit ledger's file: the lesson's attacks
on the ledger (the ``ledger.tamper`` and ``ledger.rollback`` lab controls, carried out by
the interceptor's service on its own file; before issue 11 the dashboard did this).

* ``tamper``: one logged entry is edited - a refused warrant made to look accepted, or
  any entry's content changed - and, to cover the tracks, its leaf hash recomputed
  (RFC 6962: SHA-256(0x00 || entry)). Only the signed checkpoints can give it away.
* ``rollback``: the ledger is rolled back as restoring an older copy of the file would:
  the newer half of the entries (at least one) and every checkpoint stored after them
  are deleted, so the file is whole, ends with a checkpoint signed by the ledger's own
  key, and verifies against that key alone. Only the court's witness, which cosigned
  the longer ledger, can give it away.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any


class InsiderError(Exception):
    """The edit cannot be made (an empty or too short ledger)."""


def tamper(path: Path) -> dict[str, Any]:
    """Edit one entry (and its leaf hash): ``{"index", "what"}``."""
    db = sqlite3.connect(path, timeout=10)
    try:
        rows = db.execute("SELECT idx, entry FROM entries ORDER BY idx").fetchall()
        if not rows:
            raise InsiderError("the ledger is empty: submit a warrant first")
        idx, raw = rows[0]
        for i, r in rows:
            try:
                obj = json.loads(bytes(r))
            except ValueError:
                continue
            # A warrant decision keeps its verdict in the entry's payload.
            if isinstance(obj, dict) and _payload(obj).get("accepted") is False:
                idx, raw = i, r
                break
        try:
            obj = json.loads(bytes(raw))
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            payload = _payload(obj)
            if payload.get("accepted") is False:
                payload["accepted"] = True
                payload["reason"] = "accepted"
                what = "a refused warrant now reads as accepted"
            else:
                obj["edited_by"] = "insider"
                what = "an entry's content was changed"
            new = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        else:
            new = bytes(raw) + b" "
            what = "an entry's bytes were changed"
        leaf = hashlib.sha256(b"\x00" + new).digest()
        with db:
            db.execute("UPDATE entries SET entry = ?, leaf_hash = ? WHERE idx = ?",
                       (new, leaf, idx))
    finally:
        db.close()
    return {"index": idx, "what": what}


def rollback(path: Path) -> dict[str, Any]:
    """Delete the newer half of the entries and the checkpoints after them:
    ``{"kept", "removed"}``."""
    db = sqlite3.connect(path, timeout=10)
    try:
        (size,) = db.execute("SELECT count(*) FROM entries").fetchone()
        if size < 2:
            raise InsiderError("the ledger is too short to roll back: submit warrants first")
        keep = size // 2
        with db:
            db.execute("DELETE FROM entries WHERE idx >= ?", (keep,))
            db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
    finally:
        db.close()
    return {"kept": keep, "removed": size - keep}


def copy(path: Path) -> bytes:
    """A consistent copy of the ledger's file, as bytes (SQLite's online backup)."""
    src = sqlite3.connect(path, timeout=10)
    dst = sqlite3.connect(":memory:")
    try:
        src.backup(dst)
        return dst.serialize()
    finally:
        src.close()
        dst.close()


def _payload(entry: dict[str, Any]) -> dict[str, Any]:
    payload = entry.get("payload")
    return payload if isinstance(payload, dict) else {}


__all__ = ["InsiderError", "copy", "rollback", "tamper"]
