"""relay.router: every decision the relay makes, without a broker."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.router import Ack, Action, Event, Limits, Publish, Relay
from relay.store import Store
from wire.envelope import Envelope
from wire.events import EventLog

A, A2, B = "alice@acme.phone", "alice@acme.laptop", "bob@globex.phone"
Req = Callable[..., bytes]


def out(dev: str, kind: str = "msg") -> str:
    return f"doormat/out/{dev}/{kind}"


def publishes(actions: list[Action]) -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish)]


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, Event)]


def replies(actions: list[Action], dev: str) -> list[dict[str, Any]]:
    return [json.loads(p.payload) for p in publishes(actions) if p.topic == f"doormat/in/{dev}/dir"]


def rejection(actions: list[Action]) -> dict[str, Any]:
    (ev,) = [a for a in actions if isinstance(a, Event) and a.kind == "relay.rejected"]
    return ev.fields


@pytest.fixture
def enrolled(relay: Relay, dir_req: Req) -> Relay:
    for ent, user, dev in (
        ("acme", "alice@acme", A),
        ("acme", "alice@acme", A2),
        ("globex", "bob@globex", B),
    ):
        acts = relay.handle(f"doormat/out/{ent}/dir", dir_req("enrol", user=user, device=dev))
        assert replies(acts, ent) == [{"req": "r1", "ok": True, "device": dev}]
    return relay


# -- msg ------------------------------------------------------------------------------


def test_accept_stores_then_publishes_then_acks(
    enrolled: Relay, make_envelope: Callable[..., Envelope], events: EventLog
) -> None:
    env = make_envelope(A, B, body_len=512)
    raw = env.encode()
    acts = enrolled.handle(out(A), raw)
    assert acts[-1] == Ack()
    assert publishes(acts) == [Publish(f"doormat/in/{B}/msg", raw)]
    assert kinds(acts) == ["relay.accepted", "relay.delivered"]
    (accepted,) = events.events("relay.accepted")
    assert accepted["actor"] == "relay"
    assert accepted["id"] == env.id and accepted["from"] == A and accepted["to"] == B
    assert accepted["size"] == len(raw) and accepted["bucket"] == 512
    assert accepted["ts"] == env.ts and accepted["excerpt"] == env.body[:16].hex()
    assert [p.raw for p in enrolled.store.pending()] == [raw]
    assert [c.raw for c in enrolled.store.captured()] == [raw]


def test_duplicate_not_stored_still_acked(
    enrolled: Relay, make_envelope: Callable[..., Envelope]
) -> None:
    env = make_envelope(A, B)
    enrolled.handle(out(A), env.encode())
    again = enrolled.handle(out(A), env.encode())
    assert again[-1] == Ack() and publishes(again) == []
    assert kinds(again) == ["relay.duplicate"]
    # and after delivery and ack it is still a duplicate
    enrolled.handle(out(B, "ack"), json.dumps({"from": A, "id": env.id}).encode())
    replay = enrolled.handle(out(A), env.encode())
    assert kinds(replay) == ["relay.duplicate"] and publishes(replay) == []
    assert enrolled.store.pending_count() == 0
    # same id to another device of the same user is a different envelope
    fan = enrolled.handle(out(A), make_envelope(A, A2, msg_id=env.id).encode())
    assert kinds(fan) == ["relay.accepted", "relay.delivered"]


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "reply_to"),
    [
        ("doormat/out/x/other", b"{}", "not an outbound topic", None),
        ("doormat/in/" + B + "/msg", b"{}", "not an outbound topic", None),
        ("doormat/out/acme/msg", b"{}", "topic owner is not a device", "acme"),
        ("doormat/out/relay/msg", b"{}", "the relay's own topic", None),
        ("doormat/out/NOT+AN+ID/msg", b"{}", "topic owner is not a device", None),
        (out(A), b"x" * 70_000, "envelope too large", A),
        (out(A), b"not json", "malformed envelope: envelope is not JSON", A),
        (out(A), b"[1]", "malformed envelope: envelope must be a JSON object", A),
        (out(A), b'{"v":1}', "malformed envelope: envelope lacks field(s)", A),
        (out(A), b"\xff\xfe", "malformed envelope", A),
        (out(A), b"[" * 100_000, "envelope too large", A),
        (out(A), b"[" * 60_000, "malformed envelope", A),
    ],
)
def test_bad_msg_rejected(
    enrolled: Relay, topic: str, payload: bytes, reason: str, reply_to: str | None
) -> None:
    acts = enrolled.handle(topic, payload)
    assert acts[-1] == Ack()
    assert rejection(acts)["reason"].startswith(reason)
    if reply_to is None:
        assert publishes(acts) == []
    else:
        (answer,) = replies(acts, reply_to)
        assert answer["ok"] is False and answer["error"].startswith(reason)
    assert enrolled.store.pending_count() == 0


@pytest.mark.parametrize(
    ("sender_topic", "sender", "recipient", "reason"),
    [
        (A, B, A, "sender mismatch"),  # alice's topic, claims to be bob
        (A, A, "dave@acme.phone", "unknown recipient"),
        ("eve@acme.phone", "eve@acme.phone", B, "sender not enrolled"),
    ],
)
def test_misaddressed_rejected(
    enrolled: Relay,
    make_envelope: Callable[..., Envelope],
    sender_topic: str,
    sender: str,
    recipient: str,
    reason: str,
) -> None:
    env = make_envelope(sender, recipient)
    acts = enrolled.handle(out(sender_topic), env.encode())
    ev = rejection(acts)
    assert ev["reason"] == reason and ev["owner"] == sender_topic and ev["id"] == env.id
    (answer,) = replies(acts, sender_topic)
    assert answer == {
        "req": None,
        "ok": False,
        "error": reason,
        "op": "msg",
        "id": env.id,
        "to": recipient,
    }
    assert enrolled.store.pending_count() == 0 and acts[-1] == Ack()


# -- ack ------------------------------------------------------------------------------


def test_ack_deletes_pending(
    enrolled: Relay, make_envelope: Callable[..., Envelope], events: EventLog
) -> None:
    env = make_envelope(A, B)
    enrolled.handle(out(A), env.encode())
    ack = json.dumps({"from": A, "id": env.id}).encode()
    # only the recipient's ack counts: alice's laptop acking it does nothing
    enrolled.handle(out(A2, "ack"), ack)
    assert enrolled.store.pending_count() == 1
    acts = enrolled.handle(out(B, "ack"), ack)
    assert acts[-1] == Ack() and publishes(acts) == []
    assert enrolled.store.pending_count() == 0
    again = enrolled.handle(out(B, "ack"), ack)
    assert [e["was_pending"] for e in events.events("relay.acked")] == [False, True, False]
    assert again[-1] == Ack()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", "malformed ack: not JSON"),
        (b"[]", "malformed ack: not a JSON object"),
        (b'{"id": "' + b"a" * 32 + b'"}', "malformed ack: expected exactly"),
        (json.dumps({"from": "x", "id": "a" * 32}).encode(), "malformed ack: 'from'"),
        (json.dumps({"from": A, "id": "A" * 32}).encode(), "malformed ack: 'id'"),
        (json.dumps({"from": A, "id": 5}).encode(), "malformed ack: 'id'"),
        (b" " * 2000, "ack too large"),
    ],
)
def test_bad_ack_rejected(enrolled: Relay, payload: bytes, reason: str) -> None:
    acts = enrolled.handle(out(B, "ack"), payload)
    assert rejection(acts)["reason"].startswith(reason)
    (answer,) = replies(acts, B)
    assert answer["ok"] is False and answer["op"] == "ack"
    assert acts[-1] == Ack()


def test_ack_from_enterprise_rejected(enrolled: Relay) -> None:
    acts = enrolled.handle("doormat/out/acme/ack", json.dumps({"from": A, "id": "a" * 32}).encode())
    assert rejection(acts)["reason"] == "topic owner is not a device"


# -- directory ------------------------------------------------------------------------


def test_enrol_only_by_own_enterprise(relay: Relay, dir_req: Req) -> None:
    cases = [
        (
            "globex",
            {"user": "alice@acme", "device": A},
            "user alice@acme is not of enterprise globex",
        ),
        ("acme", {"user": "alice@acme", "device": B}, f"device {B} is not a device of alice@acme"),
        (A, {"user": "alice@acme", "device": A}, "enrol is for enterprise servers"),
        ("acme", {"user": "alice", "device": A}, "'user' is not a user id"),
        ("acme", {"user": "alice@acme", "device": "alice"}, "'device' is not a device id"),
        ("acme", {"user": "alice@acme"}, "missing field(s): device"),
        ("acme", {"user": "alice@acme", "device": A, "x": 1}, "unknown field(s): x"),
    ]
    for owner, fields, reason in cases:
        acts = relay.handle(f"doormat/out/{owner}/dir", dir_req("enrol", req="e", **fields))
        assert rejection(acts)["reason"] == reason
        assert replies(acts, owner) == [{"req": "e", "ok": False, "op": "enrol", "error": reason}]
    assert not relay.store.directory.is_enrolled(A)
    acts = relay.handle("doormat/out/acme/dir", dir_req("enrol", user="alice@acme", device=A))
    assert kinds(acts) == ["relay.enrolled"] and relay.store.directory.is_enrolled(A)
    # repeating an enrolment is harmless
    acts = relay.handle("doormat/out/acme/dir", dir_req("enrol", user="alice@acme", device=A))
    assert replies(acts, "acme")[0]["ok"] is True


def test_publish_devices_bundles(enrolled: Relay, publish_req: Req, dir_req: Req) -> None:
    acts = enrolled.handle(out(B, "dir"), publish_req(2))
    assert replies(acts, B) == [{"req": "p1", "ok": True, "one_time_prekeys": 2}]
    assert kinds(acts) == ["relay.published"]
    enrolled.handle(out(A, "dir"), publish_req(1, identity=b"alice-phone"))
    enrolled.handle(out(A2, "dir"), publish_req(0, identity=b"alice-laptop"))

    acts = enrolled.handle(out(A, "dir"), dir_req("devices", user="alice@acme"))
    assert replies(acts, A)[0]["devices"] == [A2, A]
    acts = enrolled.handle(out(A, "dir"), dir_req("devices", user="nobody@acme"))
    assert replies(acts, A)[0] == {"req": "r1", "ok": True, "devices": []}

    served = []
    for _ in range(3):
        acts = enrolled.handle(out(A, "dir"), dir_req("bundles", user="bob@globex"))
        (answer,) = replies(acts, A)
        (bundle,) = answer["bundles"]
        assert bundle["device"] == B and set(bundle["signed_prekey"]) == {"id", "key", "sig"}
        served.append(bundle["one_time_prekey"])
        (ev,) = [a for a in acts if isinstance(a, Event) and a.kind == "relay.bundle_served"]
        assert ev.fields["one_time_prekey"] is (bundle["one_time_prekey"] is not None)
    assert [s["id"] if s else None for s in served] == [1, 2, None]

    # fan-out to one's own user: the requester is left out
    acts = enrolled.handle(out(A, "dir"), dir_req("bundles", user="alice@acme"))
    assert [b["device"] for b in replies(acts, A)[0]["bundles"]] == [A2]


def test_publish_rejections(enrolled: Relay, publish_req: Req, dir_req: Req) -> None:
    enrolled.handle(out(A, "dir"), publish_req(1))
    good_spk = {"id": 1, "key": "aw==", "sig": "aw=="}
    cases: list[tuple[str, bytes, str]] = [
        (
            A,
            publish_req(1, identity=b"other", first_otpk_id=50),
            "identity already published with a different key",
        ),
        ("eve@acme.phone", publish_req(1), "device not enrolled"),
        ("acme", publish_req(1), "this op is for devices"),
        (
            A,
            dir_req("publish", identity="***", signed_prekey=good_spk),
            "'identity' is not valid base64",
        ),
        (A, dir_req("publish", identity=""), "'identity' must be a non-empty base64 string"),
        (A, dir_req("publish", identity="QQ==" * 300), "'identity' is over 1024 characters"),
        (A2, dir_req("publish", identity="QQ=="), "first publish needs a signed_prekey"),
        (
            A,
            dir_req("publish", identity="SUlJ", signed_prekey={"id": 1}),
            "'signed_prekey' must be {id, key, sig}",
        ),
        (
            A,
            dir_req("publish", identity="SUlJ", signed_prekey={**good_spk, "id": -1}),
            "'signed_prekey.id' must be a non-negative integer",
        ),
        (
            A,
            dir_req("publish", identity="SUlJ", one_time_prekeys={}),
            "'one_time_prekeys' must be a list",
        ),
        (
            A,
            dir_req("publish", identity="SUlJ", one_time_prekeys=[{"id": 1}]),
            "one_time_prekeys[0] must be {id, key}",
        ),
        (
            A,
            dir_req("publish", identity="SUlJ", one_time_prekeys=[{"id": True, "key": "aw=="}]),
            "'one_time_prekeys[0].id' must be a non-negative integer",
        ),
        (
            A,
            dir_req(
                "publish",
                identity="SUlJ",
                one_time_prekeys=[{"id": i, "key": "aw=="} for i in range(201)],
            ),
            "too many one_time_prekeys: 201, limit 200 per request",
        ),
        (A, dir_req("publish"), "missing field(s): identity"),
    ]
    for owner, payload, reason in cases:
        acts = enrolled.handle(out(owner, "dir"), payload)
        assert rejection(acts)["reason"] == reason, reason
        (answer,) = replies(acts, owner)
        assert answer["ok"] is False and answer["error"] == reason and answer["op"] == "publish"
    assert enrolled.store.directory.otpk_count(A) == 1


def test_prekey_pool_limit(store: Store, events: EventLog, dir_req: Req, publish_req: Req) -> None:
    relay = Relay(store, events, limits=Limits(max_otpks_held=5))
    relay.handle("doormat/out/acme/dir", dir_req("enrol", user="alice@acme", device=A))
    relay.handle(out(A, "dir"), publish_req(4))
    acts = relay.handle(out(A, "dir"), publish_req(2, first_otpk_id=10))
    assert rejection(acts)["reason"] == "would hold 6 one-time prekeys, over the limit of 5"
    assert store.directory.otpk_count(A) == 4


@pytest.mark.parametrize(
    ("owner", "payload", "reason", "answer_req"),
    [
        (A, b"{", "malformed dir: not JSON", None),
        (A, b"42", "malformed dir: not a JSON object", None),
        (A, b"{}", "malformed request: 'req'", None),
        (A, json.dumps({"req": "x" * 65, "op": "sync"}).encode(), "malformed request: 'req'", None),
        (A, json.dumps({"req": "q", "op": "steal"}).encode(), "unknown op 'steal'", "q"),
        (
            A,
            json.dumps({"req": "q", "op": "sync", "more": 1}).encode(),
            "unknown field(s): more",
            "q",
        ),
        (A, b" " * 200_000, "dir too large", None),
        (
            "dave@acme.phone",
            json.dumps({"req": "q", "op": "sync"}).encode(),
            "device not enrolled",
            "q",
        ),
        (
            A,
            json.dumps({"req": "q", "op": "devices", "user": "#"}).encode(),
            "'user' is not a user id",
            "q",
        ),
        (
            A,
            json.dumps({"req": "q", "op": "bundles", "user": 3}).encode(),
            "'user' is not a user id",
            "q",
        ),
    ],
)
def test_bad_dir_rejected(
    enrolled: Relay, owner: str, payload: bytes, reason: str, answer_req: str | None
) -> None:
    acts = enrolled.handle(out(owner, "dir"), payload)
    assert rejection(acts)["reason"].startswith(reason)
    (answer,) = replies(acts, owner)
    assert (
        answer["ok"] is False and answer["req"] == answer_req and answer["error"].startswith(reason)
    )
    assert acts[-1] == Ack()


def test_sync_and_startup_republish(
    enrolled: Relay, make_envelope: Callable[..., Envelope], events: EventLog, dir_req: Req
) -> None:
    envs = [make_envelope(A, B), make_envelope(A2, B), make_envelope(B, A)]
    for env in envs:
        enrolled.handle(out(env.sender), env.encode())
    acts = enrolled.handle(out(B, "dir"), dir_req("sync", req="s"))
    assert [p.payload for p in publishes(acts)][:2] == [envs[0].encode(), envs[1].encode()]
    assert replies(acts, B) == [{"req": "s", "ok": True, "pending": 2}]

    # a fresh relay over the same store republishes everything pending, in order
    restarted = Relay(enrolled.store, events)
    acts = restarted.startup()
    assert [(p.topic, p.payload) for p in publishes(acts)] == [
        (f"doormat/in/{e.recipient}/msg", e.encode()) for e in envs
    ]
    assert kinds(acts)[0] == "relay.started"
    enrolled.handle(out(B, "ack"), json.dumps({"from": A, "id": envs[0].id}).encode())
    assert len(publishes(restarted.startup())) == 2


def test_internal_error_is_contained_store_error_is_not(
    enrolled: Relay, make_envelope: Callable[..., Envelope], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(enrolled.store, "accept", boom)
    acts = enrolled.handle(out(A), make_envelope(A, B).encode())
    assert rejection(acts)["reason"] == "internal error: RuntimeError" and acts[-1] == Ack()

    def integrity(*_: object) -> None:
        raise sqlite3.IntegrityError("a bug of ours")

    monkeypatch.setattr(enrolled.store, "accept", integrity)
    acts = enrolled.handle(out(A), make_envelope(A, B).encode())
    assert rejection(acts)["reason"] == "internal error: IntegrityError" and acts[-1] == Ack()

    def disk(*_: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(enrolled.store, "accept", disk)
    with pytest.raises(sqlite3.OperationalError):
        enrolled.handle(out(A), make_envelope(A, B).encode())


_owner = st.sampled_from([A, B, "acme", "relay", "x", "", "eve@acme.phone", "a/b"])
_kind = st.sampled_from(["msg", "ack", "dir", "zzz", ""])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=5)
    ),
    max_leaves=20,
)
_payload = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "req": st.text(max_size=70),
            "op": st.sampled_from(["enrol", "publish", "devices", "bundles", "sync"]),
        },
        optional={
            "user": _json_values,
            "device": _json_values,
            "identity": _json_values,
            "signed_prekey": _json_values,
            "one_time_prekeys": _json_values,
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(owner=_owner, kind=_kind, payload=_payload)
def test_handle_never_raises(enrolled: Relay, owner: str, kind: str, payload: bytes) -> None:
    acts = enrolled.handle(f"doormat/out/{owner}/{kind}", payload)
    assert acts[-1] == Ack()
    assert all(isinstance(a, Publish | Ack | Event) for a in acts)
    # a refusal is a decision with a reason, never a contained crash
    assert not any(
        isinstance(a, Event) and str(a.fields.get("reason", "")).startswith("internal error")
        for a in acts
    )


def test_bundles_for_chosen_devices(enrolled: Relay, publish_req: Req, dir_req: Req) -> None:
    enrolled.handle(out(A, "dir"), publish_req(2, identity=b"phone"))
    enrolled.handle(out(A2, "dir"), publish_req(2, identity=b"laptop"))
    enrolled.handle(out(B, "dir"), publish_req(0, identity=b"bob"))
    acts = enrolled.handle(out(B, "dir"), dir_req("bundles", user="alice@acme", devices=[A2]))
    assert [b["device"] for b in replies(acts, B)[0]["bundles"]] == [A2]
    directory = enrolled.store.directory
    assert directory.otpk_count(A) == 2 and directory.otpk_count(A2) == 1
    for bad in (["bob@globex.phone"], "x", [A] * 65, [1]):
        acts = enrolled.handle(out(B, "dir"), dir_req("bundles", user="alice@acme", devices=bad))
        assert rejection(acts)["reason"].startswith("'devices' must")


def test_dir_from_a_non_account_topic(enrolled: Relay, dir_req: Req) -> None:
    acts = enrolled.handle("doormat/out/Not-An-Id/dir", dir_req("sync"))
    assert rejection(acts)["reason"] == "topic owner is not a device or an enterprise"
    assert publishes(acts) == [] and acts[-1] == Ack()
