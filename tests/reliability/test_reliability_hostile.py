"""Hostile input: every parser that takes outside bytes, fuzzed with hypothesis.

Each parser gets raw bytes, text, arbitrary JSON, objects built from its own field
names with arbitrary values, and byte- and field-level mutations of valid inputs. For
every case it must return a value or raise its own documented error with a message
(no other exception, no hang). 200 cases each in the default run, 10,000 each in the
slow suite.

Parsers: ``wire.envelope.parse``; the relay's ``Relay.handle`` (directory requests,
and envelopes and acks on the same path), after which an honest directory exchange
still works; ``wire.li.warrant.parse_warrant``; ``wire.note.parse_note``,
``wire.checkpoint.parse_checkpoint`` and ``open_checkpoint``, ``Verifier.from_vkey``;
the proof JSON of ``doormat ledger verify-proof``; ``doormat.broker.accounts.load_accounts``;
the exercises file (``doormat.lab.spec.parse_exercises``).

A per-case bound (``HANG_S``) catches a hang; it is a liveness check, far above any
real parse time, not a performance assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.encoding import b64, random_b64

HANG_S = 10.0
QUICK, SLOW = 200, 10_000
SIZES = [pytest.param(QUICK, id="200"), pytest.param(SLOW, id="10000", marks=pytest.mark.slow)]


def run(cases: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(value: Any) -> None:
        t0 = time.monotonic()
        check(value)
        took = time.monotonic() - t0
        assert took < HANG_S, f"{took:.1f} s on one input: a hang"

    prop()


def clear(exc: BaseException) -> None:
    """A refusal must say what is wrong: a message, not an empty or enormous one."""
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} without a message"
    assert len(text) < 5000, f"{type(exc).__name__} message of {len(text)} characters"


# -- strategies ------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "a" * 300, "alice@acme.phone", "AAAA", "==", "\u0000", "\ud800x"])
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=12,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def _mutate_bytes(sample: bytes, rng: random.Random) -> bytes:
    data = bytearray(sample)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data += bytes([rng.randrange(256)])
            continue
        i = rng.randrange(len(data))
        op = rng.randrange(6)
        if op == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[i : i + rng.randint(1, 16)]
        elif op == 2:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del data[i:]
        elif op == 4:
            data[i] = rng.choice(b'"{}[],:\\ \n\x00\xff0')
        else:
            j = rng.randrange(len(data))
            data[i:i] = data[j : j + rng.randint(1, 32)]
    return bytes(data)


def _mutate_json(obj: dict[str, Any], rng: random.Random, value: Any) -> dict[str, Any]:
    out = dict(obj)
    keys = list(out)
    op = rng.randrange(4)
    if op == 0 and keys:
        out[rng.choice(keys)] = value
    elif op == 1 and keys:
        del out[rng.choice(keys)]
    elif op == 2:
        out[rng.choice(["x", "extra", "v", "__proto__", *keys])] = value
    else:
        # Nested: replace a field inside a sub-object or list, if any.
        for k in keys:
            if isinstance(out[k], dict) and out[k]:
                sub = dict(out[k])
                sub[rng.choice(list(sub))] = value
                out[k] = sub
                break
            if isinstance(out[k], list) and out[k]:
                lst = list(out[k])
                lst[rng.randrange(len(lst))] = value
                out[k] = lst
                break
    return out


def hostile(samples: list[bytes], fields: list[str]) -> st.SearchStrategy[bytes]:
    """Bytes an attacker could send in place of ``samples``."""
    seeds = st.integers(min_value=0, max_value=2**32)
    objects = [json.loads(s) for s in samples if s.strip().startswith(b"{")]
    parts: list[st.SearchStrategy[bytes]] = [
        st.binary(max_size=600),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        JSON.map(_dumps),
        st.dictionaries(st.sampled_from(fields), JSON, max_size=len(fields)).map(_dumps),
        st.tuples(st.sampled_from(samples), seeds).map(
            lambda p: _mutate_bytes(p[0], random.Random(p[1]))
        ),
        st.sampled_from(samples),
    ]
    if objects:
        parts.append(
            st.tuples(st.sampled_from(objects), seeds, JSON).map(
                lambda p: _dumps(_mutate_json(p[0], random.Random(p[1]), p[2]))
            )
        )
        parts.append(
            st.tuples(st.sampled_from(objects), seeds, JSON, JSON).map(
                lambda p: _dumps(
                    _mutate_json(
                        _mutate_json(p[0], random.Random(p[1]), p[2]), random.Random(p[1] + 1), p[3]
                    )
                )
            )
        )
    return st.one_of(*parts)


# -- envelopes ---------------------------------------------------------------------------


def _envelopes() -> list[bytes]:
    from wire.envelope import Envelope

    base = dict(id="ab" * 16, sender="alice@acme.phone", recipient="bob@globex.phone",
                ts=1_764_400_000_000, header=os.urandom(41), body=os.urandom(528))  # fmt: skip
    return [
        Envelope(**base).encode(),
        Envelope(**base, prekey=os.urandom(107)).encode(),
        Envelope(**base, ext={"escrow": "AAAA", "n": 1}).encode(),
    ]


@pytest.mark.parametrize("cases", SIZES)
def test_envelope_parser(cases: int) -> None:
    from wire.envelope import Envelope, EnvelopeError, parse

    samples = _envelopes()
    fields = ["v", "id", "from", "to", "ts", "header", "body", "prekey", "ext"]

    def check(data: bytes) -> None:
        try:
            env = parse(data)
        except EnvelopeError as exc:
            clear(exc)
            return
        assert isinstance(env, Envelope)
        assert parse(env.encode()) == env  # what was accepted re-encodes to itself

    run(cases, hostile(samples, fields), check)


# -- the relay ----------------------------------------------------------------------------


def _dir_samples() -> list[bytes]:
    reqs = [
        {"req": "r1", "op": "enrol", "user": "zed@acme", "device": "zed@acme.phone"},
        {"req": "r2", "op": "publish", "identity": random_b64(65),
         "signed_prekey": {"id": 1, "key": random_b64(32), "sig": random_b64(64)},
         "one_time_prekeys": [{"id": 1, "key": random_b64(32)}, {"id": 2, "key": random_b64(32)}]},
        {"req": "r3", "op": "devices", "user": "bob@globex"},
        {"req": "r4", "op": "bundles", "user": "bob@globex", "devices": ["bob@globex.phone"]},
        {"req": "r5", "op": "sync"},
        {"req": "r6", "op": "monitor", "user": "alice@acme", "since": 0},
        {"from": "bob@globex.phone", "id": "cd" * 16},
    ]  # fmt: skip
    return [json.dumps(r).encode() for r in reqs] + _envelopes()


OWNERS = ["alice@acme.phone", "bob@globex.phone", "ghost@acme.phone", "acme", "globex",
          "relay", "tap", "interceptor", "Bad Owner", "a/b", ""]  # fmt: skip
KINDS = ["dir", "dir", "dir", "msg", "ack", "archive", "x1", "other"]


@pytest.mark.parametrize("cases", SIZES)
def test_relay_handles_hostile_requests(cases: int, tmp_path: Path) -> None:
    from relay.router import Ack, Event, Publish, Relay
    from relay.store import Store
    from wire.events import EventLog

    store = Store(tmp_path / "relay.sqlite")
    events = EventLog()
    relay = Relay(store, events)

    def req(owner: str, op: str, **fields: Any) -> dict[str, Any]:
        out = relay.handle(
            f"doormat/out/{owner}/dir", json.dumps({"req": "q", "op": op, **fields}).encode()
        )
        answers = [json.loads(a.payload) for a in out if isinstance(a, Publish)]
        return answers[-1]

    def publish(device: str) -> dict[str, Any]:
        return req(device, "publish", identity=random_b64(65),
                   signed_prekey={"id": 1, "key": random_b64(32), "sig": random_b64(64)},
                   one_time_prekeys=[{"id": i, "key": random_b64(32)}
                                     for i in range(1, 4)])  # fmt: skip

    for ent, user in (("acme", "alice@acme"), ("globex", "bob@globex")):
        assert req(ent, "enrol", user=user, device=f"{user}.phone")["ok"]
    assert publish("alice@acme.phone")["ok"] and publish("bob@globex.phone")["ok"]

    payloads = hostile(_dir_samples(), ["req", "op", "user", "device", "devices", "identity",
                                        "signed_prekey", "one_time_prekeys", "since", "from",
                                        "id"])  # fmt: skip
    topics = st.one_of(
        st.tuples(st.sampled_from(OWNERS), st.sampled_from(KINDS)).map(
            lambda p: f"doormat/out/{p[0]}/{p[1]}"
        ),
        st.text(max_size=60),
    )

    def check(case: tuple[str, bytes]) -> None:
        topic, payload = case
        out = relay.handle(topic, payload)  # must not raise
        assert out and isinstance(out[-1], Ack) and sum(isinstance(a, Ack) for a in out) == 1
        for a in out:
            if isinstance(a, Event) and a.kind == "relay.rejected":
                assert isinstance(a.fields["reason"], str) and a.fields["reason"].strip()
            if isinstance(a, Publish):
                assert a.topic.startswith("doormat/in/"), a.topic

    run(cases, st.tuples(topics, payloads), check)

    # The relay still does its job for honest clients afterwards.
    assert req("globex", "enrol", user="carol@globex", device="carol@globex.phone")["ok"]
    assert publish("carol@globex.phone")["ok"]
    answer = req("alice@acme.phone", "bundles", user="carol@globex")
    assert answer["ok"] and [b["device"] for b in answer["bundles"]] == ["carol@globex.phone"]
    assert (
        "carol@globex.phone" in req("alice@acme.phone", "devices", user="carol@globex")["devices"]
    )
    store.close()


# -- warrants -----------------------------------------------------------------------------


def _warrants() -> list[bytes]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from interceptor.court import AgencyKeyPair, ApproverKey, approve, issue

    now = 1_764_400_000
    w = issue(
        case_reference="OP-ANCHOR-7", targets=["device:alice@acme.phone", "user:bob@acme"],
        categories=["IRI", "CC"], not_before=now - 3600, not_after=now + 3600, jurisdiction="XX",
        csp_id="doormat",
        agency=AgencyKeyPair("agency", X25519PrivateKey.from_private_bytes(bytes([5]) * 32)).public,
        authorisation_id="0b7c6f1e-2f4a-4c39-9a59-7d0c3e5b8a11",
    )  # fmt: skip
    unsigned = w.encode()
    for i, (name, role) in enumerate((("Secretary", "executive"), ("Judge", "judicial"))):
        key = ApproverKey(name, role, Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32))
        w = approve(w, key, timestamp=now - 600 + i)
    return [unsigned, w.encode()]


@pytest.mark.parametrize("cases", SIZES)
def test_warrant_parser(cases: int) -> None:
    from wire.li.errors import WarrantError
    from wire.li.warrant import Warrant, parse_warrant

    samples = _warrants()
    fields = sorted(json.loads(samples[-1]))

    def check(data: bytes) -> None:
        try:
            w = parse_warrant(data)
        except WarrantError as exc:
            clear(exc)
            assert exc.code in ("malformed", "too-large"), exc.code
            return
        assert isinstance(w, Warrant)

    run(cases, hostile(samples, fields), check)


# -- signed notes and checkpoints ----------------------------------------------------------


def _notes() -> tuple[list[bytes], Any]:
    from wire.checkpoint import Checkpoint, sign_checkpoint
    from wire.note import Signer

    signer = Signer.generate("audit.example/log")
    witness = Signer.generate("witness.example")
    cp = Checkpoint("audit.example/log", 12345, os.urandom(32), ("ext line",))
    texts = [sign_checkpoint(cp, signer), sign_checkpoint(cp, signer, witness), cp.body()]
    return [t.encode() for t in texts], signer.verifier()


@pytest.mark.parametrize("cases", SIZES)
def test_note_and_checkpoint_parsers(cases: int) -> None:
    from wire.checkpoint import CheckpointError, open_checkpoint, parse_checkpoint
    from wire.note import NoteError, Verifier, parse_note

    samples, verifier = _notes()
    samples = [*samples, verifier.vkey().encode()]

    def check(data: bytes) -> None:
        try:
            parse_note(data)
        except NoteError as exc:
            clear(exc)
        text = data.decode("utf-8", "replace")
        try:
            parse_checkpoint(text)
        except CheckpointError as exc:
            clear(exc)
        try:
            open_checkpoint(data, [verifier], origin="audit.example/log")
        except CheckpointError as exc:
            clear(exc)
        try:
            Verifier.from_vkey(text)
        except NoteError as exc:
            clear(exc)

    run(cases, hostile(samples, ["x"]), check)


# -- ledger proofs ---------------------------------------------------------------------------


def _proofs() -> list[bytes]:
    from wire.merkle import MerkleTree

    tree = MerkleTree()
    for i in range(13):
        tree.append(f"entry {i}".encode())
    inc = {"leafIdx": 5, "treeSize": 13, "root": b64(tree.root()),
           "leafHash": b64(tree.leaf_hash(5)),
           "proof": [b64(h) for h in tree.inclusion_proof(5, 13)]}  # fmt: skip
    con = {"size1": 7, "size2": 13, "root1": b64(tree.root(7)), "root2": b64(tree.root()),
           "proof": [b64(h) for h in tree.consistency_proof(7, 13)]}  # fmt: skip
    return [json.dumps(inc).encode(), json.dumps(con).encode()]


@pytest.mark.parametrize("cases", SIZES)
def test_ledger_verify_proof_input(cases: int) -> None:
    import contextlib
    import io

    from doormat.cli import CommandError
    from doormat.commands.ledger import _cmd_verify_proof

    samples = _proofs()
    fields = ["leafIdx", "treeSize", "root", "leafHash", "proof", "size1", "size2", "root1",
              "root2"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "proof.json"

        def check(data: bytes) -> None:
            path.write_bytes(data)
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    code = _cmd_verify_proof(argparse.Namespace(file=str(path)))
            except CommandError as exc:
                clear(exc)
                assert exc.exit_code in (1, 2), exc.exit_code
                return
            assert code == 0 and out.getvalue().startswith("valid ")

        run(cases, hostile(samples, fields), check)
    # The valid samples are valid (the fuzz is not vacuous).
    with tempfile.TemporaryDirectory() as tmp:
        for s in samples:
            (Path(tmp) / "p.json").write_bytes(s)
            with contextlib.redirect_stdout(io.StringIO()):
                assert _cmd_verify_proof(argparse.Namespace(file=str(Path(tmp) / "p.json"))) == 0


# -- broker accounts (config) ----------------------------------------------------------------


@pytest.mark.parametrize("cases", SIZES)
def test_accounts_file(cases: int) -> None:
    from doormat.broker.accounts import Account, AccountsError, load_accounts

    good = {"accounts": [
        {"username": "relay", "password": "pw-relay-123", "role": "relay"},
        {"username": "acme", "password": "pw-acme-123", "role": "enterprise"},
        {"username": "alice@acme.phone", "password": "pw-alice-123", "role": "device"},
    ]}  # fmt: skip
    samples = [json.dumps(good).encode(), json.dumps(good["accounts"][2]).encode()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accounts.json"

        def check(data: bytes) -> None:
            path.write_bytes(data)
            try:
                accs = load_accounts(path)
            except AccountsError as exc:
                clear(exc)
                assert "\n" not in str(exc)  # one line naming the problem
                return
            assert all(isinstance(a, Account) for a in accs)

        run(cases, hostile(samples, ["accounts", "username", "password", "role"]), check)


# -- the exercises file -----------------------------------------------------------------------


def _exercise_samples() -> list[bytes]:
    spec = pytest.importorskip("doormat.lab.spec")
    full = Path(spec.__file__).with_name("exercises.yaml").read_bytes()
    # The shipped file's head with its first exercise: small enough to fuzz fast.
    head = full.split(b"\n\n  - key:", 1)[0] + b"\n"
    spec.parse_exercises(head)  # a valid sample
    return [head, full]


@pytest.mark.parametrize("cases", SIZES)
def test_exercises_file(cases: int) -> None:
    samples = _exercise_samples()
    from doormat.lab.spec import ExerciseFileError, parse_exercises

    small = samples[:1]

    def check(data: bytes) -> None:
        try:
            parse_exercises(data, "fuzz.yaml")
        except ExerciseFileError as exc:
            clear(exc)

    strategy = st.one_of(
        hostile(small, ["version", "exercises", "key", "title", "difficulty", "solved_by"]),
        # One case in nine: a mutation of the whole shipped file (slower to parse).
        st.tuples(st.sampled_from(samples[1:]), st.integers(0, 2**32)).map(
            lambda p: _mutate_bytes(p[0], random.Random(p[1]))
        ),
    )
    run(cases, strategy, check)


# -- garbage beside an honest conversation, through a real broker and relay ---------------------


def _garbage(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """(kind, payload) pairs an attacker's device could publish on its own topics."""
    honest = _envelopes() + _dir_samples()
    forged = json.loads(honest[0])
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        kind = rng.choice(["msg", "msg", "dir", "ack", "archive"])
        r = rng.randrange(8)
        if r == 0:
            data = os.urandom(rng.randrange(0, 2000))
        elif r == 1:
            data = _mutate_bytes(rng.choice(honest), rng)
        elif r == 2:
            data = b"[" * 100_000  # deep nesting
        elif r == 3:
            data = b'{"req": "x", "op": "publish", "identity": "' + b"A" * 70_000 + b'"}'
        elif r == 4:  # a well-formed envelope claiming another sender
            data = json.dumps({**forged, "id": os.urandom(16).hex()}).encode()
        elif r == 5:  # a well-formed envelope from the attacker to a real device
            data = json.dumps({**forged, "id": os.urandom(16).hex(), "from": "mallory@acme.phone",
                               "to": "bob@globex.phone"}).encode()  # fmt: skip
        elif r == 6:
            op = rng.choice(["bundles", "devices", "enrol"])
            user = rng.choice(["bob@globex", "x", "", "a" * 500])
            data = json.dumps({"req": str(i), "op": op, "user": user}).encode()
        else:
            data = _dumps({"from": "bob@globex.phone", "id": os.urandom(16).hex(), "x": i})
        out.append((kind, data))
    return out


@pytest.mark.mosquitto
@pytest.mark.parametrize(
    "garbage",
    [pytest.param(300, id="300"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)],
)
@pytest.mark.timeout(900)
async def test_honest_conversation_unaffected_by_injected_garbage(
    tmp_path: Path, make_broker: Any, garbage: int
) -> None:
    import asyncio

    import aiomqtt

    from tests.reliability.reliability_harness import relay_and_devices
    from tests.support.polling import until

    alice, bob, mallory = "alice@acme.phone", "bob@globex.phone", "mallory@acme.phone"
    async with relay_and_devices(make_broker, tmp_path, [alice, bob, mallory]) as rig:
        accs, broker, relay, ds = rig.accounts, rig.broker, rig.relay, rig.devices
        await ds.start(alice, bob)
        junk = _garbage(random.Random(garbage), garbage)
        attacker = aiomqtt.Client(
            broker.host, broker.port, username=mallory, password=accs[mallory].password,
            identifier=mallory, timeout=30,
        )  # fmt: skip
        attacker.pending_calls_threshold = 1_000_000
        async with attacker:
            window = asyncio.Semaphore(64)

            async def inject(kind: str, data: bytes) -> None:
                async with window:
                    await attacker.publish(f"doormat/out/{mallory}/{kind}", data, qos=1)

            injecting = asyncio.gather(*(inject(k, d) for k, d in junk))
            ids = []
            for k in range(20):
                ids.append((await ds.devices[alice].send("bob@globex", f"honest {k}")).id)
                await asyncio.sleep(0.02)
            await asyncio.wait_for(injecting, 600)
        await until(lambda: all(ds.got(bob)[(alice, i)] == 1 for i in ids), 120,
                    "the honest messages")  # fmt: skip
        await until(lambda: relay.events.count("relay.rejected") > 0, 30, "refusals")
        assert relay.proc is not None and relay.proc.poll() is None  # still running
        # bob's application shows the honest messages, each once, and nothing else: what
        # mallory got accepted carries no ciphertext bob can open (device.unreadable).
        assert sum(ds.got(bob).values()) == len(ids)
        assert all(e["from"] == mallory for e in ds.unreadable)
        reasons = {e["reason"].split(":")[0] for e in relay.events.of("relay.rejected")}
        assert "internal error" not in reasons, reasons
