"""infra/transport.py against both real brokers (amqtt and Mosquitto) and a fake one.

What a PUBACK did or did not reach the broker is observed the only way a client can:
by what the broker sends again when the persistent session reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from doormat.broker.accounts import Account
from infra.retry import Backoff
from infra.transport import (
    LoginRefused,
    Message,
    SubscriptionRefused,
    Transport,
)
from tests.infra.fake_broker import read_packet

ALICE = "alice@acme.phone"
FROM_ALICE = f"doormat/out/{ALICE}/msg"


def transport(broker: Any, account: Account, *subscriptions: str, **options: Any) -> Transport:
    return Transport(
        broker.host,
        broker.port,
        username=account.username,
        password=account.password,
        subscriptions=subscriptions,
        **options,
    )


class Reader:
    """Reads a transport's messages in the background (as every consumer must: amqtt
    answers the SUBSCRIBE only after the client acknowledged what it re-sends)."""

    def __init__(self, t: Transport) -> None:
        self.t = t
        self.got: list[Message] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.t.messages():
            self.got.append(message)

    async def next(self, n: int, timeout: float = 10.0) -> list[Message]:
        """The next ``n`` messages (what arrived since the last call)."""
        async with asyncio.timeout(timeout):
            while len(self.got) < n:
                await asyncio.sleep(0.01)
        taken, self.got = self.got[:n], self.got[n:]
        return taken

    async def quiet(self, seconds: float = 1.0) -> list[Message]:
        """Whatever arrives within ``seconds``."""
        await asyncio.sleep(seconds)
        taken, self.got = self.got, []
        return taken

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def relay_and_alice(broker: Any, accounts: Any) -> AsyncIterator[tuple[Reader, Transport]]:
    """The relay account reading ``doormat/out/+/+`` and alice's phone publishing."""
    relay = transport(broker, accounts("relay"), "doormat/out/+/+")
    reader = Reader(relay)
    await relay.start()
    alice = transport(broker, accounts(ALICE))
    await alice.start()
    try:
        yield reader, alice
    finally:
        await alice.stop()
        await reader.close()
        await relay.stop()


def payloads(messages: list[Message]) -> list[bytes]:
    return [m.payload for m in messages]


async def test_a_later_ack_waits_for_the_earlier_ones(broker: Any, accounts: Any) -> None:
    async with relay_and_alice(broker, accounts) as (reader, alice):
        for k in (b"1", b"2", b"3"):
            await alice.publish(FROM_ALICE, k)
        first = await reader.next(3)
        assert payloads(first) == [b"1", b"2", b"3"]
        first[1].ack()  # 2 before 1: no PUBACK for 2 while 1 is not acknowledged
        await reader.t.reconnect()
        again = await reader.next(3)
        assert payloads(again) == [b"1", b"2", b"3"]  # all three came again
        assert all(m.connection.number == 2 for m in again)
        again[0].ack()  # 1 alone: its PUBACK goes
        await reader.t.reconnect()
        rest = await reader.next(2)
        assert payloads(rest) == [b"2", b"3"]
        rest[1].ack()  # 3, then 2: both go once 2 is acknowledged
        rest[0].ack()
        await reader.t.reconnect()
        assert await reader.quiet() == []


async def test_no_ack_on_a_lost_connection_and_none_without_ack(
    broker: Any, accounts: Any
) -> None:
    """A message its consumer did not acknowledge (a handler that raised) comes again
    after a reconnection; so does one acknowledged only after its connection was lost."""
    async with relay_and_alice(broker, accounts) as (reader, alice):
        await alice.publish(FROM_ALICE, b"unhandled")
        await alice.publish(FROM_ALICE, b"late")
        unhandled, late = await reader.next(2)
        unhandled.ack()
        await reader.t.reconnect()
        late.ack()  # on a lost connection: nothing goes out
        again = await reader.next(1)
        assert payloads(again) == [b"late"]
        assert again[0].connection is not late.connection
        again[0].ack()
        await reader.t.reconnect()
        assert await reader.quiet() == []


async def test_messages_of_a_lost_connection_nobody_took_are_dropped(
    broker: Any, accounts: Any
) -> None:
    relay = transport(broker, accounts("relay"), "doormat/out/+/+")
    await relay.start()  # nobody reading yet: fine for a fresh session
    alice = transport(broker, accounts(ALICE))
    await alice.start()
    try:
        for k in range(5):
            await alice.publish(FROM_ALICE, b"%d" % k)
        async with asyncio.timeout(10):
            while len(relay._inbox) < 5:
                await asyncio.sleep(0.01)
        await relay.reconnect()
        reader = Reader(relay)  # reading from now on: what it gets came again
        got = await reader.next(5)
        assert payloads(got) == [b"%d" % k for k in range(5)]
        assert {m.connection.number for m in got} == {2}
        for m in got:
            m.ack()
        await reader.close()
    finally:
        await alice.stop()
        await relay.stop()


async def test_publish_waits_for_the_broker_and_goes_out_after_a_restart(
    restartable: Any, accounts: Any
) -> None:
    broker = restartable
    relay = transport(broker, accounts("relay"), "doormat/out/+/+")
    reader = Reader(relay)
    await relay.start()
    alice_account = accounts(ALICE)
    alice = transport(broker, alice_account, backoff=Backoff(0.05, 0.5))
    await alice.start()
    try:
        await broker.stop()
        async with asyncio.timeout(10):
            while alice.online or relay.online:
                await asyncio.sleep(0.01)
        publishing = asyncio.create_task(alice.publish(FROM_ALICE, b"after the restart"))
        # Back with alice's login refused, so that the relay subscribes first (amqtt
        # forgets sessions on a restart). A refused login is final only before the first
        # connection: alice keeps trying.
        broker.add_account(Account(ALICE, "not-the-password", "device"))
        await broker.start()
        async with asyncio.timeout(20):
            await relay.wait_connected()
        await asyncio.sleep(0.5)
        assert not publishing.done()
        assert alice.running
        broker.add_account(alice_account)
        await broker.wait_accounts_applied()
        carrier = await asyncio.wait_for(publishing, 30)
        assert carrier.number >= 2
        (got,) = await reader.next(1, timeout=20)
        assert got.payload == b"after the restart"
        got.ack()
    finally:
        await alice.stop()
        await reader.close()
        await relay.stop()


async def test_publishes_in_flight_stay_within_the_bound(broker: Any, accounts: Any) -> None:
    bound = 5
    alice = transport(broker, accounts(ALICE), max_in_flight=bound)
    await alice.start()
    most = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, alice.in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        for k in range(200):
            alice.publish_soon(FROM_ALICE, b"soon %d" % k)
        async with asyncio.timeout(60):
            await asyncio.gather(*(alice.publish(FROM_ALICE, b"%d" % k) for k in range(200)))
            assert await alice.flush()
        assert alice.pending == 0
    finally:
        done.set()
        await watcher
        await alice.stop()
    assert 0 < most <= bound


async def test_room_waits_while_the_window_is_full(broker: Any, accounts: Any) -> None:
    alice = transport(broker, accounts(ALICE), max_in_flight=3)
    await alice.start()
    try:
        for k in range(3):
            alice.publish_soon(FROM_ALICE, b"%d" % k)
        assert alice.pending == 3
        async with asyncio.timeout(10):
            await alice.room()  # returns once a PUBACK came back
        assert alice.pending < 3
    finally:
        await alice.stop()


async def test_a_refused_login_is_reported_at_once(broker: Any, accounts: Any) -> None:
    wrong = Account(ALICE, "not-the-password", "device")
    t = transport(broker, wrong)
    started = time.monotonic()
    with pytest.raises(LoginRefused, match=f"refused the login of {ALICE!r}"):
        await t.start(timeout=30)
    assert time.monotonic() - started < 5
    assert not t.running


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # Mosquitto grants it
async def test_a_refused_subscription_is_reported(broker: Any, accounts: Any) -> None:
    t = transport(broker, accounts(ALICE), "doormat/in/bob@acme.phone/#")
    with pytest.raises(SubscriptionRefused):
        await t.start(timeout=30)


async def test_a_publish_in_flight_when_the_connection_drops_goes_out_again(
    fake_broker: Any,
) -> None:
    seen: list[tuple[int, bytes]] = []

    async def session(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            first, body = await read_packet(reader)
            if first >> 4 != 3:  # not a PUBLISH
                continue
            topic_len = int.from_bytes(body[:2], "big")
            packet_id = body[2 + topic_len : 4 + topic_len]
            seen.append((n, body[4 + topic_len :]))
            if n == 1:
                return  # gone without a PUBACK
            writer.write(b"\x40\x02" + packet_id)  # PUBACK
            await writer.drain()

    port = await fake_broker(session)
    t = Transport("127.0.0.1", port, username="alice", password="pw", backoff=Backoff(0.05, 0.1))
    await t.start()
    try:
        carrier = await asyncio.wait_for(t.publish("doormat/out/alice/msg", b"hello"), 20)
        assert carrier.number == 2
        assert seen == [(1, b"hello"), (2, b"hello")]
        assert t.pending == 0
    finally:
        await t.stop()


async def test_retry_false_is_tried_on_one_connection_only(fake_broker: Any) -> None:
    seen: list[tuple[int, bytes]] = []
    second = asyncio.Event()

    async def session(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 2:
            second.set()
        while True:
            first, body = await read_packet(reader)
            if first >> 4 == 3:
                topic_len = int.from_bytes(body[:2], "big")
                seen.append((n, body[4 + topic_len :]))
                if n == 1:
                    return

    port = await fake_broker(session)
    t = Transport("127.0.0.1", port, username="relay", password="pw", backoff=Backoff(0.05, 0.1))
    await t.start()
    try:
        t.publish_soon("doormat/in/bob/msg", b"forward", retry=False)
        async with asyncio.timeout(10):
            await second.wait()
        await asyncio.sleep(0.3)
        assert seen == [(1, b"forward")]
        assert t.pending == 0
        t.publish_soon("doormat/in/bob/msg", b"now")
        async with asyncio.timeout(10):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
        assert seen[-1] == (2, b"now")
    finally:
        await t.stop(timeout=0.5)
