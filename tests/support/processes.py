"""The processes tests start: the relay's command line, and Mosquitto's binary."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def relay_argv(broker_url: str, db: Path, events: Path, *extra: str) -> list[str]:
    """``python -m doormat relay`` on ``db``, its events as JSON lines in ``events``;
    ``extra`` carries its credentials (``--password-file F`` or ``--accounts F``) and any
    other option."""
    return [
        sys.executable, "-m", "doormat", "relay", "--broker", broker_url,
        "--db", str(db), "--events", str(events), *extra,
    ]  # fmt: skip


def mosquitto_installed() -> bool:
    return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())


def skip_without_mosquitto() -> None:
    if not mosquitto_installed():
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")


def broker_kind() -> str:
    """Mosquitto when installed, else the embedded broker."""
    return "mosquitto" if mosquitto_installed() else "embedded"
