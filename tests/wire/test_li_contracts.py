"""wire.li's small contracts: the HI-2/HI-3 handover record and the mandated client build
(the warrant, its checks and the trust store have tests/interceptor/test_warrant.py)."""

from __future__ import annotations

import json

import pytest

from wire.b64 import B64Error, b64encode
from wire.envelope import Envelope
from wire.li.builds import (
    BACKDOORS,
    ESCROW_FIELD,
    ClientBuild,
    binding,
    binding_of,
    mandated_field,
)
from wire.li.errors import HandoverError, InterceptError
from wire.li.handover import (
    HANDOVER_INFO,
    check_record,
    decode_record,
    encode_record,
    handover_record,
)

IRI = {"id": "m1", "from": "alice@acme.phone", "to": "bob@globex", "ts": 1, "size": 256}


def test_a_record_round_trips_in_sorted_compact_json() -> None:
    record = handover_record(liid="XX-1", category="IRI", sequence=1, source="relay", **IRI)
    data = encode_record(record)
    assert data == json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    assert decode_record(data) == record
    cc = handover_record(
        liid="XX-1", category="CC", sequence=2, source="archive:acme", plaintext="hi", **IRI
    )
    assert decode_record(encode_record(cc))["plaintext"] == "hi"
    assert HANDOVER_INFO == b"doormat handover v1"  # a wire format: sealed records use it


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"liid": ""}, "'liid'"),
        ({"category": "ALL"}, "'category'"),
        ({"sequence": 0}, "'sequence'"),
        ({"sequence": True}, "'sequence'"),
        ({"source": None}, "'source'"),
        ({"envelope": "AAAA"}, "an IRI record carries no 'envelope'"),
        ({"category": "CC"}, "a CC record carries 'plaintext' or 'envelope'"),
        ({"category": "CC", "plaintext": "a", "envelope": "b"}, "a CC record carries"),
    ],
)
def test_bad_records_are_refused(changes: dict[str, object], needle: str) -> None:
    record = {"liid": "XX-1", "category": "IRI", "sequence": 1, "source": "relay", **IRI}
    record.update(changes)
    with pytest.raises(HandoverError, match=needle) as info:
        check_record(record)
    assert isinstance(info.value, InterceptError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"liid": "x"}', b"\xff"])
def test_decode_refuses_what_is_not_a_record(data: bytes) -> None:
    with pytest.raises(HandoverError):
        decode_record(data)


def test_client_build_round_trip_and_strictness() -> None:
    build = ClientBuild(name="escrow", escrow_public_key=b"k" * 32)
    assert ClientBuild.from_json(build.to_json()) == build
    assert ClientBuild.from_json({}) == ClientBuild()
    assert BACKDOORS == ("none", "escrow", "ghost", "global-key")
    with pytest.raises(B64Error, match="'global_key' is 31 bytes, expected 32"):
        ClientBuild.from_json({"global_key": b64encode(b"k" * 31)})


def test_mandated_fields_are_bound_to_their_envelope() -> None:
    env = Envelope(
        id="0123456789abcdef0123456789abcdef",
        sender="alice@acme.phone",
        recipient="bob@globex.phone",
        ts=1,
        header=b"h",
        body=b"b",
        ext={ESCROW_FIELD: b64encode(b"wrapped"), "global": "not base64!"},
    )
    assert binding_of(env) == binding(env.id, env.sender, env.recipient) == (
        b"0123456789abcdef0123456789abcdef|alice@acme.phone|bob@globex.phone"
    )
    assert mandated_field(env, ESCROW_FIELD) == b"wrapped"
    assert mandated_field(env, "global") is None  # nothing to try a key on
    assert mandated_field(env, "absent") is None
