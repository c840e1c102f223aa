"""Shared pieces of the reliability suites: a relay process, its event log, enrolment,
and real devices.

Test files import it as ``tests.reliability.reliability_harness``.

* ``RelayProcess``: ``python -m doormat relay`` as its own process, as compose runs it,
  with its JSON-lines event log in a file; SIGKILL, restart, SIGTERM.
* ``enrol``: the enterprises enrol devices at the relay (raw directory requests).
* ``Devices``: real ``clients.device.Device`` objects in this process, with one
  ``EventLog`` that records what each application was shown (``device.received``).
* ``relay_and_devices``: all of the above on a fresh Mosquitto, torn down at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from clients.device import Device
from clients.enterprise import Credentials
from doormat.broker.accounts import Account, generate_password
from tests.support.events import EventsFile
from tests.support.polling import until
from tests.support.processes import relay_argv
from wire.events import Event, EventLog


def device_account(device: str) -> Account:
    return Account(device, generate_password(), "device")


def standard_accounts(devices: Iterable[str], extra: Iterable[str] = ()) -> dict[str, Account]:
    """relay, tap, acme, globex and the given devices (role by name)."""
    accs = {
        "relay": Account("relay", generate_password(), "relay"),
        "acme": Account("acme", generate_password(), "enterprise"),
        "globex": Account("globex", generate_password(), "enterprise"),
    }
    for name in extra:
        role = "relay" if name.startswith("relay") else "tap" if name == "tap" else "enterprise"
        accs[name] = Account(name, generate_password(), role)
    for d in devices:
        accs[d] = device_account(d)
    return accs


class RelayProcess:
    """``python -m doormat relay`` in its own process; restartable on the same store."""

    def __init__(self, url: str, password: str, workdir: Path, *extra: str) -> None:
        self.url = url
        self.workdir = workdir
        self.db = workdir / "relay.sqlite"
        self.events_path = workdir / "relay-events.jsonl"
        self.pwfile = workdir / "relay.pw"
        self.pwfile.write_text(password + "\n")
        self.extra = extra
        self.events = EventsFile(self.events_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0
        self.stderr_paths: list[Path] = []

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.lives += 1
        err = self.workdir / f"relay-stderr-{self.lives}.log"
        self.stderr_paths.append(err)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONASYNCIODEBUG", None)
        with err.open("wb") as fh:
            self.proc = subprocess.Popen(
                relay_argv(self.url, self.db, self.events_path,
                           "--password-file", str(self.pwfile), *self.extra),
                stdout=subprocess.DEVNULL, stderr=fh, env=env,
            )  # fmt: skip

    async def wait_connected(self, timeout: float = 30.0) -> None:
        want = self.lives
        await until(
            lambda: self.events.count("relay.connected") >= want or self._dead(),
            timeout, "the relay to connect",
        )  # fmt: skip
        if self._dead():
            raise AssertionError(f"relay exited: {self.stderr()}")

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def stderr(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.stderr_paths if p.exists())

    def pending(self) -> int:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT count(*) FROM envelopes WHERE acked_ms IS NULL").fetchone()
            return int(row[0])
        finally:
            con.close()


async def request(host: str, port: int, account: Account, op: str, **fields: Any) -> dict:
    """One directory request as ``account`` (clean session), its answer."""
    req = secrets.token_hex(6)
    client = aiomqtt.Client(
        host, port, username=account.username, password=account.password,
        identifier=account.username, clean_session=True, timeout=10,
    )  # fmt: skip
    async with client:
        await client.subscribe(f"doormat/in/{account.username}/dir", qos=1)
        await client.publish(
            f"doormat/out/{account.username}/dir",
            json.dumps({"req": req, "op": op, **fields}), qos=1,
        )  # fmt: skip
        async with asyncio.timeout(30):
            async for m in client.messages:
                answer = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                if answer.get("req") == req:
                    return dict(answer)
    raise AssertionError("no answer")


async def enrol(host: str, port: int, accounts: dict[str, Account], devices: Iterable[str]) -> None:
    """Each device's enterprise enrols it at the relay (pipelined, one connection each)."""
    by_ent: dict[str, list[str]] = {}
    for d in devices:
        by_ent.setdefault(d.split("@", 1)[1].split(".", 1)[0], []).append(d)
    for ent, devs in by_ent.items():
        acc = accounts[ent]
        client = aiomqtt.Client(
            host, port, username=ent, password=acc.password, identifier=ent,
            clean_session=True, timeout=10,
        )  # fmt: skip
        async with client:
            await client.subscribe(f"doormat/in/{ent}/dir", qos=1)
            reqs = {}
            for d in devs:
                req = secrets.token_hex(6)
                reqs[req] = d
                body = {"req": req, "op": "enrol", "user": d.rsplit(".", 1)[0], "device": d}
                await client.publish(f"doormat/out/{ent}/dir", json.dumps(body), qos=1)
            async with asyncio.timeout(60):
                async for m in client.messages:
                    answer = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                    assert answer.get("ok"), answer
                    reqs.pop(answer.get("req"), None)
                    if not reqs:
                        break


def user_of(device: str) -> str:
    return device.rsplit(".", 1)[0]


class Devices:
    """Real devices in this process, and what each application was shown."""

    def __init__(self, host: str, port: int, accounts: dict[str, Account], workdir: Path,
                 **device_options: Any) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.accounts = accounts
        self.workdir = workdir
        self.options = device_options
        self.events = EventLog()
        self.devices: dict[str, Device] = {}
        self.received: dict[str, Counter[tuple[str, str]]] = {}
        self.unreadable: list[Event] = []
        self.events.subscribe(self._on_event)

    def _on_event(self, e: Event) -> None:
        if e["kind"] == "device.received":
            self.received.setdefault(e["actor"], Counter())[(e["from"], e["id"])] += 1
        elif e["kind"] == "device.unreadable":
            self.unreadable.append(e)

    def make(self, device: str) -> Device:
        acc = self.accounts[device]
        return Device(
            Credentials(device=device, user=user_of(device), password=acc.password),
            self.host, self.port, self.workdir / f"{device}.sqlite", self.events,
            **self.options,
        )  # fmt: skip

    async def start(self, *devices: str) -> None:
        made = [self.make(d) for d in devices]
        await asyncio.gather(*(d.start() for d in made))
        for d in made:
            self.devices[d.id] = d

    async def stop(self, device: str) -> None:
        await self.devices.pop(device).stop()

    async def stop_all(self) -> None:
        for d in list(self.devices):
            with contextlib.suppress(Exception):
                await self.stop(d)

    def got(self, device: str) -> Counter[tuple[str, str]]:
        return self.received.get(device, Counter())


@dataclass
class Rig:
    """A Mosquitto, the relay process on it, and the devices of a reliability test."""

    accounts: dict[str, Account]
    broker: Any
    relay: RelayProcess
    devices: Devices


@contextlib.asynccontextmanager
async def relay_and_devices(
    make_broker: Callable[..., Awaitable[Any]],
    workdir: Path,
    devices: list[str],
    *relay_args: str,
    **device_options: Any,
) -> AsyncIterator[Rig]:
    """A Mosquitto with the standard accounts and ``devices``' accounts, the relay as its
    own process (connected), every device enrolled, and ``Devices`` (none started yet;
    ``device_list_ttl`` 1e9 unless ``device_options`` say otherwise). At the end the
    devices and then the relay are stopped."""
    accs = standard_accounts(devices)
    broker = await make_broker("mosquitto", accs.values())
    relay = RelayProcess(broker.url, accs["relay"].password, workdir, *relay_args)
    relay.start()
    ds = Devices(broker.host, broker.port, accs, workdir,
                 **{"device_list_ttl": 1e9, **device_options})  # fmt: skip
    try:
        await relay.wait_connected()
        await enrol(broker.host, broker.port, accs, devices)
        yield Rig(accs, broker, relay, ds)
    finally:
        await ds.stop_all()
        relay.stop()
