"""Strict JSON for every parser of outside input, written once.

``json.loads`` alone takes things no peer of ours ever sends and that break the code
behind it: ``NaN`` and ``Infinity`` (``int(float("inf"))`` raises OverflowError),
numbers like ``1e999`` (read as infinity), integers of thousands of digits (refused by
Python's own guard with a bare ValueError, CVE-2020-10735), nesting deep enough for a
RecursionError, two equal keys (the last silently wins), bytes that are not UTF-8.
:func:`loads` refuses each of them *before* any caller sees a value, with one
:class:`StrictJSONError` (a ValueError) whose message names the input and the rule:

* at most ``max_bytes`` bytes, UTF-8;
* nesting at most ``max_depth`` arrays/objects deep (checked before parsing, so a deep
  input costs one linear scan, never a recursion);
* integers of at most ``max_int_digits`` digits; floats finite; no NaN/Infinity;
* no repeated key in an object;
* no string with half a UTF-16 surrogate pair (``"\\ud800"``): not text, and it fails
  whatever encodes it as UTF-8 later (SQLite, a log line, a reply).

The defaults fit every message of the protocol (docs/protocol.md): nothing we send is
nested more than a few levels or carries an integer beyond 2**53.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
MAX_INT_DIGITS = 40  # any 128-bit number; our own integers stay below 2**53 (16 digits)

# A JSON string (unrolled: no backtracking), or a bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# A \u escape of half a surrogate pair without its other half: JSON takes it, but the
# string cannot be encoded as UTF-8 again (SQLite, a log line, a reply would fail on it).
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


class StrictJSONError(ValueError):
    """Outside bytes that are not the strict JSON this code accepts; the message says why."""


def _depth(text: str, limit: int) -> int:
    """The nesting depth of ``text``, counted up to ``limit + 1``."""
    if text.count("[") + text.count("{") <= limit:
        return 0  # cannot be deeper than the limit (fast path: no scan)
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif c == "]" or c == "}":
            depth -= 1
    return deepest


def loads(
    data: bytes | bytearray | memoryview | str,
    what: str = "input",
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
) -> Any:
    """Parse ``data`` strictly (see the module docstring) or raise StrictJSONError."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise StrictJSONError(f"{what} is {size} bytes, over the {max_bytes}-byte limit")

    def refuse(detail: str) -> StrictJSONError:
        return StrictJSONError(f"{what} is not JSON we accept: {detail}")

    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise refuse(f"not UTF-8 (byte {exc.start})") from None
    if _depth(text, max_depth) > max_depth:
        raise refuse(f"nested more than {max_depth} deep")
    if "\\u" in text and _LONE_SURROGATE.search(text):
        raise refuse("a string holds half a surrogate pair, which is not text")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise refuse(f"it repeats the key {key[:40]!r}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise refuse(f"{name} is not a JSON number")

    def integer(digits: str) -> int:
        n = len(digits.lstrip("-"))
        if n > max_int_digits:
            raise refuse(f"an integer of {n} digits (at most {max_int_digits})")
        return int(digits)

    def real(spelled: str) -> float:
        value = float(spelled)
        if not math.isfinite(value):
            raise refuse(f"the number {spelled[:40]} is out of range")
        return value

    try:
        return json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=constant,
            parse_int=integer,
            parse_float=real,
        )
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(
            f"{what} is not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # defensive: no other path is known
        raise refuse(type(exc).__name__) from None


def loads_object(
    data: bytes | bytearray | memoryview | str, what: str = "input", **limits: Any
) -> dict[str, Any]:
    """:func:`loads`, and the value must be a JSON object."""
    value = loads(data, what, **limits)
    if not isinstance(value, dict):
        raise StrictJSONError(f"{what} must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "StrictJSONError", "loads", "loads_object"]
