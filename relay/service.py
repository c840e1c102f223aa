"""The relay as a running service: the thin asyncio shell around ``relay.router.Relay``.

It logs in to the broker as ``relay`` with a persistent session (fixed client id,
clean_session=False), subscribes to every account's outbound topics at QoS 1, feeds
each message to ``Relay.handle`` and performs the returned actions in order: publishes
at QoS 1, then the broker-level acknowledgement of the input.

Manual acknowledgements. paho (under aiomqtt) sends the PUBACK for a QoS 1 message as
soon as it has read it off the socket, before our code has looked at it. A relay that
died between that PUBACK and its database commit would have lost the envelope for good:
the broker has forgotten it (it was acknowledged) and the sender has forgotten it (the
broker acknowledged the sender's publish). So we switch paho to manual acks before
connecting (queued messages arrive the moment the persistent session resumes) and send
each PUBACK only after ``Relay.handle`` returned, i.e. after the store committed. If we
die before that, the broker still holds the message in flight for our session and
resends it when we reconnect; the store's de-duplication makes that harmless.

Publishes are pipelined: each runs in its own task, at most ``publish_window`` at a
time (backpressure: when the broker stops confirming, we stop reading input). The input
is acknowledged without waiting for our output's PUBACK, because the envelope is already
durable and is republished on every (re)connect and on the recipient's ``sync``.

Under load (docs/relay.md, "Load and overload"): what the broker has already handed
over (up to its in-flight window, at most ``read_ahead``) is taken into an ``Intake``
(relay/intake.py) and handled round-robin by sender, so one flooding device does not
stand in front of all others; consecutive envelopes and acks are handled in one SQLite
transaction (group commit, at most ``batch_max``), and their PUBACKs, events and
forwards follow that commit. PUBACKs go out in arrival order. The socket is
TCP_NODELAY: without it, Nagle's algorithm holds the PUBACK that follows a forward for
the peer's delayed ACK (about 40 ms per request/answer round trip).

Running it in-process (the demo, tests)::

    service = RelayService(host, port, password, db_path, events)
    await service.start()      # returns once connected and subscribed
    ...
    await service.stop()       # clean: drains publishes, disconnects, closes the store

or in the foreground: ``await run_relay(host, port, password, db_path, events, stop)``
returns when ``stop`` (an asyncio.Event) is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from relay.intake import DeferredEvents, Intake, Item, item_of
from relay.li import LawfulIntercept
from relay.router import Action, Limits, Publish, Relay
from relay.store import Store, load_or_create_signer
from wire import topics
from wire.events import Event, EventLog, now_ms
from wire.ids import RELAY_ID
from wire.kt import KT_ORIGIN
from wire.note import Signer

log = logging.getLogger(__name__)

# paho does not set TCP_NODELAY (see the module doc).
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
ACTOR = RELAY_ID

# CONNACK codes that will not get better by retrying with the same credentials.
_AUTH_REFUSED = {4, 5, 134, 135}


class RelayError(Exception):
    """The relay cannot run: bad credentials, refused subscription, no broker in time."""


class RelayService:
    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        db_path: str | Path,
        events: EventLog,
        *,
        username: str = RELAY_ID,
        identifier: str | None = None,
        subscription: str = topics.RELAY_SUBSCRIPTION,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        keep_captured: bool = True,
        limits: Limits | None = None,
        publish_window: int = 256,
        batch_max: int = 64,
        read_ahead: int = 2000,
        keepalive: int = 30,
        backoff: tuple[float, float] = (0.1, 5.0),
        maintenance_interval: float = 600.0,
        li_mode: str = "off",
        kt_signer: Signer | None = None,
        kt_key_path: str | Path | None = None,
        ghost: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._password = password
        self.username = username
        # Several workers sharing the load (MQTT shared subscriptions, issue 7) each
        # need their own client id and session: pass identifier="relay-2" and
        # subscription="$share/relay/doormat/out/+/+".
        self.identifier = identifier or username
        self.subscription = subscription
        self.events = events
        # What the router and the LI switch emit through: held while a group commit is
        # open, so that every event describes committed work (relay/intake.py).
        self._events = DeferredEvents(events)
        self.publish_window = publish_window
        self.batch_max = max(1, batch_max)
        self.read_ahead = max(1, read_ahead)
        self.keepalive = keepalive
        self.backoff = backoff
        self.maintenance_interval = maintenance_interval
        self.db_path = Path(db_path)
        self.store = Store(db_path, synchronous=synchronous, keep_captured=keep_captured)
        # The LI switch (relay/li.py): the only place a tap can be attached.
        self.li = LawfulIntercept(self._events, li_mode, db_path=db_path)
        # The key directory's checkpoint signing key (it signs, it decrypts nothing):
        # given, or kept beside the store (<db>.kt-key, mode 0600; <db>.kt-key.vkey is
        # the verifier key that devices pin).
        if kt_signer is None:
            key_path = Path(kt_key_path or f"{self.db_path}.kt-key")
            kt_signer = load_or_create_signer(key_path, KT_ORIGIN)
        self.relay = Relay(
            self.store,
            self._events,
            limits=limits,
            observers=[self.li],
            kt_signer=kt_signer,
            ghost=ghost,
        )
        self.relay.x1 = self.li.handle_x1
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._connections = 0

    @property
    def directory_vkey(self) -> str:
        """The verifier key of the key directory's checkpoints, which devices pin."""
        return self.relay.directory_vkey

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> None:
        """Run in the background; return once connected and subscribed. Raises
        RelayError if the broker refuses the login or is not reachable in time."""
        if self._task is not None:
            raise RuntimeError("relay service already started")
        self._task = asyncio.create_task(self.run(), name="relay")
        ready = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if self._task in done:
            self._task.result()  # raises what run() raised
            raise RelayError("relay stopped before it connected")
        if not self._ready.is_set():
            await self.stop()
            raise RelayError(
                f"no connection to the broker at {self.host}:{self.port} in {timeout} s"
            )

    async def stop(self) -> None:
        """Stop cleanly: finish the message in hand, drain publishes, disconnect, close."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        else:
            self.store.close()  # never started: run() did not take the store over

    @property
    def connected(self) -> bool:
        return self._connected

    def captured(self) -> Iterator[bytes]:
        """The raw bytes of every envelope the relay accepted and still retains, in
        arrival order: what the operator holds (the exposure report's 'captured').
        Reads through its own read-only connection, so it works while the relay runs
        and after it stopped."""
        reader = Store(self.db_path, readonly=True)
        try:
            for c in reader.captured():
                if c.raw is not None:
                    yield c.raw
        finally:
            reader.close()

    # -- the loop ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` (or ``self.stop()``); reconnect with backoff meanwhile."""
        watcher = asyncio.create_task(_relay_event(stop, self._stop)) if stop is not None else None
        maintenance = asyncio.create_task(self._maintenance())
        delay = self.backoff[0]
        try:
            while not self._stop.is_set():
                reason = "stopped"
                try:
                    await self._session()
                    delay = self.backoff[0]
                except MqttConnectError as exc:
                    if (
                        exc.rc is not None
                        and _code(exc.rc) in _AUTH_REFUSED
                        and self._connections == 0
                    ):
                        raise RelayError(
                            f"broker at {self.host}:{self.port} refused the login "
                            f"of {self.username!r}: {exc}"
                        ) from None
                    reason = f"connect refused: {exc}"
                except aiomqtt.MqttError as exc:
                    reason = f"broker connection lost: {exc}"
                except sqlite3.Error as exc:
                    # The disk failed under us. The input in hand was not acknowledged;
                    # dropping the connection makes the broker resend it later.
                    log.exception("relay: store failure")
                    self._emit("relay.error", reason=f"store failure: {exc}")
                    reason = "store failure"
                finally:
                    if self._connected:
                        self._connected = False
                        self._emit("relay.disconnected", reason=reason)
                if self._stop.is_set():
                    break
                log.info("relay: %s; reconnecting in %.1f s", reason, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                delay = min(delay * 2, self.backoff[1])
        finally:
            maintenance.cancel()
            if watcher is not None:
                watcher.cancel()
            with contextlib.suppress(sqlite3.Error):
                self._emit("relay.stopped", pending=self.store.pending_count())
            self.store.close()
            self.li.close()

    async def _session(self) -> None:
        """One broker connection, from CONNECT to disconnect."""
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self._password,
            identifier=self.identifier,
            clean_session=False,
            keepalive=self.keepalive,
            socket_options=_NODELAY,
        )
        # Before connecting: a resumed session's queued messages arrive right after the
        # CONNACK, and paho would acknowledge each on receipt (see the module doc).
        client._client.manual_ack_set(True)
        client.pending_calls_threshold = self.publish_window + 16  # our window bounds it
        publisher = _Publisher(client, self.publish_window)
        async with client:
            self._connected = True
            self._connections += 1
            self._emit(
                "relay.connected",
                broker=f"{self.host}:{self.port}",
                subscription=self.subscription,
                connection=self._connections,
            )
            # Subscribe without waiting for the SUBACK before reading: a resumed session
            # already has the subscription, and amqtt answers a SUBSCRIBE only after the
            # client acknowledged every message it resends on reconnect, which we do
            # only as we read them.
            subscribing = asyncio.create_task(client.subscribe(self.subscription, qos=1))
            # Whatever was in flight when we last lost the broker (or died) may be lost;
            # republish everything pending. Recipients de-duplicate.
            reason = "startup" if self._connections == 1 else "reconnect"
            await self._perform(publisher, self.relay.startup(reason))
            messages = client.messages
            queue: asyncio.Queue[aiomqtt.Message] = client._queue
            intake = Intake()
            stop_wait = asyncio.create_task(self._stop.wait())
            nxt: asyncio.Task[aiomqtt.Message] | None = None
            subscribed = False
            try:
                while True:
                    if not intake:
                        # Wait for the next message or stop, whichever first, so that a
                        # stop lands between messages, never inside one.
                        if nxt is None:
                            nxt = asyncio.create_task(anext(messages))
                        waiting: set[asyncio.Future[Any]] = {nxt, stop_wait}
                        if not subscribed:
                            waiting.add(subscribing)
                        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if not subscribed and subscribing.done():
                        subscribed = True
                        granted = subscribing.result()  # MqttError if the connection dropped
                        if any(_code(g) >= 0x80 for g in granted):
                            raise RelayError(
                                f"the broker refused the subscription {self.subscription!r}"
                            )
                        self._ready.set()
                    if nxt is not None and nxt.done():
                        message = nxt.result()  # raises MqttError when the connection drops
                        nxt = None
                        intake.add(_item(message))
                    # What the broker already handed over is taken without waiting
                    # (bounded by its in-flight window and by read_ahead).
                    while intake.unacked < self.read_ahead:
                        try:
                            intake.add(_item(queue.get_nowait()))
                        except asyncio.QueueEmpty:
                            break
                    if self._stop.is_set():
                        break  # what was taken and not acknowledged comes back next time
                    if intake:
                        await self._handle(client, publisher, intake)
                        await asyncio.sleep(0)  # let paho read and write the socket
            finally:
                for task in (nxt, stop_wait, subscribing):
                    if task is not None and not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await task
                await publisher.drain(timeout=5.0)

    async def _handle(self, client: aiomqtt.Client, publisher: _Publisher, intake: Intake) -> None:
        """Handle the next turn of the intake (round-robin by sender), committing runs
        of envelopes and acks together, then forward, then release PUBACKs."""
        items = intake.take(self.batch_max)
        # Scoped LI tasks write through their own connection to the same database:
        # with our write transaction open they would wait for it. No group commit then.
        group = self.batch_max > 1 and self.li.mode != "scoped"
        start = 0
        while start < len(items):
            end = start + 1
            if group and items[start].kind in _GROUPED:
                while end < len(items) and items[end].kind in _GROUPED:
                    end += 1
            run = items[start:end]
            with self._events.held():  # events once committed, or never
                if len(run) > 1:
                    with self.store.batch():
                        results = [self.relay.handle(i.topic, i.payload) for i in run]
                else:
                    results = [self.relay.handle(run[0].topic, run[0].payload)]
            for actions in results:
                await self._perform(publisher, actions)
            intake.done(run)
            start = end
        for item in intake.ackable():
            # Only now, after the commit (module doc), in arrival order. Same client
            # that received it: a message id means nothing on another connection.
            client._client.ack(item.message.mid, item.message.qos)

    async def _perform(self, publisher: _Publisher, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                await publisher.publish(action.topic, action.payload)
            # Ack: the caller releases PUBACKs in arrival order (Intake.ackable).
            # Event actions were emitted by the router when it decided.

    async def _maintenance(self) -> None:
        while True:
            try:
                self.relay.maintenance()
            except sqlite3.Error:
                log.exception("relay: maintenance failed")
            await asyncio.sleep(self.maintenance_interval)

    def _emit(self, kind: str, **fields: Any) -> None:
        self.events.emit(ACTOR, kind, **fields)


class _Publisher:
    """QoS 1 publishes in flight concurrently, at most ``window`` at a time, in order
    (tasks start in creation order and each hands its packet to paho before its first
    await)."""

    def __init__(self, client: aiomqtt.Client, window: int) -> None:
        self._client = client
        self._sem = asyncio.Semaphore(window)
        self._tasks: set[asyncio.Task[None]] = set()

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._sem.acquire()
        task = asyncio.create_task(self._one(topic, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, topic: str, payload: bytes) -> None:
        try:
            await self._client.publish(topic, payload, qos=1, timeout=30)
        except aiomqtt.MqttError as exc:
            # The envelope is still pending in the store: it goes out again on the
            # next connect or the recipient's sync. A lost directory answer makes the
            # requester time out and ask again.
            log.info("relay: publish to %s not confirmed: %s", topic, exc)
        finally:
            self._sem.release()

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()


# Kinds handled in one transaction when they come in a row (group commit).
_GROUPED = frozenset({topics.MSG, topics.ACK})


def _item(message: aiomqtt.Message) -> Item:
    payload = message.payload
    data = (
        bytes(payload)
        if isinstance(payload, bytes | bytearray)
        else str(payload).encode()  # paho gives bytes; the type says more
    )
    return item_of(str(message.topic), data, message)


def _code(rc: Any) -> int:
    value = getattr(rc, "value", rc)
    return int(value)


async def _relay_event(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def run_relay(
    host: str,
    port: int,
    password: str,
    db_path: str | Path,
    events: EventLog,
    stop: asyncio.Event,
    **options: Any,
) -> None:
    """Run a relay in the foreground until ``stop`` is set (see RelayService)."""
    service = RelayService(host, port, password, db_path, events, **options)
    await service.run(stop)


class JsonLinesLog(EventLog):
    """An EventLog for a long-running process: writes each event as one JSON line and
    keeps none in memory (EventLog keeps them all, which a relay running for days
    cannot afford)."""

    def __init__(self, sink: TextIO) -> None:
        super().__init__(sink=None)
        self._out = sink

    def emit(self, actor: str, kind: str, **fields: Any) -> Event:
        event: Event = {"t": now_ms(), "actor": actor, "kind": kind, **fields}
        with self._lock:
            self._out.write(json.dumps(event, sort_keys=True) + "\n")
            if not self._deferred:
                self._out.flush()
        return event

    _deferred = False

    @contextlib.contextmanager
    def deferred_flush(self) -> Iterator[None]:
        """Several events, one flush (a group commit's events)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            with self._lock:
                self._out.flush()
