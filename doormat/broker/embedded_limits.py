"""The embedded broker's limits against a hostile client (issue 12, point 6), which stock
amqtt 0.12.1 lacks; ``doormat.broker.embedded`` builds its broker on ``LimitedBroker``.
The numbers and why are ``doormat/broker/limits.py``'s; docs/brokers.md, "Limits", says
what each bounds and what it does not.

* ``LimitedReader``: a connection's reader that follows MQTT's framing and refuses a
  packet over the limit as soon as its length is read, before anything reads its body;
* ``LimitedBroker``: connections (in total, and per address before their CONNECT) refused
  at once beyond the limits, topic filters per client, an offline session's queue.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.contexts import BrokerConfig  # type: ignore[import-untyped]
from amqtt.session import Session  # type: ignore[import-untyped]

from .limits import DEFAULT, BrokerLimits

log = logging.getLogger(__name__)


def _now_and_then(n: int) -> bool:
    """Log the 1st, 10th, 100th, 1000th and every 10,000th of a repeated refusal."""
    return n in (1, 10, 100, 1000) or n % 10_000 == 0


class PacketTooLarge(Exception):
    """A packet over the packet limit: the connection ends (not an amqtt error type, so
    that amqtt's reader loop stops instead of reading on mid-packet)."""


class LimitedReader:
    """A connection's reader that follows MQTT's framing (each packet: a type byte, a
    remaining length of 1 to 4 bytes, that many bytes) and refuses a packet whose length
    is over the limit before anything reads its body."""

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._left = 0  # bytes of the current packet's body not read yet
        self._in_length = False  # reading the remaining-length bytes
        self._length = 0
        self._multiplier = 1
        self._length_bytes = 0

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise PacketTooLarge("a read to the end of the stream")
        if self._left == 0 and not self._in_length:
            # A new packet: its type byte comes first, then its length.
            data = await self._inner.read(n)
            if not data:
                return bytes(data)  # the end of the stream
            if n == 1:
                self._in_length, self._length, self._multiplier = True, 0, 1
                self._length_bytes = 0
                return bytes(data)
            raise PacketTooLarge("a read across a packet boundary")
        if self._in_length:
            data = await self._inner.read(n)
            for byte in bytes(data):
                self._length += (byte & 0x7F) * self._multiplier
                self._multiplier *= 128
                self._length_bytes += 1
                if byte & 0x80 and self._length_bytes >= 4:
                    raise PacketTooLarge("a remaining length of more than 4 bytes")
                if not byte & 0x80:
                    self._in_length = False
                    # Counted as Mosquitto counts it: the remaining length and one.
                    if self._length + 1 > self._limit:
                        raise PacketTooLarge(
                            f"a packet of {self._length + 1} bytes, over the "
                            f"{self._limit}-byte limit"
                        )
                    self._left = self._length
            return bytes(data)
        if n > self._left:
            raise PacketTooLarge("a read past the end of the packet")
        data = await self._inner.read(n)
        self._left -= len(data)
        return bytes(data)

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class LimitedBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker with the limits (module doc)."""

    def __init__(self, config: BrokerConfig, limits: BrokerLimits = DEFAULT) -> None:
        super().__init__(config)
        self.limits = limits
        self.connections = 0  # open now
        self._pending: dict[str, int] = {}  # address -> connections before CONNECT
        self._pending_of: dict[int, str] = {}  # id(writer) -> its address, while pending
        self._queued_bytes: dict[str, int] = {}  # client id -> bytes queued while offline
        self._subscription_count: dict[str, int] = {}  # client id -> topic filters held
        self.refused = 0  # connections closed at once (over a limit)
        self.refused_filters = 0  # topic filters refused (over the limit)
        self.dropped = 0  # messages not queued for an offline session (over a limit)

    async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
        # Limits on connections (module doc). Refused at once, holding nothing.
        peer = writer.get_peer_info()
        address = str(peer[0]) if peer else "?"
        limits = self.limits
        if (
            self.connections >= limits.max_connections
            or self._pending.get(address, 0) >= limits.max_pending_per_address
        ):
            self.refused += 1
            if _now_and_then(self.refused):
                log.warning(
                    "connection from %s refused: %d open (limit %d), %d of them from there "
                    "before CONNECT (limit %d); %d refused so far",
                    address, self.connections, limits.max_connections,
                    self._pending.get(address, 0), limits.max_pending_per_address, self.refused,
                )  # fmt: skip
            await writer.close()
            return
        self.connections += 1
        self._pending[address] = self._pending.get(address, 0) + 1
        self._pending_of[id(writer)] = address
        try:
            await super()._client_connected(
                listener_name, LimitedReader(reader, limits.max_packet_bytes), writer
            )
        finally:
            self.connections -= 1
            self._connect_done(writer)

    def _connect_done(self, writer: Any) -> None:
        address = self._pending_of.pop(id(writer), None)
        if address is not None:
            left = self._pending[address] - 1
            if left:
                self._pending[address] = left
            else:
                del self._pending[address]

    def queue_drained(self, session: Session) -> None:
        """An offline session's queue went out (it reconnected)."""
        self._queued_bytes.pop(str(session.client_id), None)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        # Bounded (module doc): a filter the client does not hold yet counts.
        client = str(session.client_id)
        held = self._subscription_count.get(client, 0)
        topic_filter = subscription[0]
        new = all(s.client_id != client for s, _ in self._subscriptions.get(topic_filter, ()))
        if new and held >= self.limits.max_subscriptions_per_client:
            self.refused_filters += 1
            if _now_and_then(self.refused_filters):
                log.warning(
                    "%s holds %d topic filters: %r refused; %d refused so far",
                    client, held, topic_filter[:80], self.refused_filters,
                )  # fmt: skip
            return 0x80
        code = await super().add_subscription(subscription, session)
        if new and code < 0x80:
            self._subscription_count[client] = held + 1
        return int(code)

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted = int(super()._del_subscription(a_filter, session))
        if deleted:
            client = str(session.client_id)
            left = self._subscription_count.get(client, 0) - deleted
            if left > 0:
                self._subscription_count[client] = left
            else:
                self._subscription_count.pop(client, None)
        return deleted

    async def _retain_broadcast_message(
        self, broadcast: dict[str, Any], qos: int, target_session: Session
    ) -> None:
        # Bounded like Mosquitto's max_queued_messages / max_queued_bytes: beyond either,
        # a message for an offline session is dropped (module doc).
        client = str(target_session.client_id)
        size = len(broadcast.get("data") or b"")
        queued = self._queued_bytes.get(client, 0)
        if (
            target_session.retained_messages.qsize() >= self.limits.max_queued_messages
            or queued + size > self.limits.max_queued_bytes
        ):
            self.dropped += 1
            if _now_and_then(self.dropped):
                log.warning(
                    "queue of offline %s full (%d messages, %d bytes): message dropped; "
                    "%d dropped so far",
                    client, target_session.retained_messages.qsize(), queued, self.dropped,
                )  # fmt: skip
            return
        self._queued_bytes[client] = queued + size
        await super()._retain_broadcast_message(broadcast, qos, target_session)


__all__ = ["LimitedBroker", "LimitedReader", "PacketTooLarge"]
