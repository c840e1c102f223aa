"""The observer's client of the plane: every service's events, in order, once each.

The observer account (role ``observer``) reads ``doormat/ev/#`` and nothing else, holds
no key, and may give two controls: ``events.replay`` and ``measure``. This client

* subscribes to every service's event batches and status (a clean session: while it is
  away nothing is kept for it, and nothing waits for it - an absent observer blocks no
  service);
* feeds a local ``EventLog`` (``mirror``) with each service's events in the service's
  own order, once each (by (svc, number): a batch seen twice, or replayed, adds
  nothing), each event as the service emitted it plus ``svc``; the lab engine, the
  dashboard's hub and the demo's narration subscribe to that mirror as they would to a
  service's own log;
* catches up: on start it says hello (``doormat/hello``), every running service answers
  with its status, and for a service whose number is ahead of what it has seen it asks
  ``events.replay`` from there; the same when a status shows a run it does not know
  (a service that restarted starts its numbers again);
* fills gaps: a batch that jumps ahead is held, the missing numbers are asked for with
  ``events.replay``; if they are no longer kept (or do not come within
  ``replay_timeout``), the held events are released and a ``plane.gap`` event in the
  mirror says which numbers of which service are missing;
* asks for rows: ``measure(svc)`` returns the exposure rows that service computed of
  itself (``wire.plane.ExposureRow``).

    observer = Observer(host, port, password)
    await observer.start()
    observer.mirror.subscribe(listener)          # events as they arrive
    await observer.wait(lambda: ..., timeout=5)  # until something is true of the mirror
    rows = await observer.measure("relay")
    await observer.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from infra.plane import CALL_TIMEOUT, Party
from wire import topics
from wire.events import Event, EventLog
from wire.ids import OBSERVER_ID
from wire.plane import ExposureRow, PlaneFormatError, Status, decode_batch

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long held events wait for a replay to fill the gap before them (seconds).
REPLAY_TIMEOUT = 2.0


@dataclass
class ServiceView:
    """What the observer knows of one service."""

    svc: str
    kind: str | None = None
    started: int | None = None  # its run (None: not seen a status yet)
    state: str = "unknown"
    next: int = 1  # the number of the next event to hand to the mirror
    announced: int = 0  # the highest number the service said it reached
    held: dict[int, Event] = field(default_factory=dict)
    asked_since: int | None = None  # a replay asked from there, not answered yet
    deadline: float | None = None  # when held events are released regardless
    missing: int = 0  # events never recovered (gaps)

    @property
    def seen(self) -> int:
        """The number of the last event handed to the mirror."""
        return self.next - 1


class Observer:
    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        username: str = OBSERVER_ID,
        mirror: EventLog | None = None,
        replay_timeout: float = REPLAY_TIMEOUT,
    ) -> None:
        self.username = username
        self.mirror = mirror if mirror is not None else EventLog()
        self.replay_timeout = replay_timeout
        self.services: dict[str, ServiceView] = {}
        self.party = Party(
            username, "observer", password, host, port, None,
            publish_events=False, clean_session=True,
            extra_subscriptions=[topics.OBSERVER_SUBSCRIPTION], on_other=self._on_event_topic,
        )  # fmt: skip
        self.party.plane.client.on_replay = self._on_replay
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> None:
        await self.party.start(timeout)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        await self.hello()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.party.stop()

    async def hello(self) -> None:
        """Ask every running service for its status (a late observer catches up)."""
        await self.party.transport.publish(topics.HELLO, b"{}")

    @property
    def connected(self) -> bool:
        return self.party.connected

    # -- controls the observer may give --------------------------------------------------------

    async def call(self, target: str, op: str, *, timeout: float = CALL_TIMEOUT,
                   **args: Any) -> dict[str, Any]:
        return await self.party.call(target, op, timeout=timeout, **args)

    async def measure(self, svc: str, timeout: float = 60.0) -> list[ExposureRow]:
        """The exposure rows ``svc`` computes of itself now (it holds the keys; the
        observer holds none)."""
        answer = await self.call(svc, "measure", timeout=timeout)
        rows = answer.get("rows")
        if not isinstance(rows, list):
            raise PlaneFormatError(f"{svc}'s measure answer has no rows")
        return [ExposureRow.from_json(r) for r in rows]

    async def replay(self, svc: str, since: int) -> None:
        """Ask ``svc`` for its kept events after ``since`` (they arrive as batches)."""
        view = self._view(svc)
        view.asked_since = since
        try:
            answer = await self.call(svc, "events.replay", since=since, timeout=10.0)
        except Exception as exc:  # a service gone, or refusing: the deadline releases
            log.info("observer: replay of %s since %d failed: %s", svc, since, exc)
            return
        finally:
            if view.asked_since == since:
                view.asked_since = None
        oldest = answer.get("oldest_kept")
        if isinstance(oldest, int) and oldest > view.next:
            # What lay between is no longer kept anywhere: a gap for good.
            self._give_up(view, up_to=oldest)
        self._release(view)

    # -- waiting on the mirror -----------------------------------------------------------------

    async def wait(self, check: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Until ``check()`` returns something other than None or False (checked after
        every change of the mirror); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while True:
                got = check()
                if got is not None and got is not False:
                    return got
                self._changed.clear()
                await self._changed.wait()

    def seen(self, svc: str) -> int:
        view = self.services.get(svc)
        return 0 if view is None else view.seen

    # -- input -----------------------------------------------------------------------------------

    def _view(self, svc: str) -> ServiceView:
        view = self.services.get(svc)
        if view is None:
            view = self.services[svc] = ServiceView(svc)
        return view

    def _on_event_topic(self, topic: str, payload: bytes) -> None:
        parsed = topics.parse_events(topic)
        if parsed is None:
            return
        svc, is_status = parsed
        try:
            if is_status:
                self._status(Status.decode(payload, svc))
            else:
                first, events = decode_batch(payload, svc)
                self._batch(svc, first, events)
        except PlaneFormatError as exc:
            log.warning("observer: %s from %s dropped: %s", topic, svc, exc)

    def _on_replay(self, sender: str, payload: bytes) -> None:
        try:
            first, events = decode_batch(payload, sender)
        except PlaneFormatError as exc:
            log.warning("observer: a replay from %s dropped: %s", sender, exc)
            return
        self._batch(sender, first, events)

    def _status(self, status: Status) -> None:
        view = self._view(status.svc)
        if view.started is not None and status.started != view.started:
            # A new run of the service: its numbers start again at 1.
            if view.held:
                self._give_up(view, up_to=max(view.held) + 1)
            view.next, view.announced, view.missing = 1, 0, 0
            view.held.clear()
        view.started, view.kind, view.state = status.started, status.kind, status.state
        view.announced = max(view.announced, status.seq)
        if view.announced >= view.next and view.asked_since is None:
            self._ask(view)
        self._changed.set()

    def _batch(self, svc: str, first: int, events: list[Event]) -> None:
        view = self._view(svc)
        for i, event in enumerate(events):
            n = first + i
            if n >= view.next and n not in view.held:
                view.held[n] = event
        view.announced = max(view.announced, first + len(events) - 1)
        self._release(view)
        if view.held and view.asked_since is None:
            self._ask(view)  # a jump: ask for what lies before it

    def _ask(self, view: ServiceView) -> None:
        view.asked_since = view.seen
        view.deadline = time.monotonic() + self.replay_timeout
        task = asyncio.get_running_loop().create_task(self.replay(view.svc, view.seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, view: ServiceView) -> None:
        delivered = False
        while view.next in view.held:
            event = view.held.pop(view.next)
            view.next += 1
            self.mirror.append({**event, "svc": view.svc})
            delivered = True
        if not view.held:
            view.deadline = None
        if delivered:
            self._changed.set()

    def _give_up(self, view: ServiceView, up_to: int) -> None:
        """Numbers view.next .. up_to - 1 will not come: say so, and go on after them."""
        if up_to <= view.next:
            return
        self.mirror.emit(self.username, "plane.gap", svc=view.svc,
                         missing_from=view.next, missing_to=up_to - 1)
        view.missing += up_to - view.next
        view.next = up_to
        self._release(view)

    async def _tick(self) -> None:
        """Release held events whose gap did not fill in time."""
        while True:
            await asyncio.sleep(min(0.25, self.replay_timeout / 2))
            now = time.monotonic()
            for view in list(self.services.values()):
                if view.held and view.deadline is not None and now >= view.deadline:
                    self._give_up(view, up_to=min(view.held))
                    if view.held:
                        view.deadline = now + self.replay_timeout


async def gather_rows(observer: Observer, services: list[str],
                      timeout: float = 60.0) -> list[ExposureRow]:
    """Every row the given services compute of themselves, in the order given (a service
    that does not answer is left out, and logged)."""
    answers = await asyncio.gather(
        *(observer.measure(svc, timeout) for svc in services), return_exceptions=True
    )
    rows: list[ExposureRow] = []
    for svc, answer in zip(services, answers, strict=True):
        if isinstance(answer, BaseException):
            log.warning("observer: %s did not measure: %s", svc, answer)
            continue
        rows.extend(answer)
    return rows


__all__ = ["REPLAY_TIMEOUT", "Observer", "ServiceView", "gather_rows"]
