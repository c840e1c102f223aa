"""The limits both brokers put on a hostile client (issue 12; docs/brokers.md, "Limits").

Mosquitto takes them from ``mosquitto.conf`` (``doormat.broker.mosquitto``), the embedded
broker enforces them itself (``doormat.broker.embedded``: stock amqtt has none of them).
``BrokerLimits()`` is what the lab runs with; tests that exhaust a limit pass smaller ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from wire.topics import MAX_PACKET_BYTES


@dataclass(frozen=True)
class BrokerLimits:
    #: The largest packet, counted as Mosquitto does (remaining length + 1): above
    #: everything the protocol sends (wire.topics), and what one half-sent packet can
    #: make a broker hold (Mosquitto allocates a packet's declared length as soon as it
    #: has read it, before the client is authenticated). A larger one: disconnected.
    max_packet_bytes: int = MAX_PACKET_BYTES
    #: Messages and bytes queued per client beyond those in flight. A relay that is down
    #: while devices send keeps all of it (the reliability suites queue about 10 MB);
    #: beyond either limit further messages for that client are dropped (a device's: the
    #: relay sends them again on its next sync; the relay's: docs/brokers.md).
    max_queued_messages: int = 100_000
    max_queued_bytes: int = 256 * 1024 * 1024
    #: Mosquitto only: all of its heap. Past it, the client whose message does not fit is
    #: disconnected without a PUBACK, so an honest client sends it again later.
    memory_limit: int = 1024 * 1024 * 1024
    #: Connections: room for the 1,000-user demo five times over, below a usual file
    #: descriptor limit (this machine's: 20,000; docker's: 1,048,576). More: closed at once.
    max_connections: int = 5000
    #: Embedded only: seconds a new connection has to send its whole CONNECT, and how many
    #: connections one address may have open before theirs is through. Mosquitto 2.0 has
    #: neither (docs/brokers.md): a new connection gets the default keepalive of 60 s and
    #: is closed after 1.5 x that without a complete packet, about 95 s.
    connect_timeout: float = 10.0
    max_pending_per_address: int = 256
    #: Embedded only: topic filters one client may hold (every doormat client holds one).
    #: Mosquitto 2.0 has no such option, and grants any filter (its ACL is checked on
    #: delivery): there only memory_limit bounds a client that subscribes without end.
    max_subscriptions_per_client: int = 100


DEFAULT = BrokerLimits()
#: Mosquitto 2.0's own bound on a connection that sends nothing (see connect_timeout).
MOSQUITTO_PRE_CONNECT_TIMEOUT = 95.0

__all__ = ["DEFAULT", "MOSQUITTO_PRE_CONNECT_TIMEOUT", "BrokerLimits"]
