"""Waiting for a condition in an async test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(
    cond: Callable[[], object],
    timeout: float = 10.0,
    what: str = "the condition",
    step: float = 0.05,
) -> None:
    """Return once ``cond()`` is true; poll every ``step`` seconds. After ``timeout``
    seconds fail with an ``AssertionError`` that says what was awaited."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)
