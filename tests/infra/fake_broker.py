"""A fake MQTT 3.1.1 broker for the transport's tests: just enough of the protocol to
drop a connection at a chosen moment, which no real broker can be made to do."""

from __future__ import annotations

import asyncio


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet: (its first byte, its body)."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)
