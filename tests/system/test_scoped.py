"""The scoped interceptor end to end (issue 5): warrants, tasks at the relay, IRI and CC
to the agency, the audit ledger - all over a real broker and relay.

Expectations are computed from the system's own event log and delivery records, and the
agency's counts come from its own decryption of what reached it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.system import System
from interceptor.ledger import TASK_START, WARRANT_DECISION
from interceptor.scoped import ScopedInterceptor
from interceptor.service import InterceptorService
from tests.system.system_helpers import converse
from wire.ids import enterprise_of, user_of

TARGETS = ["user:alice@acme", "user:carol@globex"]
SCRIPT = [
    ("carol@globex.phone", "alice@acme", "c->a"),
    ("alice@acme.phone", "bob@acme", "a->b"),
    ("bob@acme.phone", "dave@globex", "b->d (no target)"),
    ("dave@globex.phone", "carol@globex", "d->c"),
    ("alice@acme.laptop", "dave@globex", "a(laptop)->d"),
    ("bob@acme.phone", "alice@acme", "b->a"),
]


async def fresh_second() -> int:
    await asyncio.sleep(1.01 - time.time() % 1)
    return int(time.time())


@pytest.fixture
async def scoped(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with System(default_cast(), state_dir=tmp_path, li="scoped") as system:
        yield system


async def test_agency_gets_exactly_the_targets_messages_in_the_window(scoped: System) -> None:
    system = scoped
    await converse(system, SCRIPT[:3])  # before the warrant: out of scope
    now = await fresh_second()
    warrant = system.legal.warrant(
        case="OP-T", targets=TARGETS, categories=["IRI", "CC"], not_before=now, not_after=now + 600
    )
    decision = await system.submit_warrant(warrant.encode())
    assert decision.accepted, decision.message
    before = set(system.deliveries)
    await converse(system, SCRIPT)
    await asyncio.sleep(0.5)

    targets = {t.split(":", 1)[1] for t in TARGETS}
    in_window = [d for k, d in system.deliveries.items() if k not in before]

    def involves(d, users: set[str]) -> bool:  # type: ignore[no-untyped-def]
        return user_of(d.sender) in users or d.to_user in users

    archiving = {u for u in targets if system.servers[enterprise_of(u)].archive is not None}
    expect_readable = {(d.sender, d.sent.id) for d in in_window if involves(d, archiving)}
    expect_iri = {(d.sender, d.sent.id) for d in in_window if involves(d, targets)}
    assert expect_readable and expect_iri - expect_readable  # the script covers both cases

    iri = {
        (r.record["from"], r.record["id"])
        for r in system.agency.received
        if r.record["category"] == "IRI"
    }
    readable = {(r.record["from"], r.record["id"]) for r in system.agency.received if r.readable}
    assert iri == expect_iri
    assert readable == expect_readable
    # What it read is what was typed: the agency decrypted the real content.
    truth = {(d.sender, d.sent.id): d.text for d in in_window}
    for r in system.agency.received:
        if r.readable:
            assert r.text == truth[(r.record["from"], r.record["id"])]
    # Nothing from before the warrant, nothing between non-targets.
    everything = {(r.record["from"], r.record["id"]) for r in system.agency.received}
    assert everything == expect_iri
    # CC for carol (no archive) arrived as ciphertext that nobody in the chain opened.
    cc_unread = [
        r for r in system.agency.received if r.record["category"] == "CC" and not r.readable
    ]
    assert cc_unread and all("envelope" in r.record for r in cc_unread)

    # The ledger: decision, task, every delivery - and it verifies.
    assert system.ledger is not None
    types = [e.type for e in system.ledger.entries()]
    assert types[0] == WARRANT_DECISION and types[1] == TASK_START
    assert types.count("record-delivered") == len(system.agency.received)


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("forged", "bad-signature"),
        ("one-approval", "missing-approval"),
        ("expired", "expired"),
        ("wildcard", "wildcard-target"),
        ("unknown", "unknown-target"),
        ("malformed", "malformed"),
    ],
)
async def test_refused_warrants_are_logged_and_provision_nothing(
    scoped: System, defect: str, reason: str
) -> None:
    system, legal = scoped, scoped.legal
    now = int(time.time())
    w = dict(case="OP-X", targets=TARGETS, categories=["IRI"], not_before=now, not_after=now + 600)
    if defect == "forged":
        obj = json.loads(legal.warrant(**w).encode())  # type: ignore[arg-type]
        obj["targets"][0]["value"] = "bob@acme"
        data = json.dumps(obj).encode()
    elif defect == "one-approval":
        data = legal.warrant(**w, approvers=(legal.judicial,)).encode()  # type: ignore[arg-type]
    elif defect == "expired":
        data = legal.warrant(**{**w, "not_before": now - 900, "not_after": now - 300}).encode()  # type: ignore[arg-type]
    elif defect == "wildcard":
        data = legal.warrant(**{**w, "targets": ["user:all"]}).encode()  # type: ignore[arg-type]
    elif defect == "unknown":
        data = legal.warrant(**{**w, "targets": ["user:mallory@acme"]}).encode()  # type: ignore[arg-type]
    else:
        data = b'{"authorisation_id": '
    decision = await system.submit_warrant(data)
    assert not decision.accepted and decision.reason == reason
    assert system.ledger is not None
    entries = list(system.ledger.entries())
    assert [e.type for e in entries] == [WARRANT_DECISION]
    assert entries[0].payload["reason"] == reason
    await asyncio.sleep(0.2)
    assert not system.events.events(kind="relay.task_started")
    assert system.relay is not None and system.relay.li.tasks == {}


async def test_crash_between_ledger_and_task_leaves_no_task_without_entry(
    scoped: System,
) -> None:
    """The interceptor dies after logging and before provisioning; its successor, built
    from the ledger alone, provisions the task. At no point does the relay run a task the
    ledger does not record."""
    system = scoped
    assert system.interceptor is not None and system.relay is not None
    now = int(time.time())
    w = system.legal.warrant(
        case="OP-CRASH",
        targets=TARGETS[:1],
        categories=["IRI"],
        not_before=now,
        not_after=now + 600,
    )
    old = system.interceptor

    async def die(actions):  # type: ignore[no-untyped-def]
        raise RuntimeError("killed between the ledger append and the X1 request")

    old.perform = die  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await old.submit(w.encode())
    assert system.ledger is not None
    started = {e.payload["task_id"] for e in system.ledger.entries() if e.type == TASK_START}
    assert started and system.relay.li.tasks == {}  # logged, not yet acted on
    await old.stop()

    # The successor: same ledger, same account, nothing but the ledger to go on.
    successor = ScopedInterceptor(
        system.ledger,
        trust=system.legal.trust,
        policy=system.legal.policy,
        agency=system.legal.agency_key,
        directory=lambda f, v: True,
        archives=lambda e: False,
        events=system.events,
        clock_ms=old.core.clock_ms,
    )
    new = InterceptorService(
        successor,
        system.broker.host,
        system.broker.port,
        system.account("interceptor").password,
        system.events,
        deliver=system.agency.receive,
        ask_enterprise=lambda e, w: None,
    )
    await new.start()
    try:
        for _ in range(100):
            if system.relay.li.tasks:
                break
            await asyncio.sleep(0.02)
        assert set(system.relay.li.tasks) == started
        # And the state rebuilt from the ledger still refuses the same warrant twice.
        again = await new.submit(w.encode())
        assert again.reason == "replayed-id"
    finally:
        await new.stop()
