"""Back-off between attempts, written once: the MQTT transport's reconnections (and so
every link and the relay) wait this way.

    backoff = Backoff(first=0.05, most=2.0)
    delay = backoff.next()     # 0.05, then 0.1, 0.2, ... up to 2.0
    backoff.reset()            # after a success: the next delay is short again
"""

from __future__ import annotations


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
