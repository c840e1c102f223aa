"""Secrets never leak: no plaintext and no private key in the relay's files or any log.

A demo-like run: Mosquitto, the relay as its own process (``python -m doormat relay
--events FILE --log-level debug``), real devices of three users (one with two devices,
so messages fan out), a conversation with a distinctive plaintext per message. During
the run every device's crypto state (``DeviceCrypto.to_bytes()``) is snapshotted after
each message, and every private key and secret in it collected: identity keys (signing
and DH), signed and one-time prekeys, root and chain keys, ratchet private keys, skipped
message keys. Afterwards these are searched for, raw, base64 (standard and URL-safe)
and hex, in:

* the relay's SQLite files (database, WAL, shared memory) and its key-directory key;
* the relay's JSON-lines event log and its stderr (debug logging);
* Mosquitto's log and persistence database (saved on a clean stop);
* every log record this process emitted at DEBUG and above (devices, links, paho).

The devices' own stores and events hold their own plaintext by design and are not
searched.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.reliability_harness import (
    Devices,
    RelayProcess,
    enrol,
    standard_accounts,
    user_of,
)
from tests.support.polling import until

pytestmark = pytest.mark.mosquitto

DEVICES = ["alice@acme.phone", "alice@acme.laptop", "bob@acme.phone", "carol@globex.phone"]
SECRET_FIELDS = {"dh", "signing", "private", "rk", "cks", "ckr", "dhs"}


def secrets_in_state(state: bytes) -> set[bytes]:
    """Every private key and secret of a DeviceCrypto state (docs/crypto.md, state)."""
    found: set[bytes] = set()

    def walk(node: Any, key: str | None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "skipped" and isinstance(v, list):
                    for entry in v:  # [remote key, n, message key]
                        if isinstance(entry, list) and len(entry) == 3:
                            found.add(base64.b64decode(entry[2]))
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in SECRET_FIELDS:
            try:
                raw = base64.b64decode(node, validate=True)
            except binascii.Error:
                return
            if len(raw) >= 16:
                found.add(raw)

    walk(json.loads(state), None)
    return found


def forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
        secret.hex().upper().encode(),
    ]


@pytest.mark.timeout(600)
async def test_no_plaintext_or_private_key_in_relay_files_or_logs(
    tmp_path: Path, make_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accs = standard_accounts(DEVICES)
    broker = await make_broker("mosquitto", accs.values())
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    relay = RelayProcess(broker.url, accs["relay"].password, relay_dir, "--log-level", "debug")
    relay.start()
    ds = Devices(broker.host, broker.port, accs, tmp_path / "devices", one_time_prekeys=6)
    (tmp_path / "devices").mkdir()
    keys: set[bytes] = set()
    texts: list[bytes] = []

    def snapshot() -> None:
        for dev in ds.devices.values():
            keys.update(secrets_in_state(dev.crypto.to_bytes()))

    try:
        await relay.wait_connected()
        await enrol(broker.host, broker.port, accs, DEVICES)
        await ds.start(*DEVICES)
        snapshot()
        pairs = [
            ("alice@acme.phone", "bob@acme.phone"),
            ("bob@acme.phone", "alice@acme.phone"),
            ("carol@globex.phone", "alice@acme.phone"),
            ("alice@acme.laptop", "carol@globex.phone"),
        ]
        for k in range(24):
            sender, to = pairs[k % len(pairs)]
            text = f"TOPSECRET-{secrets.token_hex(8)} merger terms #{k}".encode()
            texts.append(text)
            out = await ds.devices[sender].send(user_of(to), text)
            for dev in out.devices:
                await until(
                    lambda d=dev, s=sender, i=out.id: ds.got(d)[(s, i)] >= 1, 30, "delivery"
                )
            snapshot()
        await until(lambda: relay.pending() == 0, 60, "the relay's store to drain")
    finally:
        snapshot()
        await ds.stop_all()
        assert relay.stop() == 0
        await broker.stop()  # Mosquitto saves its persistence database on a clean stop
    assert len(keys) > 50 and len(texts) == 24

    places: dict[str, bytes] = {}
    for path in sorted(relay_dir.iterdir()) + sorted(Path(broker.workdir).rglob("*")):
        if path.is_file() and not path.name.endswith(".pw"):
            places[str(path.relative_to(tmp_path))] = path.read_bytes()
    places["this process's log records"] = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records
    ).encode()
    assert any(n.endswith("relay.sqlite") for n in places)
    assert any("events" in n for n in places) and any("mosquitto.db" in n for n in places)
    # The relay did see every message (as ciphertext): the scan is not of empty files.
    assert relay.events.count("relay.accepted") >= 24

    # The search finds what is there: the devices' own stores hold their keys and what
    # their users read (by design), and the same search sees them.
    own = b"".join(p.read_bytes() for p in (tmp_path / "devices").glob("*.sqlite*"))
    assert any(form in own for key in keys for form in forms(key))
    assert any(text in own for text in texts)

    leaks = []
    for name, data in places.items():
        for text in texts:
            for form in (text, base64.b64encode(text), text.hex().encode()):
                if form in data:
                    leaks.append((name, "plaintext", text[:30]))
        for key in keys:
            for form in forms(key):
                if form in data:
                    leaks.append((name, "private key or secret", key.hex()[:16]))
                    break
    assert leaks == [], leaks[:10]
