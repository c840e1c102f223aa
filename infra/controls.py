"""Controls on the plane: ``ControlServer`` (controls in), ``ControlClient`` (calls out)
and ``ControlError`` (see ``infra.plane``, whose public names these are).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wire import control, topics
from wire.control import ControlRefused, Request
from wire.events import EventLog

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
