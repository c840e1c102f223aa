"""Argument types shared by the subcommands: each turns a bad value into argparse's
one-line usage error, never a traceback."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def whole_number(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer argument, optionally bounded (inclusive)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}-{high}, got {value}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


positive = whole_number(1)
port = whole_number(0, 65535)


def broker(text: str) -> str:
    """Where the system's broker is: embedded (amqtt, in-process), mosquitto (started
    locally), or mqtt://HOST:PORT (already running)."""
    if text in ("embedded", "mosquitto") or text.startswith("mqtt://"):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown broker {text!r}: use 'embedded', 'mosquitto' or mqtt://HOST:PORT"
    )


def from_env(var: str, default: str | None = None) -> str | None:
    """An option's default from the environment (compose sets them): the variable's
    value, or ``default`` when it is unset or empty. The flag, if given, wins."""
    value = os.environ.get(var)
    return value if value not in (None, "") else default


def seconds(text: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value
