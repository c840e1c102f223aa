"""The relay router with key transparency and the ghost switch, without a broker:
answers carry proofs a device-side DirectoryView accepts; the ghost back door; split view."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.kt import REASON_NOT_ENROLLED, DirectoryView
from relay.router import Ack, Publish
from relay.store import Store
from tests.kt.kt_helpers import A2, ALICE, BOB, CAROL, A, B, C, Harness, identity_of, publish_fields
from wire.envelope import Envelope
from wire.kt import InconsistentCheckpoint

AG, BG = "alice@acme.gov", "bob@acme.gov"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(Store(tmp_path / "relay.db"))
    harness.setup()
    yield harness
    harness.store.close()


def view(h: Harness, owner: str) -> DirectoryView:
    return DirectoryView(h.relay.directory_vkey, owner=owner)


def envelope(sender: str, recipient: str) -> bytes:
    return Envelope(
        id=os.urandom(16).hex(),
        sender=sender,
        recipient=recipient,
        ts=1,
        header=os.urandom(40),
        body=os.urandom(256),
    ).encode()


# -- answers carry proofs -------------------------------------------------------------


def test_devices_and_bundles_carry_verifiable_proofs(h: Harness) -> None:
    va = view(h, A)
    answer = h.ok(A, "devices", user=ALICE)
    assert answer["devices"] == [A2, A] and "kt" in answer
    assert va.verify_lookup(answer["kt"], answer["devices"]).verified == [
        (A2, identity_of(A2)),
        (A, identity_of(A)),
    ]
    answer = h.ok(A, "bundles", user=BOB, since=va.since)
    assert answer["kt"]["since"] == 4 and answer["kt"]["consistency"] == []
    result = va.verify_lookup(answer["kt"], answer["bundles"])
    assert result.verified == [(B, identity_of(B))] and result.refused == []
    # the log grows; the next answer proves it grew from what the device holds
    h.enrol("bob@acme.laptop")
    h.publish("bob@acme.laptop")
    answer = h.ok(A, "devices", user=BOB, since=va.since)
    assert len(answer["kt"]["consistency"]) > 0
    assert va.verify_lookup(answer["kt"], answer["devices"]).devices == ["bob@acme.laptop", B]
    assert va.since == 5


def test_empty_answers_and_since_rules(h: Harness) -> None:
    # nothing listed and no since: nothing to prove (the answer is as before KT)
    assert h.ok(A, "devices", user="nobody@acme") == {"req": "r", "ok": True, "devices": []}
    answer = h.ok(A, "devices", user="nobody@acme", since=2)
    assert answer["kt"]["entries"] == [] and answer["kt"]["since"] == 2
    assert h.refused(A, "devices", user=BOB, since=5) == (
        "'since' 5 is beyond the directory log's size 4"
    )
    for bad in (-1, "3", True, 1.5):
        assert h.refused(A, "devices", user=BOB, since=bad).startswith("'since' must be")
    # a refused bundles request spends no one-time prekey
    held = h.store.directory.otpk_count(B)
    assert h.refused(A, "bundles", user=BOB, since=9).startswith("'since' 9 is beyond")
    assert h.store.directory.otpk_count(B) == held


def test_monitor_op(h: Harness) -> None:
    answer = h.ok(A, "monitor", user=ALICE)
    assert answer["user"] == ALICE
    assert [e["entry"]["device"] for e in answer["kt"]["entries"]] == [A, A2]
    assert view(h, A).monitor(answer, {A, A2}) == []
    assert h.refused(A, "monitor", user=ALICE, since=99).startswith("'since' 99 is beyond")
    assert h.refused(A, "monitor", user=ALICE, extra=1) == "unknown field(s): extra"
    assert h.refused("acme", "monitor", user=ALICE) == "this op is for devices"
    assert h.refused(A, "monitor") == "missing field(s): user"
    (event,) = h.events.events("relay.monitored")
    assert (event["requester"], event["user"], event["entries"]) == (A, ALICE, 2)


def test_monitor_bounded(tmp_path: Path) -> None:
    from relay.router import Limits, Relay

    h = Harness(Store(tmp_path / "m.db"))
    h.relay = Relay(h.store, h.events, limits=Limits(max_monitor_entries=1), clock=h.clock)
    h.setup((A, A2))
    assert h.refused(A, "monitor", user=ALICE) == (
        "user alice@acme has more than 1 log entries, the monitor limit"
    )


def test_gov_is_reserved_for_enterprises(h: Harness) -> None:
    assert h.refused("acme", "enrol", user=ALICE, device=AG) == "device name 'gov' is reserved"
    h.relay.set_ghost(True)
    assert h.refused("acme", "enrol", user=ALICE, device=AG) == "device name 'gov' is reserved"


# -- ghost ----------------------------------------------------------------------------


def test_ghost_refused_while_off_and_from_anyone_but_the_tap(h: Harness) -> None:
    assert h.refused("tap", "enrol", user=ALICE, device=AG) == "ghost mode is off"
    assert h.refused("tap", "publish", device=AG, **publish_fields("SUQ=")) == "ghost mode is off"
    h.relay.set_ghost(True)
    # only the tap; a device or an enterprise cannot name another device to publish for
    assert h.refused(A, "publish", device=AG, **publish_fields("SUQ=")) == (
        "unknown field(s): device"
    )
    assert h.refused("acme", "publish", device=AG, **publish_fields("SUQ=")).startswith(
        "unknown field(s)"
    )
    # the tap: only enrol and publish, only <user>.gov, only for known users
    assert h.refused("tap", "devices", user=ALICE) == (
        "the tap may only enrol and publish ghost devices"
    )
    assert h.refused("tap", "sync") == "the tap may only enrol and publish ghost devices"
    assert h.refused("tap", "enrol", user=ALICE, device=A2) == (
        "the tap may only enrol alice@acme.gov for alice@acme"
    )
    assert h.refused("tap", "enrol", user="nobody@acme", device="nobody@acme.gov") == (
        "unknown user nobody@acme"
    )
    assert h.refused("tap", "publish", device=A, **publish_fields("SUQ=")).startswith(
        "'device' must be a ghost device the tap enrolled"
    )
    assert h.refused("tap", "publish", device=AG, **publish_fields("SUQ=")).startswith(
        "'device' must be a ghost device the tap enrolled"
    )
    assert not h.store.directory.is_enrolled(AG) and h.store.directory.kt_size() == 4


def test_ghost_listed_with_proof_and_caught_by_monitoring(h: Harness) -> None:
    va, vb = view(h, A), view(h, B)
    va.verify_lookup(h.ok(A, "devices", user=BOB)["kt"], [B])
    vb.monitor(h.ok(B, "monitor", user=BOB), {B})
    h.relay.set_ghost(True)
    ghost = h.ghost(BOB)
    assert ghost == BG
    (enrolled,) = [e for e in h.events.events("relay.enrolled") if e.get("ghost")]
    assert enrolled["enterprise"] == "tap" and enrolled["device"] == BG
    # unmodified clients see the ghost "as any device": listed, logged, proven
    answer = h.ok(A, "devices", user=BOB, since=va.since)
    assert answer["devices"] == [BG, B]
    assert va.verify_lookup(answer["kt"], answer["devices"]).devices == [BG, B]
    answer = h.ok(A, "bundles", user=BOB, since=va.since)
    assert [b["device"] for b in answer["bundles"]] == [BG, B]
    assert va.verify_lookup(answer["kt"], answer["bundles"]).devices == [BG, B]
    # ... and bob's own device, monitoring its user, raises the alarm
    (alarm,) = vb.monitor(h.ok(B, "monitor", user=BOB, since=vb.since), {B})
    assert (alarm.user, alarm.device, alarm.reason) == (BOB, BG, REASON_NOT_ENROLLED)
    # alice's devices, whose user has no ghost, raise nothing
    assert view(h, A2).monitor(h.ok(A2, "monitor", user=ALICE), {A, A2}) == []


def test_envelopes_to_a_ghost_go_to_the_tap_and_are_done(h: Harness) -> None:
    h.relay.set_ghost(True)
    h.ghost(BOB)
    raw = envelope(A, BG)
    acts = h.send(A, "msg", raw)
    assert [p for p in acts if isinstance(p, Publish)] == [Publish("doormat/in/tap/ghost", raw)]
    assert acts[-1] == Ack()
    assert h.kinds(acts) == ["relay.accepted", "relay.delivered"]
    assert h.events.events("relay.delivered")[-1]["reason"] == "ghost"
    assert h.store.pending_count() == 0 and h.store.seen(A, json.loads(raw)["id"], BG)
    assert [c.raw for c in h.store.captured()] == [raw]  # the operator keeps it, as all
    # a normal recipient still gets its envelope the normal way
    acts = h.send(A, "msg", envelope(A, B))
    assert [p.topic for p in acts if isinstance(p, Publish)] == [f"doormat/in/{B}/msg"]
    # switched off: the ghost is no longer listed nor a recipient; its entry stays logged
    h.relay.set_ghost(False)
    assert h.ok(A, "devices", user=BOB)["devices"] == [B]
    acts = h.send(A, "msg", envelope(A, BG))
    assert [e for e in h.events.events("relay.rejected")][-1]["reason"] == "unknown recipient"
    assert [e["entry"]["device"] for e in h.ok(B, "monitor", user=BOB)["kt"]["entries"]] == [
        B,
        BG,
    ]


def test_ghost_envelopes_not_kept_when_capture_is_off(tmp_path: Path) -> None:
    h = Harness(Store(tmp_path / "nk.db", keep_captured=False), ghost=True)
    h.setup((A, B))
    h.ghost(BOB)
    h.send(A, "msg", envelope(A, BG))
    (captured,) = h.store.captured()
    assert captured.raw is None and captured.acked_ms is not None


# -- split view -----------------------------------------------------------------------


def test_split_view_hides_the_ghost_and_gossip_catches_it(h: Harness) -> None:
    va, va2, vb, vc = view(h, A), view(h, A2), view(h, B), view(h, C)
    for v, dev in ((va, A), (va2, A2), (vb, B), (vc, C)):
        v.verify_lookup(h.ok(dev, "devices", user=ALICE)["kt"], [A, A2])
    # the relay targets alice: a ghost for her, hidden from her own devices only
    h.relay.set_split_view({ALICE})
    h.relay.set_ghost(True)
    h.ghost(ALICE)
    # bob and carol are shown the ghost, with a valid proof, and would fan out to it
    for v, dev in ((vb, B), (vc, C)):
        answer = h.ok(dev, "devices", user=ALICE, since=v.since)
        assert answer["devices"] == [AG, A2, A]
        assert v.verify_lookup(answer["kt"], answer["devices"]).devices == [AG, A2, A]
    # alice's devices never see it: no listing, and monitoring raises nothing
    answer = h.ok(A, "devices", user=ALICE, since=va.since)
    assert answer["devices"] == [A2, A]
    assert va.verify_lookup(answer["kt"], answer["devices"]).devices == [A2, A]
    assert va.monitor(h.ok(A, "monitor", user=ALICE, since=va.since), {A, A2}) == []
    assert va2.monitor(h.ok(A2, "monitor", user=ALICE, since=va2.since), {A, A2}) == []
    assert va.since == vb.since == 5
    # gossip: alice's phone and bob's phone compare checkpoints -> the fork is proven
    alarm = va.compare(vb.gossip() or "")
    assert alarm is not None and alarm.kind == "split-view" and alarm.user == ALICE
    assert vb.compare(va.gossip() or "") is not None
    assert va.compare(va2.gossip() or "") is None and vb.compare(vc.gossip() or "") is None
    # a device moved from one view to the other catches the switch by itself
    h.relay.set_split_view(None)
    with pytest.raises(InconsistentCheckpoint) as exc:
        va.verify_lookup(h.ok(A, "devices", user=ALICE, since=va.since)["kt"], [A])
    assert exc.value.alarm is not None


def test_split_view_events_and_bundles(h: Harness) -> None:
    acts = h.relay.set_split_view({ALICE, CAROL})
    assert h.kinds(acts) == ["relay.split_view"]
    assert h.events.events("relay.split_view")[-1]["hidden_from"] == [ALICE, CAROL]
    assert h.kinds(h.relay.set_ghost(True)) == ["relay.ghost"]
    h.ghost(BOB)
    assert [b["device"] for b in h.ok(C, "bundles", user=BOB)["bundles"]] == [B]
    assert [b["device"] for b in h.ok(A2, "bundles", user=BOB)["bundles"]] == [B]
    assert [b["device"] for b in h.ok(A2, "bundles", user=BOB)["bundles"]] == [B]
    bundles = h.ok(B, "bundles", user=BOB)
    assert [b["device"] for b in bundles["bundles"]] == [BG]
    assert view(h, B).verify_lookup(bundles["kt"], bundles["bundles"]).devices == [BG]
