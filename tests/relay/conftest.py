"""Fixtures for the relay's tests: envelope and request builders, a relay on a temp store.

This folder is the package ``tests.relay``: the name ``relay`` stays the product's
package (pytest puts the repository root, not this folder, on ``sys.path``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.router import Relay
from relay.store import Store
from tests.relay.relay_harness import (
    DEVICES,
    ENTERPRISES,
    FakeDevice,
    MqttEnv,
    RelayEnv,
    new_service,
)
from tests.support.encoding import b64
from wire.envelope import Envelope
from wire.events import EventLog

EnvelopeFactory = Callable[..., Envelope]


@pytest.fixture
def make_envelope() -> EnvelopeFactory:
    """Hand-made envelopes with random bytes as ciphertext: the relay does not care."""

    def make(
        sender: str,
        recipient: str,
        *,
        msg_id: str | None = None,
        body_len: int = 256,
        ts: int = 1_764_400_000_000,
    ) -> Envelope:
        return Envelope(
            id=msg_id or os.urandom(16).hex(),
            sender=sender,
            recipient=recipient,
            ts=ts,
            header=os.urandom(40),
            body=os.urandom(body_len),
        )

    return make


def dir_request(op: str, req: str = "r1", **fields: Any) -> bytes:
    return json.dumps({"req": req, "op": op, **fields}).encode()


@pytest.fixture
def dir_req() -> Callable[..., bytes]:
    """dir_req(op, req="r1", **fields) -> the bytes of a directory request."""
    return dir_request


@pytest.fixture
def publish_req() -> Callable[..., bytes]:
    """publish_req(n_otpks=3, identity=..., spk_id=1, first_otpk_id=1) -> request bytes."""
    return publish_request


def publish_request(
    n_otpks: int = 3,
    *,
    identity: bytes = b"I" * 64,
    spk_id: int = 1,
    first_otpk_id: int = 1,
    req: str = "p1",
) -> bytes:
    return dir_request(
        "publish",
        req=req,
        identity=b64(identity),
        signed_prekey={"id": spk_id, "key": b64(os.urandom(32)), "sig": b64(os.urandom(64))},
        one_time_prekeys=[
            {"id": first_otpk_id + i, "key": b64(os.urandom(32))} for i in range(n_otpks)
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "relay.db")
    yield s
    s.close()


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def relay(store: Store, events: EventLog) -> Relay:
    return Relay(store, events)


# -- a real broker and a relay on it (see relay_harness) -------------------------------


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
async def mqtt_env(
    request: pytest.FixtureRequest, tmp_path: Path, make_broker: Any, accounts: Any
) -> MqttEnv:
    """A broker (amqtt in-process, or a real Mosquitto, from tests/conftest.py) with its
    ACL and accounts for the relay, two enterprises and four devices."""
    accs = [accounts(name) for name in ("relay", *ENTERPRISES, *DEVICES)]
    b = await make_broker(str(request.param), accs)
    passwords = {a.username: a.password for a in accs}
    return MqttEnv(str(request.param), b.host, b.port, b.url, passwords, b, tmp_path)


@pytest.fixture
async def relay_env(mqtt_env: MqttEnv) -> AsyncIterator[RelayEnv]:
    """A relay running in-process on the broker, with every device enrolled (by its
    enterprise, through the relay) and connected as a FakeDevice."""
    events = EventLog()
    db = mqtt_env.workdir / "relay.sqlite"
    service = new_service(mqtt_env, db, events)
    await service.start()
    env = RelayEnv(mqtt_env, events, db, service)
    try:
        for ent in ENTERPRISES:
            server = FakeDevice(mqtt_env, ent, clean_session=True)
            await server.connect()
            for dev, user in DEVICES.items():
                if user.endswith("@" + ent):
                    answer = await server.request("enrol", user=user, device=dev)
                    assert answer["ok"], answer
            await server.disconnect()
        for dev in DEVICES:
            env.devices[dev] = FakeDevice(mqtt_env, dev)
            await env.devices[dev].connect()
        yield env
    finally:
        for d in env.devices.values():
            await d.disconnect()
        await env.service.stop()
