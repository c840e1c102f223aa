"""Issue 2's fault test with real devices: a relay SIGKILLed in the middle of a
2,000-message run, then restarted, loses no message and shows none twice to the
application (the receiving devices' users).

The relay runs as its own process (``python -m doormat relay``), as compose runs it;
the broker (Mosquitto when installed, else amqtt), the enterprise servers and the
devices run in the test. "Shown to the application" is the receiving device's
``device.received`` event: it fires once the plaintext is durably stored, and only
then is the relay told.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from clients.device import Device
from clients.enterprise import EnterpriseServer
from doormat.broker import start_broker
from doormat.broker.accounts import save_accounts
from doormat.cast import default_cast, enrol
from tests.support.polling import until
from tests.support.processes import broker_kind, relay_argv
from wire.events import EventLog

N = 2000
KILL_AT = 700  # messages shown to receivers before the relay is killed
# Four senders, four receivers in other hands: every message is one envelope to a
# receiver's device (plus a copy to alice's laptop when alice's phone sends).
PAIRS = [
    ("alice@acme.phone", "bob@acme"),
    ("bob@acme.phone", "carol@globex"),
    ("carol@globex.phone", "dave@globex"),
    ("dave@globex.phone", "alice@acme"),
]


def start_relay(broker_url: str, accounts: Path, db: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        relay_argv(broker_url, db, log, "--accounts", str(accounts)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
async def test_relay_sigkill_mid_run_loses_nothing_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    kind = broker_kind()
    cast = default_cast()
    world = enrol(cast)
    accounts = tmp_path / "accounts.json"
    save_accounts(accounts, world.accounts)
    events = EventLog()
    db = tmp_path / "relay.sqlite"
    async with start_broker(kind, world.accounts, tmp_path / "broker") as broker:
        url = f"mqtt://{broker.host}:{broker.port}"
        relay = start_relay(url, accounts, db, tmp_path / "relay-1.jsonl")
        try:
            # The relay's directory key, which devices pin, is written at its first start.
            vkey_file = Path(f"{db}.kt-key.vkey")
            await until(vkey_file.exists, 20, "the relay's directory key file")
            vkey = vkey_file.read_text().strip()
            servers = []
            for name, ent in world.enterprises.items():
                server = EnterpriseServer(
                    ent, world.account(name).password, broker.host, broker.port, events, tmp_path
                )
                await server.start()
                servers.append(server)
            devices: dict[str, Device] = {}
            for dev_id, creds in world.credentials.items():
                dev = Device(
                    creds,
                    broker.host,
                    broker.port,
                    tmp_path / f"{dev_id}.sqlite",
                    events,
                    directory_vkey=vkey,
                    archive_key=next(
                        s.archive_public_key
                        for s in servers
                        if s.enterprise.name == creds.user.split("@")[1]
                    ),
                )
                await dev.start()
                devices[dev_id] = dev

            shown: Counter[tuple[str, str, str]] = Counter()  # (device, from, id)

            def on_event(e: dict[str, object]) -> None:
                if e["kind"] == "device.received":
                    shown[(str(e["actor"]), str(e["from"]), str(e["id"]))] += 1

            events.subscribe(on_event)
            # One message per pair first, so every session exists before the storm.
            for sender, to_user in PAIRS:
                await devices[sender].send(to_user, "hello")
            await until(lambda: len({k[1:] for k in shown}) >= len(PAIRS), 30,
                        "the first message of each pair", step=0.05)  # fmt: skip

            sent: list[tuple[str, str, list[str]]] = []  # (sender, id, devices)

            async def storm(sender: str, to_user: str, count: int) -> None:
                for i in range(count):
                    s = await devices[sender].send(to_user, f"{sender} #{i}")
                    sent.append((sender, s.id, s.devices))

            async def killer() -> subprocess.Popen[bytes]:
                nonlocal relay
                while len(shown) < KILL_AT:
                    await asyncio.sleep(0.01)
                relay.send_signal(signal.SIGKILL)
                relay.wait(timeout=10)
                at_kill.append(len(shown))
                await asyncio.sleep(0.5)  # devices keep sending into the broker meanwhile
                relay = start_relay(url, accounts, db, tmp_path / "relay-2.jsonl")
                return relay

            at_kill: list[int] = []
            kill = asyncio.create_task(killer())
            await asyncio.gather(*(storm(s, u, N // len(PAIRS)) for s, u in PAIRS))
            await kill
            expected = {(dev, sender, mid) for sender, mid, devs in sent for dev in devs}
            await until(lambda: expected <= set(shown), 120, "every message shown", step=0.1)
            await asyncio.sleep(1.0)  # any late duplicate would show up now
            assert len(sent) == N
            # It really died mid-run: most messages were still to be shown when it did,
            # and its first life accepted only part of the traffic.
            assert at_kill and at_kill[0] < len(expected) // 2
            first_life = (tmp_path / "relay-1.jsonl").read_text().count('"relay.accepted"')
            assert 0 < first_life < len(expected)
            missing = expected - set(shown)
            assert not missing
            twice = {k: n for k, n in shown.items() if n > 1}
            assert twice == {}, f"{len(twice)} messages shown twice"
            for dev in devices.values():
                await dev.stop()
            for server in servers:
                await server.stop()
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=15)
            except subprocess.TimeoutExpired:
                relay.kill()
