"""Which subscriptions a topic can match, without trying every one (the embedded broker).

amqtt 0.12.1 walks its whole subscription table for every message it broadcasts, one
``_matches(topic, filter)`` in Python per topic filter. With every party on the plane a
device holds three filters (its inbox, what other parties send it, the observer's hello):
a thousand devices are three thousand filters, tried for each of the tens of thousands
of messages of the 1,000-user demo. ``FilterIndex`` files each filter under its literal
prefix (the levels before its first wildcard), so a topic is tried only against the
filters filed under one of its own prefixes - a handful. It follows the table by
comparing key sets (in C) before each lookup, so it needs no hook into amqtt's own
bookkeeping, and it is exact: the broker still decides each candidate with its own
``_matches``.
"""

from __future__ import annotations

from collections.abc import Iterable


def literal_prefix(topic_filter: str) -> tuple[str, ...]:
    """The filter's levels before its first wildcard (all of them if it has none)."""
    out: list[str] = []
    for level in topic_filter.split("/"):
        if level in ("+", "#"):
            break
        out.append(level)
    return tuple(out)


class FilterIndex:
    def __init__(self) -> None:
        self._filed: dict[tuple[str, ...], set[str]] = {}
        self._known: set[str] = set()

    def sync(self, filters: Iterable[str]) -> None:
        """Follow the broker's table (its current filters)."""
        current = set(filters)
        if current == self._known:
            return
        for gone in self._known - current:
            bucket = self._filed.get(literal_prefix(gone))
            if bucket is not None:
                bucket.discard(gone)
                if not bucket:
                    del self._filed[literal_prefix(gone)]
        for new in current - self._known:
            self._filed.setdefault(literal_prefix(new), set()).add(new)
        self._known = current

    def candidates(self, topic: str) -> list[str]:
        """Every filter that may match ``topic`` (a superset of those that do)."""
        levels = topic.split("/")
        out: list[str] = []
        filed = self._filed
        for n in range(len(levels) + 1):
            bucket = filed.get(tuple(levels[:n]))
            if bucket:
                out.extend(bucket)
        return out


__all__ = ["FilterIndex", "literal_prefix"]
