"""A cancelled warrant stops intercepting everywhere, also across restarts (issue 12,
point 3).

The attack, as reproduced on the old main: the interceptor restarts (its state rebuilt
from the ledger), then an approved cancellation arrives. The ledger said "cancel", yet
the rebuilt interceptor had no table of warrants, stopped nothing, and the relay kept
tasking (the agency kept receiving IRI). Nor did a cancellation ever reach the
enterprise, whose archive kept exporting CC for the case.

Each test here runs a real system (broker, relay, enterprise servers, devices) and
restarts the interceptor and/or acme's enterprise server as objects rebuilt from their
files only. What is observed: the relay's task table and its ``relay.task_record``
events, the agency's own received records, and acme's ``enterprise.cc_exported``
events - nothing after the cancellation's ledger entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from doormat.cast import default_cast
from doormat.system import System
from interceptor.court import amend, approve, cancel
from tests.support.polling import until
from tests.system.system_helpers import converse
from wire.li.warrant import Warrant


@pytest.fixture
async def scoped(tmp_path: Path) -> AsyncIterator[System]:
    async with System(default_cast(), state_dir=tmp_path, li="scoped") as system:
        yield system


async def fresh_second() -> int:
    await asyncio.sleep(1.01 - time.time() % 1)
    return int(time.time())


def signed(system: System, draft: Warrant) -> bytes:
    for key in (system.legal.executive, system.legal.judicial):
        draft = approve(draft, key)
    return draft.encode()


def kinds_after(system: System, mark: int, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in system.events.events()[mark:]
        if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())
    ]


async def restart_interceptor(system: System) -> None:
    """Stop the interceptor and build a new one from its files (the ledger) alone."""
    await system.restart_interceptor()


async def restart_enterprise(system: System, name: str) -> None:
    """Stop the enterprise server and build a new one from its files alone."""
    await system.restart_enterprise(name)


async def open_case(system: System, categories: list[str]) -> Warrant:
    now = await fresh_second()
    w = system.legal.warrant(
        case="OP-STOP",
        targets=["user:alice@acme"],
        categories=categories,
        not_before=now,
        not_after=now + 600,
    )
    decision = await system.submit_warrant(w.encode())
    assert decision.accepted, decision.message
    return w


async def say(system: System, text: str, categories: set[str]) -> None:
    """bob writes ``text`` to alice (a target); wait until the agency holds the IRI for
    it and, with CC, its content read from acme's archive."""
    truth = await converse(system, [("bob@acme.phone", "alice@acme", text)])
    ((sender, msg_id),) = truth

    def got() -> bool:
        mine = [
            r for r in system.agency.received
            if (r.record.get("from"), r.record.get("id")) == (sender, msg_id)
        ]
        have = {r.record["category"] for r in mine if r.record["category"] == "IRI"}
        have |= {"CC" for r in mine if r.record["category"] == "CC" and r.text == text}
        return categories <= have

    await until(got, what=f"the agency to receive {sorted(categories)} for {text!r}")


async def assert_nothing_after_cancel(
    system: System, w: Warrant, cancellation: bytes, text: str
) -> None:
    """Submit the cancellation; then a target's message yields nothing anywhere."""
    assert system.ledger is not None and system.relay is not None
    events_mark = len(system.events.events())
    decision = await system.submit_warrant(cancellation)
    assert decision.accepted and decision.action == "cancel", decision.message
    # The cancellation's ledger entry: from here on, nothing may reach the agency.
    logged = [
        e.index
        for e in system.ledger.entries()
        if e.type == "warrant-decision" and e.payload.get("action") == "cancel"
    ]
    assert logged
    received_mark = len(system.agency.received)
    task_id = f"{w.liid}.g{w.generation}"
    await until(lambda: task_id not in system.relay.li.tasks, what="the relay to stop the task")
    await converse(system, [("bob@acme.phone", "alice@acme", text)])
    await asyncio.sleep(0.5)
    late = system.agency.received[received_mark:]
    assert late == [], [r.record for r in late]
    assert system.relay.li.tasks == {}
    assert kinds_after(system, events_mark, "relay.task_record", liid=w.liid) == []
    assert kinds_after(system, events_mark, "enterprise.cc_exported", liid=w.liid) == []


async def test_cancel_after_interceptor_restart_stops_relay_agency_and_archive(
    scoped: System,
) -> None:
    system = scoped
    w = await open_case(system, ["IRI", "CC"])
    await say(system, "before the restart", {"IRI", "CC"})

    await restart_interceptor(system)
    # The restarted interceptor still runs the live case, content included.
    await say(system, "after the restart", {"IRI", "CC"})

    await assert_nothing_after_cancel(
        system, w, signed(system, cancel(w)), "after the cancellation"
    )


async def test_cancel_reaches_the_enterprise_archive(scoped: System) -> None:
    """Without any restart: the enterprise is served the cancellation, checks it, and
    exports nothing more for the case."""
    system = scoped
    w = await open_case(system, ["IRI", "CC"])
    await say(system, "in the case", {"IRI", "CC"})
    mark = len(system.events.events())
    await assert_nothing_after_cancel(system, w, signed(system, cancel(w)), "after it")
    checked = kinds_after(system, mark, "enterprise.warrant_checked")
    assert any(e["accepted"] and e["action"] == "cancel" for e in checked), checked


async def test_cancel_after_enterprise_restart(scoped: System) -> None:
    """acme's server restarts between the warrant and its cancellation: it still serves
    the live case (it persisted it), refuses the old warrant replayed, and honours the
    cancellation."""
    system = scoped
    w = await open_case(system, ["IRI", "CC"])
    await restart_enterprise(system, "acme")
    await say(system, "after acme restarted", {"IRI", "CC"})

    # The warrant served again (a replay) is refused by acme's persisted state.
    server = system.servers["acme"]
    decision = server.accept_warrant(
        w.encode(),
        agency=system.legal.agency_key,
        trust=system.legal.trust,
        policy=system.legal.policy,
        now=int(time.time()),
    )
    assert decision.reason == "replayed-id"

    await restart_interceptor(system)
    await restart_enterprise(system, "acme")
    await assert_nothing_after_cancel(system, w, signed(system, cancel(w)), "after both")


async def test_update_that_drops_cc_stops_the_archive(scoped: System) -> None:
    """An amendment that keeps IRI but drops CC: the relay keeps IRI, acme exports no
    more content, across a restart of both."""
    system = scoped
    w = await open_case(system, ["IRI", "CC"])
    await restart_interceptor(system)
    await restart_enterprise(system, "acme")
    mark = len(system.events.events())
    g2 = signed(system, amend(w, categories=("IRI",)))
    decision = await system.submit_warrant(g2)
    assert decision.accepted and decision.action == "update", decision.message
    received = len(system.agency.received)
    await converse(system, [("bob@acme.phone", "alice@acme", "iri only now")])
    await until(
        lambda: any(
            r.record["category"] == "IRI" for r in system.agency.received[received:]
        ),
        what="IRI under generation 2",
    )
    await asyncio.sleep(0.5)
    assert all(r.record["category"] == "IRI" for r in system.agency.received[received:])
    assert kinds_after(system, mark, "enterprise.cc_exported", liid=w.liid) == []


async def test_update_that_drops_the_target_stops_the_archive(scoped: System) -> None:
    """An amendment that moves the case from alice@acme to carol@globex: acme (served
    the amendment because it was served the case) exports nothing more for alice."""
    system = scoped
    w = await open_case(system, ["IRI", "CC"])
    await restart_interceptor(system)
    mark = len(system.events.events())
    g2 = signed(system, amend(w, targets=("user:carol@globex",)))
    decision = await system.submit_warrant(g2)
    assert decision.accepted and decision.action == "update", decision.message
    received = len(system.agency.received)
    await converse(system, [("bob@acme.phone", "alice@acme", "alice is no target now")])
    await asyncio.sleep(0.7)
    assert system.agency.received[received:] == []
    assert kinds_after(system, mark, "enterprise.cc_exported", liid=w.liid) == []
