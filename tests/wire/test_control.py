"""wire/control.py: the control contract (issue 11). Every op, tried from every role that
may not give it, is refused with a clear reason; the arguments are checked strictly."""

from __future__ import annotations

import json

import pytest

from wire import control, ids
from wire.control import OPS, ControlRefused, check_request

# One account per role.
ACCOUNTS = {
    "relay": "relay", "tap": "tap", "vendor": "vendor", "interceptor": "interceptor",
    "court": "court", "agency": "agency", "attacker": "attacker", "enterprise": "acme",
    "device": "alice@acme.phone", "operator": "operator", "lab": "lab",
    "observer": "observer",
}

# Arguments that pass the checks, per op.
GOOD_ARGS = {
    "li.set": {"mode": "blanket"},
    "ghost.set": {"on": True},
    "split.set": {"hidden_from": ["alice@acme"]},
    "mandate.set": {"backdoor": "escrow"},
    "build.make": {"name": "escrow", "escrow_public_key": "AAAA"},
    "build.install": {"build": {"name": "standard"}, "signature": "AAAA"},
    "send": {"to_user": "bob@acme", "text": "hi"},
    "kt.compare": {"note": "x"},
    "warrant.apply": {"case": "OP-1", "targets": ["user:alice@acme"], "categories": ["IRI"],
                      "not_before": 1, "not_after": 2},
    "warrant.cancel": {"authorisation_id": "x"},
    "witness.add": {"request": "AAAA"},
    "warrant.submit": {"warrant": "AAAA"},
    "cc.export": {"authorisation_id": "x", "records": ["AAAA"]},
    "warrant.serve": {"warrant": "AAAA"},
    "handover": {"record": "AAAA"},
    "attack.image-device": {"device": "carol@globex.phone"},
    "events.replay": {"since": 0},
}


def body(op: str, args: dict[str, object] | None = None, req: str = "00ff00ff") -> bytes:
    return control.request(req, op, GOOD_ARGS.get(op, {}) if args is None else args)


def target_for(op: str) -> str:
    return ACCOUNTS[OPS[op].serves[0]]


def test_every_role_has_an_account_of_that_role() -> None:
    assert set(ACCOUNTS) == set(control.ROLES)
    for role, account in ACCOUNTS.items():
        assert ids.role_of(account) == role


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_is_taken_from_its_givers(op: str) -> None:
    for giver in OPS[op].givers:
        for served in OPS[op].serves:
            request = check_request(ACCOUNTS[served], ACCOUNTS[giver], body(op))
            assert (request.op, request.sender, request.role) == (op, ACCOUNTS[giver], giver)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_is_refused_from_every_other_role_with_a_reason(op: str) -> None:
    spec = OPS[op]
    for role, sender in ACCOUNTS.items():
        if role in spec.givers:
            continue
        with pytest.raises(ControlRefused) as refused:
            check_request(target_for(op), sender, body(op))
        message = str(refused.value)
        assert message.startswith(f"{op} may only be given by ")
        assert message.endswith(f"; you are {sender} ({role})")
        assert "\n" not in message


def test_the_refusal_reads_as_the_design_says() -> None:
    with pytest.raises(ControlRefused, match=r"^li\.set may only be given by the operator; "
                       r"you are alice@acme\.phone \(device\)$"):
        check_request("relay", "alice@acme.phone", body("li.set"))
    with pytest.raises(ControlRefused, match=r"^build\.install may only be given by the "
                       r"vendor; you are tap \(tap\)$"):
        check_request("bob@acme.phone", "tap", body("build.install"))


def test_a_user_id_or_garbage_as_sender_has_no_role() -> None:
    with pytest.raises(ControlRefused, match=r"you are alice@acme \(no role\)"):
        check_request("relay", "alice@acme", body("li.set"))


def test_an_op_sent_to_a_party_that_does_not_serve_it() -> None:
    with pytest.raises(ControlRefused, match=r"li\.set is not something tap \(tap\) does"):
        check_request("tap", "operator", body("li.set"))
    with pytest.raises(ControlRefused, match=r"unknown op 'li\.flip'"):
        check_request("relay", "operator", body("li.flip", {}))


@pytest.mark.parametrize(
    ("op", "args", "why"),
    [
        ("li.set", {"mode": "everything"}, "must be one of off, scoped, blanket"),
        ("li.set", {}, "missing argument 'mode'"),
        ("li.set", {"mode": "off", "extra": 1}, "unknown argument 'extra'"),
        ("ghost.set", {"on": 1}, "must be true or false"),
        ("send", {"to_user": "bob", "text": "x"}, "is not a user id"),
        ("send", {"to_user": "bob@acme", "text": "x" * 40000}, "longer than"),
        ("events.replay", {"since": -1}, "must be between 0"),
        ("events.replay", {"since": True}, "must be an integer"),
        ("warrant.apply", {**GOOD_ARGS["warrant.apply"], "categories": ["ALL"]},
         "items must be among IRI, CC"),
        ("attack.image-device", {"device": "carol@globex"}, "is not a device id"),
        ("handover", {"record": "not base64!"}, "is not base64 text"),
        ("build.install", {"build": [], "signature": "AA"}, "must be an object"),
    ],
)
def test_arguments_are_checked(op: str, args: dict[str, object], why: str) -> None:
    giver = ACCOUNTS[OPS[op].givers[0]]
    with pytest.raises(ControlRefused, match=why):
        check_request(target_for(op), giver, body(op, args))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"req": "zz", "op": "li.set", "args": {"mode": "off"}}', "'req' must be"),
        (b'{"req": "00ff00ff", "args": {}}', "'op' is missing"),
        (b'{"req": "00ff00ff", "op": "li.set", "args": [], "x": 1}', "unknown request field"),
        (b'{"req": "00ff00ff", "op": "li.set", "args": []}', "'args' must be an object"),
        (b"{" + b" " * control.MAX_REQUEST_BYTES + b"}", "request too large"),
    ],
)
def test_malformed_requests_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ControlRefused, match=why):
        check_request("relay", "operator", raw)


def test_req_of_finds_whom_to_answer_even_in_a_refused_request() -> None:
    assert control.req_of(body("li.set", {"mode": "x"}, req="abcdef12")) == "abcdef12"
    assert control.req_of(b"garbage") is None
    assert control.req_of(b'{"req": "../x"}') is None


def test_a_large_answer_travels_in_parts_and_is_joined() -> None:
    result = {"envelopes": ["x" * 1000 for _ in range(1000)], "text": "é\"\\"}
    whole = control.answer("00ff00ff", result)
    parts = control.split_answer("00ff00ff", whole, limit=64 * 1024)
    assert len(parts) > 1 and all(len(p) <= 64 * 1024 + 200 for p in parts)
    collector = control.Parts()
    joined = None
    for p in reversed(parts):
        joined = collector.add(json.loads(p))
    assert joined == {"req": "00ff00ff", "ok": True, **result}


def test_a_small_answer_is_one_message() -> None:
    whole = control.answer("00ff00ff", {"mode": "off"})
    assert control.split_answer("00ff00ff", whole) == [whole]


def test_every_op_names_roles_that_exist() -> None:
    for op in OPS.values():
        assert set(op.serves) <= set(control.ROLES), op.name
        assert set(op.givers) <= set(control.ROLES), op.name
        assert op.doc


def test_role_of() -> None:
    assert ids.role_of("relay") == "relay"
    assert ids.role_of("tap") == "tap"
    assert ids.role_of("observer") == "observer"
    assert ids.role_of("acme") == "enterprise"
    assert ids.role_of("alice@acme.phone") == "device"
    assert ids.role_of("alice@acme") is None
    assert ids.role_of("doormat/#") is None
