"""Brokers with limits (issue 12, point 6), on Mosquitto and the embedded broker, with the
broker's memory measured before and after each attack (psutil: Mosquitto's process, or
this process for the embedded broker, which runs in it).

On today's main (figures from tests like these, /tmp runs on this machine):

* one device published 10 x 50 MB for an offline relay: Mosquitto 8 -> 508 MB, the
  embedded broker's process 31 -> 630 MB;
* 10 half-sent CONNECTs declaring 41 MB each: Mosquitto 8 -> 418 MB;
* 2,000 idle sockets: still open after 100 s on the embedded broker (never closed);
  Mosquitto closed them after about 90 s (its default keepalive for a new connection);
* idle sockets up to the broker's file descriptors lock a real user out.

Now: a packet over the limit (``BrokerLimits.max_packet_bytes``, 1 MiB: counted as
Mosquitto counts it) disconnects its sender as soon as its header is read, before
anything is buffered; queued bytes per client are bounded; half-sent CONNECTs hold at
most the packet limit each; the embedded broker closes a connection without a CONNECT
after ``connect_timeout`` and lets one address hold only ``max_pending_per_address`` of
them, so a real user gets in; Mosquitto 2.0 has no CONNECT timeout (about 95 s, the slow
tests measure it) and no per-address limit (docs/brokers.md says what bounds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import psutil
import pytest

from doormat.broker import EmbeddedBroker, MosquittoBroker
from doormat.broker.accounts import Account, generate_password
from doormat.broker.limits import DEFAULT, MOSQUITTO_PRE_CONNECT_TIMEOUT, BrokerLimits
from tests.support.processes import skip_without_mosquitto

ALICE = "alice@acme.phone"
MB = 1024 * 1024
KINDS = ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


class Broker:
    def __init__(self, kind: str, inner: Any, passwords: dict[str, str]) -> None:
        self.kind, self.inner, self.passwords = kind, inner, passwords
        self.host, self.port = inner.host, inner.port
        pid = inner.pid if kind == "mosquitto" else os.getpid()
        self.process = psutil.Process(pid)

    def rss(self) -> float:
        return float(self.process.memory_info().rss) / MB

    def client(self, user: str, **kw: Any) -> aiomqtt.Client:
        return aiomqtt.Client(self.host, self.port, username=user, password=self.passwords[user],
                              identifier=user, **kw)  # fmt: skip


@contextlib.asynccontextmanager
async def broker_with(
    kind: str, tmp_path: Path, limits: BrokerLimits = DEFAULT
) -> AsyncIterator[Broker]:
    accs = [Account("relay", generate_password(), "relay"),
            Account(ALICE, generate_password(), "device")]  # fmt: skip
    passwords = {a.username: a.password for a in accs}
    if kind == "mosquitto":
        skip_without_mosquitto()
        inner: Any = MosquittoBroker(accs, tmp_path / "mosquitto", limits=limits)
    else:
        inner = EmbeddedBroker(accs, limits=limits)
    async with inner:
        yield Broker(kind, inner, passwords)


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(user: str, password: str) -> bytes:
    body = _str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    body += _str(user) + _str(user) + _str(password)
    return bytes([0x10]) + _remaining(len(body)) + body


def publish_header(topic: str, payload_len: int) -> bytes:
    """A QoS 1 PUBLISH's fixed and variable header, for a payload of ``payload_len``."""
    variable = _str(topic) + struct.pack("!H", 1)
    return bytes([0x32]) + _remaining(len(variable) + payload_len) + variable


def _send_until_refused(sock: socket.socket, total: int, chunk: int = MB) -> int:
    """Send ``total`` bytes of filler; return how many went before the broker hung up."""
    sent = 0
    block = os.urandom(chunk)
    sock.settimeout(10)
    try:
        while sent < total:
            n = min(chunk, total - sent)
            sock.sendall(block[:n])
            sent += n
    except OSError:
        pass
    return sent


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def _relay_session(b: Broker) -> None:
    """The relay subscribes with a persistent session, then goes away: what devices send
    from now on is queued for it."""
    async with b.client("relay", clean_session=False) as relay:
        await relay.subscribe("doormat/out/+/+", qos=1)


async def _authenticated(b: Broker) -> socket.socket:
    def connect() -> socket.socket:
        sock = socket.create_connection((b.host, b.port), timeout=10)
        sock.sendall(connect_packet(ALICE, b.passwords[ALICE]))
        connack = sock.recv(4)
        assert connack[:1] == b"\x20" and connack[3:4] == b"\x00", connack
        return sock

    return await asyncio.to_thread(connect)


async def _until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


# -- the packet limit ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_ten_50_mb_publishes_for_an_offline_relay_are_refused(
    kind: str, tmp_path: Path
) -> None:
    async with broker_with(kind, tmp_path) as b:
        await _relay_session(b)
        before = b.rss()
        sent = []
        for _ in range(10):
            sock = await _authenticated(b)
            sock.sendall(publish_header(f"doormat/out/{ALICE}/msg", 50 * MB))
            sent.append(await asyncio.to_thread(_send_until_refused, sock, 50 * MB))
            sock.close()
        await asyncio.sleep(1.0)
        after = b.rss()
        # The broker hung up long before 50 MB (the kernel's buffers took what went).
        assert max(sent) < 20 * MB, sent
        assert after - before < 32, f"{kind}: {before:.0f} -> {after:.0f} MB"
        # Nothing of it was queued for the relay; a normal message still is.
        async with b.client(ALICE) as alice:
            await alice.publish(f"doormat/out/{ALICE}/msg", b"after the attack", qos=1)
        async with b.client("relay", clean_session=False) as relay:
            got = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for m in relay.messages:
                        got.append(bytes(m.payload))  # type: ignore[arg-type]
        assert got == [b"after the attack"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_largest_packet_passes_and_one_byte_more_is_refused(
    kind: str, tmp_path: Path
) -> None:
    limit = DEFAULT.max_packet_bytes
    topic = f"doormat/out/{ALICE}/msg"
    overhead = len(publish_header(topic, 0)) - 1 - len(_remaining(0))  # topic + packet id
    async with broker_with(kind, tmp_path) as b:
        await _relay_session(b)
        for extra, passes in ((0, True), (1, False)):
            payload_len = limit - 1 - overhead + extra  # remaining length + 1 == limit + extra
            sock = await _authenticated(b)
            sock.sendall(publish_header(topic, payload_len))
            sent = await asyncio.to_thread(_send_until_refused, sock, payload_len, 64 * 1024)
            puback = b""
            if passes:
                sock.settimeout(10)
                puback = await asyncio.to_thread(sock.recv, 4)
            else:
                assert await _until(lambda s=sock: _closed(s), 10)
            sock.close()
            assert (puback[:1] == b"\x40") is passes, (extra, sent, puback)
        async with b.client("relay", clean_session=False) as relay:
            async with asyncio.timeout(10):
                async for m in relay.messages:
                    assert len(m.payload) == limit - 1 - overhead  # type: ignore[arg-type]
                    break


# -- queued messages and bytes ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_bytes_queued_for_an_offline_client_are_bounded(kind: str, tmp_path: Path) -> None:
    limits = BrokerLimits(max_queued_bytes=8 * MB)
    async with broker_with(kind, tmp_path, limits) as b:
        await _relay_session(b)
        before = b.rss()
        chunk = os.urandom(900 * 1024)
        async with b.client(ALICE) as alice:
            for _ in range(60):  # 54 MB for a relay that may queue 8
                await alice.publish(f"doormat/out/{ALICE}/msg", chunk, qos=1)
        await asyncio.sleep(1.0)
        grown = b.rss() - before
        received = 0
        async with b.client("relay", clean_session=False) as relay:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    async for m in relay.messages:
                        received += len(m.payload)  # type: ignore[arg-type]
        # Mosquitto counts a few messages as "in flight" beyond the queue.
        assert 4 * MB < received <= 8 * MB + 2 * len(chunk), received
        assert grown < 40, f"{kind}: grew {grown:.0f} MB for 54 MB sent"


# -- half-sent CONNECTs ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_half_sent_connects_hold_at_most_the_packet_limit(
    kind: str, tmp_path: Path
) -> None:
    async with broker_with(kind, tmp_path) as b:
        before = b.rss()
        socks = []
        for declared in [41 * MB] * 10 + [DEFAULT.max_packet_bytes - 1] * 10:
            sock = await asyncio.to_thread(socket.create_connection, (b.host, b.port), 10)
            # A CONNECT's start, then filler up to one byte short of what it declared.
            sock.sendall(b"\x10" + _remaining(declared) + _str("MQTT") + bytes([4, 2, 0, 30]))
            await asyncio.to_thread(_send_until_refused, sock, declared - 13)
            socks.append(sock)
        await asyncio.sleep(1.0)
        grown = b.rss() - before
        # Declared over the limit: hung up at once. Under it: held, 1 MiB each at most.
        assert all([await _until(lambda s=s: _closed(s), 10) for s in socks[:10]])
        assert grown < 10 * DEFAULT.max_packet_bytes / MB + 16, f"{kind}: grew {grown:.0f} MB"
        for s in socks:
            s.close()


# -- idle sockets and the CONNECT timeout ------------------------------------------------------


async def test_the_embedded_broker_closes_a_connection_without_connect(tmp_path: Path) -> None:
    async with broker_with("embedded", tmp_path, BrokerLimits(connect_timeout=1.0)) as b:
        socks = await asyncio.to_thread(
            lambda: [socket.create_connection((b.host, b.port)) for _ in range(200)]
        )
        # A CONNECT trickled a byte at a time is no better than none.
        trickle = socks[0]
        t0 = time.monotonic()
        assert await _until(lambda: all(_closed(s) for s in socks[1:]), 5)
        assert time.monotonic() - t0 < 4
        for byte in b"\x10\x7f":
            with contextlib.suppress(OSError):
                trickle.sendall(bytes([byte]))
        assert await _until(lambda: _closed(trickle), 3)
        for s in socks:
            s.close()


async def test_idle_sockets_from_one_address_do_not_lock_a_real_user_out(tmp_path: Path) -> None:
    """20,000 idle sockets would exhaust the descriptors; here 600 from 127.0.0.2 against
    a per-address allowance of 256 show the same: the rest are closed at once, and a
    real user (127.0.0.1) connects meanwhile."""
    async with broker_with("embedded", tmp_path) as b:
        before = b.rss()

        def attack() -> list[socket.socket]:
            return [socket.create_connection((b.host, b.port), source_address=("127.0.0.2", 0))
                    for _ in range(600)]  # fmt: skip

        socks = await asyncio.to_thread(attack)
        await asyncio.sleep(1.0)
        still = [s for s in socks if not _closed(s)]
        assert len(still) <= DEFAULT.max_pending_per_address
        async with b.client(ALICE) as alice:
            await alice.publish(f"doormat/out/{ALICE}/msg", b"a real user", qos=1)
        assert b.inner._broker.refused >= 600 - DEFAULT.max_pending_per_address
        assert b.rss() - before < 32
        for s in socks:
            s.close()


def _mosquitto_version(b: Broker) -> tuple[int, ...]:
    found = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", b.inner.log_text())
    assert found, "no version in Mosquitto's log"
    return tuple(int(x) for x in found.groups())


@pytest.mark.parametrize("kind", KINDS)
async def test_the_connection_limit(kind: str, tmp_path: Path) -> None:
    """With the listener full a further connection is not served (the embedded broker
    closes it at once; Mosquitto when it accepts it), and once there is room again a real
    user connects."""
    async with broker_with(kind, tmp_path, BrokerLimits(max_connections=20)) as b:
        if kind == "mosquitto" and _mosquitto_version(b) < (2, 0, 12):
            pytest.skip(
                "Mosquitto < 2.0.12 miscounts connections that ended (commit 79542158): "
                "the limit is loose by an amount this test cannot know; see the next test"
            )
        socks = await asyncio.to_thread(
            lambda: [socket.create_connection((b.host, b.port)) for _ in range(20)]
        )
        await asyncio.sleep(0.5)
        with pytest.raises(aiomqtt.MqttError):
            async with b.client(ALICE, timeout=3):
                pass
        assert not any(_closed(s) for s in socks)
        for s in socks:
            s.close()
        await asyncio.sleep(0.5)
        async with b.client(ALICE) as alice:  # room again
            await alice.publish(f"doormat/out/{ALICE}/msg", b"in", qos=1)


@pytest.mark.mosquitto
async def test_mosquitto_2_0_11_loosens_its_connection_limit_as_clients_leave(
    tmp_path: Path,
) -> None:
    """The bug docs/brokers.md warns about, measured: on Mosquitto before 2.0.12 (Debian
    12 ships 2.0.11) each connection that ends frees two slots, so on a long-running
    broker max_connections bounds nothing. Compose runs eclipse-mosquitto:2.0.22, which
    counts right (this test is skipped there)."""
    async with broker_with("mosquitto", tmp_path, BrokerLimits(max_connections=5)) as b:
        if _mosquitto_version(b) >= (2, 0, 12):
            pytest.skip("this Mosquitto counts connections right")
        for _ in range(10):  # ten clients come and go
            async with b.client(ALICE):
                pass
        socks = await asyncio.to_thread(
            lambda: [socket.create_connection((b.host, b.port)) for _ in range(30)]
        )
        await asyncio.sleep(1.0)
        # Mosquitto logs "New connection" for each connection it serves (a denied one is
        # logged as denied instead).
        served = b.inner.log_text().count("New connection") - 10 - 1  # clients, probe
        assert served > 5 + 10, served  # the limit, and one more for each that left
        for s in socks:
            s.close()


async def test_the_embedded_broker_bounds_the_topic_filters_of_a_client(tmp_path: Path) -> None:
    """A further attack on the limits: subscribe without end. Stock amqtt kept every
    filter (about 45 MB for 20,000 filters of 1 KB, measured); now 100 per client."""
    async with broker_with("embedded", tmp_path) as b:
        before = b.rss()
        codes: list[int] = []
        async with b.client(ALICE, timeout=60) as c:
            for chunk in range(20):
                granted = await c.subscribe(
                    [(f"doormat/in/{ALICE}/{'x' * 1000}{chunk}-{i}", 1) for i in range(1000)]
                )
                codes += [int(getattr(g, "value", g)) for g in granted]  # type: ignore[union-attr]
        assert sum(1 for c in codes if c < 0x80) == DEFAULT.max_subscriptions_per_client
        assert b.rss() - before < 16
        # Unsubscribed (a clean session ends): room again.
        async with b.client(ALICE) as c:
            (code,) = await c.subscribe(f"doormat/in/{ALICE}/#", qos=1)
            assert int(getattr(code, "value", code)) < 0x80  # type: ignore[arg-type]


@pytest.mark.mosquitto
async def test_mosquitto_bounds_a_client_that_subscribes_without_end_by_memory(
    tmp_path: Path,
) -> None:
    """Mosquitto 2.0 has no limit on a client's topic filters (and grants any, checking
    its ACL on delivery): 20,000 filters of 1 KB took it from 8 to 53 MB. Its
    memory_limit is what bounds it: past it, the client is disconnected."""
    limits = BrokerLimits(memory_limit=40 * MB)
    async with broker_with("mosquitto", tmp_path, limits) as b:
        with pytest.raises(aiomqtt.MqttError):
            async with b.client(ALICE, timeout=30) as c:
                for chunk in range(60):
                    await c.subscribe(
                        [(f"doormat/in/{ALICE}/{'x' * 1000}{chunk}-{i}", 1) for i in range(1000)]
                    )
        # 60,000 filters would take about 135 MB; the heap stops at 40 MB (the process's
        # resident size a little above: the allocator's own overhead).
        assert b.rss() < 64
        assert "out of memory" in b.inner.log_text()
        async with b.client("relay") as relay:  # the broker itself goes on
            await relay.publish(f"doormat/in/{ALICE}/msg", b"still serving", qos=1)


@pytest.mark.slow
@pytest.mark.mosquitto
async def test_mosquitto_closes_idle_sockets_after_its_pre_connect_timeout(
    tmp_path: Path,
) -> None:
    """Mosquitto 2.0 has no CONNECT timeout option: a new connection gets the default
    keepalive (60 s) and is closed after 1.5 x that without a complete packet. With the
    connection limit full of such sockets a real user is refused until they go."""
    async with broker_with("mosquitto", tmp_path, BrokerLimits(max_connections=50)) as b:
        socks = await asyncio.to_thread(
            lambda: [socket.create_connection((b.host, b.port)) for _ in range(50)]
        )
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        if _mosquitto_version(b) >= (2, 0, 12):  # (2.0.11 miscounts: see above)
            with pytest.raises(aiomqtt.MqttError):
                async with b.client(ALICE, timeout=5):
                    pass
        assert await _until(lambda: all(_closed(s) for s in socks),
                            MOSQUITTO_PRE_CONNECT_TIMEOUT + 10)  # fmt: skip
        took = time.monotonic() - t0
        assert 60 < took <= MOSQUITTO_PRE_CONNECT_TIMEOUT + 10, took
        async with b.client(ALICE) as alice:
            await alice.publish(f"doormat/out/{ALICE}/msg", b"in at last", qos=1)
        for s in socks:
            s.close()
