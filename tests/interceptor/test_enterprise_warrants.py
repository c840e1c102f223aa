"""The enterprise's side of a warrant (issue 12, point 3): it checks each generation
itself, exports CC only under a live case that collects CC from its own users, stops at
a cancellation, an amendment that drops CC or its users, and at the window's end by its
own clock - and remembers all of it across a restart (``warrants-<name>.json``).

No broker: the server is built without starting its link, and journal records are fed
to it as they would arrive from the relay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clients.archive import Record, journal_record
from clients.enterprise import (
    Enterprise,
    EnterpriseServer,
    EnterpriseStateError,
    warrants_store,
)
from interceptor.court import amend, approve, cancel
from tests.support.warrants import AGENCY, EXEC, HOUR, JUDGE, NOW, TRUST, draft
from wire import topics
from wire.b64 import b64encode
from wire.events import EventLog
from wire.li.checks import Policy
from wire.li.handover import HANDOVER_INFO, decode_record
from wire.li.warrant import Warrant

POLICY = Policy(
    jurisdiction="XX", csp_id="doormat", agency_key_fingerprint=AGENCY.public.fingerprint
)


class Clock:
    def __init__(self) -> None:
        self.ms = NOW * 1000

    def __call__(self) -> int:
        return self.ms


def enterprise() -> Enterprise:
    ent = Enterprise("acme", archive=True)
    for user, device in (("alice@acme", "phone"), ("bob@acme", "phone")):
        ent.activate(ent.issue_activation(user, device))
    return ent


class Harness:
    """acme's server over ``path``, with a clock and a record of what it exported."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path, self.clock = path, clock
        self.events = EventLog()
        self.delivered: list[tuple[str, bytes]] = []
        self.ent = enterprise()
        self.server = self.build()

    def build(self) -> EnterpriseServer:
        return EnterpriseServer(
            self.ent, "pw", "127.0.0.1", 1, self.events, self.path,
            deliver_cc=lambda aid, sealed: self.delivered.extend((aid, s) for s in sealed),
            clock=self.clock,
        )

    def restart(self) -> None:
        assert self.server.archive is not None
        self.server.archive.close()
        self.server = self.build()

    def serve(self, w: Warrant, now: int | None = None) -> Any:
        return self.server.accept_warrant(
            w.encode(), agency=AGENCY.public, trust=TRUST, policy=POLICY,
            now=self.clock() // 1000 if now is None else now,
        )

    async def journal(self, device: str, msg_id: str, ts_s: int, text: str) -> None:
        key = self.server.archive_public_key
        assert key is not None
        rec = Record(device, "in", msg_id, "carol@globex.phone", None, ts_s * 1000, text)
        payload = json.dumps(
            {"device": device, "record": b64encode(journal_record(key, rec))}
        ).encode()
        await self.server._on_other(topics.ARCHIVE, payload)

    def texts(self) -> list[str]:
        from clients.crypto import open_sealed

        out = []
        for _, sealed in self.delivered:
            rec = decode_record(open_sealed(AGENCY.private_key, sealed, info=HANDOVER_INFO))
            out.append(rec["plaintext"])
        return out


def signed(w: Warrant, at: int = NOW - 60) -> Warrant:
    for i, key in enumerate((EXEC, JUDGE)):
        w = approve(w, key, timestamp=at + i)
    return w


def case(**changes: Any) -> Warrant:
    fields: dict[str, Any] = {
        "targets": ["user:alice@acme"],
        "not_before": NOW - 60,
        "not_after": NOW + HOUR,
    }
    fields.update(changes)
    return signed(draft(**fields))


@pytest.fixture
def acme(tmp_path: Path) -> Harness:
    return Harness(tmp_path, Clock())


async def test_exports_under_a_live_case_only_for_its_targets(acme: Harness) -> None:
    assert acme.serve(case()).accepted
    await acme.journal("alice@acme.phone", "m1", NOW, "to alice")
    await acme.journal("bob@acme.phone", "m2", NOW, "to bob (no target)")
    assert acme.texts() == ["to alice"]


async def test_cancellation_stops_the_export_and_survives_a_restart(acme: Harness) -> None:
    w = case()
    assert acme.serve(w).accepted
    await acme.journal("alice@acme.phone", "m1", NOW, "before")
    decision = acme.serve(signed(cancel(w)))
    assert decision.accepted and decision.action == "cancel"
    stopped = acme.events.events(kind="enterprise.case_stopped")
    assert [e["reason"] for e in stopped] == ["cancel"]
    await acme.journal("alice@acme.phone", "m2", NOW + 1, "after the cancellation")
    acme.restart()
    await acme.journal("alice@acme.phone", "m3", NOW + 2, "after the restart")
    assert acme.texts() == ["before"]
    # The old generation, replayed after the restart, is refused: the case stays stopped.
    assert acme.serve(w).reason == "stale-generation"
    assert acme.server.cases == {}


async def test_a_live_case_survives_a_restart_and_a_replay_is_refused(acme: Harness) -> None:
    w = case()
    assert acme.serve(w).accepted
    acme.restart()
    await acme.journal("alice@acme.phone", "m1", NOW, "after the restart")
    assert acme.texts() == ["after the restart"]
    again = acme.serve(w)
    assert again.reason == "replayed-id"
    assert acme.texts() == ["after the restart"]  # no second export of anything


@pytest.mark.parametrize(
    "change",
    [{"categories": ("IRI",)}, {"targets": ("user:carol@globex",)}],
    ids=["drops-cc", "drops-our-target"],
)
async def test_an_amendment_that_no_longer_collects_from_us_stops(
    acme: Harness, change: dict[str, Any]
) -> None:
    w = case()
    assert acme.serve(w).accepted
    g2 = signed(amend(w, **change))
    assert acme.serve(g2).action == "update"
    acme.restart()
    await acme.journal("alice@acme.phone", "m1", NOW, "after the amendment")
    assert acme.texts() == []
    assert acme.server.cases == {}


async def test_an_amendment_does_not_export_a_message_twice(acme: Harness) -> None:
    w = case()
    assert acme.serve(w).accepted
    await acme.journal("alice@acme.phone", "m1", NOW, "once")
    g2 = signed(amend(w, not_after=NOW + 2 * HOUR))
    assert acme.serve(g2).action == "update"
    assert acme.texts() == ["once"]


async def test_iri_only_warrant_exports_no_content(acme: Harness) -> None:
    assert acme.serve(case(categories=("IRI",))).accepted
    await acme.journal("alice@acme.phone", "m1", NOW, "metadata only")
    assert acme.delivered == []


async def test_expiry_by_the_enterprise_clock_whatever_the_record_says(acme: Harness) -> None:
    """After not_after (our clock), a record whose sender timestamp claims to be inside
    the window is not exported: a device's clock does not extend a warrant."""
    assert acme.serve(case()).accepted
    acme.clock.ms = (NOW + HOUR) * 1000
    await acme.journal("alice@acme.phone", "m1", NOW + 10, "ts inside, arrived after")
    assert acme.delivered == []
    assert [e["reason"] for e in acme.events.events(kind="enterprise.case_stopped")] == [
        "expired"
    ]
    acme.restart()
    assert acme.server.cases == {}


def test_an_unreadable_state_file_stops_the_server_from_starting(acme: Harness) -> None:
    assert acme.serve(case()).accepted
    path = warrants_store(acme.path, "acme")
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b'{"v": 1, "state": ')
    assert acme.server.archive is not None
    acme.server.archive.close()
    with pytest.raises(EnterpriseStateError, match="will not start"):
        acme.build()
