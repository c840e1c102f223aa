"""A service's place on the observation and control plane (docs/architecture.md, "The
observation and control plane"; the contract is ``wire.topics``, ``wire.control`` and
``wire.plane``).

One ``Plane`` per service account, on the service's own MQTT connection (a broker forces
the client id to the username, so an account has one connection: the plane shares the
one the service already has, its ``infra.link.Link`` or the relay's transport; a party
with no link to the relay runs a ``Party``, its own connection for the plane alone):

* **its events out**: ``EventPublisher`` listens to the service's ``EventLog`` and
  publishes what it emits on ``doormat/ev/<svc>`` in batches (``wire.plane``), without
  ever making the service wait: a batch leaves at the end of the event loop's turn when
  nothing is in flight, otherwise after ``MAX_BATCH_DELAY`` or ``MAX_BATCH_EVENTS``;
  at most ``max_outstanding`` batches await their PUBACK and ``max_unsent`` more wait
  (when full, the oldest waiting batch is dropped, a gap an observer sees in the
  numbers and fills from the replay ring if it still can). It keeps the last
  ``REPLAY_RING`` events to answer ``events.replay``, and publishes its ``Status`` when
  bound, when the observer says hello, and when it stops.
* **its controls in**: ``ControlServer`` takes requests on ``doormat/to/<svc>/<from>/ctl``,
  checks them with ``wire.control.check_request`` (the sender is the topic's ``<from>``,
  which only ``<from>`` may write), runs the owner's handler for the op (each request in
  a task of its own, so that a handler may itself call another party), answers on
  ``doormat/to/<from>/<svc>/ans`` (in parts when large) and reports every control it
  took or refused (``control.accepted`` / ``control.refused``; a quiet op only when
  refused). A request that comes again (the broker re-sends what was not acknowledged)
  is answered again from the answers it keeps, not carried out twice.
* **its calls out**: ``ControlClient.call(target, op, **args)`` sends a request and
  returns the answer (joined from its parts), or raises ``ControlError`` with the
  target's reason, or TimeoutError.

The observer's side (subscribing to every service's events, catching up, filling gaps)
is ``infra.observer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from infra.controls import (
    CALL_TIMEOUT,
    KEPT_ANSWERS,
    ControlClient,
    ControlError,
    ControlServer,
    Handler,
    Result,
)
from infra.plane_events import EventPublisher
from infra.transport import Transport, TransportError
from wire import topics
from wire.control import Request
from wire.events import EventLog
from wire.plane import ExposureRow

log = logging.getLogger(__name__)



__all__ = [
    "CALL_TIMEOUT",
    "KEPT_ANSWERS",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "EventPublisher",
    "Handler",
    "Measurer",
    "Party",
    "Plane",
    "Result",
]


# -- the plane of one service ----------------------------------------------------------------


class Plane:
    """A service's events out, controls in and calls out, on its own connection."""

    def __init__(
        self,
        svc: str,
        kind: str,
        events: EventLog | None,
        handlers: Mapping[str, Handler] | None = None,
        *,
        publish_events: bool = True,
    ) -> None:
        self.svc = svc
        self.kind = kind
        self.events = events
        self.publisher: EventPublisher | None = None
        if publish_events and events is not None:
            self.publisher = EventPublisher(svc, kind)
            events.subscribe(self.publisher.listener)
        self.server = ControlServer(svc, self._send, events, handlers)
        if self.publisher is not None:
            self.server.serve("events.replay", self._replay)
        self.client = ControlClient(svc, self._publish, self._send)
        self._transport: Transport | None = None

    @property
    def subscriptions(self) -> list[str]:
        return topics.plane_subscriptions(self.svc)

    def serve(self, op: str, handler: Handler) -> None:
        self.server.serve(op, handler)

    def serve_all(self, handlers: Mapping[str, Handler]) -> None:
        for op, handler in handlers.items():
            self.server.serve(op, handler)

    def bind(self, transport: Transport) -> None:
        """Use ``transport`` (the service's own connection, subscribed to
        ``subscriptions``) from now on; call in its loop."""
        self._transport = transport
        if self.publisher is not None:
            self.publisher.bind(transport)
            self.publisher.publish_status("running")

    async def close(self) -> None:
        """The last events and the status "stopped" handed to the connection (the owner
        then flushes and disconnects it)."""
        await self.server.close()
        if self.publisher is not None:
            self.publisher.flush()
            self.publisher.publish_status("stopped")
            self.publisher.unbind()
        self._transport = None

    def route(self, topic: str, payload: bytes) -> bool:
        """A message of the owner's connection: True if it was the plane's (handled,
        without waiting), False if it belongs to the owner."""
        if topic == topics.HELLO:
            if self.publisher is not None:
                self.publisher.publish_status("running")
            return True
        parsed = topics.parse_to(topic)
        if parsed is None:
            return False
        to, sender, kind = parsed
        if to != self.svc:
            return True  # not for us (the broker should not have sent it): dropped
        if kind == topics.CTL:
            self.server.handle(sender, payload)
        elif kind == topics.ANS:
            self.client.on_answer(sender, payload)
        elif self.client.on_replay is not None:
            self.client.on_replay(sender, payload)
        return True

    async def call(
        self, target: str, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any
    ) -> dict[str, Any]:
        return await self.client.call(target, op, timeout=timeout, **args)

    def tell(self, target: str, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> None:
        self.client.tell(target, op, timeout=timeout, **args)

    def _send(self, topic: str, payload: bytes) -> None:
        transport = self._transport
        if transport is None:
            log.info("%s: not connected; %s dropped", self.svc, topic)
            return
        with contextlib.suppress(TransportError):
            transport.publish_soon(topic, payload)

    async def _publish(self, topic: str, payload: bytes) -> None:
        transport = self._transport
        if transport is None:
            raise TransportError(f"{self.svc}: not on the plane (not started)")
        await transport.publish(topic, payload)

    async def _replay(self, request: Request) -> Result:
        assert self.publisher is not None
        since = int(request.args["since"])
        batches = self.publisher.replay(since)
        for batch in batches:
            self._send(topics.to_topic(request.sender, self.svc, topics.REPLAY), batch)
        return {"batches": len(batches), "seq": self.publisher.seq,
                "oldest_kept": self.publisher.oldest_kept}


# -- an observer's own rows ---------------------------------------------------------------------

Rows = Sequence[ExposureRow]
Compute = Callable[[], Awaitable[Rows] | Rows]


class Measurer:
    """An observer's measurement of itself (PLANE.md section 5): ``compute`` (the
    service's own code, over its own store, with its own keys) gives its rows; each is
    published as an ``exposure.row`` event, on ``measure`` (the handler) and, at most
    once per ``interval`` seconds, after ``poke()`` (new captures)."""

    def __init__(self, svc: str, events: EventLog, compute: Compute, interval: float = 1.0):
        self.svc = svc
        self._events = events
        self._compute = compute
        self.interval = interval
        self._last = 0.0
        self._scheduled: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[Any] | None = None

    async def rows(self) -> list[ExposureRow]:
        got = self._compute()
        if inspect.isawaitable(got):
            got = await got
        rows = list(got)
        self._last = time.monotonic()
        for row in rows:
            self._events.emit(self.svc, "exposure.row", **row.to_json())
        return rows

    async def handle(self, request: Request) -> Result:
        """The ``measure`` control."""
        return {"rows": [row.to_json() for row in await self.rows()]}

    def poke(self) -> None:
        """Something new was captured: measure again soon (debounced)."""
        if self._scheduled is not None or self._running is not None:
            return
        loop = asyncio.get_running_loop()
        wait = max(0.0, self.interval - (time.monotonic() - self._last))
        self._scheduled = loop.call_later(wait, self._due)

    def _due(self) -> None:
        self._scheduled = None
        self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.rows()
        except Exception:
            log.exception("%s: measuring itself failed", self.svc)
        finally:
            self._running = None

    async def close(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._running


# -- a party with no link to the relay ----------------------------------------------------------


class Party:
    """An account on the plane whose only connection is the plane's: the vendor, the
    court, the agency, an attacker, and the consoles (operator, lab, observer). Its
    reader hands plane messages to its ``Plane`` and anything else (the observer's
    events) to ``on_other``."""

    def __init__(
        self,
        svc: str,
        kind: str,
        password: str,
        host: str,
        port: int,
        events: EventLog | None,
        handlers: Mapping[str, Handler] | None = None,
        *,
        publish_events: bool = True,
        clean_session: bool = False,
        extra_subscriptions: Iterable[str] = (),
        on_other: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.svc = svc
        self.plane = Plane(svc, kind, events, handlers, publish_events=publish_events)
        self.on_other = on_other
        self.transport = Transport(
            host,
            port,
            username=svc,
            password=password,
            identifier=svc,
            subscriptions=[*self.plane.subscriptions, *extra_subscriptions],
            clean_session=clean_session,
            keepalive=30,
            name=svc,
            route=self.plane.route,
        )
        self._reader: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.transport.connected

    async def start(self, timeout: float = 15.0) -> None:
        self.plane.bind(self.transport)
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=self.svc)
        try:
            await self.transport.start(timeout)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.plane.close()
        if self.transport.connected:
            await self.transport.flush(timeout=5.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.transport.stop()

    async def call(
        self, target: str, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any
    ) -> dict[str, Any]:
        return await self.plane.call(target, op, timeout=timeout, **args)

    def serve(self, op: str, handler: Handler) -> None:
        self.plane.serve(op, handler)

    async def _read(self) -> None:
        """What the plane did not take as it arrived (the observer's events)."""
        async for message in self.transport.messages():
            try:
                if self.on_other is not None:
                    self.on_other(message.topic, message.payload)
            except Exception:  # one bad message must not end the reader
                log.exception("%s: a message failed", self.svc)
            message.ack()


__all__ = [
    "CALL_TIMEOUT",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "EventPublisher",
    "Handler",
    "Measurer",
    "Party",
    "Plane",
]
