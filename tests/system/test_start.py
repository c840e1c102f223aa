"""System.start brings devices up a bounded number at a time, and every one of them up."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from pathlib import Path
from typing import Any

import pytest

import doormat.system as system_module
from doormat.cast import generated_cast
from doormat.system import System


async def test_devices_start_in_bounded_batches_and_all_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system_module, "DEVICE_START_CONCURRENCY", 3)
    running = 0
    most = 0
    original = System.start_device

    async def counted(self: System, device: str) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            # Hold the slot a little so that unbounded starts would overlap.
            await asyncio.sleep(0.05)
            return await original(self, device)
        finally:
            running -= 1

    monkeypatch.setattr(System, "start_device", counted)
    cast = generated_cast(12)
    async with System(cast, state_dir=tmp_path / "state") as system:
        assert set(system.devices) == set(system.credentials)
        assert len(system.devices) >= 12
        assert all(d.connected for d in system.devices.values())
    assert most == 3


async def test_every_client_socket_to_the_broker_is_nodelay(system: System) -> None:
    # paho leaves Nagle on: a request/answer round trip then waits for the peer's
    # delayed ACK (88 ms instead of 1 per directory request, docs/benchmarks.md).
    assert system.broker is not None
    port = system.broker.port
    client_sockets = []
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() != -1:
            with contextlib.suppress(OSError):
                if (
                    obj.family in (socket.AF_INET, socket.AF_INET6)
                    and obj.type == socket.SOCK_STREAM
                    and obj.getpeername()[1] == port
                ):
                    client_sockets.append(obj)
    # relay, tap, interceptor, two enterprise servers and every device
    assert len(client_sockets) >= len(system.devices) + 4
    slow = [
        s.getsockname()
        for s in client_sockets
        if not s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    ]
    assert not slow, f"{len(slow)} of {len(client_sockets)} client sockets without TCP_NODELAY"
