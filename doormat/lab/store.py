"""The score store: which exercises are solved, which hints were shown, which exercises
the teacher selected. SQLite under the lab's home folder (``~/.doormat`` by default,
``$DOORMAT_HOME`` or ``--home``), so the dashboard and ``doormat lab`` share it and a
reset is one command.

Only the lab engine writes ``solved`` rows, and only when a matcher over the system's
events is satisfied; the ``doormat lab`` command can read, reset and select, never
mark anything solved.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.sqlite import Schema, open_store, transaction

DB_NAME = "lab.sqlite"

_SCHEMA = Schema("lab score store", """
CREATE TABLE IF NOT EXISTS solved (
    key TEXT PRIMARY KEY, solved_ms INTEGER NOT NULL, evidence TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hints (key TEXT PRIMARY KEY, shown INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS selection (key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
""")


def default_home() -> Path:
    env = os.environ.get("DOORMAT_HOME")
    return Path(env) if env else Path.home() / ".doormat"


@dataclass(frozen=True)
class Solved:
    key: str
    solved_ms: int
    evidence: dict[str, Any]


class ScoreStore:
    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / DB_NAME
        # Shared by the dashboard's loop and, briefly, a worker thread; every call is one
        # short transaction.
        self._db = open_store(self.path, _SCHEMA, any_thread=True)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- solved -------------------------------------------------------------------------

    def mark_solved(self, key: str, evidence: dict[str, Any]) -> bool:
        """Record a solve; True if it is new."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO solved (key, solved_ms, evidence) VALUES (?, ?, ?)",
            (key, time.time_ns() // 1_000_000, json.dumps(evidence, default=str)),
        )
        return cur.rowcount == 1

    def solved(self) -> dict[str, Solved]:
        return {
            k: Solved(k, int(ms), json.loads(ev))
            for k, ms, ev in self._db.execute("SELECT key, solved_ms, evidence FROM solved")
        }

    # -- hints --------------------------------------------------------------------------

    def hints_shown(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._db.execute("SELECT key, shown FROM hints")}

    def show_hint(self, key: str, available: int) -> int:
        """One more hint of ``key`` is shown (up to ``available``); returns how many are."""
        shown = min(self.hints_shown().get(key, 0) + 1, available)
        self._db.execute(
            "INSERT INTO hints (key, shown) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET shown = excluded.shown",
            (key, shown),
        )
        return shown

    # -- selection ----------------------------------------------------------------------

    def selection(self) -> list[str] | None:
        """The teacher's selection, or None when the file's ``enabled`` flags decide."""
        rows = [k for (k,) in self._db.execute("SELECT key FROM selection ORDER BY key")]
        has = self._db.execute("SELECT value FROM meta WHERE name = 'selected'").fetchone()
        return rows if has is not None else None

    def select(self, keys: Iterable[str] | None) -> None:
        """Choose which exercises appear; None goes back to the file's ``enabled`` flags."""
        with transaction(self._db) as db:
            db.execute("DELETE FROM selection")
            db.execute("DELETE FROM meta WHERE name = 'selected'")
            if keys is not None:
                db.executemany("INSERT OR IGNORE INTO selection (key) VALUES (?)",
                               [(k,) for k in keys])
                db.execute("INSERT INTO meta (name, value) VALUES ('selected', '1')")

    # -- reset --------------------------------------------------------------------------

    def reset(self, selection: bool = False) -> None:
        """Forget every solve and shown hint (and, with ``selection``, the selection)."""
        with transaction(self._db) as db:
            db.execute("DELETE FROM solved")
            db.execute("DELETE FROM hints")
            if selection:
                db.execute("DELETE FROM selection")
                db.execute("DELETE FROM meta WHERE name = 'selected'")
