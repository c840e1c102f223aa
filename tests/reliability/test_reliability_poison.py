"""Issue 12, point 2, as the issue tells it: real processes on a real Mosquitto.

The relay (``doormat relay``), acme's archive server (``doormat enterprise serve --name
acme``, which journals), globex's, and alice's phone (``doormat device run``, journalling
to acme's archive) each run as the process compose starts; the attackers are a modified
globex client and anyone holding acme's *public* archive key.

On today's main:

* a 32,700-byte text from globex to alice@acme made alice's device fail on the journal
  record (it no longer fitted a padding bucket); the message came back after the
  reconnection as "unreadable: ReplayError" - its key spent, its text never shown;
* a journal record with ``"ts": Infinity`` (or nested 16,000 deep) sealed to acme's
  archive key made acme's server fail on it, reconnect, and fail again, forever: no
  record behind it was archived, and a restarted server could not even enrol its
  devices (the answers queue behind the poison).

Now each is set aside with its reason (``service.set_aside`` in the process's own event
stream), acknowledged, and the next message is handled; each process restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.archive import _INFO
from clients.crypto import pad, seal_to
from clients.device import Device
from doormat.broker import MosquittoBroker
from doormat.broker.accounts import save_accounts
from doormat.cast import Enrolment, default_cast, enrol
from infra.link import Link
from tests.support.events import EventsFile
from tests.support.polling import until
from tests.support.processes import relay_argv, skip_without_mosquitto
from wire.b64 import b64decode
from wire.events import EventLog

pytestmark = pytest.mark.mosquitto

ALICE, LAPTOP, BOB, CAROL = (
    "alice@acme.phone", "alice@acme.laptop", "bob@acme.phone", "carol@globex.phone")  # fmt: skip


@dataclass
class Proc:
    name: str
    argv: list[str]
    out: Path
    err: Path
    proc: subprocess.Popen[bytes] | None = None
    lives: int = 0

    def start(self) -> None:
        self.lives += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOORMAT_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=env)
        self.events = EventsFile(self.out)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def count(self, kind: str, **match: Any) -> int:
        return len(self.of(kind, **match))

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events.of(kind) if all(e.get(k) == v for k, v in match.items())]

    def tail(self) -> str:
        return self.err.read_text(errors="replace")[-3000:]


@dataclass
class World:
    url: str
    host: str
    port: int
    enrolment: Enrolment
    dir: Path
    procs: dict[str, Proc]
    events: EventLog

    def device(self, name: str, *, archive: bool = False) -> Device:
        key = None
        if archive:
            body = json.loads((self.dir / "policy" / "acme.archive.pub").read_text())
            key = b64decode(body["archive_public_key"], "key")
        return Device(self.enrolment.credentials[name], self.host, self.port,
                      self.dir / f"{name}.sqlite", self.events, archive_key=key)  # fmt: skip


def _doormat(*args: str) -> list[str]:
    return [sys.executable, "-m", "doormat", *args]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    skip_without_mosquitto()
    enrolment = enrol(default_cast())
    accounts = save_accounts(tmp_path / "accounts.json", enrolment.accounts)
    async with MosquittoBroker(enrolment.accounts, tmp_path / "broker") as broker:
        url = broker.url
        common = ["--broker", url, "--accounts", str(accounts)]
        policy = ["--policy-dir", str(tmp_path / "policy")]
        procs = {
            "relay": Proc("relay", relay_argv(url, tmp_path / "relay.sqlite",
                                              tmp_path / "relay.jsonl", "--accounts",
                                              str(accounts)),
                          tmp_path / "relay.out", tmp_path / "relay.err"),
            "acme": Proc("acme", _doormat("enterprise", "serve", "--name", "acme", *common,
                                          "--state", str(tmp_path / "acme"), *policy),
                         tmp_path / "acme.out", tmp_path / "acme.err"),
            "globex": Proc("globex", _doormat("enterprise", "serve", "--name", "globex",
                                              *common, "--state", str(tmp_path / "globex"),
                                              *policy),
                           tmp_path / "globex.out", tmp_path / "globex.err"),
            ALICE: Proc(ALICE, _doormat("device", "run", ALICE, *common,
                                        "--state", str(tmp_path / "alice"), *policy),
                        tmp_path / "alice.out", tmp_path / "alice.err"),
        }  # fmt: skip
        world = World(url, broker.host, broker.port, enrolment, tmp_path, procs, EventLog())
        try:
            procs["relay"].start()
            relay_events = EventsFile(tmp_path / "relay.jsonl")
            await until(lambda: relay_events.count("relay.connected") >= 1, 30, "the relay")
            for name in ("acme", "globex"):
                procs[name].start()
            for name in ("acme", "globex"):
                await until(lambda n=name: procs[n].count("service.ready") >= 1, 60,
                            f"{name} ready: {procs[name].tail()}")  # fmt: skip
            procs[ALICE].start()
            await until(lambda: procs[ALICE].count("service.ready") >= 1, 60,
                        f"alice ready: {procs[ALICE].tail()}")  # fmt: skip
            yield world
        finally:
            for p in reversed(list(procs.values())):
                if p.proc is not None:
                    p.stop()


async def test_an_oversize_text_does_not_stop_alices_device_process(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = world.procs[ALICE]
    carol, bob = world.device(CAROL), world.device(BOB, archive=True)
    await carol.start()
    await bob.start()
    try:
        # carol's modified client sends what an honest one refuses.
        monkeypatch.setattr("clients.device.check_text", lambda *a, **k: None, raising=False)
        oversize = await carol.send("alice@acme", "x" * 32_700)
        monkeypatch.undo()
        await until(lambda: alice.count("service.set_aside") >= 1, 30,
                    f"alice's set-aside event: {alice.tail()}")  # fmt: skip
        (aside,) = alice.of("service.set_aside")
        assert aside["account"] == ALICE and aside["topic"] == f"doormat/in/{ALICE}/msg"
        assert "RecordTooLarge" in aside["reason"] and aside["size"] > 32_700
        assert not alice.of("device.unreadable")
        assert not alice.of("device.received", id=oversize.id)
        # The next messages arrive and are journalled.
        after = await bob.send("alice@acme", "after the oversize one")
        await until(lambda: alice.count("device.received", id=after.id) == 1, 30, "next")
        archived = world.procs["acme"]
        await until(lambda: archived.count("enterprise.archived", id=after.id) >= 2, 30,
                    "the next message journalled by bob and alice")  # fmt: skip
        # The process restarts (SIGTERM, exit 0), nothing comes back in its way.
        assert alice.stop() == 0
        alice.start()
        await until(lambda: alice.count("service.ready") >= 2, 60,
                    f"alice ready again: {alice.tail()}")  # fmt: skip
        again = await carol.send("alice@acme", "after the restart")
        await until(lambda: alice.count("device.received", id=again.id) == 1, 30, "again")
        assert len(alice.of("service.set_aside")) == 1
        assert not alice.of("device.unreadable")
    finally:
        await carol.stop()
        await bob.stop()


async def test_poison_journal_records_do_not_stop_acmes_archive_process(world: World) -> None:
    acme = world.procs["acme"]
    body = json.loads((world.dir / "policy" / "acme.archive.pub").read_text())
    key = b64decode(body["archive_public_key"], "key")

    def sealed(record: bytes) -> bytes:
        return seal_to(key, pad(record), info=_INFO + LAPTOP.encode())

    v1 = (b'{"device":"alice@acme.laptop","direction":"in","id":"m1",'
          b'"from":"carol@globex.phone","to_user":null,"ts":Infinity,"text":"x"}')  # fmt: skip
    deep = v1.replace(b'"ts":Infinity', b'"ts":' + b"[" * 16_000 + b"]" * 16_000)
    header = (b'{"device":"alice@acme.laptop","direction":"in","from":"carol@globex.phone",'
              b'"id":"m1","to_user":null,"ts":Infinity,"v":2}\nx')  # fmt: skip
    # Anyone can seal to the disclosed key; here alice's (idle) laptop account sends.
    laptop = Link(LAPTOP, world.enrolment.credentials[LAPTOP].password, world.host,
                  world.port)  # fmt: skip
    await laptop.start()
    try:
        for record in (v1, deep, header):
            await laptop.publish("archive", sealed(record))
        await until(lambda: acme.count("service.set_aside") >= 3, 30,
                    f"acme's set-aside events: {acme.tail()}")  # fmt: skip
    finally:
        await laptop.stop()
    reasons = [e["reason"] for e in acme.of("enterprise.rejected")]
    assert len(reasons) == 3 and all("alice@acme.laptop" in r for r in reasons), reasons
    assert "Infinity is not a JSON number" in reasons[2]
    # A good record behind the poison is archived ...
    bob = world.device(BOB, archive=True)
    await bob.start()
    try:
        d = await bob.send("alice@acme", "archived all the same")
        await until(lambda: acme.count("enterprise.archived", id=d.id) >= 1, 30, "archived")
        # ... and the archive server restarts (it could not on main).
        assert acme.stop() == 0
        acme.start()
        await until(lambda: acme.count("service.ready") >= 2, 60,
                    f"acme ready again: {acme.tail()}")  # fmt: skip
        d = await bob.send("alice@acme", "after the restart")
        await until(lambda: acme.count("enterprise.archived", id=d.id) >= 1, 30, "again")
        assert len(acme.of("enterprise.rejected")) == 3
    finally:
        await bob.stop()


async def test_nothing_else_was_set_aside(world: World) -> None:
    """The honest traffic of the fixture sets nothing aside (no false positives)."""
    await asyncio.sleep(1.0)
    for proc in world.procs.values():
        if proc.name != "relay":
            assert not proc.of("service.set_aside"), proc.name
