"""A connection lost before the broker answered the SUBSCRIBE: the link goes round its
reconnect loop rather than dying.

The broker here is a few lines of asyncio that speak just enough MQTT 3.1.1 (CONNACK,
then silence, then a closed socket): no real broker can be made to drop a connection at
exactly that moment, and the broker is not what is under test."""

from __future__ import annotations

import asyncio
import contextlib

from infra.link import Link


async def _read_packet(reader: asyncio.StreamReader) -> int:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    await reader.readexactly(length)
    return first >> 4


async def test_a_connection_lost_before_the_suback_is_retried() -> None:
    connects = 0
    second = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connects
        try:
            if await _read_packet(reader) == 1:  # CONNECT
                connects += 1
                if connects >= 2:
                    second.set()
                writer.write(b"\x20\x02\x00\x00")  # CONNACK, session not present, accepted
                # A message queued for the session (QoS 0), so that the reader is
                # inside a handler when the connection goes.
                topic = b"doormat/in/alice@acme.phone/note"
                body = len(topic).to_bytes(2, "big") + topic + b"hello"
                writer.write(bytes([0x30, len(body)]) + body)
                await writer.drain()
            await _read_packet(reader)  # the SUBSCRIBE, never answered
            await asyncio.sleep(0.1)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async def slow_handler(kind: str, payload: bytes) -> None:
        await asyncio.sleep(0.5)

    link = Link("alice@acme.phone", "pw", "127.0.0.1", port, on_other=slow_handler)
    try:
        starting = asyncio.create_task(link.start(timeout=30))
        async with asyncio.timeout(10):
            await second.wait()
        assert link.transport.running, "the link's task died"
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    finally:
        await link.stop()
        server.close()
        await server.wait_closed()
