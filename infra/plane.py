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
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.transport import Transport, TransportError
from wire import control, topics
from wire.control import ControlRefused, Request
from wire.events import Event, EventLog, now_ms
from wire.plane import (
    MAX_BATCH_BYTES,
    MAX_BATCH_DELAY,
    MAX_BATCH_EVENTS,
    REPLAY_RING,
    ExposureRow,
    Status,
)

log = logging.getLogger(__name__)

Result = Mapping[str, Any]
Handler = Callable[[Request], Awaitable[Result] | Result]
Send = Callable[[str, bytes], None]

#: How many answers a server keeps to answer a repeated request (per service).
KEPT_ANSWERS = 256
#: How long a call waits for its answer by default (seconds).
CALL_TIMEOUT = 20.0


class ControlError(Exception):
    """The target refused a control (or failed carrying it out): ``reason`` is its one
    line, as it answered it."""

    def __init__(self, target: str, op: str, reason: str) -> None:
        super().__init__(f"{target} refused {op}: {reason}")
        self.target = target
        self.op = op
        self.reason = reason


# -- events out ---------------------------------------------------------------------------


class EventPublisher:
    """The plane sink of one service's EventLog (see the module doc)."""

    def __init__(
        self,
        svc: str,
        kind: str,
        *,
        max_events: int = MAX_BATCH_EVENTS,
        max_bytes: int = MAX_BATCH_BYTES,
        delay: float = MAX_BATCH_DELAY,
        ring: int = REPLAY_RING,
        max_outstanding: int = 8,
        max_unsent: int = 64,
    ) -> None:
        self.svc = svc
        self.kind = kind
        self.topic = topics.events_topic(svc)
        self.started = now_ms()
        self.seq = 0  # the number of the last event taken
        self.dropped = 0  # events dropped because the buffer was full
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.delay = delay
        self.max_outstanding = max(1, max_outstanding)
        self.max_unsent = max(1, max_unsent)
        self._ring: deque[tuple[int, str]] = deque(maxlen=ring)
        self._buffer: list[str] = []
        self._buffer_first = 1
        self._buffer_bytes = 0
        self._unsent: deque[tuple[int, int, bytes]] = deque()  # (first, count, payload)
        self._outstanding = 0
        self._timer: asyncio.Handle | None = None
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._lock = threading.Lock()

    # -- input: the EventLog listener --------------------------------------------------

    def listener(self, event: Event) -> None:
        """Subscribe this to the service's EventLog. Never blocks: from another thread
        the event is handed to the loop."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._add, event)
            return
        self._add(event)

    def _add(self, event: Event) -> None:
        try:
            text = json.dumps(event, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            text = json.dumps({"t": event.get("t"), "actor": str(event.get("actor")),
                               "kind": str(event.get("kind")), "unencodable": True})
        with self._lock:
            self.seq += 1
            self._ring.append((self.seq, text))
            if not self._buffer:
                self._buffer_first = self.seq
            self._buffer.append(text)
            self._buffer_bytes += len(text) + 1
            full = (len(self._buffer) >= self.max_events
                    or self._buffer_bytes >= self.max_bytes)
        if full:
            self._cut()
            self._pump()
        else:
            self._schedule()

    # -- batching -------------------------------------------------------------------------

    def _schedule(self) -> None:
        loop = self._loop
        if self._timer is not None or loop is None:
            return
        if self._outstanding == 0 and not self._unsent:
            # Nothing in flight: send at the end of this turn of the loop (the events of
            # one step travel together; a quiet service's events go out at once).
            self._timer = loop.call_soon(self._due)
        else:
            self._timer = loop.call_later(self.delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._cut()
        self._pump()

    def _cut(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            first, events = self._buffer_first, self._buffer
            self._buffer, self._buffer_bytes = [], 0
        payload = (
            f'{{"svc":{json.dumps(self.svc)},"first":{first},"events":['
            + ",".join(events) + "]}"
        ).encode()
        self._unsent.append((first, len(events), payload))
        while len(self._unsent) > self.max_unsent:
            _, count, _ = self._unsent.popleft()
            self.dropped += count

    def _pump(self) -> None:
        transport = self._transport
        if transport is None:
            return
        while self._unsent and self._outstanding < self.max_outstanding:
            _, count, payload = self._unsent.popleft()
            try:
                transport.publish_soon(self.topic, payload, then=self._confirmed)
            except TransportError:
                self.dropped += count
                continue
            self._outstanding += 1

    def _confirmed(self) -> None:
        self._outstanding = max(0, self._outstanding - 1)
        self._pump()
        if not self._buffer:
            return
        if self._outstanding == 0 and not self._unsent and self._timer is not None:
            # Nothing in flight any more: what waited for the delay goes now (the
            # connection is the pace, as with Nagle's algorithm).
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._schedule()

    # -- binding to a connection ----------------------------------------------------------

    def bind(self, transport: Transport) -> None:
        """Publish on ``transport`` from now on (call in the loop that runs it)."""
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._schedule()
        self._pump()

    def flush(self) -> None:
        """Hand everything buffered to the transport now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._cut()
        self._pump()

    def unbind(self) -> None:
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    # -- status and replay ------------------------------------------------------------------

    def status(self, state: str = "running") -> Status:
        return Status(self.svc, self.kind, self.started, self.seq, state)

    def publish_status(self, state: str = "running") -> None:
        if self._transport is None:
            return
        with contextlib.suppress(TransportError):
            self._transport.publish_soon(topics.status_topic(self.svc),
                                         self.status(state).encode())

    def replay(self, since: int) -> list[bytes]:
        """The kept events after number ``since``, as batches (oldest first)."""
        with self._lock:
            kept = [(n, text) for n, text in self._ring if n > since]
        batches: list[bytes] = []
        i = 0
        while i < len(kept):
            first = kept[i][0]
            chunk: list[str] = []
            size = 0
            while i < len(kept) and len(chunk) < self.max_events and size < self.max_bytes:
                if chunk and kept[i][0] != kept[i - 1][0] + 1:
                    break  # keep each batch contiguous
                chunk.append(kept[i][1])
                size += len(kept[i][1]) + 1
                i += 1
            batches.append((
                f'{{"svc":{json.dumps(self.svc)},"first":{first},"events":['
                + ",".join(chunk) + "]}"
            ).encode())
        return batches

    @property
    def oldest_kept(self) -> int:
        with self._lock:
            return self._ring[0][0] if self._ring else self.seq + 1


# -- controls in ----------------------------------------------------------------------------


class ControlServer:
    """Checks, dispatches and answers the controls sent to one service (module doc)."""

    def __init__(
        self,
        me: str,
        send: Send,
        events: EventLog | None,
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.me = me
        self._send = send
        self._events = events
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self._answers: OrderedDict[tuple[str, str], list[bytes]] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}

    def serve(self, op: str, handler: Handler) -> None:
        self.handlers[op] = handler

    def handle(self, sender: str, payload: bytes) -> None:
        """A request from ``sender`` (the topic's ``<from>``): handled in a task."""
        req = control.req_of(payload)
        key = (sender, req or "")
        if req is not None and key in self._answers:
            for part in self._answers[key]:  # a repeat: the same answer again
                self._send(topics.to_topic(sender, self.me, topics.ANS), part)
            return
        if req is not None and key in self._running:
            return  # still being carried out; its answer will come
        task = asyncio.get_running_loop().create_task(
            self._run(sender, payload, req), name=f"control:{self.me}"
        )
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    async def _run(self, sender: str, payload: bytes, req: str | None) -> None:
        op: str | None = None
        try:
            request = control.check_request(self.me, sender, payload)
            op = request.op
            handler = self.handlers.get(request.op)
            if handler is None:
                raise ControlRefused(f"{request.op} is not offered by {self.me}")
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            body = control.answer(request.req, result)
            if not request.spec.quiet:
                self._emit("control.accepted", op=request.op, sender=sender, role=request.role,
                           req=request.req)
        except ControlRefused as exc:
            body = self._refused(sender, payload, op, str(exc), req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the handler's bug: answered, logged, not fatal
            log.exception("%s: control %s from %s failed", self.me, op, sender)
            body = self._refused(sender, payload, op, f"internal error: {type(exc).__name__}: "
                                 f"{exc}"[:300], req)
        parts = control.split_answer(req or "", body) if req is not None else [body]
        if req is not None:
            self._answers[(sender, req)] = parts
            while len(self._answers) > KEPT_ANSWERS:
                self._answers.popitem(last=False)
        for part in parts:
            self._send(topics.to_topic(sender, self.me, topics.ANS), part)

    def _refused(
        self, sender: str, payload: bytes, op: str | None, reason: str, req: str | None
    ) -> bytes:
        if op is None:
            with contextlib.suppress(ValueError, AttributeError, RecursionError):
                got = json.loads(payload).get("op")
                op = got if isinstance(got, str) and len(got) <= 64 else None
        self._emit("control.refused", op=op, sender=sender, reason=reason, req=req)
        return control.refusal(req, reason)

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events.emit(self.me, kind, **fields)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- calls out --------------------------------------------------------------------------------


@dataclass
class _Pending:
    target: str
    op: str
    future: asyncio.Future[dict[str, Any]]
    parts: control.Parts = field(default_factory=control.Parts)


class ControlClient:
    """Requests from one account to others, and their answers (module doc)."""

    def __init__(
        self,
        me: str,
        publish: Callable[[str, bytes], Awaitable[Any]],
        send: Send | None = None,
    ) -> None:
        self.me = me
        self._publish = publish
        self._send = send
        self._pending: dict[str, _Pending] = {}
        #: Called with (target, op, reason) when a ``tell`` is refused or not answered.
        self.on_refused: Callable[[str, str, str], None] | None = None
        #: Replayed event batches that arrive for this account (the observer's).
        self.on_replay: Callable[[str, bytes], None] | None = None

    async def call(
        self, target: str, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any
    ) -> dict[str, Any]:
        """Send ``op`` to ``target`` and return its answer (``ok`` true), or raise
        ControlError (it refused, with its reason) or TimeoutError."""
        req = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = _Pending(target, op, future)
        try:
            async with asyncio.timeout(timeout):
                await self._publish(topics.to_topic(target, self.me, topics.CTL),
                                    control.request(req, op, args))
                answer = await future
        except TimeoutError:
            raise TimeoutError(f"{target} did not answer {op} in {timeout:g} s") from None
        finally:
            self._pending.pop(req, None)
        if answer.get("ok") is not True:
            raise ControlError(target, op, str(answer.get("error") or "refused"))
        return answer

    def tell(self, target: str, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> None:
        """Send ``op`` to ``target`` without waiting for its answer (in call order with
        everything else on the connection: a handover, an export, a warrant served).
        A refusal, or no answer within ``timeout``, is logged and reported to
        ``on_refused``."""
        if self._send is None:
            raise RuntimeError(f"{self.me}: this client cannot send without waiting")
        loop = asyncio.get_running_loop()
        req = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[req] = _Pending(target, op, future)
        expiry = loop.call_later(timeout, _expire, future)

        def settled(done: asyncio.Future[dict[str, Any]]) -> None:
            expiry.cancel()
            self._pending.pop(req, None)
            answer = None if done.cancelled() else done.result()
            if answer is not None and answer.get("ok") is True:
                return
            reason = "no answer" if answer is None else str(answer.get("error"))
            log.warning("%s: %s refused %s: %s", self.me, target, op, reason)
            if self.on_refused is not None:
                self.on_refused(target, op, reason)

        future.add_done_callback(settled)
        self._send(topics.to_topic(target, self.me, topics.CTL), control.request(req, op, args))

    def on_answer(self, sender: str, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            log.warning("%s: unreadable answer from %s dropped", self.me, sender)
            return
        if not isinstance(obj, dict):
            return
        pending = self._pending.get(str(obj.get("req")))
        if pending is None or pending.target != sender or pending.future.done():
            return  # not ours, not from whom we asked, or already answered
        if "part" in obj:
            try:
                whole = pending.parts.add(obj)
            except (ControlRefused, ValueError) as exc:
                pending.future.set_result({"ok": False, "error": f"bad answer: {exc}"})
                return
            if whole is None:
                return
            obj = whole
        pending.future.set_result(obj)


def _expire(future: asyncio.Future[dict[str, Any]]) -> None:
    if not future.done():
        future.cancel()


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
