"""The relay as a running service: the thin asyncio shell around ``relay.router.Relay``.

It logs in to the broker as ``relay`` with a persistent session (fixed client id,
clean_session=False), subscribes to every account's outbound topics at QoS 1, feeds
each message to ``Relay.handle`` and performs the returned actions in order: publishes
at QoS 1, then the broker-level acknowledgement of the input. The MQTT mechanics
(connection, reconnection with back-off, manual acks, TCP_NODELAY, subscribing without
waiting for the SUBACK, the publish window) are the transport's (``infra.transport``).

Manual acknowledgements. paho (under aiomqtt) would send the PUBACK for a QoS 1 message
as soon as it has read it off the socket, before our code has looked at it. A relay that
died between that PUBACK and its database commit would have lost the envelope for good:
the broker has forgotten it (it was acknowledged) and the sender has forgotten it (the
broker acknowledged the sender's publish). So the transport switches paho to manual acks
before connecting (queued messages arrive the moment the persistent session resumes) and
we acknowledge each message only after ``Relay.handle`` returned, i.e. after the store
committed. If we die before that, the broker still holds the message in flight for our
session and resends it when we reconnect; the store's de-duplication makes that harmless.

Publishes are pipelined: at most ``publish_window`` are queued or in flight at a time
(backpressure: when the broker stops confirming, we stop reading input). The input is
acknowledged without waiting for our output's PUBACK, because the envelope is already
durable and is republished on every (re)connect and on the recipient's ``sync``; for the
same reason a publish the broker did not confirm before the connection was lost is not
sent again by the transport.

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
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from infra.failures import describe, is_transient
from infra.files import load_or_create_signer
from infra.plane import Plane
from infra.retry import Backoff
from infra.setaside import SetAside
from infra.setaside import store_path as set_aside_path
from infra.transport import (
    Connection,
    LoginRefused,
    Message,
    SubscriptionRefused,
    Transport,
    TransportError,
)
from relay.controls import RelayControls
from relay.intake import DeferredEvents, Intake, Item, item_of
from relay.li import LawfulIntercept
from relay.router import Action, Limits, Publish, Relay
from relay.store import Store
from wire import topics
from wire.events import EventLog
from wire.ids import RELAY_ID
from wire.kt import KT_ORIGIN
from wire.note import Signer

log = logging.getLogger(__name__)

ACTOR = RELAY_ID


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
        plane: bool = False,
        measure_interval: float = 1.0,
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
        # The relay's place on the plane (its events, the operator's controls,
        # relay/controls.py): on its one connection, subscribed to doormat/to/relay/+/+
        # and the hello too.
        self.plane: Plane | None = Plane(username, "relay", events) if plane else None
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
        # What the loop could not process (infra/setaside.py), beside the store.
        self.set_aside = SetAside(set_aside_path(db_path))
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
        self.li.restore()  # the operator's last position, if it set one by control
        self.controls: RelayControls | None = None
        if self.plane is not None:
            self.controls = RelayControls(self, measure_interval)
            self.plane.serve_all(self.controls.handlers())
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._transport: Transport | None = None
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
        self._request_stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        else:
            self.store.close()  # never started: run() did not take the store over
            self.set_aside.close()

    def _request_stop(self) -> None:
        self._stop.set()
        if self._transport is not None:
            self._transport.wake()  # the loop may be waiting for input

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
        watcher = asyncio.create_task(self._relay_stop(stop)) if stop is not None else None
        maintenance = asyncio.create_task(self._maintenance())
        transport = self._transport = Transport(
            self.host,
            self.port,
            username=self.username,
            password=self._password,
            identifier=self.identifier,
            subscriptions=[self.subscription, *(self.plane.subscriptions if self.plane else ())],
            clean_session=False,
            keepalive=self.keepalive,
            max_in_flight=self.publish_window,
            backoff=Backoff(*self.backoff),
            name="relay",
            on_connect=self._on_connect,
            on_subscribed=self._on_subscribed,
            on_lost=self._on_lost,
            route=self.plane.route if self.plane else None,
        )
        if self.plane is not None:
            self.plane.bind(transport)
        try:
            transport.start_soon()
            await self._serve(transport)
        except LoginRefused as exc:
            raise RelayError(str(exc)) from None
        except SubscriptionRefused:
            raise RelayError(
                f"the broker refused the subscription {self.subscription!r}"
            ) from None
        finally:
            if self.plane is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._emit("relay.stopped", pending=self.store.pending_count())
                if self.controls is not None:
                    await self.controls.close()
                await self.plane.close()
            # Drains publishes (up to 5 s), then DISCONNECT.
            await transport.stop()
            maintenance.cancel()
            if watcher is not None:
                watcher.cancel()
            if self.plane is None:
                with contextlib.suppress(sqlite3.Error):
                    self._emit("relay.stopped", pending=self.store.pending_count())
            self.store.close()
            self.li.close()
            self.set_aside.close()

    def _on_connect(self, conn: Connection) -> None:
        self._connected = True
        self._connections = conn.number
        self._emit(
            "relay.connected",
            broker=f"{self.host}:{self.port}",
            subscription=self.subscription,
            connection=conn.number,
        )

    def _on_subscribed(self, conn: Connection) -> None:
        self._ready.set()

    def _on_lost(self, conn: Connection, reason: str) -> None:
        if self._connected:
            self._connected = False
            self._emit("relay.disconnected", reason=reason)

    async def _serve(self, transport: Transport) -> None:
        """Take what the broker hands over and handle it, until stopped."""
        intake = Intake()
        current: Connection | None = None  # the connection the intake's messages came on
        while not self._stop.is_set():
            try:
                conn = transport.connection
                if conn is not current:
                    # What an earlier connection handed over and we did not acknowledge
                    # comes again on this one.
                    intake = Intake()
                    current = conn
                    if conn is not None:
                        # Whatever was in flight when we last lost the broker (or died)
                        # may be lost: republish everything pending (recipients
                        # de-duplicate).
                        reason = "startup" if conn.number == 1 else "reconnect"
                        await self._perform(transport, self.relay.startup(reason))
                    continue
                # What the broker already handed over is taken without waiting (bounded
                # by its in-flight window and by read_ahead).
                room = self.read_ahead - intake.unacked
                if room > 0:
                    for message in transport.take(room):
                        intake.add(_item(message))
                if not intake:
                    # Wait for input, a change of connection, or stop, whichever first,
                    # so that a stop lands between messages, never inside one.
                    await transport.wait()
                    continue
                await self._handle(transport, intake)
            except TransportError:
                raise  # a refused login or subscription: final (run() reports it)
            except Exception as exc:
                # The disk failed under us (or the transport; _handle sets aside what a
                # message itself made fail). The input in hand was not acknowledged;
                # leaving the connection makes the broker resend it later.
                log.exception("relay: store failure")
                what = "store failure" if is_transient(exc) else "internal error"
                self._emit("relay.error", reason=f"{what}: {describe(exc)}")
                await transport.reconnect(what)
                continue
            await asyncio.sleep(0)  # let paho read and write the socket

    async def _handle(self, transport: Transport, intake: Intake) -> None:
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
            try:
                with self._events.held():  # events once committed, or never
                    if len(run) > 1:
                        with self.store.batch():
                            results = [self.relay.handle(i.topic, i.payload) for i in run]
                    else:
                        results = [self.relay.handle(run[0].topic, run[0].payload)]
                for actions in results:
                    await self._perform(transport, actions)
            except Exception as exc:
                # Relay.handle refuses bad input itself and raises only for the disk;
                # what else fails here (an event sink, a publish) because of these
                # messages would fail again on every redelivery: set them aside, so that
                # they are acknowledged and nothing behind them waits (issue 12).
                if is_transient(exc):
                    raise
                log.exception("relay: handling failed")
                for item in run:
                    self.set_aside.set_aside(
                        ACTOR, item.topic, item.payload, describe(exc), self.events
                    )
            intake.done(run)
            start = end
        for item in intake.ackable():
            # Only now, after the commit (module doc), in arrival order, on the
            # connection that delivered it (nothing if that one is lost).
            item.message.ack()

    async def _perform(self, transport: Transport, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                await transport.room()
                # Not again on another connection: a forward stays pending in the store
                # (republished on reconnect and on the recipient's sync), and a lost
                # directory answer makes the requester ask again.
                transport.publish_soon(action.topic, action.payload, retry=False)
            # Ack: the caller releases PUBACKs in arrival order (Intake.ackable).
            # Event actions were emitted by the router when it decided.

    async def _maintenance(self) -> None:
        while True:
            try:
                self.relay.maintenance()
            except sqlite3.Error:
                log.exception("relay: maintenance failed")
            await asyncio.sleep(self.maintenance_interval)

    async def _relay_stop(self, source: asyncio.Event) -> None:
        await source.wait()
        self._request_stop()

    def _emit(self, kind: str, **fields: Any) -> None:
        self.events.emit(ACTOR, kind, **fields)


# Kinds handled in one transaction when they come in a row (group commit).
_GROUPED = frozenset({topics.MSG, topics.ACK})


def _item(message: Message) -> Item:
    return item_of(message.topic, message.payload, message)


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
