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
came on. A message from a lost connection, or one whose handler raised, is not
acknowledged: the broker sends it again on the next connection of the persistent
session, so handlers must take a repeat calmly (de-duplicate). A handler that raises is
logged and the link leaves its connection (nothing after that message is acknowledged
on it) and connects again, so that the broker re-sends it. A refusal the
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
from typing import TYPE_CHECKING, Any

from infra.transport import MAX_IN_FLIGHT, Connection, LoginRefused, Message, Transport
from wire import topics

if TYPE_CHECKING:
    from infra.plane import Plane

log = logging.getLogger(__name__)

EnvelopeHandler = Callable[[bytes], Awaitable[None]]
EnvelopesHandler = Callable[[list[bytes]], Awaitable[None]]
ConnectHook = Callable[[], Coroutine[Any, Any, None]]
OtherHandler = Callable[[str, bytes], Awaitable[None]]
RefusalHandler = Callable[[dict[str, Any]], None]

__all__ = [
    "MAX_IN_FLIGHT",
    "RATE_LIMIT_PAUSE",
    "READ_AHEAD",
    "Link",
    "LinkError",
]

# At most this many messages already received are taken and handled together.
READ_AHEAD = 64
# After a rate-limit refusal, how long a client waits before sending again (a directory
# request here, envelopes in clients/device.py). The relay reports rate-limit refusals at
# most once a second per device and kind; a pause longer than that means a refusal after
# the report is covered by the retry, or makes a new report.
RATE_LIMIT_PAUSE = 1.2


class LinkError(Exception):
    """The relay refused a request, or did not answer in time; or the broker refused
    the login."""


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
        request_timeout: float = 15.0,
        max_in_flight: int = MAX_IN_FLIGHT,
        plane: Plane | None = None,
    ) -> None:
        self.owner = owner
        self.plane = plane
        self._on_envelope = on_envelope
        self._on_envelopes = on_envelopes
        self._on_connect = on_connect
        self._on_other = on_other
        self._on_refusal = on_refusal
        self._request_timeout = request_timeout
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
            except Exception:
                # Not acknowledged (nor anything after it on this connection): leave the
                # connection so that the broker sends it again on the next one.
                log.exception("%s: a handler failed; reconnecting", self.owner)
                if message.connection is transport.connection:
                    await transport.reconnect("a handler failed")

    async def _dispatch_all(self, messages: list[Message]) -> None:
        """Hand ``messages`` to the handlers, acknowledging each (in arrival order) once
        the handler that took it has returned. If one raises, neither its messages nor
        any later ones are acknowledged (PUBACKs keep the arrival order)."""
        batch = self._on_envelopes
        if batch is None:
            for message in messages:
                await self._dispatch(message.topic, message.payload)
                message.ack()
            return
        run: list[Message] = []  # consecutive envelopes
        for message in messages:
            topic = message.topic
            if topic.rsplit("/", 1)[-1] == topics.MSG:
                run.append(message)
                continue
            if run:
                await batch([m.payload for m in run])
                for m in run:
                    m.ack()
                run = []
            await self._dispatch(topic, message.payload)
            message.ack()
        if run:
            await batch([m.payload for m in run])
            for m in run:
                m.ack()

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind == topics.DIR:
            try:
                answer = json.loads(payload)
                req = answer.get("req")
            except (ValueError, AttributeError):
                log.warning("%s: unreadable directory answer dropped", self.owner)
                return
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
