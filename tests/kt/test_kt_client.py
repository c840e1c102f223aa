"""clients.kt, sans I/O: what a device accepts from the directory and what it refuses,
with the kt objects a real relay.kt log produces (and tampered copies of them)."""

from __future__ import annotations

import ast
import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.kt import REASON_KEY_MISMATCH, REASON_NOT_ENROLLED, DirectoryView, compare
from relay.kt import DirectoryLog, LogRow
from tests.kt.kt_helpers import SIGNER
from wire.checkpoint import Checkpoint, sign_checkpoint
from wire.kt import (
    KT_ORIGIN,
    Alarm,
    CheckpointInvalid,
    IdentityMismatch,
    InconsistentCheckpoint,
    MalformedKTAnswer,
    StaleCheckpoint,
    UnprovenDevice,
    entry_bytes,
)
from wire.note import Signer

ROOT = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@acme", "bob@acme"
A, A2, AG, B = "alice@acme.phone", "alice@acme.laptop", "alice@acme.gov", "bob@acme.phone"
VKEY = SIGNER.verifier().vkey()


def key(device: str) -> str:
    return base64.b64encode(device.encode()).decode()


class Log:
    """A relay-side log with rows by device, for building answers."""

    def __init__(self, signer: Signer = SIGNER) -> None:
        self.log = DirectoryLog(signer)
        self.rows: list[LogRow] = []

    def add(self, device: str, *, identity: str | None = None, op: str = "add") -> LogRow:
        user = device.rsplit(".", 1)[0]
        row = LogRow(
            len(self.rows),
            user,
            device,
            op,
            entry_bytes(user, device, identity or key(device), op, 1000 + len(self.rows)),  # type: ignore[arg-type]
            device.endswith(".gov"),
        )
        self.rows.append(row)
        self.log.extend([row])
        return row

    def kt(self, *devices: str, since: int | None = None, hidden: bool = False) -> dict[str, Any]:
        latest = {r.device: r for r in self.rows}
        return self.log.answer(
            [latest[d] for d in devices if d in latest], since=since, hidden=hidden
        )

    def monitor(self, user: str, since: int | None = None, hidden: bool = False) -> dict[str, Any]:
        rows = [r for r in self.rows if r.user == user]
        return {"user": user, "kt": self.log.answer(rows, since=since, hidden=hidden)}


@pytest.fixture
def log() -> Log:
    log = Log()
    for d in (A, A2, B):
        log.add(d)
    return log


def view(owner: str = A) -> DirectoryView:
    return DirectoryView(VKEY, owner=owner)


def flip_b64(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# -- lookups --------------------------------------------------------------------------


def test_lookup_verified_and_view_advances_only_with_consistency(log: Log) -> None:
    v = view()
    assert v.since is None
    r = v.verify_lookup(log.kt(A, A2), [A, A2])
    assert r.verified == [(A, key(A)), (A2, key(A2))] and r.refused == [] and r.size == 3
    assert v.since == 3 and v.changed
    log.add("bob@acme.laptop")
    # a newer checkpoint without a proof from the held size: ask again, nothing used
    with pytest.raises(StaleCheckpoint, match="ask again with since=3"):
        v.verify_lookup(log.kt(B), [B])
    with pytest.raises(StaleCheckpoint):
        v.verify_lookup(log.kt(B, since=1), [B])  # a proof from another size
    assert v.since == 3
    r = v.verify_lookup(log.kt(B, since=3), [B])
    assert r.devices == [B] and v.since == 4
    # an answer at a size seen before is still usable; an unseen older one is not
    assert v.verify_lookup(log.kt(A), [A]).devices == [A]  # size 4 again
    old = Log()
    for d in (A, A2):
        old.add(d)
    with pytest.raises(StaleCheckpoint, match="older than the held size 4"):
        v.verify_lookup(old.kt(A), [A])


def test_bundles_identity_must_match_the_log(log: Log) -> None:
    v = view()
    bundles = [{"device": A2, "identity": key(A2)}, {"device": B, "identity": key("mallory")}]
    r = v.verify_lookup(log.kt(A2, B), bundles)
    assert r.verified == [(A2, key(A2))]
    (err,) = r.refused
    assert isinstance(err, IdentityMismatch) and err.device == B
    assert "not the one logged in entry 2" in str(err)
    with pytest.raises(IdentityMismatch):
        r.raise_for_refused()


def test_device_without_entry_or_with_bad_proof_is_not_used(log: Log) -> None:
    v = view()
    kt = log.kt(A, A2)
    kt["entries"][1]["proof"][0] = flip_b64(kt["entries"][1]["proof"][0])
    r = v.verify_lookup(kt, [A, A2, B])
    assert r.devices == [A]
    reasons = {e.device: e.reason for e in r.refused}
    assert reasons[A2].startswith("inclusion proof of log entry 1 fails: root mismatch")
    assert reasons[B] == "no log entry for it in the answer"
    assert all(type(e) is UnprovenDevice for e in r.refused)
    # no kt at all: nothing listed is used
    r = view().verify_lookup(None, [A])
    assert (
        r.verified == [] and r.refused[0].reason == "the answer carries no key-transparency proof"
    )
    assert view().verify_lookup(None, []).verified == []


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: e.update(identity=key("mallory")),
        lambda e: e.update(t=e["t"] + 1),
        lambda e: e.update(device="alice@acme.tablet"),
    ],
)
def test_tampered_entry_refused(log: Log, tamper: Any) -> None:
    kt = log.kt(A)
    tamper(kt["entries"][0]["entry"])
    device = kt["entries"][0]["entry"]["device"]
    r = view().verify_lookup(kt, [device])
    assert r.verified == [] and "inclusion proof of log entry 0 fails" in r.refused[0].reason


def test_index_moved_refused(log: Log) -> None:
    kt = log.kt(A2)
    kt["entries"][0]["index"] = 0
    (err,) = view().verify_lookup(kt, [A2]).refused
    assert "inclusion proof of log entry 0 fails" in err.reason


def test_revoked_device_refused(log: Log) -> None:
    log.add(A2, op="revoke")
    (err,) = view().verify_lookup(log.kt(A2), [A2]).refused
    assert err.reason == "its latest log entry (3) revokes it"


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda n: n.replace("\n3\n", "\n4\n", 1), "invalid signature"),
        (
            lambda n: n.replace("doormat.example/directory\n", "doormat.example/other\n", 1),
            "invalid signature|not signed",
        ),
        (
            lambda n: sign_checkpoint(
                Checkpoint(KT_ORIGIN, 3, b"\x00" * 32), Signer.generate(KT_ORIGIN)
            ),
            "no signature from a known key",
        ),
        (lambda n: "garbage", "refused"),
    ],
)
def test_bad_checkpoint_refused(log: Log, tamper: Any, match: str) -> None:
    kt = log.kt(A)
    kt["checkpoint"] = tamper(kt["checkpoint"])
    v = view()
    with pytest.raises(CheckpointInvalid, match=match):
        v.verify_lookup(kt, [A])
    assert v.since is None  # nothing of the answer was taken


def test_wrong_origin_refused() -> None:
    other = Signer.generate("doormat.example/audit")
    note = sign_checkpoint(Checkpoint("doormat.example/audit", 0, bytes(32)), other)
    v = DirectoryView(other.verifier().vkey(), origin="doormat.example/audit")
    with pytest.raises(ValueError, match="pinned key is for"):
        DirectoryView(other.verifier().vkey())
    assert v.verify_lookup({"checkpoint": note, "entries": []}, []).verified == []


def test_failing_consistency_is_a_fork_alarm(log: Log) -> None:
    v = view()
    v.verify_lookup(log.kt(A), [A])
    log.add("bob@acme.laptop")
    kt = log.kt(B, since=3)
    kt["consistency"][0] = flip_b64(kt["consistency"][0])
    with pytest.raises(InconsistentCheckpoint, match="not an extension of the held one") as exc:
        v.verify_lookup(kt, [B])
    assert exc.value.alarm is not None and exc.value.alarm.kind == "split-view"
    assert v.alarms == [exc.value.alarm] and v.since == 3


def test_same_size_other_root_is_a_fork_alarm(log: Log) -> None:
    forked = Log()
    for d in (A, A2, "bob@acme.tablet"):
        forked.add(d)
    v = view()
    v.verify_lookup(log.kt(A), [A])
    with pytest.raises(InconsistentCheckpoint, match="relay signed root") as exc:
        v.verify_lookup(forked.kt(A), [A])
    alarm = exc.value.alarm
    assert alarm is not None and alarm.evidence == (
        log.kt()["checkpoint"],
        forked.kt()["checkpoint"],
    )


@pytest.mark.parametrize(
    ("kt", "match"),
    [
        ([], "'kt' must be an object"),
        ({"checkpoint": "x", "entries": [], "extra": 1}, "unknown field"),
        ({"entries": []}, "kt.checkpoint must be"),
        ({"checkpoint": "x", "entries": {}}, "kt.entries must be a list"),
        ({"checkpoint": "x", "entries": [{"index": 0}]}, "exactly {index, entry, proof}"),
        (
            {"checkpoint": "x", "entries": [{"index": -1, "entry": {}, "proof": []}]},
            "must be a non-negative integer",
        ),
        (
            {"checkpoint": "x", "entries": [{"index": 0, "entry": {"user": "x"}, "proof": []}]},
            "an entry must be exactly",
        ),
        ({"checkpoint": "x", "consistency": ["AAAA"], "since": 0}, "is 3 bytes, expected 32"),
        ({"checkpoint": "x", "consistency": ["***"], "since": 0}, "not valid base64"),
        ({"checkpoint": "x", "consistency": [], "since": True}, "kt.since must be"),
    ],
)
def test_malformed_kt_refused(kt: Any, match: str) -> None:
    with pytest.raises(MalformedKTAnswer, match=match):
        view().verify_lookup(kt, [A])


def test_malformed_entries_refused(log: Log) -> None:
    for bad in (
        {"op": "steal"},
        {"user": "bob@acme"},  # not the device's user
        {"t": 1.5},
        {"identity": ""},
        {"device": "alice"},
    ):
        kt = log.kt(A)
        kt["entries"][0]["entry"].update(bad)
        with pytest.raises(MalformedKTAnswer):
            view().verify_lookup(kt, [A])


# -- monitoring -----------------------------------------------------------------------


def test_monitor_alarms_on_the_ghost_only(log: Log) -> None:
    v = view()
    assert v.monitor(log.monitor(ALICE), {A, A2}) == []
    log.add(AG)
    (alarm,) = v.monitor(log.monitor(ALICE, since=3), {A, A2})
    assert alarm == Alarm(ALICE, AG, 1003, REASON_NOT_ENROLLED, "unenrolled-device", 3)
    assert alarm.reason == "device not enrolled by the user's enterprise"
    # the same entry alarms once; the view remembers (and serialises) it
    assert v.monitor(log.monitor(ALICE, since=4), {A, A2}) == []
    assert DirectoryView.from_json(v.to_json()).alarms == [alarm]


def test_monitor_key_mismatch_alarm(log: Log) -> None:
    (alarm,) = view().monitor(log.monitor(ALICE), {A, A2}, known_identities={A: key("not-mine")})
    assert (alarm.device, alarm.reason, alarm.kind) == (A, REASON_KEY_MISMATCH, "key-mismatch")
    assert view().monitor(log.monitor(ALICE), {A, A2}, known_identities={A: key(A)}) == []


def test_monitor_refuses_unproven_or_foreign_entries(log: Log) -> None:
    answer = log.monitor(ALICE)
    answer["kt"]["entries"][0]["entry"]["t"] += 1
    with pytest.raises(UnprovenDevice, match="inclusion proof of log entry 0 fails"):
        view().monitor(answer, {A, A2})
    answer = log.monitor(ALICE)
    answer["kt"]["entries"].append(log.kt(B)["entries"][0])
    with pytest.raises(MalformedKTAnswer, match="has an entry about bob@acme"):
        view().monitor(answer, {A, A2})
    with pytest.raises(MalformedKTAnswer, match="not alice@acme"):
        view().monitor(log.monitor(BOB), {B})


_DEVICES = [f"alice@acme.d{i}" for i in range(8)]


@settings(max_examples=60, deadline=None)
@given(
    logged=st.lists(st.sampled_from(_DEVICES), min_size=1, max_size=8, unique=True),
    enrolled=st.sets(st.sampled_from(_DEVICES)),
)
def test_monitor_alarms_exactly_on_non_enrolled(logged: list[str], enrolled: set[str]) -> None:
    log = Log()
    for d in logged:
        log.add(d)
    alarms = DirectoryView(VKEY, owner=_DEVICES[0]).monitor(log.monitor(ALICE), enrolled)
    assert [a.device for a in alarms] == [d for d in logged if d not in enrolled]


# -- comparing checkpoints --------------------------------------------------------------


def test_compare_detects_a_split_view() -> None:
    log = Log()
    for d in (A, A2, B):
        log.add(d)
    log.add(AG)  # row 3: the ghost
    full, hidden = log.kt()["checkpoint"], log.kt(hidden=True)["checkpoint"]
    alarm = compare(full, hidden, verifier=VKEY, user=ALICE, now=5)
    assert alarm is not None and alarm.kind == "split-view" and alarm.time == 5
    assert alarm.reason.startswith("split view: the relay signed two different logs (size 4")
    assert compare(full, full, verifier=VKEY) is None
    # different sizes: undecided without a proof; a proof decides
    small = log.log.answer([], since=2)
    assert compare(full, _note_at(log, 2), verifier=VKEY) is None
    assert (
        compare(
            _note_at(log, 2),
            full,
            verifier=VKEY,
            consistency=[base64.b64decode(h) for h in small["consistency"]],
        )
        is None
    )
    bad = [base64.b64decode(flip_b64(h)) for h in small["consistency"]]
    assert compare(_note_at(log, 2), full, verifier=VKEY, consistency=bad) is not None
    # an unsigned or foreign note proves nothing: refused, not an alarm
    forged = sign_checkpoint(Checkpoint(KT_ORIGIN, 4, bytes(32)), Signer.generate(KT_ORIGIN))
    with pytest.raises(CheckpointInvalid):
        compare(full, forged, verifier=VKEY)


def _note_at(log: Log, size: int) -> str:
    return sign_checkpoint(Checkpoint(KT_ORIGIN, size, log.log.root(size)), SIGNER)


def test_view_compare_uses_history(log: Log) -> None:
    v = view()
    v.verify_lookup(log.kt(A), [A])  # holds size 3
    held_at_3 = v.gossip()
    assert held_at_3 is not None and v.compare(held_at_3) is None
    log.add("bob@acme.laptop")
    v.verify_lookup(log.kt(B, since=3), [B])  # holds size 4 now
    forked = Log()
    for d in (A, A2, "bob@acme.tablet"):
        forked.add(d)
    alarm = v.compare(forked.kt()["checkpoint"], now=9)  # size 3: compared with history
    assert alarm is not None and alarm.evidence == (held_at_3, forked.kt()["checkpoint"])
    assert v.alarms == [alarm]
    assert view().compare(held_at_3) is None  # a view with nothing held tells nothing


# -- state and rules -----------------------------------------------------------------


def test_state_round_trip(log: Log) -> None:
    v = view()
    v.verify_lookup(log.kt(A), [A])
    log.add(AG)
    v.monitor(log.monitor(ALICE, since=3), {A, A2})
    again = DirectoryView.from_json(v.to_json())
    assert again.since == v.since == 4 and again.note == v.note and again.alarms == v.alarms
    assert again.owner == A and again.user == ALICE
    assert again.monitor(log.monitor(ALICE, since=4), {A, A2}) == []  # remembered
    for broken in ("{}", "[]", json.dumps({**json.loads(v.to_json()), "checkpoint": "x"}), "nope"):
        with pytest.raises(ValueError, match="unusable directory view state"):
            DirectoryView.from_json(broken)
    with pytest.raises(ValueError, match="not a directory verifier key"):
        DirectoryView("nonsense")


def test_kt_modules_are_sans_io() -> None:
    forbidden = {"asyncio", "aiomqtt", "amqtt", "paho", "socket", "sqlite3", "subprocess", "os"}
    for path in ("clients/kt.py", "relay/kt.py", "wire/kt.py"):
        tree = ast.parse((ROOT / path).read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        assert not names & forbidden, (path, names & forbidden)
        if not path.startswith("relay"):
            assert "relay" not in names  # the client checks what the relay says


def test_deepcopy_answers_are_independent(log: Log) -> None:
    """The relay's answer objects are plain JSON: tampering with a copy leaves it intact."""
    kt = log.kt(A)
    copy.deepcopy(kt)["entries"][0]["entry"]["t"] = 0
    assert view().verify_lookup(kt, [A]).devices == [A]
