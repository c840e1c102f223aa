"""An account's session with the relay over the MQTT transport (``infra.transport``).

One ``Link`` per account (device, enterprise server, the tap, the interceptor). It logs
in with the account's own id, keeps a persistent session (fixed client id,
clean_session=False) so the broker queues QoS 1 messages while it is away, reconnects
with backoff when the broker goes away (all of that is the transport's), and offers its
owner:

* ``publish(kind, payload)`` onto ``doormat/out/<id>/<kind>``, waiting for a connection;
* ``publish_soon(kind, payload)``: the same without waiting (acks); ``stop`` flushes them;
* ``request(op, **fields)``, a directory request answered on ``doormat/in/<id>/dir``.

Envelopes arriving on ``doormat/in/<id>/msg`` go to the ``on_envelopes`` callback, in
order, as lists of those that had already arrived together (so that the owner can
commit them in one transaction), or one at a time to ``on_envelope``; one call at a
time, even across reconnections (a reader still busy when its connection dropped
finishes what it had taken before anything from the next connection is handled, and
takes nothing more from the lost connection: the relay re-sends it on ``sync``).

Acknowledgement: paho's automatic PUBACK is off. Each message is acknowledged to the
broker only once the handler that took it has returned, so a handler that stores
something must have committed it by then; then, in arrival order, on the connection it
came on. A message from a lost connection is not acknowledged: the broker sends it again
on the next connection of the persistent session, so handlers must take a repeat calmly
(de-duplicate).

No poison message (docs/protocol.md, "Set aside"). A handler that raises does not end
the link, and what happens depends on why it raised:

* a *transient* failure (``is_transient``: the disk - ``OSError``, a locked or full
  SQLite store - or the transport) is the machine's, not the message's: the message is
  not acknowledged (nor anything after it on that connection), the link leaves its
  connection and connects again after the back-off, and the broker re-sends it;
* anything else means this code cannot process *that* message, and never will: it is
  **set aside** (``infra.setaside``: kept, bounded, with why), acknowledged, and the
  next message is handled at once. One ``service.set_aside`` event names the account,
  the topic, the size and the reason (at most ``SET_ASIDE_EVENTS`` such events a
  second; the others are counted in the next one's ``suppressed``), and the
  ``on_set_aside`` hook lets the owner finish with it (a device acknowledges the
  envelope to the relay, so that the relay stops re-sending it).

When ``on_envelopes`` raises for a batch, the link cannot know which envelope was at
fault: it hands them over again one at a time, and sets aside only those that raise on
their own. A batch handler must therefore leave no trace of a batch it raised on. A
refusal the
relay sends without a request id (``{"req": null, "ok": false, ...}``: an envelope or
journal record it would not take) goes to ``on_refusal``; anything on another kind of
inbox topic goes to ``on_other(kind, payload)``. The callbacks must not call ``request``
(the answer could only be read by the loop that is waiting for the callback).

The plane (``infra.plane``): with ``plane=`` the link also subscribes to what other
parties send the account (``doormat/to/<id>/+/+``) and to the observer's hello, and its
transport hands those messages to the plane as they arrive (never behind a handler: a
handler may wait for a control's answer), so that the account's events and controls
share its one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.failures import describe, is_transient
from infra.setaside import EVENTS_PER_SECOND, SetAside
from infra.transport import (
    MAX_IN_FLIGHT,
    Connection,
    LoginRefused,
    Message,
    Transport,
)
from wire import strictjson, topics
from wire.events import EventLog

if TYPE_CHECKING:
    from infra.plane import Plane

log = logging.getLogger(__name__)

EnvelopeHandler = Callable[[bytes], Awaitable[None]]
EnvelopesHandler = Callable[[list[bytes]], Awaitable[None]]
ConnectHook = Callable[[], Coroutine[Any, Any, None]]
OtherHandler = Callable[[str, bytes], Awaitable[None]]
RefusalHandler = Callable[[dict[str, Any]], None]
SetAsideHook = Callable[[str, bytes], None]

__all__ = [
    "MAX_DIR_ANSWER_BYTES",
    "MAX_IN_FLIGHT",
    "RATE_LIMIT_PAUSE",
    "READ_AHEAD",
    "SET_ASIDE_EVENTS",
    "Link",
    "LinkError",
    "is_transient",
]

# At most this many messages already received are taken and handled together.
READ_AHEAD = 64
# After a rate-limit refusal, how long a client waits before sending again (a directory
# request here, envelopes in clients/device.py). The relay reports rate-limit refusals at
# most once a second per device and kind; a pause longer than that means a refusal after
# the report is covered by the retry, or makes a new report.
RATE_LIMIT_PAUSE = 1.2
# At most this many service.set_aside events a second per link (infra/setaside.py).
SET_ASIDE_EVENTS = EVENTS_PER_SECOND
# The largest directory answer read: no broker passes a larger packet (docs/brokers.md).
MAX_DIR_ANSWER_BYTES = topics.MAX_PACKET_BYTES


class LinkError(Exception):
    """The relay refused a request, or did not answer in time; or the broker refused
    the login."""

    transient = True  # not a message's fault (infra.failures)


class UnreadableInput(Exception):
    """A message on one of our inbox topics that is not what that topic carries."""


class Link:
    def __init__(
        self,
        owner: str,
        password: str,
        host: str,
        port: int,
        *,
        on_envelope: EnvelopeHandler | None = None,
        on_envelopes: EnvelopesHandler | None = None,
        on_connect: ConnectHook | None = None,
        on_other: OtherHandler | None = None,
        on_refusal: RefusalHandler | None = None,
        on_set_aside: SetAsideHook | None = None,
        request_timeout: float = 15.0,
        max_in_flight: int = MAX_IN_FLIGHT,
        events: EventLog | None = None,
        set_aside: SetAside | str | Path | None = None,
        plane: Plane | None = None,
    ) -> None:
        self.owner = owner
        self.plane = plane
        self._on_envelope = on_envelope
        self._on_envelopes = on_envelopes
        self._on_connect = on_connect
        self._on_other = on_other
        self._on_refusal = on_refusal
        self._on_set_aside = on_set_aside
        self._request_timeout = request_timeout
        self._events = events
        # Where messages we cannot process are kept (infra/setaside.py): beside the
        # owner's store when it gives a path, else in memory (bounded all the same).
        self.set_aside_store = (
            set_aside if isinstance(set_aside, SetAside) else SetAside(set_aside or ":memory:")
        )
        self._owns_set_aside = not isinstance(set_aside, SetAside)
        self.transport = Transport(
            host,
            port,
            username=owner,
            password=password,
            identifier=owner,
            subscriptions=[f"{topics.IN}/{owner}/#", *(plane.subscriptions if plane else ())],
            clean_session=False,
            keepalive=30,
            max_in_flight=max_in_flight,
            name=owner,
            on_subscribed=self._subscribed,
            route=plane.route if plane else None,
        )
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ask_again: dict[str, asyncio.Future[None]] = {}  # by req
        self._reader: asyncio.Task[None] | None = None
        self._hook_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Link:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 15.0) -> None:
        """Return once connected and subscribed (the ``on_connect`` hook is started).
        LinkError at once if the broker refuses the login; TimeoutError if there is no
        connection in time."""
        if self.plane is not None:
            self.plane.bind(self.transport)
        # Reading from the start: amqtt's SUBACK waits for the acks of what it re-sends.
        self._reader = asyncio.create_task(self._read(), name=f"link:{self.owner}")
        try:
            await self.transport.start(timeout)
        except LoginRefused as exc:
            await self.stop()
            raise LinkError(f"{self.owner}: broker refused the login ({exc.answer})") from None
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Flush what ``publish_soon`` queued (if connected), disconnect cleanly (an MQTT
        DISCONNECT, not a dropped socket), then return."""
        if self._hook_task is not None:
            self._hook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hook_task
        if self.plane is not None:
            await self.plane.close()
        if self.connected:
            # An ack lost here would only make the relay re-send the envelope next time
            # (harmless, de-duplicated), but a clean stop should not cause that.
            await self.flush(timeout=5.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        # Flushes what the reader's last handler queued, then DISCONNECT.
        await self.transport.stop()
        if self._owns_set_aside:
            self.set_aside_store.close()

    @property
    def connected(self) -> bool:
        return self.transport.connected

    def _subscribed(self, conn: Connection) -> None:
        """After every (re)connection's SUBACK: the owner's hook."""
        if self._on_connect is not None:
            self._hook_task = asyncio.get_running_loop().create_task(self._on_connect())

    # -- reading -----------------------------------------------------------------------

    async def _read(self) -> None:
        """The one reader: one handler at a time across connections."""
        transport = self.transport
        async for message in transport.messages():
            taken = [message]
            taken += transport.take(READ_AHEAD - 1)
            try:
                await self._dispatch_all(taken)
            except Exception as exc:
                # Transient (the only kind _dispatch_all lets out): not acknowledged (nor
                # anything after it on this connection); leave the connection so that
                # the broker sends it again on the next one, after the back-off.
                log.error(
                    "%s: a handler failed (%s); reconnecting",
                    self.owner,
                    describe(exc),
                    exc_info=exc,
                )
                if message.connection is transport.connection:
                    await transport.reconnect("a handler failed")

    async def _dispatch_all(self, messages: list[Message]) -> None:
        """Hand ``messages`` to the handlers, acknowledging each (in arrival order) once
        the handler that took it has returned, or once it is set aside (see the module
        doc). A transient failure is raised: then neither that message nor any later
        one is acknowledged (PUBACKs keep the arrival order)."""
        if self._on_envelopes is None:
            for message in messages:
                await self._one(message)
            return
        run: list[Message] = []  # consecutive envelopes
        for message in messages:
            if message.topic.rsplit("/", 1)[-1] == topics.MSG:
                run.append(message)
                continue
            if run:
                await self._run(run)
                run = []
            await self._one(message)
        if run:
            await self._run(run)

    async def _one(self, message: Message) -> None:
        try:
            await self._dispatch(message.topic, message.payload)
        except Exception as exc:
            if is_transient(exc):
                raise
            self._set_aside(message.topic, message.payload, exc)
        message.ack()

    async def _run(self, run: list[Message]) -> None:
        """Consecutive envelopes to ``on_envelopes`` together; if that raises for a
        reason of the message's, one at a time (module doc)."""
        assert self._on_envelopes is not None
        try:
            await self._on_envelopes([m.payload for m in run])
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(run) > 1:
                for m in run:
                    await self._run([m])
                return
            self._set_aside(run[0].topic, run[0].payload, exc)
        for m in run:
            m.ack()

    def set_aside(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep a message its owner cannot process (infra/setaside.py) and say so in one
        ``service.set_aside`` event. Raises only what the set-aside store raises (a
        transient failure: then the message must not be acknowledged)."""
        self.set_aside_store.set_aside(self.owner, topic, payload, reason, self._events)

    def _set_aside(self, topic: str, payload: bytes, exc: Exception) -> None:
        """A handler raised for a reason of the message's: set it aside, then let the
        owner finish with it."""
        log.debug("%s: handler failed on %s", self.owner, topic, exc_info=exc)
        self.set_aside(topic, payload, describe(exc))
        if self._on_set_aside is not None:
            try:
                self._on_set_aside(topic.rsplit("/", 1)[-1], payload)
            except Exception:
                log.exception("%s: on_set_aside failed", self.owner)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind == topics.DIR:
            try:
                answer = strictjson.loads_object(
                    payload, "directory answer", max_bytes=MAX_DIR_ANSWER_BYTES
                )
            except strictjson.StrictJSONError as exc:
                raise UnreadableInput(str(exc)) from None
            req = answer.get("req")
            if req is None and answer.get("ok") is False:
                if "op" not in answer and str(answer.get("error")).startswith("rate limit"):
                    # Maybe one of our requests (or a journal record): the refusal does
                    # not say which, and asking again is harmless.
                    self._ask_again_later()
                if self._on_refusal is not None:
                    self._on_refusal(answer)
                else:
                    log.warning("%s: the relay refused: %s", self.owner, answer.get("error"))
                return
            future = self._pending.pop(str(req), None)
            if future is not None and not future.done():
                future.set_result(answer)
        elif kind == topics.MSG and self._on_envelope is not None:
            await self._on_envelope(payload)
        elif self._on_other is not None:
            await self._on_other(kind, payload)

    def _ask_again_later(self) -> None:
        loop = asyncio.get_running_loop()
        for again in self._ask_again.values():
            loop.call_later(RATE_LIMIT_PAUSE, _settle, again)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, kind: str, payload: bytes) -> None:
        """Publish at QoS 1, waiting for a connection; returns after the broker's PUBACK
        (sent again on the next connection if this one is lost first: the relay
        de-duplicates)."""
        await self.transport.publish(topics.outbound(self.owner, kind), payload)

    def publish_soon(
        self, kind: str, payload: bytes, then: Callable[[], None] | None = None
    ) -> None:
        """Publish without waiting for the PUBACK (nor for a connection), then call
        ``then``. Published in call order while connected; ``stop`` waits for them; a
        failure is logged."""
        self.transport.publish_soon(topics.outbound(self.owner, kind), payload, then)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything published so far has its PUBACK; False on timeout."""
        return await self.transport.flush(timeout)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """A directory request and its answer. The same request is sent again if the
        connection drops before the answer arrives (a broker restart can lose either; on
        the next connection), or after a pause if the relay refuses something of ours
        for its rate limit without saying what: every op is safe to repeat."""
        loop = asyncio.get_running_loop()
        req = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[req] = future
        body = json.dumps({"req": req, "op": op, **fields}).encode()
        topic = topics.outbound(self.owner, topics.DIR)
        try:
            while True:
                again = self._ask_again[req] = loop.create_future()
                # Subscribed first, so that the answer reaches us (afterwards the
                # persistent session keeps the subscription).
                await self.transport.wait_connected()
                carrier = await self.transport.publish(topic, body)
                watched: set[asyncio.Future[Any]] = {future, carrier.lost, again}
                async with asyncio.timeout(self._request_timeout):
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if future.done():
                    answer = future.result()
                    break
        except TimeoutError:
            raise LinkError(f"{self.owner}: the relay did not answer {op!r}") from None
        finally:
            self._pending.pop(req, None)
            self._ask_again.pop(req, None)
        if not answer.get("ok"):
            raise LinkError(f"{self.owner}: relay refused {op!r}: {answer.get('error')}")
        return answer


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
