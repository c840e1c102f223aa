"""The transport's publish queue (no MQTT here: ``infra/transport.py`` drives it).

QoS 1 publishes in call order, at most ``window`` handed to the broker connection at a
time, each waiting for its PUBACK. The transport ``attach``es a connection (a ``send``
function and the connection object that ``publish`` answers with), reports each PUBACK
(``confirmed``) and the connection's end (``detach``): what that connection did not
confirm goes out again on the next one, first and in order, unless it was made with
``retry=False`` (then it is dropped and logged: tried on one connection only).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")
# Hands a publish to the connection: its message id, or None if the connection failed.
Send = Callable[[str, bytes], "int | None"]


class Out(Generic[C]):
    """One publish, queued or in flight."""

    __slots__ = ("future", "payload", "retry", "then", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        then: Callable[[], None] | None,
        retry: bool,
        future: asyncio.Future[C] | None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.then = then
        self.retry = retry
        self.future = future


class Outbox(Generic[C]):
    def __init__(self, name: str, window: int) -> None:
        self.name = name
        self.window = max(1, window)
        self._queue: deque[Out[C]] = deque()
        self._in_flight: dict[int, Out[C]] = {}  # by message id, in send order
        self._send: Send | None = None
        self._carrier: C | None = None
        self._pending = 0  # queued or in flight
        self._confirmed: list[Out[C]] = []
        self._settling = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def pending(self) -> int:
        """Publishes queued or in flight (not confirmed yet)."""
        return self._pending

    @property
    def in_flight(self) -> int:
        """Publishes handed to the connection, awaiting their PUBACK."""
        return len(self._in_flight)

    def add(self, out: Out[C]) -> None:
        self._pending += 1
        if self._pending == 1:
            self._idle.clear()
        if self._pending >= self.window:
            self._room.clear()
        self._queue.append(out)
        self._pump()

    def forget(self, out: Out[C]) -> None:
        """A cancelled publish: out of the queue if it was not handed over yet."""
        if out in self._queue:
            self._queue.remove(out)
            self._finish(1)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far has its PUBACK; False on timeout."""
        if self._pending == 0:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def room(self) -> None:
        """Wait until fewer than ``window`` publishes are queued or in flight."""
        while self._pending >= self.window:
            await self._room.wait()

    # -- driven by the transport -------------------------------------------------------

    def attach(self, send: Send, carrier: C) -> None:
        """A connection is up: send what waited for one."""
        self._send = send
        self._carrier = carrier
        self._pump()

    def detach(self, reason: str) -> None:
        """The connection is over: what it did not confirm waits for the next one (in
        front, in order), or is dropped (retry=False, also those still queued)."""
        self._send = None
        unconfirmed = list(self._in_flight.values())
        self._in_flight.clear()
        dropped = [out for out in unconfirmed if not out.retry]
        if any(not out.retry for out in self._queue):
            dropped += [out for out in self._queue if not out.retry]
            kept = [out for out in self._queue if out.retry]
            self._queue.clear()
            self._queue.extend(kept)
        self._queue.extendleft(reversed([out for out in unconfirmed if out.retry]))
        for out in dropped:
            log.info("%s: publish to %s not confirmed: %s", self.name, out.topic, reason)
        self._finish(len(dropped))

    def confirmed(self, mid: int) -> None:
        """A PUBACK (called inside paho: everything but the future waits for _settle)."""
        out = self._in_flight.pop(mid, None)
        if out is None:
            return
        if out.future is not None and not out.future.done():
            assert self._carrier is not None
            out.future.set_result(self._carrier)
        self._confirmed.append(out)
        if not self._settling:
            self._settling = True
            asyncio.get_running_loop().call_soon(self._settle)

    def fail(self, exc: Exception) -> None:
        """The transport failed: publishes that are waited for raise ``exc``."""
        for out in self._queue:
            if out.future is not None and not out.future.done():
                out.future.set_exception(exc)

    def close(self, exc: Exception) -> None:
        """The transport stopped: publishes still waited for raise ``exc``; the others
        are counted in a warning."""
        self._send = None
        queue, self._queue = self._queue, deque()
        unsent = 0
        for out in queue:
            if out.future is None:
                unsent += 1
            elif not out.future.done():
                out.future.set_exception(exc)
        if unsent:
            log.warning("%s: stopped with %d publishes unsent", self.name, unsent)
        self._finish(len(queue))

    # -- inside ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand queued publishes to the connection, in order, within the window."""
        send = self._send
        queue = self._queue
        in_flight = self._in_flight
        window = self.window
        while send is not None and queue and len(in_flight) < window:
            out = queue[0]
            if out.future is not None and out.future.done():  # cancelled meanwhile
                queue.popleft()
                self._finish(1)
                continue
            try:
                mid = send(out.topic, out.payload)
            except ValueError as exc:  # paho: an invalid topic or payload
                queue.popleft()
                self._failed(out, exc)
                continue
            if mid is None:
                return  # the connection is going; detach() puts this one right
            queue.popleft()
            in_flight[mid] = out

    def _settle(self) -> None:
        self._settling = False
        done, self._confirmed = self._confirmed, []
        for out in done:
            if out.then is not None:
                try:
                    out.then()
                except Exception:
                    log.error("%s: background publish failed", self.name, exc_info=True)
        self._finish(len(done))
        self._pump()

    def _failed(self, out: Out[C], exc: Exception) -> None:
        if out.future is not None:
            if not out.future.done():
                out.future.set_exception(exc)
        else:
            log.error("%s: background publish to %s failed", self.name, out.topic, exc_info=exc)
        self._finish(1)

    def _finish(self, n: int) -> None:
        if not n:
            return
        self._pending -= n
        if self._pending < self.window:
            self._room.set()
        if self._pending == 0:
            self._idle.set()
