"""The scoped interceptor's thin I/O shell around ``interceptor.scoped``.

It logs in to the broker as ``interceptor``: X1 requests go to the relay on
``doormat/out/interceptor/x1``; X1 answers and the X2/X3 records a task yields arrive on
``doormat/in/interceptor/{x1,x2,x3}``. Sealed HI-2/HI-3 records are handed to the
agency, and CC requests to enterprises, through callables (in the one-process system
they are direct calls; across machines they would be their own handover interfaces).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from infra.link import Link
from interceptor.scoped import Action, AskEnterprise, Deliver, ScopedInterceptor, SendX1
from wire import strictjson, topics
from wire.events import EventLog
from wire.ids import INTERCEPTOR_ID
from wire.li.checks import Decision


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
        ask_enterprise: Callable[[str, bytes], None],
    ) -> None:
        self.core = core
        self._events = events
        self._deliver = deliver
        self._ask_enterprise = ask_enterprise
        # What it cannot parse is set aside (kept in memory, bounded), not in the way.
        self._link = Link(
            INTERCEPTOR_ID, password, host, port, on_other=self._on_message, events=events
        )

    async def start(self) -> None:
        await self._link.start()
        # The ledger is the source of truth: re-send what it says should be running.
        await self.perform(self.core.reprovision())

    async def stop(self) -> None:
        await self._link.stop()

    async def submit(self, warrant: bytes) -> Decision:
        """HI-1: a warrant handed to the interceptor."""
        decision, actions = self.core.intake(warrant)
        await self.perform(actions)
        return decision

    async def perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendX1):
                await self._link.publish(topics.X1, json.dumps(action.request).encode())
            elif isinstance(action, Deliver):
                self._deliver(action.sealed)
            elif isinstance(action, AskEnterprise):
                self._ask_enterprise(action.enterprise, action.warrant)

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
            await self.perform(self.core.on_relay_record(kind, payload))
