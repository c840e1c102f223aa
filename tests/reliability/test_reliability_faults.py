"""No loss under faults: every message reaches the application exactly once.

* 10,000 messages between real devices (``clients.device.Device``) through Mosquitto
  and the relay (its own process, ``python -m doormat relay``) while the relay is
  SIGKILLed three times and Mosquitto is restarted once.
* A receiving device SIGKILLed twice mid-conversation and restarted on its store.
* A sending device SIGKILLed twice mid-conversation and restarted on its store.

"The application" is what each receiving device shows its user: its ``device.received``
events and the history in its store. Exactly once: every message a sender committed
appears once, and nothing else appears. Time bounds are generous (the machine is
shared); none is a performance assertion.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.reliability_harness import (
    Rig,
    relay_and_devices,
    user_of,
)
from tests.support.events import EventsFile
from tests.support.polling import until

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]

CONVERSATIONS = 20
PER_CONVERSATION = 500  # 20 x 500 = 10,000 messages
DEVICE_PROCESS = Path(__file__).with_name("device_process.py")


def _history(store: Path, columns: str, direction: str) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        query = f"SELECT {columns} FROM history WHERE direction = ?"
        return [(r[0], r[1]) for r in con.execute(query, (direction,))]
    finally:
        con.close()


def _history_in(store: Path) -> list[tuple[str, str]]:
    """(sender device, message id) of each message the device's history holds as in."""
    return _history(store, "device, id", "in")


def _history_out(store: Path) -> list[tuple[str, str]]:
    """(message id, text) of each message the device's history holds as sent."""
    return _history(store, "id, text", "out")


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    "broker_restart",
    [pytest.param(False, id="relay-kills"), pytest.param(True, id="relay-kills+broker-restart")],
)  # fmt: skip
async def test_10000_messages_through_three_relay_kills_and_a_broker_restart(
    tmp_path: Path, make_broker: Any, broker_restart: bool
) -> None:
    senders = [f"s{i:02d}@acme.phone" for i in range(CONVERSATIONS)]
    receivers = [f"r{i:02d}@globex.phone" for i in range(CONVERSATIONS)]
    async with relay_and_devices(make_broker, tmp_path, senders + receivers) as rig:
        broker, relay, ds = rig.broker, rig.relay, rig.devices
        await ds.start(*senders, *receivers)

        sent: dict[str, list[str]] = {s: [] for s in senders}
        total = 0
        faults: list[tuple[str, int, float]] = []

        async def converse(i: int) -> None:
            nonlocal total
            s, r = senders[i], receivers[i]
            for k in range(PER_CONVERSATION):
                out = await ds.devices[s].send(user_of(r), f"conversation {i} message {k}")
                assert out.devices == [r], out
                sent[s].append(out.id)
                total += 1

        async def inject() -> None:
            # (kind, after this many messages sent)
            plan = [("relay", 1500), ("relay", 3500), ("relay", 7000)]
            if broker_restart:
                plan.insert(2, ("broker", 5000))
            for kind, at in plan:
                await until(lambda at=at: total >= at, 600, f"{at} messages sent")
                t0 = time.monotonic()
                if kind == "relay":
                    relay.kill()
                    await asyncio.sleep(0.5)  # senders keep going: the broker queues
                    relay.start()
                    await relay.wait_connected()
                else:
                    await broker.restart()
                faults.append((kind, total, round(time.monotonic() - t0, 2)))

        await asyncio.wait_for(
            asyncio.gather(*(converse(i) for i in range(CONVERSATIONS)), inject()), 900
        )
        assert [f[0] for f in faults].count("relay") == 3
        assert relay.lives == 4  # killed three times, restarted three times

        def delivered() -> int:
            return sum(
                1
                for i, s in enumerate(senders)
                for mid in sent[s]
                if ds.got(receivers[i])[(s, mid)] >= 1
            )

        try:
            await until(lambda: delivered() == CONVERSATIONS * PER_CONVERSATION, 120,
                        "every message at its receiver")  # fmt: skip
        except AssertionError:
            relay.events.poll()
            raise AssertionError(
                f"delivered {delivered()} of {CONVERSATIONS * PER_CONVERSATION}; faults "
                f"{faults}; relay alive {not relay._dead()}, pending {relay.pending()}, "
                f"events {dict(relay.events.counts)}; relay stderr: {relay.stderr()[-2000:]}"
            ) from None
        await until(lambda: relay.pending() == 0, 120, "the relay's store to drain")
        await asyncio.sleep(1.0)  # late redeliveries, if any, would land now

        # Exactly once, as the application sees it: events and stored history.
        for i, s in enumerate(senders):
            r = receivers[i]
            got = ds.got(r)
            want = {(s, mid) for mid in sent[s]}
            assert set(got) == want, f"{r}: {len(set(got) ^ want)} differ"
            assert all(n == 1 for n in got.values()), [k for k, n in got.items() if n > 1][:5]
            history = Counter(_history_in(tmp_path / f"{r}.sqlite"))
            assert set(history) == want and all(n == 1 for n in history.values())
        assert ds.unreadable == []
        assert sum(len(v) for v in sent.values()) == CONVERSATIONS * PER_CONVERSATION
        accepted = relay.events.of("relay.accepted")
        distinct = {(e["from"], e["id"]) for e in accepted}
        # Accepted once, never twice (a re-sent copy is a relay.duplicate). The event log
        # is written just after the store's commit, so a SIGKILL between the two can
        # cost a line, never a message: the device histories above are the proof of
        # delivery; here only a handful of lines may be missing, one group per kill.
        assert len(accepted) == len(distinct)
        assert CONVERSATIONS * PER_CONVERSATION - len(distinct) <= 3 * 64
        again = sum(1 for e in relay.events.of("relay.delivered") if e["reason"] != "route")
        print(
            f"\nfaults (kind, at message, seconds): {faults}; relay accepted "
            f"{len(accepted)} (dups refused: {relay.events.count('relay.duplicate')}), "
            f"redelivered {again}"
        )


# -- a device killed mid-conversation ---------------------------------------------------


class DeviceProcess:
    def __init__(self, broker: Any, account: Any, workdir: Path, *extra: str) -> None:
        self.args = [
            sys.executable, str(DEVICE_PROCESS), "--host", broker.host,
            "--port", str(broker.port), "--device", account.username,
            "--password", account.password,
            "--store", str(workdir / f"{account.username}.sqlite"),
            "--events", str(workdir / f"{account.username}.events.jsonl"), *extra,
        ]  # fmt: skip
        self.store = workdir / f"{account.username}.sqlite"
        self.events = EventsFile(workdir / f"{account.username}.events.jsonl")
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0
        self.workdir = workdir
        self.name = account.username

    async def start(self) -> None:
        self.lives += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.workdir / f"{self.name}.stderr-{self.lives}").open("wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, env=env)
        line = await self.next_line(60)
        assert line.strip() == b"ready", line

    async def next_line(self, timeout: float) -> bytes:
        """The next line it prints (``ready``, ``done``)."""
        assert self.proc is not None and self.proc.stdout is not None
        return await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline), timeout
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def kill_and_restart_at(self, kind: str, counts: tuple[int, ...], what: str) -> None:
        """Each time its events reach the next of ``counts`` of ``kind``: SIGKILL it
        mid-conversation (no clean shutdown, no DISCONNECT), then start it again on its
        store."""
        for at in counts:
            await until(lambda at=at: self.events.count(kind) >= at, 300, f"{at} {what}")
            self.kill()
            await asyncio.sleep(0.5)
            await self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


ALICE, BOB = "alice@acme.phone", "bob@globex.phone"
MakeProcess = Callable[..., DeviceProcess]


@pytest.fixture
async def rig(tmp_path: Path, make_broker: Any) -> AsyncIterator[Rig]:
    """alice and bob enrolled at the relay (its own process) on Mosquitto."""
    async with relay_and_devices(make_broker, tmp_path, [ALICE, BOB]) as rig:
        yield rig


@pytest.fixture
def device_process(rig: Rig, tmp_path: Path) -> Iterator[MakeProcess]:
    """device_process(device, *options): that device as its own process (not started
    yet); stopped at the end, before the rig."""
    made: list[DeviceProcess] = []

    def make(device: str, *extra: str) -> DeviceProcess:
        made.append(DeviceProcess(rig.broker, rig.accounts[device], tmp_path, *extra))
        return made[-1]

    yield make
    for process in made:
        process.stop()


@pytest.mark.timeout(900)
async def test_receiver_killed_twice_mid_conversation_gets_each_message_once(
    rig: Rig, device_process: MakeProcess
) -> None:
    alice, bob = ALICE, BOB
    relay, ds = rig.relay, rig.devices
    receiver = device_process(bob)
    n = 1500
    await receiver.start()
    await ds.start(alice)
    ids: list[str] = []

    async def send_all() -> None:
        for k in range(n):
            ids.append((await ds.devices[alice].send("bob@globex", f"to bob {k}")).id)

    sending = asyncio.create_task(send_all())
    await receiver.kill_and_restart_at("device.received", (300, 900), "received")
    await asyncio.wait_for(sending, 600)
    await until(lambda: len(set(_history_in(receiver.store))) >= n, 300,
                "every message in bob's history")  # fmt: skip
    await until(lambda: relay.pending() == 0, 120, "the relay's store to drain")
    await asyncio.sleep(1.0)
    history = Counter(_history_in(receiver.store))
    assert set(history) == {(alice, i) for i in ids}
    assert all(c == 1 for c in history.values())
    shown = Counter((e["from"], e["id"]) for e in receiver.events.of("device.received"))
    # Shown at most once per message across the three lives (an event can only be
    # missing if the kill fell between the commit and the event, never doubled).
    assert all(c == 1 for c in shown.values())
    assert receiver.events.count("device.unreadable") == 0
    assert receiver.lives == 3


@pytest.mark.timeout(900)
async def test_sender_killed_twice_mid_conversation_every_committed_message_once(
    rig: Rig, device_process: MakeProcess
) -> None:
    alice, bob = ALICE, BOB
    relay, ds = rig.relay, rig.devices
    n = 1500
    sender = device_process(
        alice, "--send-to", "bob@globex", "--count", str(n), "--prefix", "from alice"
    )
    await ds.start(bob)
    await sender.start()
    await sender.kill_and_restart_at("device.sent", (300, 900), "sent")
    line = await sender.next_line(600)
    assert line.strip() == b"done"
    out = _history_out(sender.store)
    texts = Counter(t for _, t in out)
    assert len(texts) == n and all(c == 1 for c in texts.values())
    want = {(alice, mid) for mid, _ in out}
    await until(lambda: set(ds.got(bob)) >= want, 300, "everything alice committed")
    await until(lambda: relay.pending() == 0, 120, "the relay's store to drain")
    await asyncio.sleep(1.0)
    got = ds.got(bob)
    assert set(got) == want
    assert all(c == 1 for c in got.values())
    texts_in = Counter(h.text for h in ds.devices[bob].history() if h.direction == "in")
    assert all(c == 1 for c in texts_in.values()) and len(texts_in) == n
    assert ds.unreadable == []
