"""Back-off between attempts, written once: the MQTT transport's reconnections (and so
every link and the relay) wait this way.

    backoff = Backoff(first=0.05, most=2.0)
    while ...:
        if await backoff.wait(stop):   # True: stop was set while waiting
            return
    backoff.reset()                    # after a success: the next wait is short again
"""

from __future__ import annotations

import asyncio
import contextlib


class Backoff:
    """Delays that double from ``first`` up to ``most`` (then stay there)."""

    def __init__(self, first: float = 0.05, most: float = 2.0, factor: float = 2.0) -> None:
        if first <= 0 or most < first or factor < 1:
            raise ValueError("backoff: need 0 < first <= most and factor >= 1")
        self.first = first
        self.most = most
        self.factor = factor
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the one after it is longer (up to ``most``)."""
        delay = self._next
        self._next = min(delay * self.factor, self.most)
        return delay

    def reset(self) -> None:
        self._next = self.first

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep for the next delay; return True at once if ``stop`` is (or gets) set."""
        delay = self.next()
        if stop is None:
            await asyncio.sleep(delay)
            return False
        if stop.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        return stop.is_set()
