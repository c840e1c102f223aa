"""infra/link.py against both brokers: a handler that fails transiently (the disk) leaves
its message unacknowledged (the broker sends it again), a refused login is a LinkError at
once. A handler that fails because of the message: tests/infra/test_link_set_aside.py."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

import pytest

from infra.link import Link, LinkError
from infra.transport import Transport

ALICE = "alice@acme.phone"


async def test_a_message_whose_handler_raised_comes_again(
    broker: Any, accounts: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[bytes] = []

    async def on_other(kind: str, payload: bytes) -> None:
        calls.append(payload)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "the disk is full")

    alice = accounts(ALICE)
    relay_account = accounts("relay")
    relay = Transport(
        broker.host, broker.port, username="relay", password=relay_account.password
    )
    await relay.start()
    link = Link(ALICE, alice.password, broker.host, broker.port, on_other=on_other)
    await link.start()
    try:
        with caplog.at_level(logging.ERROR, logger="infra.link"):
            await relay.publish(f"doormat/in/{ALICE}/note", b"hello")
            async with asyncio.timeout(20):
                while len(calls) < 2:
                    await asyncio.sleep(0.02)
        assert calls == [b"hello", b"hello"]
        assert any("a handler failed" in r.getMessage() for r in caplog.records)
        assert link.transport.connections >= 2
        # Handled this time: acknowledged, so a reconnection brings nothing back.
        await link.transport.reconnect()
        await asyncio.sleep(1.0)
        assert calls == [b"hello", b"hello"]
    finally:
        await link.stop()
        await relay.stop()


async def test_a_refused_login_is_a_link_error_at_once(broker: Any) -> None:
    link = Link(ALICE, "not-the-password", broker.host, broker.port)
    started = time.monotonic()
    with pytest.raises(LinkError, match="refused the login"):
        await link.start(timeout=30)
    assert time.monotonic() - started < 5
