"""Link.publish keeps at most MAX_IN_FLIGHT publishes in flight on the broker connection
(infra.transport), however many its owner starts at once."""

from __future__ import annotations

import asyncio
from typing import Any

from infra.link import MAX_IN_FLIGHT, Link


async def test_a_thousand_concurrent_publishes_never_exceed_the_bound(
    broker: Any, accounts: Any
) -> None:
    dev = accounts("bob@acme.phone")
    link = Link(dev.username, dev.password, broker.host, broker.port)
    await link.start()
    most = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, link.transport.in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(link.publish("ack", b"%d" % k) for k in range(1000)))
    finally:
        done.set()
        await watcher
        await link.stop()
    assert 0 < most <= MAX_IN_FLIGHT
