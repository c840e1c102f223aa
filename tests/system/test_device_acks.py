"""Acks published without waiting for their PUBACK (clients/device.py, infra/link.py):
a clean stop still sends every ack (the relay is left holding nothing), and a background
publish that fails is logged, not lost silently."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from doormat.system import System
from infra.link import Link

BOB = "bob@acme.phone"
CAROL = "carol@globex.phone"


async def test_clean_stop_right_after_receiving_leaves_nothing_at_the_relay(
    system: System,
) -> None:
    n = 60
    done = asyncio.Event()
    seen = 0

    def on_event(e: dict[str, object]) -> None:
        nonlocal seen
        if e["kind"] == "device.received" and e["actor"] == BOB:
            seen += 1
            if seen >= n:
                done.set()

    system.events.subscribe(on_event)
    for k in range(n):
        await system.send(CAROL, "bob@acme", f"to bob {k}")
    async with asyncio.timeout(30):
        await done.wait()
    # Stop at once: the last acks are at most just handed to the link.
    await system.stop_device(BOB)
    assert system.relay is not None
    async with asyncio.timeout(10):
        while system.relay.store.pending_count(BOB):
            await asyncio.sleep(0.02)


async def test_a_failing_background_publish_is_logged(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    creds = system.credentials[BOB]
    await system.stop_device(BOB)  # one connection per account
    link = Link(BOB, creds.password, system.broker.host, system.broker.port)
    await link.start()
    calls: list[str] = []

    def then() -> None:
        calls.append("after the PUBACK")
        raise RuntimeError("bookkeeping after the publish failed")

    with caplog.at_level(logging.ERROR, logger="infra.outbox"):
        link.publish_soon("archive", b"not a journal record", then=then)
        assert await link.flush(timeout=10)
        await link.stop()
    assert calls == ["after the PUBACK"]
    failed = [r for r in caplog.records if "background publish failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert "bookkeeping after the publish failed" in str(failed[0].exc_info[1])


async def test_stop_flushes_what_publish_soon_queued(broker: Any, accounts: Any, mqtt: Any) -> None:
    # One publish in flight at a time, so most are still queued in the link when stop()
    # is called: without the flush they would be dropped with the connection.
    dev, relay = accounts("bob@acme.phone"), accounts("relay")
    n = 300
    got = 0
    async with mqtt(relay) as watcher:
        await watcher.subscribe(f"doormat/out/{dev.username}/ack", qos=1)
        link = Link(dev.username, dev.password, broker.host, broker.port, max_in_flight=1)
        await link.start()
        for k in range(n):
            link.publish_soon("ack", f"ack {k}".encode())
        await link.stop()
        assert not link.transport.pending
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                async for _ in watcher.messages:
                    got += 1
    assert got == n
