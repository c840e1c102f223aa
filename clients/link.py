"""A client's connection to the relay through the broker: the thin I/O shell.

One ``Link`` per account (device or enterprise server). It logs in with the account's
own id, keeps a persistent session (fixed client id, clean_session=False) so the broker
queues QoS 1 messages while it is away, reconnects with backoff when the broker goes
away, and offers two things to its owner:

* ``publish(kind, payload)`` onto ``doormat/out/<id>/<kind>``, waiting for a connection;
* ``request(op, **fields)``, a directory request answered on ``doormat/in/<id>/dir``.

Envelopes arriving on ``doormat/in/<id>/msg`` go to the ``on_envelope`` callback, one at
a time and in order; anything on another kind of inbox topic goes to ``on_other(kind,
payload)``. The callback must not call ``request`` (the answer could only be
read by the loop that is waiting for the callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt

from wire import topics

log = logging.getLogger(__name__)

EnvelopeHandler = Callable[[bytes], Awaitable[None]]
ConnectHook = Callable[[], Coroutine[Any, Any, None]]
OtherHandler = Callable[[str, bytes], Awaitable[None]]


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
        on_connect: ConnectHook | None = None,
        on_other: OtherHandler | None = None,
        request_timeout: float = 15.0,
    ) -> None:
        self.owner = owner
        self._password = password
        self._host = host
        self._port = port
        self._on_envelope = on_envelope
        self._on_connect = on_connect
        self._on_other = on_other
        self._request_timeout = request_timeout
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._hook_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._first_connect: asyncio.Future[None] | None = None

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
        """Disconnect cleanly (an MQTT DISCONNECT, not a dropped socket), then return."""
        self._stopping = True
        self._stop.set()
        if self._hook_task is not None:
            self._hook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hook_task
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(self._task)
            except (TimeoutError, Exception):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

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
            )
            try:
                async with client:
                    await client.subscribe(f"{topics.IN}/{self.owner}/#", qos=1)
                    self._client = client
                    self._connected.set()
                    backoff = 0.05
                    if self._first_connect is not None and not self._first_connect.done():
                        self._first_connect.set_result(None)
                    if self._on_connect is not None:
                        self._hook_task = asyncio.create_task(self._on_connect())
                    reader = asyncio.create_task(self._read(client))
                    stop = asyncio.create_task(self._stop.wait())
                    await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    if not reader.done():
                        # Stopping: leave the `async with` normally so aiomqtt sends
                        # DISCONNECT and the broker ends the session's connection cleanly.
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
                        return
                    reader.result()  # re-raises a lost connection as MqttError
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
                self._connected.clear()
                self._client = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            await self._dispatch(str(message.topic), bytes(message.payload))

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind == topics.DIR:
            try:
                answer = json.loads(payload)
                future = self._pending.pop(str(answer.get("req")), None)
            except (ValueError, AttributeError):
                log.warning("%s: unreadable directory answer dropped", self.owner)
                return
            if future is not None and not future.done():
                future.set_result(answer)
        elif kind == topics.MSG and self._on_envelope is not None:
            await self._on_envelope(payload)
        elif self._on_other is not None:
            await self._on_other(kind, payload)

    async def publish(self, kind: str, payload: bytes) -> None:
        """Publish at QoS 1, waiting for a connection; returns after the broker's PUBACK."""
        while True:
            await self._connected.wait()
            client = self._client
            if client is None:
                continue
            try:
                await client.publish(topics.outbound(self.owner, kind), payload, qos=1)
                return
            except aiomqtt.MqttError:
                # Lost the connection mid-publish; the run loop reconnects, we retry.
                # The relay de-duplicates, so a second copy is harmless.
                await asyncio.sleep(0.05)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        req = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            await self.publish(topics.DIR, json.dumps({"req": req, "op": op, **fields}).encode())
            async with asyncio.timeout(self._request_timeout):
                answer = await future
        except TimeoutError:
            raise LinkError(f"{self.owner}: the relay did not answer {op!r}") from None
        finally:
            self._pending.pop(req, None)
        if not answer.get("ok"):
            raise LinkError(f"{self.owner}: relay refused {op!r}: {answer.get('error')}")
        return answer
