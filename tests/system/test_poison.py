"""One message cannot stop a device or an enterprise (issue 12, point 2), on both brokers.

* Every size a user can send works end to end: the largest text (``max_text_bytes``,
  written with the characters that JSON escapes most) is delivered to every device,
  journalled by the archiving enterprise's devices (sent and read) and opened by the
  archive; one byte more is refused at the sender (``TextTooLong`` with the limit in
  bytes) before anything is sealed.
* A sender that skips that check (a modified client) and sends 32,700 bytes to
  alice@acme, whose enterprise journals: on today's main the journal record no longer
  fitted a padding bucket, the reading device's handler raised, and the message came back
  as "unreadable: ReplayError" (its key already spent). Now each of alice's devices sets
  it aside with the reason, spends no key on it, acknowledges it, and goes on; the next
  message arrives; the device restarts.
* Journal records sealed with acme's *public* archive key (anyone can) with ``"ts":
  Infinity``, deep nesting, a 5,000-digit integer, NaN, wrong types, a repeated key:
  each stopped acme's archive server on main (the link's reader failed on it forever,
  also after a restart). Now each is refused with a reason and set aside, the good
  records behind it are archived, and a restarted server starts.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from clients.archive import _INFO, Record, journal_record
from clients.crypto import pad, seal_to
from clients.enterprise import EnterpriseServer
from doormat.system import System
from infra.link import Link
from infra.setaside import SetAside, store_path
from wire.events import Event
from wire.li.builds import ClientBuild

CAROL = "carol@globex.phone"
ALICE = ("alice@acme.phone", "alice@acme.laptop")
BOB = "bob@acme.phone"


def _limits() -> Any:
    import clients.limits

    return clients.limits


def _text_of(n: int) -> str:
    """Exactly ``n`` bytes of UTF-8, made of what JSON escapes most (quotes, backslashes,
    control characters) and multi-byte characters: the worst case for a record that
    carries the text inside JSON."""
    unit = '"\\\x01\u00e9\u20ac'  # 1 + 1 + 1 + 2 + 3 bytes
    text = unit * (n // len(unit.encode()) + 1)
    raw = text.encode()[:n]
    while True:
        try:
            out = raw.decode()
            break
        except UnicodeDecodeError:
            raw = raw[:-1]
    return out + "a" * (n - len(out.encode()))


def _of(system: System, kind: str, **match: Any) -> list[Event]:
    return [
        e for e in system.events.events(kind=kind) if all(e.get(k) == v for k, v in match.items())
    ]


async def _until(cond: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def test_the_largest_text_a_user_can_send_goes_end_to_end(system: System) -> None:
    limit = _limits().max_text_bytes(ClientBuild())
    text = _text_of(limit)
    assert len(text.encode()) == limit
    # From another enterprise to a journalling one (journalled on reading), and within
    # the journalling one (journalled on sending and on reading).
    for sender, to_user in ((CAROL, "alice@acme"), ("alice@acme.phone", "bob@acme")):
        d = await system.send(sender, to_user, text)
        assert await system.wait_delivered(d, timeout=20), d.delivered_to
        got = [e for e in _of(system, "device.received", id=d.sent.id) if e["text"] == text]
        assert {e["actor"] for e in got} == d.expected
        await _until(
            lambda d=d: len(_of(system, "enterprise.archived", id=d.sent.id))
            == len([x for x in d.expected | {d.sender} if x.split("@")[1].startswith("acme")])
        )
        assert all(e["text"] == text for e in _of(system, "enterprise.archived", id=d.sent.id))
    assert not system.events.events(kind="service.set_aside")
    assert not system.events.events(kind="device.unreadable")


async def test_one_byte_more_is_refused_at_the_sender(system: System) -> None:
    limits = _limits()
    limit = limits.max_text_bytes(ClientBuild())
    before = len(system.events.events())
    with pytest.raises(limits.TextTooLong) as info:
        await system.send(CAROL, "alice@acme", _text_of(limit + 1))
    assert info.value.limit == limit and info.value.size == limit + 1
    assert f"the largest a user can send is {limit} bytes" in str(info.value)
    assert not [e for e in system.events.events()[before:] if e["kind"] == "device.sent"]
    # And under the global-key mandate (a second copy of the padded text in the 4 KiB
    # ext), the limit is the smaller bucket's, measured.
    mandated = limits.max_text_bytes(ClientBuild("g", global_key=bytes(32)))
    assert 0 < mandated < limit


async def test_an_oversize_text_from_a_modified_client_stops_no_device(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    # carol's client skips the sender's check (a modified client: the relay cannot see
    # inside an envelope, so only the reader can refuse).
    monkeypatch.setattr("clients.device.check_text", lambda *a, **k: None, raising=False)
    monkeypatch.setattr("doormat.system.check_text", lambda *a, **k: None)
    oversize = await system.send(CAROL, "alice@acme", "x" * 32_700)
    await _until(lambda: len(_of(system, "service.set_aside")) >= 2)
    for dev in ALICE:
        (aside,) = _of(system, "service.set_aside", account=dev)
        assert aside["topic"] == f"doormat/in/{dev}/msg"
        assert "RecordTooLarge" in aside["reason"] and "bytes" in aside["reason"]
        assert aside["kept"] is True and aside["size"] > 32_700
    # Not shown, not "unreadable", no key spent on it.
    assert not _of(system, "device.received", id=oversize.sent.id)
    assert not system.events.events(kind="device.unreadable")
    # Acknowledged to the relay: it is not sent again.
    assert system.relay is not None
    await _until(lambda: all(system.relay.store.pending_count(d) == 0 for d in ALICE))  # type: ignore[union-attr]
    # The next message arrives, from the same sender too.
    monkeypatch.undo()
    for sender in (BOB, CAROL):
        d = await system.send(sender, "alice@acme", f"after the oversize one, from {sender}")
        assert await system.wait_delivered(d, timeout=20)
    # And the device restarts: nothing comes back, nothing is in its way.
    await system.stop_device(ALICE[0])
    await system.start_device(ALICE[0])
    d = await system.send(BOB, "alice@acme", "after the restart")
    assert await system.wait_delivered(d, timeout=20)
    assert len(_of(system, "service.set_aside", account=ALICE[0])) == 1
    kept = SetAside(store_path(system.state_dir / f"{ALICE[0]}.sqlite"))
    try:
        (entry,) = kept.kept()
        assert json.loads(entry.payload)["id"] == oversize.sent.id
    finally:
        kept.close()


def _sealed(key: bytes, device: str, body: bytes) -> bytes:
    return seal_to(key, pad(body), info=_INFO + device.encode())


def _header(device: str, **changes: Any) -> dict[str, Any]:
    h = {"device": device, "direction": "in", "id": "m1", "from": CAROL,
         "to_user": None, "ts": 1, "v": 2}  # fmt: skip
    h.update(changes)
    return h


def _v2(header: str | bytes, text: bytes = b"hi") -> bytes:
    head = header.encode() if isinstance(header, str) else header
    return head + b"\n" + text


POISON: list[tuple[str, bytes]] = [
    # The journal record of issue 12, as today's main read it (one JSON object).
    ("ts Infinity (v1)", b'{"device":"bob@acme.phone","direction":"in","id":"m1",'
                         b'"from":"carol@globex.phone","to_user":null,"ts":Infinity,"text":"x"}'),
    ("deep nesting (v1)", b'{"device":"bob@acme.phone","direction":"in","id":"m1",'
                          b'"from":"carol@globex.phone","to_user":null,"ts":1,"text":'
                          + b"[" * 16_000 + b"]" * 16_000 + b"}"),
    ("ts Infinity", _v2(json.dumps(_header(BOB)).replace('"ts": 1', '"ts": Infinity'))),
    ("ts NaN", _v2(json.dumps(_header(BOB)).replace('"ts": 1', '"ts": NaN'))),
    ("ts 1e999", _v2(json.dumps(_header(BOB)).replace('"ts": 1', '"ts": 1e999'))),
    ("ts of 5000 digits", _v2(json.dumps(_header(BOB)).replace('"ts": 1', '"ts": ' + "9" * 5000))),
    ("ts in 2**60", _v2(json.dumps(_header(BOB, ts=2**60)))),
    ("ts a string", _v2(json.dumps(_header(BOB, ts="1")))),
    ("ts true", _v2(json.dumps(_header(BOB, ts=True)))),
    ("deep header", _v2(json.dumps(_header(BOB, id=[[[["m1"]]]])))),
    ("repeated key", _v2(json.dumps(_header(BOB))[:-1] + ', "ts": 2}')),
    ("another device", _v2(json.dumps(_header("alice@acme.phone")))),
    ("direction sideways", _v2(json.dumps(_header(BOB, direction="sideways")))),
    ("unknown field", _v2(json.dumps(_header(BOB, extra=1)))),
    ("no header line", b"just text"),
    ("not UTF-8 header", _v2(b"\xff\xfe{}")),
]


async def test_poison_journal_records_do_not_stop_the_archive(system: System) -> None:
    acme = system.servers["acme"]
    key = acme.archive_public_key
    assert key is not None
    # Bob's phone is stopped and its account used to publish what anyone could seal.
    creds = system.credentials[BOB]
    await system.stop_device(BOB)
    bob = Link(BOB, creds.password, system.broker.host, system.broker.port)
    await bob.start()
    try:
        for _, body in POISON:
            await bob.publish("archive", _sealed(key, BOB, body))
        good = Record(BOB, "in", "after-the-poison", CAROL, None, 2, "archived all the same")
        await bob.publish("archive", journal_record(key, good))
        await _until(lambda: _of(system, "enterprise.archived", id="after-the-poison"))
    finally:
        await bob.stop()
    refused = _of(system, "enterprise.rejected")
    assert len(refused) == len(POISON), [e["reason"] for e in refused]
    # One service.set_aside event each, up to SET_ASIDE_EVENTS a second (the rest are
    # counted in the next one's "suppressed"); every one of them is kept.
    aside = _of(system, "service.set_aside", account="acme")
    assert 0 < len(aside) <= len(POISON)
    assert all(e["topic"] == "doormat/in/acme/archive" and e["kept"] for e in aside)
    assert all(e["size"] > 0 and e["reason"] and e["sha256"] for e in aside)
    for (what, _), event in zip(POISON, refused, strict=True):
        assert event["reason"].startswith("journal record from bob@acme.phone"), (what, event)
    # A restarted archive server starts (nothing comes back to stop it) and archives.
    await acme.stop()
    system.servers["acme"] = EnterpriseServer(
        acme.enterprise, system.account("acme").password, system.broker.host,
        system.broker.port, system.events, system.state_dir,
    )  # fmt: skip
    await asyncio.wait_for(system.servers["acme"].start(), 30)
    d = await system.send(CAROL, "alice@acme", "after the restart")
    assert await system.wait_delivered(d, timeout=20)
    await _until(lambda: _of(system, "enterprise.archived", id=d.sent.id))
    assert not _of(system, "enterprise.rejected")[len(POISON):]
    await system.servers["acme"].stop()
    system.servers["acme"] = acme  # the fixture stops what it started
    kept = SetAside(store_path(system.state_dir / "archive-acme.sqlite"))
    try:
        assert kept.entries == len(POISON)
    finally:
        kept.close()


# -- further attacks on the fix ----------------------------------------------------------


async def test_poison_interleaved_with_good_messages_in_one_chain(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """good, oversize, good, oversize, good from one sender, as fast as it can: the
    oversize ones are set aside without spending their keys (the ratchet keeps them as
    skipped keys), the good ones around them all open, none is 'unreadable'."""
    monkeypatch.setattr("clients.device.check_text", lambda *a, **k: None, raising=False)
    monkeypatch.setattr("doormat.system.check_text", lambda *a, **k: None)
    carol = system.devices[CAROL]
    sent = []
    for k in range(5):
        text = f"good {k}" if k % 2 == 0 else "x" * 32_700
        sent.append((await carol.send("alice@acme", text), text))
    good = [s for s, t in sent if t.startswith("good")]
    await _until(lambda: all(
        len(_of(system, "device.received", id=s.id)) == len(ALICE) for s in good), 30)  # fmt: skip
    await _until(lambda: len(_of(system, "service.set_aside")) == 2 * len(ALICE), 30)
    assert not system.events.events(kind="device.unreadable")
    assert all(not _of(system, "device.received", id=s.id) for s, t in sent if t[0] == "x")


async def test_the_largest_text_of_raw_bytes_that_are_not_utf8(system: System) -> None:
    """The record carries the text's own bytes: 32,351 bytes of 0xff (not UTF-8, each a
    replacement character in any JSON) still fit, are journalled and archived."""
    limit = _limits().max_text_bytes(ClientBuild())
    sent = await system.devices[CAROL].send("alice@acme", b"\xff" * limit)
    await _until(lambda: len(_of(system, "enterprise.archived", id=sent.id)) == len(ALICE), 30)
    archived = _of(system, "enterprise.archived", id=sent.id)
    assert all(e["text"] == "\ufffd" * limit for e in archived)
    with pytest.raises(_limits().TextTooLong):
        await system.devices[CAROL].send("alice@acme", b"\xff" * (limit + 1))


async def test_a_failure_after_the_commit_keeps_the_committed_keys(system: System) -> None:
    """A handler that fails *after* the device committed a batch (here a listener of the
    event log that raises when the message is shown, as a buggy pane would) must not
    undo the batch's keys in memory: that would bring back message keys the store has
    already deleted, and the next commit would write them again."""
    phone = system.devices[ALICE[0]]
    text = "shown, then the pane fails"

    def buggy(event: Event) -> None:
        if (event["kind"], event["actor"], event.get("text")) == (
            "device.received", ALICE[0], text
        ):
            raise ValueError("a pane cannot draw this message")

    system.events.subscribe(buggy)
    d = await system.send(CAROL, "alice@acme", text)
    await _until(lambda: _of(system, "device.received", id=d.sent.id, actor=ALICE[0]), 20)
    d2 = await system.send(CAROL, "alice@acme", "the next one")
    assert await system.wait_delivered(d2, timeout=20)
    assert not system.events.events(kind="device.unreadable")
    # Had the keys been undone, opening the next message would have derived the first
    # one's key again and kept it as a skipped key: no session holds any.
    state = json.loads(phone.crypto.to_bytes())
    skipped = [s["ratchet"]["skipped"] for ss in state["sessions"].values() for s in ss]
    assert all(not k for k in skipped), skipped
    assert phone.crypto.to_bytes() == phone._store.load_crypto()
