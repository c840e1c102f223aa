"""Fixtures for the transport's tests: a broker that can be stopped and started again on
the same port (both kinds), and a fake broker that speaks just enough MQTT 3.1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from doormat.broker import EmbeddedBroker, MosquittoBroker
from doormat.broker.mosquitto import free_port
from tests.infra.fake_broker import read_packet
from tests.support.processes import skip_without_mosquitto


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
async def restartable(
    request: pytest.FixtureRequest, accounts: Any, tmp_path: Path
) -> AsyncIterator[EmbeddedBroker | MosquittoBroker]:
    """A broker with the standard accounts whose stop() and start() keep its port."""
    broker: EmbeddedBroker | MosquittoBroker
    if request.param == "embedded":
        broker = EmbeddedBroker(accounts.standard(), port=free_port())
    else:
        skip_without_mosquitto()
        broker = MosquittoBroker(accounts.standard(), tmp_path / "mosquitto")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


Session = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_broker() -> AsyncIterator[Callable[[Session], Awaitable[int]]]:
    """fake_broker(session) -> port. ``session(n, reader, writer)`` runs for the n-th
    connection after its CONNECT was read and answered with a CONNACK (accepted);
    the socket is closed when it returns."""
    servers: list[asyncio.Server] = []

    async def start(session: Session) -> int:
        count = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            try:
                first, _ = await read_packet(reader)
                if first >> 4 != 1:  # not a CONNECT
                    return
                count += 1
                writer.write(b"\x20\x02\x00\x00")  # CONNACK: no session present, accepted
                await writer.drain()
                await session(count, reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    try:
        yield start
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
