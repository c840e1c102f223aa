"""The scoped interceptor's core across restarts, sans broker (issue 12, points 3 and 4).

``ScopedInterceptor`` is rebuilt from its ledger file alone, as after a crash; what it
then does with an amendment, a cancellation, a late record or export, and a witness
that refuses, is read from the actions it hands out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from interceptor.court import amend, cancel
from interceptor.ledger import DEFAULT_ORIGIN, Ledger, Witnessing
from interceptor.scoped import (
    AskEnterprise,
    Deliver,
    InterceptorHalted,
    ScopedInterceptor,
    SendX1,
    WitnessCheckpoint,
    is_stop,
)
from interceptor.service import InterceptorService
from interceptor.witness import WitnessCore
from tests.interceptor.ledger_support import LOG_SIGNER
from tests.support.warrants import AGENCY, HOUR, NOW, POLICY, TRUST, directory, draft, signed
from wire.events import EventLog
from wire.witness import Cosigner, WitnessResponse

COSIGNER = Cosigner.generate("witness.example/court")


class Clock:
    def __init__(self) -> None:
        self.ms = NOW * 1000

    def __call__(self) -> int:
        return self.ms


def build(path: Path, clock: Clock, *, witnessed: bool = False) -> ScopedInterceptor:
    ledger = Ledger(path, signer=LOG_SIGNER)
    witnessing = (
        Witnessing(ledger, log_key=LOG_SIGNER.verifier(), witness_key=COSIGNER.verifier())
        if witnessed
        else None
    )
    return ScopedInterceptor(
        ledger,
        trust=TRUST,
        policy=POLICY,
        agency=AGENCY.public,
        directory=directory,
        archives=lambda ent: ent == "acme",
        events=EventLog(),
        clock_ms=clock,
        witnessing=witnessing,
    )


def restart(core: ScopedInterceptor, clock: Clock, **kw: Any) -> ScopedInterceptor:
    path = core.ledger.path
    core.ledger.close()
    return build(path, clock, **kw)


def ops(actions: list[Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for a in actions:
        if isinstance(a, SendX1):
            out.append(("x1", a.request["op"], a.request["task_id"]))
        elif isinstance(a, AskEnterprise):
            out.append(("serve", a.enterprise, "stop" if a.stop else "act"))
        elif isinstance(a, WitnessCheckpoint):
            out.append(("witness",))
        elif isinstance(a, Deliver):
            out.append(("deliver", a.category))
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_cancel_after_restart_stops_the_task_and_serves_the_enterprise(
    tmp_path: Path, clock: Clock
) -> None:
    core = build(tmp_path / "l.sqlite", clock)
    w = signed()  # IRI+CC for alice@acme.phone and bob@acme
    decision, actions = core.intake(w.encode())
    assert decision.accepted
    task = f"{w.liid}.g1"
    assert ops(actions) == [("x1", "activate", task), ("serve", "acme", "act")]

    core = restart(core, clock)
    assert ops(core.reprovision()) == [("x1", "activate", task)]
    decision, actions = core.intake(signed(cancel(w)).encode())
    assert decision.action == "cancel"
    assert ops(actions) == [("x1", "deactivate", task), ("serve", "acme", "stop")]
    assert all(is_stop(a) for a in actions)
    stops = [e.payload for e in core.ledger.entries() if e.type == "task-stop"]
    assert [(s["task_id"], s["reason"]) for s in stops] == [(task, "cancelled")]

    # After the cancellation nothing is delivered, whatever arrives and however late.
    record = b'{"task_id": "%s", "id": "m", "from": "a", "to": "b"}' % task.encode()
    assert core.on_relay_record("x2", record) == []
    assert core.on_archive_export("acme", w.authorisation_id, [b"sealed"]) == []
    # And a restart does not bring the task back.
    core = restart(core, clock)
    assert core.reprovision() == []


def test_an_amendment_after_restart_replaces_the_task_and_reaches_the_old_archive(
    tmp_path: Path, clock: Clock
) -> None:
    core = build(tmp_path / "l.sqlite", clock)
    w = signed()
    core.intake(w.encode())
    core = restart(core, clock)
    g2 = signed(amend(w, targets=("device:carol@globex.phone",)))
    decision, actions = core.intake(g2.encode())
    assert decision.action == "update"
    assert ops(actions) == [
        ("x1", "deactivate", f"{w.liid}.g1"),
        ("x1", "activate", f"{w.liid}.g2"),
        ("serve", "acme", "act"),  # acme, served g1, learns that its users are out
    ]
    # An export from acme under the authorisation: g2 collects nothing from acme.
    assert core.on_archive_export("acme", w.authorisation_id, [b"sealed"]) == []


def test_nothing_is_delivered_after_the_window_by_the_interceptors_clock(
    tmp_path: Path, clock: Clock
) -> None:
    core = build(tmp_path / "l.sqlite", clock)
    w = signed(draft(not_after=NOW + HOUR))
    core.intake(w.encode())
    task = f"{w.liid}.g1"
    record = b'{"task_id": "%s", "id": "m", "from": "a", "to": "b"}' % task.encode()
    assert ops(core.on_relay_record("x2", record)) == [("deliver", "IRI")]
    clock.ms = (NOW + HOUR) * 1000
    assert core.on_relay_record("x2", record) == []
    assert core.on_archive_export("acme", w.authorisation_id, [b"sealed"]) == []
    stops = [e.payload["reason"] for e in core.ledger.entries() if e.type == "task-stop"]
    assert stops == ["expired"]


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def publish(self, kind: str, payload: bytes) -> None:
        self.sent.append(payload)


def test_a_refusing_witness_halts_after_carrying_out_only_the_stops(
    tmp_path: Path, clock: Clock
) -> None:
    witness = WitnessCore(COSIGNER, {DEFAULT_ORIGIN: [LOG_SIGNER.verifier()]})
    refusing = {"on": False}

    def call(body: bytes) -> WitnessResponse:
        if refusing["on"]:
            return WitnessResponse(422, b"no\n", "not consistent")
        response, state = witness.add_checkpoint(body, now=NOW)
        witness.commit(state)
        return response

    core = build(tmp_path / "l.sqlite", clock, witnessed=True)
    served: list[tuple[str, bytes]] = []
    service = InterceptorService(
        core, "127.0.0.1", 1, "pw", EventLog(), deliver=lambda b: None,
        ask_enterprise=lambda e, w: served.append((e, w)), witness=call,
    )
    link = FakeLink()
    service._link = link  # type: ignore[assignment]

    async def run() -> None:
        w = signed()
        await service.submit(w.encode())
        assert len(link.sent) == 1 and len(served) == 1  # activated, served on acme
        refusing["on"] = True
        with pytest.raises(Exception, match="not consistent"):
            await service.submit(signed(cancel(w)).encode())
        # The stops still went out: the deactivation and the cancellation's service.
        assert b'"deactivate"' in link.sent[-1] and len(served) == 2
        assert core.halted is not None
        with pytest.raises(InterceptorHalted):
            await service.submit(signed(draft(authorisation_id=None)).encode())

    asyncio.run(run())
