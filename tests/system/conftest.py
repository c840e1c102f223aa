from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.system import System
from tests.support.processes import skip_without_mosquitto


def _kinds() -> list[object]:
    return ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


@pytest.fixture(params=_kinds())
async def system(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[System]:
    kind = request.param
    if kind == "mosquitto":
        skip_without_mosquitto()
    async with System(default_cast(), broker=kind, state_dir=tmp_path / "state") as s:
        yield s
