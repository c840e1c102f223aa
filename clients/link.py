"""A client's connection to the relay through the broker: the thin I/O shell.

One ``Link`` per account (device or enterprise server). It logs in with the account's
own id, keeps a persistent session (fixed client id, clean_session=False) so the broker
queues QoS 1 messages while it is away, reconnects with backoff when the broker goes
away, and offers its owner:

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
session, so handlers must take a repeat calmly (de-duplicate). A refusal the
relay sends without a request id (``{"req": null, "ok": false, ...}``: an envelope or
journal record it would not take) goes to ``on_refusal``; anything on another kind of
inbox topic goes to ``on_other(kind, payload)``. The callbacks must not call ``request``
(the answer could only be read by the loop that is waiting for the callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt

from wire import topics

log = logging.getLogger(__name__)

EnvelopeHandler = Callable[[bytes], Awaitable[None]]
EnvelopesHandler = Callable[[list[bytes]], Awaitable[None]]
ConnectHook = Callable[[], Coroutine[Any, Any, None]]
OtherHandler = Callable[[str, bytes], Awaitable[None]]
RefusalHandler = Callable[[dict[str, Any]], None]

# paho does not set TCP_NODELAY: without it a small packet written right after another
# (a directory request after a PUBACK, an ack after a delivery) waits for the peer's
# delayed ACK, ~40-90 ms per request/answer round trip.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

# aiomqtt walks every pending call on each publish: unbounded concurrency makes each
# publish cost grow with the number in flight.
MAX_IN_FLIGHT = 100
# At most this many messages already received are taken and handled together.
READ_AHEAD = 64
# After a rate-limit refusal, how long a client waits before sending again (a directory
# request here, envelopes in clients/device.py). The relay reports rate-limit refusals at
# most once a second per device and kind; a pause longer than that means a refusal after
# the report is covered by the retry, or makes a new report.
RATE_LIMIT_PAUSE = 1.2


class LinkError(Exception):
    """The relay refused a request, or did not answer in time."""


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
    ) -> None:
        self.owner = owner
        self._password = password
        self._host = host
        self._port = port
        self._on_envelope = on_envelope
        self._on_envelopes = on_envelopes
        self._on_connect = on_connect
        self._on_other = on_other
        self._on_refusal = on_refusal
        self._request_timeout = request_timeout
        self._client: aiomqtt.Client | None = None
        # Publishes need only the connection (CONNACK); requests and ``connected`` also
        # the subscription (SUBACK), so that the answer can reach us.
        self._online = asyncio.Event()
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ask_again: dict[str, asyncio.Future[None]] = {}  # by req
        self._task: asyncio.Task[None] | None = None
        self._hook_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._first_connect: asyncio.Future[None] | None = None
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        # One handler at a time across connections: the reader of a lost connection may
        # still be inside a handler when the next connection's reader starts.
        self._handling = asyncio.Lock()
        self._busy_reader: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Link:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 15.0) -> None:
        self._first_connect = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"link:{self.owner}")
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._first_connect)
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
        if self.connected:
            # An ack lost here would only make the relay re-send the envelope next time
            # (harmless, de-duplicated), but a clean stop should not cause that.
            await self.flush(timeout=5.0)
        self._stopping = True
        self._stop.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(self._task)
            except (TimeoutError, Exception):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        for task in [*self._retired, *self._background]:
            task.cancel()
        await asyncio.gather(*self._retired, *self._background, return_exceptions=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            client = aiomqtt.Client(
                self._host,
                self._port,
                username=self.owner,
                password=self._password,
                identifier=self.owner,
                clean_session=False,
                keepalive=30,
                socket_options=NODELAY,
            )
            # Bounded by our own slots: aiomqtt's warning above 10 pending is only noise.
            client.pending_calls_threshold = self._max_in_flight + 10
            # Before connecting: a resumed session's queued messages arrive right after
            # the CONNACK, and paho would acknowledge each on receipt, before any handler
            # stored it; a crash then would lose it for good (the broker forgot it).
            client._client.manual_ack_set(True)
            try:
                async with client:
                    self._client = client
                    self._online.set()
                    # Read before the SUBACK: amqtt answers a SUBSCRIBE only after the
                    # client acknowledged what it resends on reconnect, which we now do
                    # only after handling it.
                    reader = asyncio.create_task(self._read(client))
                    subscribing = asyncio.create_task(
                        client.subscribe(f"{topics.IN}/{self.owner}/#", qos=1)
                    )
                    stop = asyncio.create_task(self._stop.wait())
                    # The reader can be inside a handler waiting for a connection (a
                    # publish) while this connection is already gone: watch the
                    # connection itself, not only the reader.
                    lost = asyncio.ensure_future(asyncio.shield(client._disconnected))
                    ended: set[asyncio.Future[Any]] = {reader, stop, lost}
                    try:
                        await asyncio.wait(
                            {*ended, subscribing}, return_when=asyncio.FIRST_COMPLETED
                        )
                        if not any(f.done() for f in ended) and subscribing.exception() is None:
                            self._connected.set()
                            backoff = 0.05
                            first = self._first_connect
                            if first is not None and not first.done():
                                first.set_result(None)
                            if self._on_connect is not None:
                                self._hook_task = asyncio.create_task(self._on_connect())
                            await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stop.cancel()
                        lost.cancel()
                        subscribing.cancel()
                    if reader.done():
                        self._gone()
                        reader.result()  # re-raises a lost connection as MqttError
                        raise aiomqtt.MqttError("the reader stopped")
                    if self._stop.is_set():
                        # Stopping: leave the `async with` normally so aiomqtt sends
                        # DISCONNECT (after the PUBACKs already queued) and the broker
                        # ends the session's connection cleanly.
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
                        return
                    # No PUBACK from now on for what that reader took (see _ack).
                    self._gone()
                    self._retire(reader)
                    # Cancelled above if still pending: only a finished subscribe has a
                    # result to look at (exception() on a pending task would raise).
                    failed = (
                        subscribing.exception()
                        if subscribing.done() and not subscribing.cancelled()
                        else None
                    )
                    if failed is not None:
                        raise aiomqtt.MqttError(f"subscribing failed: {failed}")
                    raise aiomqtt.MqttError("connection lost")
            except aiomqtt.MqttError as exc:
                first = self._first_connect
                if first is not None and not first.done() and "authoriz" in str(exc).lower():
                    # A refused login will not succeed on retry: say so at once.
                    first.set_exception(
                        LinkError(f"{self.owner}: broker refused the login ({exc})")
                    )
                    return
                log.info("%s: connection lost (%s); reconnecting", self.owner, exc)
            finally:
                self._gone()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _gone(self) -> None:
        """This connection is over (or ending): nothing more is published or acknowledged
        on it."""
        self._online.clear()
        self._connected.clear()
        self._client = None

    def _retire(self, reader: asyncio.Task[None]) -> None:
        """The reader of a lost connection: stop it now if it is only waiting for input;
        if it is inside a handler, let the handler finish (its publishes wait for the next
        connection) - ``_read`` then returns instead of taking more from the dead client."""
        if reader is not self._busy_reader:
            reader.cancel()
        self._retired.add(reader)
        reader.add_done_callback(self._retired.discard)

    async def _read(self, client: aiomqtt.Client) -> None:
        me = asyncio.current_task()
        queue = client._queue
        async for message in client.messages:
            taken = [message]
            while len(taken) < READ_AHEAD and not queue.empty():
                taken.append(queue.get_nowait())
            async with self._handling:
                if self._client is not client:
                    return  # lost meanwhile; the broker re-sends what we did not ack
                self._busy_reader = me
                try:
                    await self._dispatch_all(client, taken)
                finally:
                    self._busy_reader = None
            if self._client is not client:
                return

    async def _dispatch_all(self, client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
        """Hand ``messages`` to the handlers, acknowledging each (in arrival order) once
        the handler that took it has returned. If one raises, neither its messages nor
        any later ones are acknowledged (PUBACKs must keep the arrival order)."""
        batch = self._on_envelopes
        if batch is None:
            for message in messages:
                await self._dispatch(str(message.topic), bytes(message.payload))
                self._ack(client, [message])
            return
        run: list[aiomqtt.Message] = []  # consecutive envelopes
        for message in messages:
            topic = str(message.topic)
            if topic.rsplit("/", 1)[-1] == topics.MSG:
                run.append(message)
                continue
            if run:
                await batch([bytes(m.payload) for m in run])
                self._ack(client, run)
                run = []
            await self._dispatch(topic, bytes(message.payload))
            self._ack(client, [message])
        if run:
            await batch([bytes(m.payload) for m in run])
            self._ack(client, run)

    def _ack(self, client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
        """PUBACK handled messages, on the connection they came on, only while it lasts:
        a message id means nothing on another connection, and what a lost connection
        carried comes again on the next one (the session is persistent)."""
        if self._client is not client or client._disconnected.done():
            return
        for message in messages:
            client._client.ack(message.mid, message.qos)

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

    async def publish(self, kind: str, payload: bytes) -> None:
        """Publish at QoS 1, waiting for a connection; returns after the broker's PUBACK."""
        await self._publish(kind, payload)

    async def _publish(self, kind: str, payload: bytes) -> aiomqtt.Client:
        """``publish``, returning the connection (client) that carried it."""
        topic = topics.outbound(self.owner, kind)
        async with self._slots:
            while True:
                # Not the SUBACK: a handler may publish before it (see _run).
                await self._online.wait()
                client = self._client
                if client is None:
                    await asyncio.sleep(0.01)
                    continue
                lost = client._disconnected
                attempt = asyncio.ensure_future(client.publish(topic, payload, qos=1))
                try:
                    await asyncio.wait({attempt, lost}, return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    attempt.cancel()
                    raise
                if attempt.done():
                    try:
                        attempt.result()
                        return client
                    except aiomqtt.MqttError:
                        pass
                else:
                    # The connection is gone: its PUBACK will never come. Retry on the
                    # next one; the relay de-duplicates, so a second copy is harmless.
                    attempt.cancel()
                await asyncio.sleep(0.05)

    def publish_soon(
        self, kind: str, payload: bytes, then: Callable[[], None] | None = None
    ) -> None:
        """Publish without waiting for the PUBACK (nor for a connection), then call
        ``then``. Published in call order while connected; ``stop`` waits for them; a
        failure is logged."""
        task = asyncio.get_running_loop().create_task(self._publish_then(kind, payload, then))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def _publish_then(
        self, kind: str, payload: bytes, then: Callable[[], None] | None
    ) -> None:
        await self._publish(kind, payload)
        if then is not None:
            then()

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: background publish failed", self.owner, exc_info=exc)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything ``publish_soon`` queued has its PUBACK; False on timeout."""
        if not self._background:
            return True
        _, pending = await asyncio.wait(set(self._background), timeout=timeout)
        return not pending

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
        try:
            while True:
                again = self._ask_again[req] = loop.create_future()
                # Subscribed first, so that the answer reaches us (afterwards the
                # persistent session keeps the subscription).
                await self._connected.wait()
                client = await self._publish(topics.DIR, body)
                watched: set[asyncio.Future[Any]] = {future, client._disconnected, again}
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
