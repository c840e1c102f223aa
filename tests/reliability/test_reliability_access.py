"""Access control: what tests/broker does not already cover, against both brokers.

tests/broker/test_broker_access.py covers, on amqtt and on Mosquitto with the files
``doormat broker config`` writes: a device reading another device's inbox, publishing
as another device (its outbound msg/ack, another inbox, the relay's topic), wildcard
subscriptions (``#``, ``doormat/#``, ``doormat/out/+/msg``, ``doormat/in/+/msg``,
``+/+/+/+``), wills on foreign topics, client-id take-over, retained messages, QoS 2,
and logins without or with a wrong password, an unknown user or another account's
password. This file adds:

* the service accounts that are not the relay (tap, enterprise server, interceptor)
  reading other inboxes or outbound topics;
* a device writing into any inbox, its own included (only the relay writes inboxes);
* ``$SYS`` and the shared-subscription forms of the relay's filter;
* a second relay account (relay workers) has the relay's rights, and only relay
  accounts do;
* logins as the relay with a device's password, or none.

Negative checks end with a permitted sentinel on the same path and a grace period
(tests/support/mqtt.py), so "nothing arrived" is not a timing accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import aiomqtt
import pytest

from doormat.broker.accounts import Account, generate_password
from tests.support.mqtt import until_sentinel

TIMEOUT = 8.0
ALICE, BOB = "alice@acme.phone", "bob@acme.phone"
NAMES = {
    "relay": "relay",
    "relay-2": "relay",
    "tap": "tap",
    "acme": "enterprise",
    "interceptor": "interceptor",
    ALICE: "device",
    BOB: "device",
}


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
async def env(request: pytest.FixtureRequest, make_broker: Any) -> Any:
    accs = {n: Account(n, generate_password(), r) for n, r in NAMES.items()}
    broker = await make_broker(str(request.param), accs.values())
    broker.accs = accs  # type: ignore[attr-defined]
    broker.kind_name = request.param  # type: ignore[attr-defined]
    return broker


def client(env: Any, name: str, **kw: Any) -> aiomqtt.Client:
    acc = env.accs[name]
    return aiomqtt.Client(
        env.host, env.port, username=name, password=acc.password, identifier=name,
        timeout=TIMEOUT, **kw,
    )  # fmt: skip


async def subscribe_or_refused(c: aiomqtt.Client, topic_filter: str) -> bool:
    """Subscribe; False if the broker refused it (amqtt: SUBACK 0x80)."""
    granted = await c.subscribe(topic_filter, qos=1)
    return all(int(getattr(g, "value", g)) < 0x80 for g in granted)


# -- service accounts that are not the relay ----------------------------------------------


@pytest.mark.parametrize("who", ["tap", "acme", "interceptor"])
@pytest.mark.parametrize(
    "topic_filter",
    ["#", f"doormat/in/{BOB}/#", "doormat/out/+/+"],
)
async def test_service_accounts_read_only_their_own_inbox(
    env: Any, who: str, topic_filter: str
) -> None:
    async with client(env, "relay") as relay, client(env, who) as spy, client(env, BOB) as bob:
        await subscribe_or_refused(spy, topic_filter)
        await spy.subscribe(f"doormat/in/{who}/#", qos=1)
        await bob.publish(f"doormat/out/{BOB}/msg", b"bob's envelope", qos=1)
        await relay.publish(f"doormat/in/{BOB}/msg", b"for bob", qos=1)
        await relay.publish(f"doormat/in/{who}/dir", b"sentinel", qos=1)
        got = await until_sentinel(spy, b"sentinel", TIMEOUT)
        assert [(str(m.topic), m.payload) for m in got] == [(f"doormat/in/{who}/dir", b"sentinel")]


# -- nobody but the relay writes an inbox ------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [f"doormat/in/{ALICE}/msg", f"doormat/in/{BOB}/msg", f"doormat/in/{BOB}/dir",
     "doormat/in/tap/mirror", "doormat/in/interceptor/x1"],
)  # fmt: skip
async def test_a_device_writes_no_inbox_not_even_its_own(env: Any, topic: str) -> None:
    owner = topic.split("/")[2]
    async with contextlib.AsyncExitStack() as stack:
        relay = await stack.enter_async_context(client(env, "relay"))
        alice = await stack.enter_async_context(client(env, ALICE))
        reader = alice if owner == ALICE else await stack.enter_async_context(client(env, owner))
        await reader.subscribe(f"doormat/in/{owner}/#", qos=1)
        await alice.publish(topic, b"forged", qos=1)
        await relay.publish(f"doormat/in/{owner}/dir", b"sentinel", qos=1)
        got = await until_sentinel(reader, b"sentinel", TIMEOUT)
        assert [m.payload for m in got] == [b"sentinel"]


# -- $SYS and shared-subscription forms ---------------------------------------------------------


@pytest.mark.parametrize("who", [ALICE, "tap", "acme"])
async def test_sys_topics_are_closed(env: Any, who: str) -> None:
    async with client(env, "relay") as relay, client(env, who) as c:
        await subscribe_or_refused(c, "$SYS/#")
        await c.subscribe(f"doormat/in/{who}/#", qos=1)
        await relay.publish(f"doormat/in/{who}/dir", b"sentinel", qos=1)
        got = await until_sentinel(c, b"sentinel", TIMEOUT)
        assert [m.payload for m in got] == [b"sentinel"]


@pytest.mark.parametrize("share", ["$share/g/doormat/out/+/+", f"$share/g/doormat/in/{BOB}/#"])
async def test_a_shared_subscription_reads_nothing_foreign(env: Any, share: str) -> None:
    async with client(env, "relay") as relay, client(env, ALICE) as alice, client(env, BOB) as bob:
        await subscribe_or_refused(alice, share)
        await alice.subscribe(f"doormat/in/{ALICE}/#", qos=1)
        await bob.publish(f"doormat/out/{BOB}/msg", b"bob's envelope", qos=1)
        await relay.publish(f"doormat/in/{BOB}/msg", b"for bob", qos=1)
        await relay.publish(f"doormat/in/{ALICE}/dir", b"sentinel", qos=1)
        got = await until_sentinel(alice, b"sentinel", TIMEOUT)
        assert [m.payload for m in got] == [b"sentinel"]


# Mosquitto 2.0 grants any account a subscription to a share group (its ACL file checks
# read access only when delivering), then round-robins the group's messages to every
# member and drops them at a member without read access: those messages reach no relay
# worker, although their senders got a PUBACK. A device that knows the workers' group
# name can therefore make them lose a share of all traffic. The relay therefore refuses
# a guessable group name (relay/main.py, `check_subscription`): workers share a random
# one, which a device cannot join. A single relay on the plain subscription is not
# affected; amqtt refuses shared subscriptions altogether.


async def _relay_group_receives(
    make_broker: Any, relay_filter: str, device_filters: list[str], n: int = 20
) -> int:
    accs = {name: Account(name, generate_password(), r) for name, r in NAMES.items()}
    broker = await make_broker("mosquitto", accs.values())
    broker.accs = accs
    async with (
        client(broker, "relay") as relay,
        client(broker, ALICE) as alice,
        client(broker, BOB) as bob,
    ):
        await relay.subscribe(relay_filter, qos=1)
        for f in device_filters:
            await subscribe_or_refused(alice, f)
        for i in range(n):
            await bob.publish(f"doormat/out/{BOB}/msg", f"m{i}".encode(), qos=1)
        got: list[bytes] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                async for m in relay.messages:
                    got.append(bytes(m.payload))  # type: ignore[arg-type]
                    if len(got) == n:
                        break
        return len(got)


@pytest.mark.mosquitto
async def test_a_device_that_knows_the_share_group_takes_messages_from_it(
    make_broker: Any,
) -> None:
    # The broker behaviour the relay's check guards against. If this starts failing,
    # Mosquitto checks shared subscriptions now: update docs/brokers.md.
    got = await _relay_group_receives(
        make_broker, "$share/relay/doormat/out/+/+", ["$share/relay/doormat/out/+/+"]
    )
    assert got < 20, "Mosquitto no longer lets a device into a share group it cannot read"


@pytest.mark.mosquitto
async def test_a_device_cannot_join_a_secret_share_group(make_broker: Any) -> None:
    group = "w" + secrets.token_hex(16)
    guesses = [f"$share/{g}/doormat/out/+/+" for g in ("relay", "doormat", "workers", "g")]
    got = await _relay_group_receives(
        make_broker, f"$share/{group}/doormat/out/+/+", [*guesses, "doormat/out/+/+"]
    )
    assert got == 20


# -- relay accounts ------------------------------------------------------------------------


async def test_a_second_relay_account_has_the_relays_rights(env: Any) -> None:
    share = env.kind_name == "mosquitto"  # amqtt refuses shared subscriptions
    async with client(env, "relay-2") as worker, client(env, BOB) as bob:
        await worker.subscribe(
            "$share/relay/doormat/out/+/+" if share else "doormat/out/+/+", qos=1
        )
        await bob.subscribe(f"doormat/in/{BOB}/#", qos=1)
        await bob.publish(f"doormat/out/{BOB}/msg", b"to the relay", qos=1)
        async with asyncio.timeout(TIMEOUT):
            m = await anext(worker.messages)
        assert (str(m.topic), m.payload) == (f"doormat/out/{BOB}/msg", b"to the relay")
        await worker.publish(f"doormat/in/{BOB}/msg", b"from a relay worker", qos=1)
        async with asyncio.timeout(TIMEOUT):
            m = await anext(bob.messages)
        assert m.payload == b"from a relay worker"


@pytest.mark.parametrize(
    ("username", "password_of"),
    [("relay", ALICE), ("relay", None), ("relay-2", "relay"), ("relay", "tap")],
)
async def test_nobody_logs_in_as_a_relay_without_its_password(
    env: Any, username: str, password_of: str | None
) -> None:
    password = env.accs[password_of].password if password_of else None
    c = aiomqtt.Client(
        env.host, env.port, username=username, password=password, identifier=username,
        timeout=TIMEOUT,
    )  # fmt: skip
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(TIMEOUT), c:
            pass
