"""The embedded broker delivers every message it accepted, whatever else goes on.

Two amqtt 0.12.1 bugs that ``doormat.broker.embedded`` works around
(docs/benchmarks.md, "Found", items 3 and 4):

* a subscription added while a message is being broadcast made the broadcast fail
  ("dictionary changed size during iteration") and the message was lost;
* messages a client published and was PUBACKed for, but that the broker had not yet
  passed on when the client disconnected (or a clean-session connection of the same
  client replaced it), were never delivered.

Each test also runs with amqtt's own methods put back (``stock`` parameter, strict
xfail), so it is known to catch the bug it is about.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest
from amqtt.broker import Broker  # type: ignore[import-untyped]

from doormat.broker import EmbeddedBroker
from doormat.broker.accounts import Account, generate_password
from doormat.broker.embedded import _DoormatBroker
from tests.support.mqtt import collect

ALICE = "alice@acme.phone"
STOCK = pytest.mark.xfail(reason="stock amqtt loses messages here", strict=True)


@pytest.fixture(
    params=[
        "fixed",
        pytest.param("stock", marks=STOCK),
    ]
)
def variant(request: pytest.FixtureRequest) -> str:
    """``fixed``: the broker as shipped; ``stock``: with amqtt's own method put back."""
    return str(request.param)


def patience(variant: str) -> float:
    """How long to wait for the last message: stock loses some, no need to wait long."""
    return 5.0 if variant == "fixed" else 2.0


def use_stock(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setattr(_DoormatBroker, name, getattr(Broker, name))


def make_accounts(*names: tuple[str, str]) -> dict[str, Account]:
    return {n: Account(n, generate_password(), role) for n, role in names}


def client(broker: EmbeddedBroker, acc: Account, **kw: Any) -> aiomqtt.Client:
    kw.setdefault("clean_session", False)
    return aiomqtt.Client(
        broker.host, broker.port, username=acc.username, password=acc.password,
        identifier=acc.username, timeout=10, **kw,
    )  # fmt: skip


async def test_subscriptions_added_during_a_broadcast_lose_nothing(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # amqtt's broadcast walks the subscription table and awaits the ACL check for each
    # subscriber on the way; a new topic filter added meanwhile broke the walk, and
    # subscribers after that point in the table never got the message.
    if variant == "stock":
        use_stock(monkeypatch, "_run_broadcast")
    accs = make_accounts(("relay", "relay"), ("relay-2", "relay"), ("relay-3", "relay"),
                         (ALICE, "device"))  # fmt: skip
    n = 300
    async with (
        EmbeddedBroker(accs.values()) as broker,
        client(broker, accs["relay"]) as first,
        client(broker, accs["relay-2"]) as second,
        client(broker, accs["relay-3"]) as churn,
        client(broker, accs[ALICE]) as alice,
    ):
        # Two subscribers on two filters: the second is walked after an await.
        await first.subscribe("doormat/out/+/+", qos=1)
        await second.subscribe("doormat/out/+/msg", qos=1)

        async def subscribe_all_the_time() -> None:
            # New filters the relay role may read (since issue 11 it reads
            # doormat/out/+/+ and its own doormat/to/<id>/#, not doormat/#).
            for i in range(n):
                await churn.subscribe(f"doormat/to/relay-3/churn{i}/ctl", qos=1)

        async def send_all() -> None:
            sem = asyncio.Semaphore(10)

            async def one(i: int) -> None:
                async with sem:
                    await alice.publish(f"doormat/out/{ALICE}/msg", f"m{i}".encode(), qos=1)

            await asyncio.gather(*(one(i) for i in range(n)))

        await asyncio.gather(subscribe_all_the_time(), send_all())
        got_first, got_second = await asyncio.gather(
            collect(first, n, patience(variant)), collect(second, n, patience(variant))
        )
    assert (len(got_first), len(got_second)) == (n, n)


@pytest.mark.parametrize("how", ["disconnect", "disconnect-clean", "replaced-by-clean"])
async def test_what_was_acknowledged_is_delivered_after_the_sender_left(
    variant: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker PUBACKs a QoS 1 message once it is queued for broadcast; a client that
    # keeps several in flight gets ahead of the broadcast, and stock amqtt dropped the
    # rest of the queue when the client disconnected after its last PUBACK, or when a
    # clean-session connection of the same client replaced it.
    if variant == "stock":
        use_stock(monkeypatch, "_client_message_loop", "_handle_disconnect")

        async def drop(*args: Any) -> None:  # what stock _delete_session does with them
            return None

        monkeypatch.setattr(_DoormatBroker, "_broadcast_received", drop)
    accs = make_accounts(("relay", "relay"), (ALICE, "device"))
    n, window = 200, 10
    async with (
        EmbeddedBroker(accs.values()) as broker,
        client(broker, accs["relay"]) as relay,
    ):
        await relay.subscribe("doormat/out/+/+", qos=1)
        async with client(broker, accs[ALICE], clean_session=how == "disconnect-clean") as alice:
            sem = asyncio.Semaphore(window)

            async def one(i: int) -> None:
                async with sem:
                    await alice.publish(f"doormat/out/{ALICE}/msg", f"m{i}".encode(), qos=1)

            await asyncio.gather(*(one(i) for i in range(n)))  # all PUBACKed
            if how == "replaced-by-clean":
                async with client(broker, accs[ALICE], clean_session=True):
                    pass
        got = await collect(relay, n, patience(variant))
    assert len(got) == n
