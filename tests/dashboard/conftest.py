"""Fixtures for the dashboard tests: a running System with a hub and a served app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.dashboard import Hub, Running, serve
from doormat.lab import LabEngine, ScoreStore, load_exercises
from doormat.system import System


@dataclass
class Served:
    system: System
    hub: Hub
    running: Running
    lab: LabEngine
    home: Path

    @property
    def url(self) -> str:
        return self.running.url


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """A System started by the test, a hub over it (resets make fresh ones), the lab
    engine on a score store in tmp_path, and the app on a free loopback port."""
    runs = {"n": 0}

    def factory() -> System:
        runs["n"] += 1
        return System(default_cast(), state_dir=tmp_path / f"run-{runs['n']}")

    system = System(default_cast(), state_dir=tmp_path / "run-0")
    await system.start()
    home = tmp_path / "home"
    lab = LabEngine(load_exercises(), ScoreStore(home))
    hub = Hub(factory, system=system, lab=lab, exposure_delay=0.3)
    try:
        await hub.start()
        async with serve(hub, "127.0.0.1", 0) as running:
            yield Served(system, hub, running, lab, home)
    finally:
        await hub.stop()
        await system.stop()
        lab.store.close()
