"""The plane's ACL rules (issue 11), against both brokers (amqtt and Mosquitto).

Events (doormat/ev/<id>) are written by their owner only and read by the observer only;
party-to-party topics (doormat/to/<to>/<from>/<kind>) are written by <from> only and read
by <to> only; the relay reads doormat/out/+/+ and writes doormat/in/+/+ and nothing of the
plane but its own. Each negative check sends the forbidden traffic first and a permitted
sentinel after it along the same path (tests/support/mqtt.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest

from tests.support.mqtt import listen, until_sentinel

ALICE = "alice@acme.phone"
BOB = "bob@acme.phone"

Mqtt = Callable[..., aiomqtt.Client]


def ev(owner: str) -> str:
    return f"doormat/ev/{owner}"


def to(target: str, sender: str, kind: str = "ctl") -> str:
    return f"doormat/to/{target}/{sender}/{kind}"


def topics_of(msgs: list[aiomqtt.Message]) -> list[tuple[str, bytes]]:
    return [(str(m.topic), bytes(m.payload)) for m in msgs]  # type: ignore[arg-type]


@pytest.fixture
def plane_accounts(broker: Any, accounts: Any) -> dict[str, Any]:
    """The plane's consoles, added to the running broker's table."""
    made = {name: accounts(name) for name in ("observer", "operator", "lab")}
    for acc in made.values():
        broker.add_account(acc)
    return made


async def test_a_party_publishes_its_own_events_and_the_observer_reads_them(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any]
) -> None:
    await broker.wait_accounts_applied()
    async with mqtt(plane_accounts["observer"]) as observer, mqtt(accounts(ALICE)) as alice:
        await observer.subscribe("doormat/ev/#", qos=1)
        await alice.publish(ev(ALICE), b"alice's events", qos=1)
        await alice.publish(f"{ev(ALICE)}/status", b"alice's status", qos=1)
        got = await until_sentinel(observer, b"alice's status")
        assert topics_of(got) == [(ev(ALICE), b"alice's events"),
                                  (f"{ev(ALICE)}/status", b"alice's status")]


@pytest.mark.parametrize("forged", [ev(BOB), f"{ev(BOB)}/status", ev("relay"), ev("tap")])
async def test_a_device_cannot_publish_on_another_accounts_event_topic(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any], forged: str
) -> None:
    await broker.wait_accounts_applied()
    async with mqtt(plane_accounts["observer"]) as observer, mqtt(accounts(ALICE)) as alice:
        await observer.subscribe("doormat/ev/#", qos=1)
        await alice.publish(forged, b"forged", qos=1)
        await alice.publish(ev(ALICE), b"sentinel", qos=1)
        got = await until_sentinel(observer, b"sentinel")
        assert topics_of(got) == [(ev(ALICE), b"sentinel")]


@pytest.mark.parametrize("topic_filter", ["doormat/ev/#", f"{ev(BOB)}", "doormat/ev/+"])
async def test_a_device_cannot_read_events(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any], topic_filter: str
) -> None:
    await broker.wait_accounts_applied()
    async with (
        mqtt(accounts(ALICE)) as alice,
        mqtt(accounts(BOB)) as bob,
        mqtt(accounts("relay")) as relay,
    ):
        await alice.subscribe(topic_filter, qos=1)
        await alice.subscribe(f"doormat/in/{ALICE}/#", qos=1)
        await bob.publish(ev(BOB), b"bob's events", qos=1)
        await relay.publish(f"doormat/in/{ALICE}/msg", b"sentinel", qos=1)
        got = await until_sentinel(alice, b"sentinel")
        assert topics_of(got) == [(f"doormat/in/{ALICE}/msg", b"sentinel")]


@pytest.mark.parametrize("sender", ["operator", "lab", BOB, "vendor"])
async def test_a_device_cannot_send_a_control_in_another_accounts_name(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any], sender: str
) -> None:
    await broker.wait_accounts_applied()
    async with mqtt(accounts("relay")) as relay, mqtt(accounts(ALICE)) as alice:
        await relay.subscribe("doormat/to/relay/+/+", qos=1)
        await alice.publish(to("relay", sender), b'{"op": "li.set"}', qos=1)
        await alice.publish(to("relay", ALICE), b"sentinel", qos=1)
        got = await until_sentinel(relay, b"sentinel")
        assert topics_of(got) == [(to("relay", ALICE), b"sentinel")]


async def test_a_control_reaches_its_target_only_and_the_answer_its_sender_only(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any]
) -> None:
    await broker.wait_accounts_applied()
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(plane_accounts["operator"]) as operator,
        mqtt(accounts(ALICE)) as alice,
    ):
        await relay.subscribe("doormat/to/relay/+/+", qos=1)
        await operator.subscribe("doormat/to/operator/+/+", qos=1)
        await alice.subscribe("doormat/to/+/+/+", qos=1)  # refused or filtered
        await alice.subscribe(f"doormat/to/{ALICE}/+/+", qos=1)
        await operator.publish(to("relay", "operator"), b"li.set", qos=1)
        assert topics_of(await until_sentinel(relay, b"li.set")) == [
            (to("relay", "operator"), b"li.set")]
        await relay.publish(to("operator", "relay", "ans"), b"done", qos=1)
        assert topics_of(await until_sentinel(operator, b"done")) == [
            (to("operator", "relay", "ans"), b"done")]
        await operator.publish(to(ALICE, "operator"), b"sentinel", qos=1)
        got = await until_sentinel(alice, b"sentinel")
        assert topics_of(got) == [(to(ALICE, "operator"), b"sentinel")]


@pytest.mark.parametrize(
    "forged",
    [ev("tap"), ev(ALICE), to("tap", "lab"), to("relay", "operator"), to(ALICE, "vendor"),
     "doormat/out/alice@acme.phone/msg", "doormat/hello"],
)
async def test_the_relay_cannot_forge_events_or_controls(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any], forged: str
) -> None:
    await broker.wait_accounts_applied()
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(plane_accounts["observer"]) as observer,
        mqtt(accounts("tap")) as tap,
        mqtt(accounts(ALICE)) as alice,
    ):
        await observer.subscribe("doormat/ev/#", qos=1)
        await tap.subscribe("doormat/to/tap/+/+", qos=1)
        await tap.subscribe("doormat/hello", qos=1)
        await alice.subscribe(f"doormat/to/{ALICE}/+/+", qos=1)
        await relay.subscribe("doormat/out/+/+", qos=1)
        await relay.subscribe("doormat/to/relay/+/+", qos=1)
        await relay.publish(forged, b"forged", qos=1)
        await relay.publish(ev("relay"), b"sentinel", qos=1)
        assert topics_of(await until_sentinel(observer, b"sentinel")) == [
            (ev("relay"), b"sentinel")]
        assert await listen(tap) == []
        assert await listen(alice) == []
        assert await listen(relay) == []


async def test_the_relay_cannot_read_what_parties_send_each_other(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any]
) -> None:
    await broker.wait_accounts_applied()
    async with (
        mqtt(accounts("relay")) as relay,
        mqtt(plane_accounts["lab"]) as lab,
        mqtt(accounts(ALICE)) as alice,
    ):
        await relay.subscribe("doormat/to/+/+/+", qos=1)  # refused or filtered
        await relay.subscribe("doormat/ev/#", qos=1)
        await relay.subscribe("doormat/out/+/+", qos=1)
        await lab.publish(to("tap", "lab"), b"mandate", qos=1)
        await alice.publish(ev(ALICE), b"events", qos=1)
        await alice.publish("doormat/out/alice@acme.phone/msg", b"sentinel", qos=1)
        got = await until_sentinel(relay, b"sentinel")
        assert topics_of(got) == [("doormat/out/alice@acme.phone/msg", b"sentinel")]


async def test_the_observer_reads_events_and_nothing_else(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any]
) -> None:
    await broker.wait_accounts_applied()
    async with (
        mqtt(plane_accounts["observer"]) as observer,
        mqtt(plane_accounts["lab"]) as lab,
        mqtt(accounts("relay")) as relay,
        mqtt(accounts(ALICE)) as alice,
    ):
        for flt in ("#", "doormat/#", "doormat/in/+/+", "doormat/out/+/+", "doormat/to/+/+/+"):
            await observer.subscribe(flt, qos=1)  # refused or filtered
        await observer.subscribe("doormat/ev/#", qos=1)
        await relay.publish(f"doormat/in/{ALICE}/msg", b"an envelope", qos=1)
        await alice.publish("doormat/out/alice@acme.phone/msg", b"an envelope out", qos=1)
        await lab.publish(to(ALICE, "lab"), b"a control", qos=1)
        await alice.publish(ev(ALICE), b"sentinel", qos=1)
        got = await until_sentinel(observer, b"sentinel")
        assert topics_of(got) == [(ev(ALICE), b"sentinel")]
        # It may say hello to everyone, and nothing else.
        await observer.publish(ev("relay"), b"forged", qos=1)
        await observer.publish(to("relay", "operator"), b"forged", qos=1)
        await observer.publish(ev("observer"), b"sentinel 2", qos=1)
        got = await until_sentinel(observer, b"sentinel 2")
        assert topics_of(got) == [(ev("observer"), b"sentinel 2")]


async def test_the_hello_reaches_every_account(
    broker: Any, accounts: Any, mqtt: Mqtt, plane_accounts: dict[str, Any]
) -> None:
    await broker.wait_accounts_applied()
    async with (
        mqtt(plane_accounts["observer"]) as observer,
        mqtt(accounts(ALICE)) as alice,
        mqtt(accounts("relay")) as relay,
    ):
        await alice.subscribe("doormat/hello", qos=1)
        await relay.subscribe("doormat/hello", qos=1)
        await alice.publish("doormat/hello", b"forged hello", qos=1)
        await observer.publish("doormat/hello", b"hello", qos=1)
        assert topics_of(await until_sentinel(alice, b"hello")) == [("doormat/hello", b"hello")]
        assert topics_of(await until_sentinel(relay, b"hello")) == [("doormat/hello", b"hello")]
