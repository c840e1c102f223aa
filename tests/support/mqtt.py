"""Reading an aiomqtt client in tests: for a while, up to a sentinel, or until enough.

Negative checks ("X gets nothing") cannot wait for an absence forever: a test sends the
forbidden traffic first, then a permitted sentinel along the same path, and reads up to
the sentinel and a short grace period after it; anything but the sentinel is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

GRACE = 0.3  # seconds to keep listening after a sentinel


async def listen(client: aiomqtt.Client, seconds: float = GRACE) -> list[aiomqtt.Message]:
    """Whatever arrives in the next ``seconds``."""
    got: list[aiomqtt.Message] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for m in client.messages:
                got.append(m)
    return got


async def until_sentinel(
    client: aiomqtt.Client, sentinel: bytes, timeout: float = 5.0, grace: float = GRACE
) -> list[aiomqtt.Message]:
    """Everything up to the sentinel (inclusive; fail if it takes over ``timeout``
    seconds), then ``grace`` more seconds of listening."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for m in client.messages:
            got.append(m)
            if m.payload == sentinel:
                break
    return got + await listen(client, grace)


async def collect(client: aiomqtt.Client, want: int, seconds: float) -> set[bytes]:
    """Distinct payloads until there are ``want`` of them or ``seconds`` have passed."""
    got: set[bytes] = set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for m in client.messages:
                got.add(bytes(m.payload))  # type: ignore[arg-type]
                if len(got) == want:
                    break
    return got
