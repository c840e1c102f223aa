"""Argument types of ``doormat court``: times, window lengths, categories, targets.

Each turns a bad value into argparse's one-line usage error, never a traceback. Times
that go into a warrant (``--not-before``, ``approve --at``) must be absolute: an ISO
time without a UTC offset is refused there, and read as UTC with a note only where it is
a what-if (``check --now``).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from wire.li.warrant import CATEGORIES


def moment(text: str, *, naive: str) -> int:
    """``now``, seconds since the epoch, or an ISO 8601 time. ``naive`` says what to do
    with an ISO time without a UTC offset: ``refuse`` it, or read it as UTC and say so
    (``note``) on stderr."""
    if text == "now":
        return int(time.time())
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 'now', seconds since the epoch, or ISO 8601 with "
            "an offset, like 2025-11-29T08:00Z or 2025-11-29T09:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        if naive == "refuse":
            raise argparse.ArgumentTypeError(
                f"{text!r} has no UTC offset: a warrant's times are absolute, and a local "
                f"time read as UTC would move the window; write {text}Z for UTC, or add "
                "your offset (e.g. +01:00)"
            )
        print(f"note: {text} has no UTC offset; read as UTC ({text}Z)", file=sys.stderr)
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def when(text: str) -> int:
    """A time that goes into a warrant (signed): ISO times need an explicit offset."""
    return moment(text, naive="refuse")


def when_noted(text: str) -> int:
    """A time to check at: an ISO time without an offset is read as UTC, with a note."""
    return moment(text, naive="note")


def hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not value > 0 or value > 24 * 366 * 100:
        raise argparse.ArgumentTypeError(f"hours must be positive, got {text!r}")
    return value


def categories(text: str) -> list[str]:
    parts = [p.strip().upper() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in CATEGORIES]
    if not parts or bad:
        raise argparse.ArgumentTypeError(
            f"categories are a comma-separated subset of {','.join(CATEGORIES)}, got {text!r}"
        )
    return list(dict.fromkeys(parts))


def target(text: str) -> str:
    fmt, sep, _value = text.partition(":")
    if not sep or fmt not in ("device", "user"):
        raise argparse.ArgumentTypeError(
            f"target {text!r} must be device:ID or user:ID, e.g. device:alice@acme.phone"
        )
    return text
