"""The embedded broker: amqtt 0.12.1 in the caller's asyncio loop, on a loopback port.

Authentication and the topic ACL are amqtt plugins over an in-memory account table that
``add_account`` updates while the broker runs (enrolment adds devices on the fly). The
ACL is the one in ``doormat.broker.acl``, shared with Mosquitto.

amqtt 0.12.1 needs a few repairs to behave like the Mosquitto configuration we ship
(``doormat.broker.mosquitto``); each is small and marked below:

* Credentials are checked as soon as CONNECT is read. Stock amqtt first looks up,
  takes over or, for clean_session=1, *deletes* the session named by the client id and
  only then asks the auth plugins, so anyone could wipe a device's queued messages.
* The client id is forced to the username (Mosquitto: ``use_username_as_clientid``),
  so one account can neither resume nor disturb another account's session.
* A will topic must pass the publish ACL (amqtt publishes wills unchecked).
* Retained messages are not stored (Mosquitto: ``retain_available false``): stock amqtt
  sends every retained message matching *anyone's* subscription to each connecting
  client, bypassing the ACL.
* A QoS 1 message sent to a client stays in flight until that client's PUBACK. Stock
  amqtt forgets it after 5 s or when the client drops, so a relay that acknowledges
  only after a durable write (manual acks) and dies first would lose it; now it is
  resent, with DUP, when the session reconnects.
* Messages queued for an offline persistent session are delivered without the RETAIN
  flag (stock amqtt sets it).
* A message being broadcast is not lost when a client subscribes meanwhile (stock amqtt
  iterates its subscription table live across awaits and the broadcast dies with
  "dictionary changed size during iteration").
* What a client published and was PUBACKed for is broadcast even if its connection ends
  (or a clean-session connection of the same client replaces it) first: stock amqtt
  PUBACKs on queueing, broadcasts the queue one by one and drops what is left when the
  connection goes, about half of a pipelined burst.
* Subscriptions are granted at QoS 1 at most; a QoS 2 PUBLISH is accepted and
  forwarded at QoS <= 1 (Mosquitto, with ``max_qos 1``, disconnects the client instead).

Limits against a hostile client (issue 12; docs/brokers.md, "Limits"), which stock amqtt
lacks, the same numbers as the Mosquitto configuration where Mosquitto has the option:

* a packet larger than ``max_packet_bytes`` ends the connection as soon as its header
  is read (stock amqtt reads a 50 MB PUBLISH into memory, and queues it);
* a connection that has not sent a complete CONNECT within ``connect_timeout`` seconds
  is closed (stock amqtt waits forever: idle sockets were never closed);
* at most ``max_connections`` connections, and at most ``max_pending_per_address`` of
  them from one address before their CONNECT is through: more are closed at once (stock
  amqtt's own listener limit makes them *wait*, each holding a socket), so idle sockets
  from one address cannot lock a real user out;
* at most ``max_queued_messages`` messages and ``max_queued_bytes`` bytes queued for an
  offline session; beyond, further ones are dropped, as Mosquitto does (stock amqtt's
  queue is unbounded);
* at most ``max_subscriptions_per_client`` topic filters per client; more are refused
  (SUBACK 0x80): stock amqtt keeps every filter a client sends (about 45 MB for 20,000
  filters of 1 KB).

(``doormat/broker/limits.py`` has the numbers and why; ``embedded_limits.py`` the code.)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

# amqtt ships no type information: its names are Any to mypy, hence the ignores.
from amqtt.contexts import (  # type: ignore[import-untyped]
    Action,
    BrokerConfig,
    ListenerConfig,
    ListenerType,
)
from amqtt.errors import AMQTTError, MQTTError, NoDataError  # type: ignore[import-untyped]
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket  # type: ignore[import-untyped]
from amqtt.mqtt.constants import QOS_1, QOS_2  # type: ignore[import-untyped]
from amqtt.mqtt.protocol.broker_handler import (  # type: ignore[import-untyped]
    BrokerProtocolHandler,
)
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin  # type: ignore[import-untyped]
from amqtt.session import (  # type: ignore[import-untyped]
    OUTGOING,
    OutgoingApplicationMessage,
    Session,
)
from amqtt.utils import format_client_message  # type: ignore[import-untyped]

from . import acl
from .accounts import Account, check_unique
from .embedded_limits import LimitedBroker, PacketTooLarge
from .limits import DEFAULT, BrokerLimits
from .topic_index import FilterIndex

log = logging.getLogger(__name__)

# Highest QoS the embedded broker grants, as Mosquitto's ``max_qos 1``.
MAX_QOS = QOS_1


AccountTable = dict[str, Account]


def authenticate(table: AccountTable, username: str | None, password: str | None) -> Account | None:
    """The account for these credentials, or None. No anonymous access."""
    if not username or password is None:
        return None
    account = table.get(username)
    if account is None:
        # Compare anyway so an unknown user costs the same time as a wrong password.
        hmac.compare_digest(password.encode(), b"\0" * 32)
        return None
    if hmac.compare_digest(password.encode(), account.password.encode()):
        return account
    return None


class AccountAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt auth plugin: username/password against the live account table."""

    @dataclass
    class Config:
        """No options: EmbeddedBroker hands the plugin its table after construction."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        # Empty until EmbeddedBroker injects its table: fail closed.
        self.table: AccountTable = {}

    async def authenticate(self, *, session: Session) -> bool:
        return authenticate(self.table, session.username, session.password) is not None


class AclTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic plugin: the shared ACL for publish, subscribe and receive."""

    @dataclass
    class Config:
        """No options: the rules are doormat.broker.acl."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.table: AccountTable = {}

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        if session is None or not topic or not session.username:
            return False
        account = self.table.get(session.username)
        if account is None:
            return False
        if action == Action.PUBLISH:
            return acl.may_publish(account, topic)
        if action == Action.RECEIVE:
            return acl.may_receive(account, topic)
        if action == Action.SUBSCRIBE:
            if topic.startswith("$share/"):
                # amqtt has no shared subscriptions; it would store the filter literally
                # and deliver nothing. Refuse, so the client sees a failed SUBACK.
                return False
            return acl.may_subscribe(account, topic)
        return False


class _DurableHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """Keeps an outgoing QoS 1 message in flight until the client's PUBACK arrives."""

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING or not isinstance(
            app_message, OutgoingApplicationMessage
        ):
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        packet_id = app_message.packet_id
        if session is None or packet_id is None:
            raise AMQTTError("QoS 1 flow without a session or packet id")
        if app_message.puback_packet is not None:
            return  # already acknowledged
        session.inflight_out[packet_id] = app_message
        # A message that was sent before (on this or a previous connection) goes with DUP.
        packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        await self._send_packet(packet)
        app_message.publish_packet = packet
        if self._reader_stopped is not None and self._reader_stopped.is_set():
            return  # the connection is already gone: leave it in flight for the next one
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            # No timeout: MQTT 3.1.1 resends only on reconnect, never on a timer, and a
            # relay with manual acks may legitimately take a while. If the connection
            # drops, the handler cancels the waiter and the message stays in
            # session.inflight_out, which amqtt resends when the session reconnects.
            app_message.puback_packet = await waiter
        finally:
            self._puback_waiters.pop(packet_id, None)
        session.inflight_out.pop(packet_id, None)


def _take_received(session: Session) -> list[Any]:
    """Empty the queue of messages the session's client published, not yet broadcast."""
    queue = session.delivered_message_queue
    return [queue.get_nowait() for _ in range(queue.qsize())]


class _Table(dict[str, list[Any]]):
    """amqtt's subscription table (topic filter -> subscribers), with a short repr."""

    def __repr__(self) -> str:
        return f"<subscriptions: {len(self)} topic filters>"


class _DoormatBroker(LimitedBroker):
    """amqtt's Broker with authentication before any session is touched (and the limits
    of ``embedded_limits.LimitedBroker``)."""

    def __init__(
        self,
        config: BrokerConfig,
        table: AccountTable,
        limits: BrokerLimits = DEFAULT,
    ) -> None:
        super().__init__(config, limits)
        self._table = table
        # Messages a connection published (and was PUBACKed for) that were still waiting
        # to be broadcast when it ended, by handler; see _client_message_loop.
        self._undelivered: dict[BrokerProtocolHandler, list[Any]] = {}
        # The subscription table's filters by literal prefix, and each client's filters.
        self._filter_index = FilterIndex()
        self._filters_of: dict[str, set[str]] = {}
        self._filters_changed = True
        # amqtt logs repr(self._subscriptions) at debug level on every SUBSCRIBE, built
        # even when debug is off: the whole table each time. The same dict, a short repr.
        self._subscriptions = _Table(vars(self)["_subscriptions"])

    async def _initialize_client_session(
        self,
        reader: Any,
        writer: Any,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        # Mirrors amqtt 0.12.1 Broker._initialize_client_session, with the account
        # check moved in front of the session lookup and the client id bound to it.
        where = format_client_message(address=remote_address, port=remote_port)
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                handler, client_session = await _DurableHandler.init_from_connect(
                    reader, writer, self.plugins_manager
                )
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        except (TimeoutError, PacketTooLarge) as exc:
            # No whole CONNECT in time, or a CONNECT over the packet limit: closed before
            # anything else is read (stock amqtt waits for it forever).
            await writer.close()
            why = "no CONNECT in time" if isinstance(exc, TimeoutError) else str(exc)
            raise AMQTTError(f"{where}: connection closed: {why}") from None
        finally:
            self._connect_done(writer)

        account = authenticate(self._table, client_session.username, client_session.password)
        refusal = None
        if account is None:
            refusal = "bad username or password"
        elif client_session.will_flag and not acl.may_publish(
            account, client_session.will_topic or ""
        ):
            refusal = f"will topic {client_session.will_topic!r} not allowed"
        if refusal is not None or account is None:
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"{where}: connection refused: {refusal}")

        # One session per account, named after it: nobody can resume, take over or
        # wipe another account's session by choosing its client id.
        client_session.client_id = account.username

        if client_session.clean_session:
            previous = self._sessions.get(client_session.client_id)
            if previous is not None:
                # Deleting the session clears its queue: broadcast first what its
                # connection (perhaps still open) published and was PUBACKed for.
                old_session, old_handler = previous
                received = _take_received(old_session)
                await self._broadcast_received(old_session, old_handler, received)
            await self._delete_session(client_session.client_id)
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing, _ = self._sessions[client_session.client_id]
            existing.will_flag = client_session.will_flag
            existing.will_message = client_session.will_message
            existing.will_topic = client_session.will_topic
            existing.will_qos = client_session.will_qos
            existing.will_retain = client_session.will_retain
            existing.keep_alive = client_session.keep_alive
            existing.username = client_session.username
            existing.password = client_session.password
            existing.clean_session = False
            client_session = existing
            client_session.parent = 1
        else:
            client_session.parent = 0

        delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(delay, int):
            client_session.keep_alive += delay
        return handler, client_session

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, waiter: Any
    ) -> None:
        # A persistent session outlives its connections. When a device reconnects
        # before the broker has noticed its old connection closing, amqtt 0.12.1 hands
        # the session to the new connection and then, processing the old connection's
        # end, marks the shared session disconnected: everything for the device goes
        # to the offline queue while it is connected. Only the connection that still
        # owns the session may end it.
        current = self._sessions.get(client_session.client_id)
        if current is not None and current[1] is not handler:
            await self._stop_handler(handler)
            return
        # Take what this connection published but the message loop has not broadcast
        # yet, before the session is ended: once it is disconnected, a clean session's
        # queues are cleared (and a persistent one's wait for a reconnection).
        # _client_message_loop broadcasts them after the loop's last message.
        self._undelivered[handler] = _take_received(client_session)
        await super()._handle_disconnect(client_session, handler, waiter)

    async def _client_message_loop(
        self, client_session: Session, handler: BrokerProtocolHandler
    ) -> None:
        # The reader answers a QoS 1 PUBLISH with PUBACK as soon as it has queued the
        # message (session.delivered_message_queue); this loop then broadcasts the queue
        # one message at a time, so a client that pipelines publishes gets ahead of it.
        # When the connection ends, stock amqtt 0.12.1 leaves the loop at once and what
        # is still queued is never broadcast (a clean session's queue is cleared, a
        # persistent one's waits for the client to come back): a client that sent a
        # burst and disconnected after the last PUBACK lost about half of it
        # (docs/benchmarks.md, "Found" 4). Broadcast the rest here, in order, after the
        # message the loop may have taken along with the disconnection.
        try:
            await super()._client_message_loop(client_session, handler)
        finally:
            received = self._undelivered.pop(handler, [])
        await self._broadcast_received(client_session, handler, received)

    async def _broadcast_received(
        self, session: Session, handler: BrokerProtocolHandler, messages: list[Any]
    ) -> None:
        """What the message loop does with each message a client published, for these."""
        for message in messages:
            taken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            taken.set_result(message)
            # False means "refused, close the connection": nothing to close any more.
            await self._handle_message_delivery(session, handler, taken)

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        # amqtt 0.12.1 Broker._run_broadcast, iterating snapshots. Stock amqtt walks
        # self._subscriptions (and each filter's subscriber list) live, with awaits inside
        # the walk (the ACL check, queueing for offline sessions). A client subscribing to
        # a new filter meanwhile raises "dictionary changed size during iteration" (an
        # unsubscribe or a session cleanup can also shift the list under it): the
        # exception ends the broadcast task unseen and the message never reaches the
        # subscribers not yet walked. Seen with 1,000 devices starting while others
        # received messages (docs/benchmarks.md, "Found" 3). Otherwise unchanged.
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        # Only the filters that can match (doormat/broker/topic_index.py), not the table.
        if self._filters_changed:
            self._filters_changed = False
            self._filter_index.sync(self._subscriptions)
        for k_filter in self._filter_index.candidates(topic):
            subscriptions = self._subscriptions.get(k_filter)
            if subscriptions is None or not self._matches(topic, k_filter):
                continue
            for target_session, sub_qos in list(subscriptions):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(
                    target_session, topic=topic, action=Action.RECEIVE
                ):
                    continue
                state = target_session.transitions.state
                # Queued for an offline persistent session (QoS 1/2 only, as stock).
                if (
                    state != "connected"
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(
                            handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                        )
                    )

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # No retained messages are ever kept (retain_message below): nothing to send. Stock
        # amqtt would await this once per filter of the whole table on every CONNECT.
        return None

    async def _del_all_subscriptions(self, session: Session) -> None:
        # Stock amqtt tries every filter of the table for each session it drops; only the
        # filters that can hold this session's subscriptions need looking at: those it
        # subscribed to (recorded in add_subscription).
        filters = self._filters_of.pop(session.client_id, set())
        self._filters_changed = True
        for topic_filter in filters:
            if self._del_subscription(topic_filter, session) and not self._subscriptions.get(
                topic_filter, True
            ):
                del self._subscriptions[topic_filter]

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted: int = await super().add_subscription(subscription, session)
        if granted != 0x80:
            self._filters_of.setdefault(session.client_id, set()).add(subscription[0])
            self._filters_changed = True
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        self._filters_changed = True
        deleted: int = super()._del_subscription(a_filter, session)
        return deleted

    async def _publish_session_retained_messages(self, session: Session) -> None:
        # Messages queued while a persistent session was away are ordinary deliveries;
        # stock amqtt sends them with the RETAIN flag set, which MQTT 3.1.1 (3.3.1.3)
        # reserves for retained messages. Same loop, retain=False.
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        self.queue_drained(session)  # all of it goes out now
        while not session.retained_messages.empty():
            queued = await session.retained_messages.get()
            tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)
                )
            )
        if tasks:
            await asyncio.wait(tasks)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        # Retained messages are off (see the module docstring): the message itself is
        # still delivered to current subscribers, only not stored for later ones.
        return None


class EmbeddedBroker:
    """``async with EmbeddedBroker(accounts) as broker:`` -> broker.host/port/url.

    ``port=0`` (the default) binds a free port chosen by the OS, so parallel brokers
    never race for one. ``quiet`` turns amqtt's per-connection INFO/WARNING chatter
    off unless the caller configured the ``amqtt`` logger itself.
    """

    kind = "embedded"

    def __init__(
        self,
        accounts: Iterable[Account] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
        limits: BrokerLimits = DEFAULT,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self._table: AccountTable = {a.username: a for a in check_unique(accounts)}
        self._quiet = quiet
        self.limits = limits
        self._broker: _DoormatBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def accounts(self) -> list[Account]:
        return list(self._table.values())

    def add_account(self, account: Account) -> None:
        """Add (or replace: same username) an account; effective for the next CONNECT."""
        self._table[account.username] = account

    def remove_account(self, account_or_username: Account | str) -> None:
        """Refuse future logins; a connection already open stays open."""
        name = getattr(account_or_username, "username", account_or_username)
        self._table.pop(str(name), None)

    async def wait_accounts_applied(self, timeout: float = 10.0) -> None:
        """Nothing to wait for: the table is live. (Mosquitto needs a reload.)"""

    async def start(self) -> None:
        if self._broker is not None:
            raise RuntimeError("embedded broker already started")
        if self._quiet:
            for name in ("amqtt", "transitions"):
                lg = logging.getLogger(name)
                if lg.level == logging.NOTSET:
                    lg.setLevel(logging.ERROR)
        config = BrokerConfig(
            listeners={
                "default": ListenerConfig(
                    type=ListenerType.TCP, bind=f"{self.host}:{self._requested_port}"
                )
            },
            # Only our plugins: no anonymous auth, no $SYS, no packet logging, and no
            # persistence plugin, so nothing is written to the working directory.
            plugins={
                f"{__name__}.AccountAuthPlugin": {},
                f"{__name__}.AclTopicPlugin": {},
            },
        )
        # amqtt reads "max-qos" through BrokerConfig.get(); it is not a dataclass field.
        config.max_qos = MAX_QOS
        broker = _DoormatBroker(config, self._table, self.limits)
        for plugin in broker.plugins_manager.plugins:
            if isinstance(plugin, AccountAuthPlugin | AclTopicPlugin):
                plugin.table = self._table  # shared, so add_account is live
        # A failed start raises to our caller; amqtt would also log it with a traceback.
        start_log = logging.getLogger("amqtt.broker")
        saved = start_log.level
        if self._quiet:
            start_log.setLevel(logging.CRITICAL)
        try:
            await broker.start()
        finally:
            start_log.setLevel(saved)
        self._broker = broker
        server = broker._servers["default"].instance
        self.port = int(server.sockets[0].getsockname()[1])
        log.debug("embedded broker listening on %s", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
