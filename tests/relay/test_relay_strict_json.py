"""Issue 12, point 9: JSON from outside that json.loads takes but the code behind it
cannot use - an integer of more than 4,300 digits (a bare ValueError from Python's own
guard), NaN/Infinity, 1e999, nesting deep enough for a RecursionError, a repeated key -
is refused clearly, where the relay reads it: envelopes, acks, directory requests, X1.

On today's main an envelope with a 5,000-digit integer was refused as "internal error:
ValueError" (the router's catch-all for a bug), and an X1 request nested 10,000 deep as
"internal error: RecursionError".
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from relay.li import LawfulIntercept
from relay.router import Action, Event, Relay
from tests.relay.test_relay_router import A2, A, B, out, rejection, replies
from wire.envelope import Envelope
from wire.events import EventLog
from wire.ids import INTERCEPTOR_ID

HUGE = "9" * 5000


@pytest.fixture
def enrolled(relay: Relay, dir_req: Callable[..., bytes]) -> Relay:
    for ent, user, dev in (("acme", "alice@acme", A), ("acme", "alice@acme", A2),
                           ("globex", "bob@globex", B)):  # fmt: skip
        relay.handle(f"doormat/out/{ent}/dir", dir_req("enrol", user=user, device=dev))
    return relay


def _envelope_with(make: Callable[..., Envelope], field: str, spelled: str) -> bytes:
    """A well-formed envelope whose ``field`` is replaced by raw JSON text."""
    obj = make(A, B).to_json()
    obj[field] = "@@"
    return json.dumps(obj).replace('"@@"', spelled).encode()


@pytest.mark.parametrize(
    ("field", "spelled", "why"),
    [
        ("ts", HUGE, "an integer of 5000 digits"),
        ("v", HUGE, "an integer of 5000 digits"),
        ("ext", '{"n": ' + HUGE + "}", "an integer of 5000 digits"),
        ("ts", "-" + HUGE, "an integer of 5000 digits"),
        ("ts", "NaN", "NaN is not a JSON number"),
        ("ts", "Infinity", "Infinity is not a JSON number"),
        ("ext", '{"x": -Infinity}', "-Infinity is not a JSON number"),
        ("ts", "1e999", "the number 1e999 is out of range"),
        ("ext", '{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested more than"),
    ],
)
def test_an_envelope_json_cannot_use_is_refused_clearly(
    enrolled: Relay, make_envelope: Callable[..., Envelope], field: str, spelled: str, why: str
) -> None:
    payload = _envelope_with(make_envelope, field, spelled)
    acts = enrolled.handle(out(A), payload)
    reason = rejection(acts)["reason"]
    assert reason.startswith("malformed envelope: envelope is not JSON we accept: "), reason
    assert why in reason and "internal error" not in reason
    (answer,) = replies(acts, A)
    assert answer["ok"] is False and answer["error"] == reason
    assert enrolled.store.pending_count() == 0


def test_a_repeated_key_is_refused(
    enrolled: Relay, make_envelope: Callable[..., Envelope]
) -> None:
    raw = make_envelope(A, B).encode()
    # The same envelope, "to" given twice: which one would the relay route on?
    twice = raw[:-1] + b',"to":"' + A.encode() + b'"}'
    reason = rejection(enrolled.handle(out(A), twice))["reason"]
    assert "repeats the key 'to'" in reason


@pytest.mark.parametrize(
    ("kind", "payload", "why"),
    [
        # (an ack is at most 1 KiB: no room for 4,300 digits, but 100 are no id either)
        ("ack", b'{"from": "alice@acme.phone", "id": ' + b"9" * 100 + b"}", "100 digits"),
        ("ack", b'{"from": NaN, "id": "x"}', "NaN"),
        ("dir", b'{"req": "q", "op": "sync", "since": ' + HUGE.encode() + b"}", "5000 digits"),
        ("dir", b'{"req": "q", "op": "devices", "user": ' + b"[" * 9000 + b"]" * 9000 + b"}",
         "nested more than"),
        ("dir", b'{"req": "q", "op": "sync", "since": Infinity}', "Infinity"),
    ],
)
def test_acks_and_directory_requests_too(
    enrolled: Relay, kind: str, payload: bytes, why: str
) -> None:
    reason = rejection(enrolled.handle(out(A, kind), payload))["reason"]
    assert reason.startswith(f"malformed {kind}: not JSON"), reason
    assert why in reason and "internal error" not in reason


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"op": "activate", "not_before": ' + HUGE.encode() + b"}", "5000 digits"),
        (b'{"op": "activate", "x": ' + b"[" * 4000 + b"]" * 4000 + b"}", "nested more than"),
        (b'{"op": "deactivate", "task_id": NaN}', "NaN"),
        (b'{"op": "activate", "task_id": "T1", "liid": "L1", "targets": [{"format": "user",'
         b' "value": "alice@acme"}], "categories": [["IRI"]], "not_before": 0,'
         b' "not_after": 10}', "categories"),
        (b'{"op": "activate", "task_id": "T1", "liid": "L1", "targets": [{"format": "user",'
         b' "value": "alice@acme"}], "categories": ["IRI"], "not_before": 0,'
         b' "not_after": 1' + b"0" * 30 + b"}", "not_after"),
    ],
)
def test_x1_requests_too(payload: bytes, why: str) -> None:
    events = EventLog()
    li = LawfulIntercept(events, "scoped")
    try:
        (answer,) = li.handle_x1(INTERCEPTOR_ID, payload)
    finally:
        li.close()
    body = json.loads(answer.payload)  # type: ignore[union-attr]
    assert body["ok"] is False and why in body["error"], body
    (refused,) = events.events(kind="relay.x1_refused")
    assert why in refused["reason"]


def test_x1_through_the_router_is_never_an_internal_error(relay: Relay) -> None:
    li = LawfulIntercept(relay.events, "scoped")
    relay.x1 = li.handle_x1
    try:
        acts: list[Action] = relay.handle(
            f"doormat/out/{INTERCEPTOR_ID}/x1", b'{"a": ' + b"[" * 4000 + b"]" * 4000 + b"}"
        )
    finally:
        li.close()
    assert not [a for a in acts if isinstance(a, Event) and a.kind == "relay.rejected"]
    assert [a.kind for a in acts if isinstance(a, Event)] == []
    (refused,) = relay.events.events(kind="relay.x1_refused")
    assert "nested more than" in refused["reason"]
