"""Fixtures of the crypto-core tests (the helpers live in crypto_helpers.py)."""

from __future__ import annotations

import pytest

from clients.crypto import DeviceCrypto
from tests.crypto.crypto_helpers import talking_pair


@pytest.fixture
def pair() -> tuple[DeviceCrypto, DeviceCrypto]:
    """Alice and Bob past X3DH: one message each way has been delivered."""
    return talking_pair()
