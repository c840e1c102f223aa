"""Test harness for the relay on a real broker: fake devices and the relay's setting.

Fake devices are plain aiomqtt clients that publish hand-made envelopes (random bytes
as ciphertext) and collect what arrives: the relay does not care what is inside.
Test files import it as ``tests.relay.relay_harness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from relay.service import RelayService
from wire.envelope import Envelope
from wire.events import EventLog

ALICE, ALICE2, BOB, MALLORY = (
    "alice@acme.phone",
    "alice@acme.laptop",
    "bob@globex.phone",
    "mallory@acme.phone",
)
DEVICES = {ALICE: "alice@acme", ALICE2: "alice@acme", BOB: "bob@globex", MALLORY: "mallory@acme"}
ENTERPRISES = ("acme", "globex")


@dataclass
class MqttEnv:
    kind: str
    host: str
    port: int
    url: str
    passwords: dict[str, str]
    broker: Any
    workdir: Path


class FakeDevice:
    """An account on the broker that speaks the wire protocol by hand."""

    def __init__(self, env: MqttEnv, name: str, *, clean_session: bool = False) -> None:
        self.env = env
        self.name = name
        self.clean_session = clean_session
        self.envelopes: list[bytes] = []
        self._ids: list[str] = []
        self.answers: dict[Any, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []  # refusals with no req (msg/ack/bad dir)
        self.auto_ack = True
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def connect(self, *, subscribe: bool = True) -> None:
        client = aiomqtt.Client(
            self.env.host,
            self.env.port,
            username=self.name,
            password=self.env.passwords[self.name],
            identifier=self.name,
            clean_session=self.clean_session,
        )
        await client.__aenter__()
        if subscribe:
            await client.subscribe(f"doormat/in/{self.name}/#", qos=1)
        self._client = client
        self._task = asyncio.create_task(self._read(client))

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
        self._client = self._task = None

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            payload = bytes(m.payload)  # type: ignore[arg-type]
            if str(m.topic).endswith("/msg"):
                self.envelopes.append(payload)
                env = json.loads(payload)
                self._ids.append(env["id"])
                if self.auto_ack:
                    ack = json.dumps({"from": env["from"], "id": env["id"]})
                    # Not awaited here: waiting for each ack's PUBACK before reading the
                    # next envelope would make the reader one round trip per message.
                    # paho sends them in order; a lost ack only means a redelivery.
                    client._client.publish(f"doormat/out/{self.name}/ack", ack, qos=1)
            else:
                answer = json.loads(payload)
                if answer.get("req") is None:
                    self.errors.append(answer)
                else:
                    self.answers[answer["req"]] = answer
            self._changed.set()

    async def publish(self, kind: str, payload: bytes | str) -> None:
        assert self._client is not None
        await self._client.publish(f"doormat/out/{self.name}/{kind}", payload, qos=1)

    async def send(self, env: Envelope) -> None:
        await self.publish("msg", env.encode())

    async def request(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        req = secrets.token_hex(6)
        await self.publish("dir", json.dumps({"req": req, "op": op, **fields}))
        await self.wait(lambda: req in self.answers, timeout)
        return self.answers.pop(req)

    async def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await self._changed.wait()

    def ids(self) -> list[str]:
        """The ids of the envelopes received, in order (repeats included)."""
        return list(self._ids)

    def clear(self) -> None:
        self.envelopes.clear()
        self._ids.clear()


@dataclass
class RelayEnv:
    mqtt: MqttEnv
    events: EventLog
    db: Path
    service: RelayService
    devices: dict[str, FakeDevice] = field(default_factory=dict)

    async def restart_relay(self) -> None:
        await self.service.stop()
        self.service = new_service(self.mqtt, self.db, self.events)
        await self.service.start()


def new_service(mqtt: MqttEnv, db: Path, events: EventLog) -> RelayService:
    return RelayService(
        mqtt.host, mqtt.port, mqtt.passwords["relay"], db, events, backoff=(0.05, 0.5)
    )
