"""A device SIGKILLed while messages wait for their sender's identity check (issue 12,
point 1): nothing is lost, nothing is shown twice.

Bob's device (its own process, key transparency on) is offline while alice writes to
him for the first time; the relay queues the envelopes at Mosquitto for bob. The relay
process is then paused (SIGSTOP), so bob, starting, receives them but cannot get an
answer to the directory lookup that checks alice's identity: it holds every one of them
(stored, acknowledged) and waits. It is SIGKILLed there. The relay resumes, bob starts
again on its store: every held message is checked, opened and shown exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.reliability_harness import Rig, relay_and_devices
from tests.support.events import EventsFile
from tests.support.polling import until

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]

DEVICE_PROCESS = Path(__file__).with_name("device_process.py")
ALICE, BOB = "alice@acme.phone", "bob@globex.phone"
N = 5


@pytest.fixture
async def rig(tmp_path: Path, make_broker: Any) -> AsyncIterator[Rig]:
    async with relay_and_devices(make_broker, tmp_path, [ALICE, BOB]) as rig:
        yield rig


def spawn(rig: Rig, tmp_path: Path, life: int) -> subprocess.Popen[bytes]:
    account = rig.accounts[BOB]
    args = [
        sys.executable, str(DEVICE_PROCESS), "--host", rig.broker.host,
        "--port", str(rig.broker.port), "--device", BOB, "--password", account.password,
        "--store", str(tmp_path / "bob.sqlite"), "--events", str(tmp_path / "bob.jsonl"),
        "--vkey", str(rig.relay.db.with_name("relay.sqlite.kt-key.vkey")),
    ]  # fmt: skip
    err = (tmp_path / f"bob.stderr-{life}").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)


async def ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(
        asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline), 60
    )
    assert line.strip() == b"ready", line


def held_rows(store: Path) -> int:
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM held").fetchone()[0])
    finally:
        con.close()


@pytest.mark.timeout(600)
async def test_device_killed_while_messages_wait_for_the_identity_check(
    rig: Rig, tmp_path: Path
) -> None:
    events = EventsFile(tmp_path / "bob.jsonl")
    bob = spawn(rig, tmp_path, 1)
    try:
        await ready(bob)  # bob's keys are published
        bob.send_signal(signal.SIGKILL)
        bob.wait(10)
        await rig.devices.start(ALICE)
        ids = [(await rig.devices.devices[ALICE].send("bob@globex", f"hello {k}")).id
               for k in range(N)]  # fmt: skip
        await until(lambda: rig.relay.pending() == N, 60, "the relay to hold them for bob")
        await asyncio.sleep(0.5)  # published to bob's queue at the broker
        assert rig.relay.proc is not None
        rig.relay.proc.send_signal(signal.SIGSTOP)
        try:
            bob = spawn(rig, tmp_path, 2)  # it will not get ready: the relay is paused
            await until(lambda: events.count("device.identity_held") >= N, 60, "bob to hold")
            assert events.count("device.received") == 0
            bob.send_signal(signal.SIGKILL)
            bob.wait(10)
            assert held_rows(tmp_path / "bob.sqlite") == N
        finally:
            rig.relay.proc.send_signal(signal.SIGCONT)
        bob = spawn(rig, tmp_path, 3)
        await ready(bob)
        await until(lambda: events.count("device.received") >= N, 60, "bob to show them")
        await until(lambda: rig.relay.pending() == 0, 60, "the relay's store to drain")
        await asyncio.sleep(1.0)
        shown = Counter(e["id"] for e in events.of("device.received"))
        assert set(shown) == set(ids) and all(c == 1 for c in shown.values())
        assert events.count("device.unreadable") == 0
        assert events.count("device.identity_alarm") == 0
        assert held_rows(tmp_path / "bob.sqlite") == 0
    finally:
        if bob.poll() is None:
            bob.send_signal(signal.SIGTERM)
            bob.wait(20)
