"""The one MQTT transport: the only module in the repository that imports aiomqtt or paho.

One ``Transport`` per client identity at the broker (docs/architecture.md, "One MQTT
transport", has the whole API)::

    async with Transport(host, port, username=u, password=pw, subscriptions=[...]) as t:
        async for message in t.messages():   # across reconnections
            ...; message.ack()               # only now may the broker forget it
        await t.publish(topic, payload)      # QoS 1: returns after the PUBACK

A persistent session with a fixed client id, reconnected with back-off until ``stop``; a
login refused before the first connection, or a subscription refused, is final. paho's
automatic PUBACK is off *before* connecting (a resumed session's queued messages arrive
right after the CONNACK; paho would acknowledge each before anything stored it). A
message is acknowledged only by ``message.ack()``, on the connection it came on, in
arrival order (MQTT 3.1.1 §4.6: a later ack waits for the earlier ones), never for a
message of a lost connection (the broker re-sends it on the next). Subscriptions go out
without waiting for the SUBACK before messages are handed out: amqtt answers a SUBSCRIBE
only after the client acknowledged what it re-sends on reconnect. Publishes: QoS 1, in
call order, at most ``max_in_flight`` handed to the connection at a time
(``infra/outbox.py``). TCP_NODELAY: without it a small packet written right after
another waits for the peer's delayed ACK, ~40-90 ms per request/answer round trip.

Cost per message: one small object, no task, no await of its own. aiomqtt does the
socket and event-loop plumbing; its message queue and per-publish bookkeeping (a task
and a walk over every pending call per publish) are replaced by paho callbacks into
this module's own queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from infra.outbox import Out, Outbox
from infra.retry import Backoff

log = logging.getLogger(__name__)

# paho does not set TCP_NODELAY (see the module doc).
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
# Publishes handed to the broker connection at a time (awaiting their PUBACK).
MAX_IN_FLIGHT = 100
# CONNACK codes no retry with the same credentials can change (3.1.1: 4, 5; 5.0: 134, 135).
LOGIN_REFUSED = frozenset({4, 5, 134, 135})
# How long ``stop`` waits for what is queued, and then for a clean DISCONNECT.
STOP_TIMEOUT = 5.0

Callback = Callable[["Connection"], None]
LostCallback = Callable[["Connection", str], None]


class TransportError(Exception):
    """The transport cannot go on (or was stopped)."""

    transient = True  # the network's, not a message's (infra.failures)


class LoginRefused(TransportError):
    """The broker refused the login before the first connection: final."""

    def __init__(self, message: str, answer: str) -> None:
        super().__init__(message)
        self.answer = answer  # what the broker said (the CONNACK code)


class SubscriptionRefused(TransportError):
    """The broker refused a subscription: final."""


class TransportStopped(TransportError):
    """A publish on a stopped transport, or one it stopped before sending."""


class Message:
    """A message from the broker. ``ack()`` once it has been handled (stored)."""

    __slots__ = ("_acked", "connection", "mid", "payload", "qos", "topic")

    def __init__(
        self, topic: str, payload: bytes, qos: int, mid: int, connection: Connection
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.mid = mid
        self.connection = connection  # the one it came on
        self._acked = False

    def ack(self) -> None:
        """Let the broker forget it: PUBACK, on the connection it came on, once every
        message that arrived before it is acknowledged too (arrival order). Nothing if
        that connection is lost: the broker sends the message again on the next one."""
        if self._acked:
            return
        self._acked = True
        if self.qos:
            self.connection._release()


class Connection:
    """One connection to the broker, from its CONNACK to its end (``lost`` done)."""

    __slots__ = ("_arrivals", "_client", "_paho", "lost", "number")

    def __init__(self, number: int, client: _Client) -> None:
        self.number = number  # 1 for the transport's first connection, then 2, ...
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._client = client
        self._paho = client._client
        # QoS 1 messages not acknowledged yet, in arrival order.
        self._arrivals: deque[Message] = deque()

    @property
    def is_lost(self) -> bool:
        # aiomqtt's future: paho saw the socket go; ``lost``: the transport handled it.
        return self.lost.done() or self._client._disconnected.done()

    def _release(self) -> None:
        """PUBACK the acknowledged messages at the front of the arrival order."""
        if self.is_lost:
            return
        arrivals = self._arrivals
        ack = self._paho.ack
        while arrivals and arrivals[0]._acked:
            message = arrivals.popleft()
            ack(message.mid, message.qos)

    def _send(self, topic: str, payload: bytes) -> int | None:
        """Hand a QoS 1 publish to paho: its message id, or None if the socket is gone."""
        info = self._paho.publish(topic, payload, 1)
        return info.mid if info.rc == paho.MQTT_ERR_SUCCESS else None


class _Client(aiomqtt.Client):
    """aiomqtt's client with incoming messages and PUBACKs handed to the transport
    (instead of aiomqtt's message queue and its per-publish bookkeeping)."""

    def __init__(self, transport: Transport, connection_number: int, **options: Any) -> None:
        super().__init__(**options)
        self._transport = transport
        # Before connecting (see the module doc).
        self._client.manual_ack_set(True)
        self.connection = Connection(connection_number, self)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._transport._arrived(self.connection, message)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if self.connection is self._transport._current:
            self._transport._outbox.confirmed(mid)


class Transport:
    """An MQTT client that stays connected: see the module doc."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str | None,
        identifier: str | None = None,
        subscriptions: Iterable[str] = (),
        clean_session: bool = False,
        keepalive: int = 30,
        max_in_flight: int = MAX_IN_FLIGHT,
        backoff: Backoff | None = None,
        name: str | None = None,
        on_connect: Callback | None = None,
        on_subscribed: Callback | None = None,
        on_lost: LostCallback | None = None,
        route: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        # Takes a message as it arrives, before any reader (the plane's, infra/plane.py:
        # a control or an answer must not wait behind the owner's handler, which may be
        # waiting for that very answer). True: taken, and acknowledged in arrival order.
        self._route = route
        self.identifier = identifier or username
        self.subscriptions = list(subscriptions)
        self.max_in_flight = max(1, max_in_flight)
        self.name = name or self.identifier
        self._options: dict[str, Any] = {
            "hostname": host,
            "port": port,
            "username": username,
            "password": password,
            "identifier": self.identifier,
            "clean_session": clean_session,
            "keepalive": keepalive,
            "socket_options": NODELAY,
        }
        self._backoff = backoff or Backoff(0.05, 2.0)
        self._on_connect = on_connect
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._inbox: deque[Message] = deque()
        self._outbox: Outbox[Connection] = Outbox(self.name, max_in_flight)
        self._current: Connection | None = None
        self._connections = 0
        self._online = asyncio.Event()
        self._connected = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._interrupt: asyncio.Future[str] | None = None
        self._stopping = asyncio.Event()
        self._stopped = False
        self._failure: TransportError | None = None
        self._after_drop = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_soon(self) -> None:
        """Start connecting (and reconnecting) in the background; return at once."""
        if self._task is not None:
            raise RuntimeError(f"{self.name}: transport already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"transport:{self.name}"
        )

    async def start(self, timeout: float | None = 15.0) -> None:
        """Start, and return once connected and subscribed. Whoever reads ``messages()``
        should be reading already (amqtt's SUBACK waits for the acks of what it
        re-sends). Raises LoginRefused or SubscriptionRefused at once, TimeoutError if
        not connected in time (the transport is then stopped)."""
        self.start_soon()
        try:
            async with asyncio.timeout(timeout):
                await self.wait_connected()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Flush what is queued (if online, up to ``timeout``), leave cleanly (an MQTT
        DISCONNECT after the PUBACKs already written, not a dropped socket), and end
        every wait: ``messages()`` ends, publishes still waiting raise
        TransportStopped."""
        if self._stopped:
            return
        task = self._task
        if task is not None and not task.done():
            if self._online.is_set():
                await self.flush(timeout)
            self._stopping.set()
            self._interrupt_session("stopped")
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._stopped = True
        self._stopping.set()
        self._online.clear()
        self._connected.clear()
        self._inbox.clear()
        self._outbox.close(TransportStopped(f"{self.name}: stopped"))
        self.wake()

    @property
    def running(self) -> bool:
        """Connecting or connected (not stopped, not failed)."""
        return self._task is not None and not self._task.done() and not self._stopped

    @property
    def online(self) -> bool:
        """Connected (CONNACK): publishes go out."""
        return self._online.is_set()

    @property
    def connected(self) -> bool:
        """Connected and subscribed (SUBACK)."""
        return self._connected.is_set()

    @property
    def connection(self) -> Connection | None:
        """The current connection (None while there is none)."""
        return self._current

    @property
    def connections(self) -> int:
        """How many connections this transport has made so far."""
        return self._connections

    async def wait_connected(self) -> None:
        """Wait until connected and subscribed; raise the transport's failure."""
        while not self._connected.is_set():
            self._check()
            await self._wait_change()

    async def reconnect(self, reason: str = "reconnect requested") -> None:
        """Leave the current connection without acknowledging anything more on it (the
        broker re-sends what was not acknowledged, on the next connection) and connect
        again after the back-off; return once that connection is over. The back-off is
        not reset by the next connection, so that a message that keeps failing does
        not make a tight loop."""
        conn = self._current
        if conn is None:
            return
        self._after_drop = True
        self._interrupt_session(reason)
        await asyncio.shield(conn.lost)

    # -- input -------------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        """Every message, in arrival order, across reconnections (what a lost connection
        had delivered and nobody took yet is dropped: the broker re-sends it). Ends when
        the transport stops; raises its failure."""
        inbox = self._inbox
        while True:
            if inbox:
                message = inbox.popleft()
                if message.connection.is_lost:
                    inbox.clear()  # all of that connection's (the inbox holds one's only)
                    continue
                yield message
            elif self._stopped:
                return
            else:
                await self.wait()

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages that have already arrived, without waiting."""
        inbox = self._inbox
        if not inbox:
            return []
        if inbox[0].connection.is_lost:  # the inbox holds one connection's messages only
            inbox.clear()
            return []
        if len(inbox) <= limit:
            taken = list(inbox)
            inbox.clear()
            return taken
        return [inbox.popleft() for _ in range(limit)]

    async def wait(self) -> None:
        """Return once there is a message to take, the connection changed (up,
        subscribed, lost), ``wake()`` was called, or the transport stopped; raise its
        failure (LoginRefused, SubscriptionRefused)."""
        self._check(ended=False)
        if self._inbox or self._stopped:
            return
        await self._wait_change()

    # -- output ------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> Connection:
        """Publish at QoS 1, waiting for a connection; return after the broker's PUBACK,
        with the connection that carried it. Sent again on the next connection if the
        connection is lost before the PUBACK."""
        future: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        out = Out(topic, payload, None, True, future)
        self._enqueue(out)
        try:
            return await future
        except asyncio.CancelledError:
            self._outbox.forget(out)
            raise

    def publish_soon(
        self,
        topic: str,
        payload: bytes,
        then: Callable[[], None] | None = None,
        *,
        retry: bool = True,
    ) -> None:
        """Publish at QoS 1 without waiting (for a connection or the PUBACK), in call
        order with the others, and call ``then`` after the PUBACK (an exception from it
        is logged). With ``retry=False``: only on the current connection; dropped (and
        logged) if there is none or it is lost before the PUBACK."""
        if not retry and (self._current is None or self._current.is_lost):
            log.info("%s: publish to %s dropped: not connected", self.name, topic)
            return
        self._enqueue(Out(topic, payload, then, retry, None))

    def _enqueue(self, out: Out[Connection]) -> None:
        self._check(ended=False)
        if self._stopped:
            raise TransportStopped(f"{self.name}: stopped")
        self._outbox.add(out)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every publish queued so far has its PUBACK; False on timeout."""
        return await self._outbox.flush(timeout)

    async def room(self) -> None:
        """Wait until fewer than ``max_in_flight`` publishes are queued or in flight."""
        await self._outbox.room()

    @property
    def pending(self) -> int:
        """Publishes queued or in flight (not confirmed yet)."""
        return self._outbox.pending

    @property
    def in_flight(self) -> int:
        """Publishes handed to the broker connection and awaiting their PUBACK."""
        return self._outbox.in_flight

    # -- input from paho -------------------------------------------------------------------

    def _arrived(self, conn: Connection, incoming: paho.MQTTMessage) -> None:
        """paho's message callback: queue it for ``messages()`` / ``take()``."""
        if conn.lost.done():
            return
        try:
            topic = incoming.topic
        except UnicodeDecodeError:  # not one of ours; still needs its ack in order
            topic = ""
        payload = incoming.payload
        if not isinstance(payload, bytes):  # paho reads bytes; its type says more
            payload = bytes(payload)
        message = Message(topic, payload, incoming.qos, incoming.mid, conn)
        if incoming.qos:
            conn._arrivals.append(message)
        if self._route is not None and self._route(topic, payload):
            message.ack()
            return
        self._inbox.append(message)
        if self._waiters:
            self.wake()

    # -- state changes -----------------------------------------------------------------

    async def _wait_change(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            raise

    def wake(self) -> None:
        """Make every ``wait()`` return now (a consumer's own stop signal)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _check(self, *, ended: bool = True) -> None:
        """Raise the transport's failure, and (``ended``) TransportStopped if it ended."""
        if self._failure is not None:
            raise self._failure
        if ended and (self._stopped or (self._task is not None and self._task.done())):
            raise TransportStopped(f"{self.name}: stopped")

    def _fail(self, exc: TransportError) -> None:
        self._failure = exc
        self._outbox.fail(exc)
        self.wake()

    def _interrupt_session(self, reason: str) -> None:
        interrupt = self._interrupt
        if interrupt is not None and not interrupt.done():
            interrupt.set_result(reason)

    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("%s: a connection callback failed", self.name)

    # -- the connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                client = _Client(self, self._connections + 1, **self._options)
                try:
                    await client.__aenter__()
                except MqttConnectError as exc:
                    if _code(exc.rc) in LOGIN_REFUSED and self._connections == 0:
                        where = f"broker at {self.host}:{self.port}"
                        who = f"the login of {self.username!r}"
                        raise LoginRefused(f"{where} refused {who}: {exc}", str(exc)) from None
                    reason = f"connect refused: {exc}"
                except aiomqtt.MqttError as exc:
                    reason = f"no connection: {exc}"
                else:
                    reason = await self._session(client, client.connection)
                if self._stopping.is_set():
                    return
                delay = self._backoff.next()
                log.info("%s: %s; reconnecting in %.2f s", self.name, reason, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        except TransportError as exc:
            self._fail(exc)
        except Exception as exc:
            log.exception("%s: the transport failed", self.name)
            self._fail(TransportError(f"{self.name}: the transport failed: {exc!r}"))
        finally:
            self._online.clear()
            self._connected.clear()
            self.wake()

    async def _session(self, client: _Client, conn: Connection) -> str:
        """One connection, from its CONNACK to its end; returns why it ended."""
        loop = asyncio.get_running_loop()
        self._connections = conn.number
        self._current = conn
        interrupt: asyncio.Future[str] = loop.create_future()
        self._interrupt = interrupt
        lost = client._disconnected
        ended: set[asyncio.Future[Any]] = {lost, interrupt}
        self._online.set()
        self._call(self._on_connect, conn)
        self._outbox.attach(conn._send, conn)  # sends what waited for a connection
        self.wake()
        subscribing: asyncio.Future[Any] | None = None
        reason = "stopped"
        try:
            if self.subscriptions:
                # Without waiting for the SUBACK before reading (see the module doc).
                subscribing = asyncio.ensure_future(
                    client.subscribe([(t, 1) for t in self.subscriptions])
                )
                await asyncio.wait({subscribing, *ended}, return_when=asyncio.FIRST_COMPLETED)
            if not any(f.done() for f in ended):
                if subscribing is not None and subscribing.exception() is not None:
                    reason = f"subscribing failed: {subscribing.exception()}"
                    return reason
                if subscribing is not None and any(_code(g) >= 0x80 for g in subscribing.result()):
                    reason = "subscription refused"
                    raise SubscriptionRefused(
                        f"the broker at {self.host}:{self.port} refused the subscription "
                        f"{self.subscriptions!r} of {self.username!r}"
                    )
                self._connected.set()
                if not self._after_drop:
                    self._backoff.reset()
                self._call(self._on_subscribed, conn)
                self.wake()
                await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                self._after_drop = False
                failed = None if lost.cancelled() else lost.exception()
                reason = f"broker connection lost: {failed or 'disconnected'}"
            else:
                reason = interrupt.result()
            return reason
        finally:
            if subscribing is not None and not subscribing.done():
                subscribing.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await subscribing
            # Nothing more is acknowledged or published on it from here.
            self._gone(conn, reason)
            # Leave cleanly: DISCONNECT after what paho has to write (if still connected).
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            if lost.done() and not lost.cancelled():
                lost.exception()  # retrieved: no "exception was never retrieved" noise

    def _gone(self, conn: Connection, reason: str) -> None:
        """The connection is over: drop what it delivered and nobody took, put what it
        did not confirm back in the queue (or drop it: retry=False)."""
        if conn.lost.done():
            return
        conn.lost.set_result(None)
        if self._current is conn:
            self._current = None
        self._interrupt = None
        self._online.clear()
        self._connected.clear()
        self._inbox.clear()
        conn._arrivals.clear()
        self._outbox.detach(reason)
        self._call(self._on_lost, conn, reason)
        self.wake()


def _code(rc: Any) -> int:
    return int(getattr(rc, "value", rc))
