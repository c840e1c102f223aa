"""System.start brings devices up a bounded number at a time, and every one of them up."""

from __future__ import annotations

import asyncio
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
