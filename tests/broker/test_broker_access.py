"""Access control and delivery guarantees, against both brokers (amqtt and Mosquitto).

Negative checks ("X gets nothing") cannot wait for an absence forever: each sends the
forbidden traffic first, then a permitted sentinel along the same path, and then keeps
listening for a short grace period; anything but the sentinel is a failure
(tests/support/mqtt.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest

from doormat.broker.accounts import Account
from tests.support.mqtt import listen, until_sentinel

TIMEOUT = 5.0  # bound on anything that should happen

ALICE = "alice@acme.phone"
BOB = "bob@acme.phone"


def out(owner: str, kind: str = "msg") -> str:
    return f"doormat/out/{owner}/{kind}"


def inbox(owner: str, kind: str = "msg") -> str:
    return f"doormat/in/{owner}/{kind}"


async def receive(
    client: aiomqtt.Client, n: int, timeout: float = TIMEOUT
) -> list[aiomqtt.Message]:
    """Exactly the next ``n`` messages, or fail within ``timeout``."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for m in client.messages:
            got.append(m)
            if len(got) == n:
                return got
    return got


def payloads(msgs: list[aiomqtt.Message]) -> list[bytes]:
    return [bytes(m.payload) for m in msgs]  # type: ignore[arg-type]


Mqtt = Callable[..., aiomqtt.Client]


async def publish_and_get_dropped(
    client: aiomqtt.Client, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
) -> None:
    """Publish something the broker answers by dropping the connection (Mosquitto's
    max_qos / retain_available). The acknowledgement never comes; the client's message
    stream ends with an error instead, which is what we wait for."""
    await client.__aenter__()
    publish = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
    try:
        with pytest.raises(aiomqtt.MqttError):
            await receive(client, 1)
    finally:
        publish.cancel()
        with contextlib.suppress(aiomqtt.MqttError, asyncio.CancelledError):
            await publish
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)


# -- the permitted paths ---------------------------------------------------------------


async def test_device_publishes_and_relay_receives(broker: Any, accounts: Any, mqtt: Mqtt) -> None:
    async with mqtt(accounts("relay")) as relay, mqtt(accounts(ALICE)) as alice:
        await relay.subscribe("doormat/out/+/+", qos=1)
        await alice.publish(out(ALICE), b"hello", qos=1)
        [m] = await receive(relay, 1)
        assert (str(m.topic), m.payload, m.qos) == (out(ALICE), b"hello", 1)


async def test_relay_delivers_to_the_device_inbox(broker: Any, accounts: Any, mqtt: Mqtt) -> None:
    async with mqtt(accounts("relay")) as relay, mqtt(accounts(ALICE)) as alice:
        await alice.subscribe(f"doormat/in/{ALICE}/#", qos=1)
        await relay.publish(inbox(ALICE), b"for alice", qos=1)
        [m] = await receive(alice, 1)
        assert (str(m.topic), m.payload, m.qos) == (inbox(ALICE), b"for alice", 1)


async def test_enterprise_and_tap_use_their_own_subtrees(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(accounts("acme")) as acme,
        mqtt(accounts("tap")) as tap,
    ):
        await relay.subscribe("doormat/out/+/+", qos=1)
        await acme.subscribe("doormat/in/acme/#", qos=1)
        await tap.subscribe("doormat/#", qos=1)  # refused or filtered: only its inbox arrives
        await tap.subscribe("doormat/in/tap/#", qos=1)
        await acme.publish(out("acme", "dir"), b"enrol", qos=1)
        assert payloads(await receive(relay, 1)) == [b"enrol"]
        await relay.publish(inbox("acme", "dir"), b"ok", qos=1)
        assert payloads(await receive(acme, 1)) == [b"ok"]
        await relay.publish(inbox("tap"), b"mirror", qos=1)
        got = await until_sentinel(tap, b"mirror")
        assert {str(m.topic) for m in got} == {inbox("tap")}
        assert payloads(got).count(b"mirror") >= 1


# -- what a device must not be able to do ----------------------------------------------


async def test_device_cannot_read_another_devices_inbox(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(accounts(ALICE)) as alice,
        mqtt(accounts(BOB)) as bob,
    ):
        await bob.subscribe(f"doormat/in/{BOB}/#", qos=1)
        await alice.subscribe(f"doormat/in/{ALICE}/#", qos=1)
        await alice.subscribe(f"doormat/in/{BOB}/#", qos=1)  # the attempt
        await relay.publish(inbox(BOB), b"secret for bob", qos=1)
        assert payloads(await receive(bob, 1)) == [b"secret for bob"]
        await relay.publish(inbox(ALICE), b"sentinel", qos=1)
        assert payloads(await until_sentinel(alice, b"sentinel")) == [b"sentinel"]


@pytest.mark.parametrize("forged", [out(BOB), out(BOB, "ack"), inbox(BOB), "doormat/out/relay/msg"])
async def test_device_cannot_publish_as_someone_else(
    broker: Any, accounts: Any, mqtt: Mqtt, forged: str
) -> None:
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(accounts(ALICE)) as alice,
        mqtt(accounts(BOB)) as bob,
    ):
        await relay.subscribe("doormat/out/+/+", qos=1)
        await bob.subscribe(f"doormat/in/{BOB}/#", qos=1)
        await alice.publish(forged, b"forged", qos=1)
        await alice.publish(out(ALICE), b"sentinel", qos=1)
        got = await until_sentinel(relay, b"sentinel")
        assert [(str(m.topic), m.payload) for m in got] == [(out(ALICE), b"sentinel")]
        assert await listen(bob) == []


@pytest.mark.parametrize(
    "topic_filter", ["#", "doormat/#", "doormat/out/+/msg", "doormat/in/+/msg", "+/+/+/+"]
)
async def test_wildcard_subscriptions_yield_nothing_foreign(
    broker: Any, accounts: Any, mqtt: Mqtt, topic_filter: str
) -> None:
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(accounts(ALICE)) as alice,
        mqtt(accounts(BOB)) as bob,
    ):
        await alice.subscribe(topic_filter, qos=1)
        await alice.subscribe(f"doormat/in/{ALICE}/#", qos=1)
        await bob.publish(out(BOB), b"bob's outbound", qos=1)
        await relay.publish(inbox(BOB), b"bob's inbox", qos=1)
        await relay.publish(inbox(ALICE), b"sentinel", qos=1)
        got = await until_sentinel(alice, b"sentinel")
        assert all(str(m.topic).startswith(f"doormat/in/{ALICE}/") for m in got), [
            str(m.topic) for m in got
        ]


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (None, None),  # anonymous
        (ALICE, None),  # no password
        (ALICE, "wrong"),
        ("mallory@evil.phone", "whatever"),  # unknown user
        (ALICE, "BOB"),  # another account's password
        ("", ""),
    ],
)
async def test_bad_logins_are_refused(
    broker: Any, accounts: Any, mqtt: Mqtt, username: str | None, password: str | None
) -> None:
    if password == "BOB":
        password = accounts(BOB).password
    client = aiomqtt.Client(
        broker.host, broker.port, username=username, password=password,
        identifier=username or "anon", timeout=TIMEOUT,
    )
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(TIMEOUT), client:
            pass


async def test_account_added_at_runtime_can_connect(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    dave = accounts("dave@globex.phone")
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(TIMEOUT), mqtt(dave):
            pass
    broker.add_account(dave)
    await broker.wait_accounts_applied()
    async with mqtt(accounts("relay")) as relay, mqtt(dave) as client:
        await relay.subscribe("doormat/out/+/+", qos=1)
        await client.publish(out(dave.username), b"hi from dave", qos=1)
        await client.publish(out(ALICE), b"not dave's", qos=1)
        await client.publish(out(dave.username), b"sentinel", qos=1)
        got = await until_sentinel(relay, b"sentinel")
        assert payloads(got) == [b"hi from dave", b"sentinel"]


async def test_replacing_an_account_changes_its_password(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    old = accounts(BOB)
    new = Account(BOB, old.password + "-rotated", "device")
    broker.add_account(new)
    await broker.wait_accounts_applied()
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(TIMEOUT), mqtt(old):
            pass
    async with mqtt(new):
        pass


# -- sessions --------------------------------------------------------------------------


async def test_persistent_session_gets_what_was_sent_while_away(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    alice = accounts(ALICE)
    async with mqtt(alice, clean_session=False) as client:
        await client.subscribe(f"doormat/in/{ALICE}/#", qos=1)
    async with mqtt(accounts("relay")) as relay:
        for i in range(5):
            await relay.publish(inbox(ALICE), f"m{i}".encode(), qos=1)
    # Reconnect without subscribing again: the session remembers the subscription.
    async with mqtt(alice, clean_session=False) as client:
        got = await receive(client, 5)
        assert sorted(payloads(got)) == [f"m{i}".encode() for i in range(5)]
        assert {m.qos for m in got} == {1}
        assert not any(m.retain for m in got)  # queued, not retained
        assert await listen(client) == []


async def test_unacknowledged_message_is_redelivered_on_reconnect(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    """The relay's manual acks: a message it never PUBACKed comes back after a reconnect."""
    relay_acc = accounts("relay")

    def relay_client() -> aiomqtt.Client:
        c = mqtt(relay_acc, clean_session=False)
        c._client.manual_ack_set(True)  # as the relay does (paho 2.x)
        return c

    async with relay_client() as relay:
        await relay.subscribe("doormat/out/+/+", qos=1)
    async with mqtt(accounts(ALICE)) as alice:
        await alice.publish(out(ALICE), b"m1", qos=1)
    async with relay_client() as relay:
        [first] = await receive(relay, 1)
        assert first.payload == b"m1"
        # ... and the relay goes away without acknowledging it.
    async with relay_client() as relay:
        [again] = await receive(relay, 1)
        assert again.payload == b"m1"
        relay._client.ack(again.mid, again.qos)
        await asyncio.sleep(0.2)  # let the PUBACK reach the broker before we disconnect
    async with relay_client() as relay:
        assert await listen(relay) == []


async def test_another_accounts_client_id_does_not_reach_its_session(
    broker: Any, accounts: Any, mqtt: Mqtt
) -> None:
    """Client id = username: choosing bob's client id neither reads nor wipes his queue."""
    bob = accounts(BOB)
    async with mqtt(bob, clean_session=False) as client:
        await client.subscribe(f"doormat/in/{BOB}/#", qos=1)
    async with mqtt(accounts("relay")) as relay:
        for i in range(3):
            await relay.publish(inbox(BOB), f"b{i}".encode(), qos=1)
    # alice, logged in as herself, resumes "bob's" session, then starts a clean one.
    async with mqtt(accounts(ALICE), identifier=BOB, clean_session=False) as alice:
        assert await listen(alice) == []
    async with mqtt(accounts(ALICE), identifier=BOB, clean_session=True):
        pass
    # A stranger with a wrong password tries a clean session under bob's id.
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(TIMEOUT), mqtt(bob, password="wrong", clean_session=True):
            pass
    async with mqtt(bob, clean_session=False) as client:
        got = await receive(client, 3)
        assert sorted(payloads(got)) == [b"b0", b"b1", b"b2"]


# -- QoS 2 and other protocol corners --------------------------------------------------


async def test_qos2_is_capped_at_qos1(broker: Any, accounts: Any, mqtt: Mqtt) -> None:
    """Subscriptions are granted QoS 1. A QoS 2 PUBLISH: Mosquitto disconnects the
    client (max_qos 1); amqtt accepts it and forwards it at QoS 1."""
    async with mqtt(accounts("relay")) as relay:
        granted = await relay.subscribe("doormat/out/+/+", qos=2)
        assert [int(getattr(g, "value", g)) for g in granted] == [1]
        if broker.kind == "mosquitto":
            await publish_and_get_dropped(mqtt(accounts(ALICE)), out(ALICE), b"qos2", qos=2)
            assert await listen(relay) == []
        else:
            async with mqtt(accounts(ALICE)) as alice:
                await alice.publish(out(ALICE), b"qos2", qos=2)
                [m] = await receive(relay, 1)
                assert (m.payload, m.qos) == (b"qos2", 1)


def _mqtt_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def raw_connect(
    host: str, port: int, *, client_id: str, username: str, password: str,
    will_topic: str, will_payload: bytes,
) -> tuple[socket.socket, int]:
    """An MQTT 3.1.1 CONNECT with a QoS 1 will, by hand; returns (socket, CONNACK code)."""
    flags = 0x80 | 0x40 | 0x08 | 0x04 | 0x02  # user, password, will QoS 1, will, clean
    variable = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    payload = (
        _mqtt_str(client_id) + _mqtt_str(will_topic) + _mqtt_str(will_payload)
        + _mqtt_str(username) + _mqtt_str(password)
    )
    body = variable + payload
    assert len(body) < 128
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.sendall(bytes([0x10, len(body)]) + body)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            return sock, -1  # closed without a CONNACK
        connack += chunk
    return sock, connack[3]


@pytest.mark.parametrize("will_topic", [out(BOB), inbox(BOB)])
async def test_a_will_cannot_impersonate_another_device(
    broker: Any, accounts: Any, mqtt: Mqtt, will_topic: str
) -> None:
    alice = accounts(ALICE)
    async with mqtt(accounts("relay")) as relay, mqtt(accounts(BOB)) as bob:
        await relay.subscribe("doormat/out/+/+", qos=1)
        await bob.subscribe(f"doormat/in/{BOB}/#", qos=1)
        sock, code = await asyncio.to_thread(
            raw_connect, broker.host, broker.port, client_id=ALICE,
            username=ALICE, password=alice.password,
            will_topic=will_topic, will_payload=b"forged will",
        )
        # Refused outright, or accepted and the will later dropped: both are fine.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # an abnormal disconnect: the broker would now publish the will
        async with mqtt(alice) as a:
            await a.publish(out(ALICE), b"sentinel", qos=1)
        got = await until_sentinel(relay, b"sentinel")
        assert payloads(got) == [b"sentinel"], code
        assert await listen(bob) == []


async def test_retained_messages_are_not_kept(broker: Any, accounts: Any, mqtt: Mqtt) -> None:
    """amqtt would hand retained messages matching *anyone's* subscription to each new
    client; with retain off (both brokers) nothing is kept to leak."""
    async with mqtt(accounts("relay")) as relay:
        await relay.subscribe("doormat/out/+/+", qos=1)
        if broker.kind == "mosquitto":  # retain_available false: dropped
            await publish_and_get_dropped(mqtt(accounts(ALICE)), out(ALICE), b"r", retain=True)
        else:
            async with mqtt(accounts(ALICE)) as alice:
                await alice.publish(out(ALICE), b"retained", qos=1, retain=True)
        await listen(relay)
    async with mqtt(accounts(BOB)) as bob:
        await bob.subscribe(f"doormat/in/{BOB}/#", qos=1)
        assert await listen(bob) == []
    async with mqtt(accounts("relay"), identifier="relay") as relay:
        await relay.subscribe("doormat/out/+/+", qos=1)
        assert await listen(relay) == []
