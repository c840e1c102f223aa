"""The scoped interceptor's thin I/O shell around ``interceptor.scoped``.

It logs in to the broker as ``interceptor``: X1 requests go to the relay on
``doormat/out/interceptor/x1``; X1 answers and the X2/X3 records a task yields arrive on
``doormat/in/interceptor/{x1,x2,x3}``. Sealed HI-2/HI-3 records are handed to the
agency, CC requests to enterprises, and add-checkpoint requests to the witness, through
callables: on the plane (interceptor/interceptor_plane.py) each is a control to that
party (``handover``, ``warrant.serve``, ``witness.add``), party to party over the broker.

Witnessing: on start, before anything is re-provisioned, the ledger's head is cosigned
by the witness - or the interceptor refuses to start (a ledger behind, or not consistent
with, what the witness cosigned: ``LedgerRollbackError``). Later, each batch of actions
the core hands out starts with a ``WitnessCheckpoint``; if the witness refuses, only the
stops in the batch are carried out, the core halts, and the error is raised.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable

from infra.link import Link
from infra.plane import Plane
from interceptor.ledger.errors import LedgerError
from interceptor.ledger.witnessing import WitnessError
from interceptor.scoped import (
    Action,
    AskEnterprise,
    Deliver,
    ScopedInterceptor,
    SendX1,
    WitnessCheckpoint,
    is_stop,
)
from wire import strictjson, topics
from wire.events import EventLog
from wire.ids import INTERCEPTOR_ID
from wire.li.checks import Decision
from wire.witness import WitnessResponse

log = logging.getLogger(__name__)

WitnessCall = Callable[[bytes], WitnessResponse | Awaitable[WitnessResponse]]


class InterceptorService:
    def __init__(
        self,
        core: ScopedInterceptor,
        host: str,
        port: int,
        password: str,
        events: EventLog,
        *,
        deliver: Callable[[bytes], object],
        ask_enterprise: Callable[[str, bytes], object],
        witness: WitnessCall | None = None,
        plane: Plane | None = None,
    ) -> None:
        if (witness is None) != (core.witnessing is None):
            raise ValueError("a witness call and the core's witnessing go together")
        self.core = core
        self._events = events
        self._deliver = deliver
        self._ask_enterprise = ask_enterprise
        self._witness = witness
        self._pending: set[asyncio.Task[None]] = set()
        # One exchange with the witness at a time: Witnessing holds the one request it
        # is waiting on, and over the plane the calls of two batches could overlap.
        self._witness_lock = asyncio.Lock()
        # What it cannot parse is set aside (kept in memory, bounded), not in the way.
        self._link = Link(
            INTERCEPTOR_ID,
            password,
            host,
            port,
            on_other=self._on_message,
            events=events,
            plane=plane,
        )

    @property
    def events(self) -> EventLog:
        return self._events

    async def start(self) -> None:
        # Connected first: the witness may be a party on the plane, reached over this
        # connection. Nothing acts on the ledger before it is witnessed: every batch of
        # actions (a record arriving meanwhile) starts with a WitnessCheckpoint.
        await self._link.start()
        # Then make sure the ledger is not behind what the witness cosigned: a
        # rolled-back ledger would re-provision a cancelled task.
        try:
            await self._witness_now()
        except WitnessError as exc:
            self.core.halt(str(exc))
            await self._link.stop()
            raise
        # The ledger is the source of truth: re-send what it says should be running.
        await self.perform(self.core.reprovision())

    async def stop(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._link.stop()

    async def submit(self, warrant: bytes) -> Decision:
        """HI-1: a warrant handed to the interceptor."""
        try:
            decision, actions = self.core.intake(warrant)
        except LedgerError as exc:
            # Nothing was logged, so nothing may be done: and a ledger that refuses an
            # append (entries cut from under it, a full disk) is not one to go on with.
            self.core.halt(f"the ledger refused an append: {exc}")
            raise
        await self.perform(actions)
        return decision

    def archive_export(self, enterprise: str, authorisation_id: str, sealed: list[bytes]) -> None:
        """CC an enterprise exported under a warrant: logged now, witnessed and delivered
        in the background (the enterprise's handler does not wait for the witness)."""
        actions = self.core.on_archive_export(enterprise, authorisation_id, sealed)
        if actions:
            task = asyncio.get_running_loop().create_task(self._perform_logged(actions))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _perform_logged(self, actions: list[Action]) -> None:
        try:
            await self.perform(actions)
        except WitnessError as exc:
            log.error("interceptor halted: %s", exc)

    async def witness_now(self) -> None:
        """Get the ledger's current head cosigned by the witness (WitnessError if not)."""
        await self._witness_now()

    async def _witness_now(self) -> None:
        async with self._witness_lock:
            await self._witness_locked()

    async def _witness_locked(self) -> None:
        witnessing = self.core.witnessing
        if witnessing is None or self._witness is None:
            return
        for _ in range(3):
            if witnessing.up_to_date:
                return
            answer = self._witness(witnessing.request())
            response = await answer if inspect.isawaitable(answer) else answer
            assert isinstance(response, WitnessResponse)
            if witnessing.handle(response):
                self._events.emit(
                    INTERCEPTOR_ID,
                    "interceptor.witnessed",
                    size=witnessing.ledger.size,
                    witness=witnessing.witness_key.name,
                )
                return
        raise WitnessError("the witness kept answering with another size")

    async def perform(self, actions: list[Action]) -> None:
        for i, action in enumerate(actions):
            if isinstance(action, WitnessCheckpoint):
                try:
                    await self._witness_now()
                except WitnessError as exc:
                    self.core.halt(str(exc))
                    # Stopping is always safe: carry out the stops of this batch, nothing
                    # else, and say why.
                    for later in actions[i + 1 :]:
                        if is_stop(later):
                            await self._do(later)
                    raise
            else:
                await self._do(action)

    async def _do(self, action: Action) -> None:
        if isinstance(action, SendX1):
            await self._link.publish(topics.X1, json.dumps(action.request).encode())
        elif isinstance(action, Deliver):
            done = self._deliver(action.sealed)
            if inspect.isawaitable(done):
                await done
        elif isinstance(action, AskEnterprise):
            done = self._ask_enterprise(action.enterprise, action.warrant)
            if inspect.isawaitable(done):
                await done

    async def _on_message(self, kind: str, payload: bytes) -> None:
        if kind == topics.X1:
            try:
                answer = strictjson.loads_object(payload, "X1 answer", max_bytes=8192)
            except strictjson.StrictJSONError as exc:
                answer = {"ok": False, "error": f"unreadable answer: {exc}"[:300]}
                self._link.set_aside(topics.inbox(INTERCEPTOR_ID, kind), payload, str(exc))
            self._events.emit(INTERCEPTOR_ID, "interceptor.x1_answer", **{
                k: answer.get(k) for k in ("ok", "op", "task_id", "error")})
        elif kind in (topics.X2, topics.X3):
            try:
                await self.perform(self.core.on_relay_record(kind, payload))
            except WitnessError as exc:
                log.error("interceptor halted: %s", exc)
