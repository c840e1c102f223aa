"""Why a handler failed: the machine's fault (try the message again later) or the
message's (it will fail the same way every time: set it aside). One rule for every
consumer of the broker: ``infra.link`` and the relay's service loop (issue 12)."""

from __future__ import annotations

import sqlite3


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the machine's: the disk (``OSError``; SQLite's
    ``OperationalError`` - locked, full, I/O - and a bare ``DatabaseError`` - a damaged
    file), memory, or an exception class that says so (``transient = True``: the MQTT
    transport's errors, a link's). Anything else - ``IntegrityError``, ``DataError``,
    ``ProgrammingError``, a ValueError, a RecursionError, ... - comes from what was asked
    of the code, so the same message would fail the same way again."""
    if isinstance(exc, sqlite3.DatabaseError):
        return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError
    return isinstance(exc, OSError | MemoryError) or bool(getattr(exc, "transient", False))


def describe(exc: BaseException) -> str:
    """One line saying why: the exception's type and message, cut to 300 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


__all__ = ["describe", "is_transient"]
