"""No private key and no plaintext ever reaches the relay's store, the relay's event
log or the tap's store (issue 7, "crypto"): scan the bytes after a run.

Secrets are taken from the devices' own serialised state: identity keys, prekeys'
private halves, and every session's root, chain and DH-ratchet private keys.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from doormat.cast import default_cast
from doormat.system import System
from tests.system.system_helpers import converse

SCRIPT = [
    ("alice@acme.phone", "bob@acme", "Kestrel budget is 4.2 million"),
    ("bob@acme.phone", "alice@acme", "Kestrel board vote moved to Thursday"),
    ("carol@globex.phone", "dave@globex", "Osprey supplier dropped us"),
    ("dave@globex.phone", "alice@acme", "Osprey and Kestrel overlap, call me"),
]
SECRET_FIELDS = {"signing", "dh", "private", "dhs", "rk", "cks", "ckr"}


def secrets_in(state: bytes) -> list[bytes]:
    found: list[bytes] = []

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif key in SECRET_FIELDS and isinstance(node, str):
            found.append(base64.b64decode(node))

    walk(json.loads(state))
    return found


def forms(secret: bytes) -> list[bytes]:
    """The ways a key could be written down: raw, hex, base64."""
    return [secret, secret.hex().encode(), base64.b64encode(secret)]


async def test_no_private_key_or_plaintext_in_relay_or_tap_bytes(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    with events_file.open("w") as sink:

        def log(e: dict[str, object]) -> None:
            # The relay's and the tap's events, as a JSON-lines log file holds them.
            if e["actor"] in ("relay", "tap"):
                sink.write(json.dumps(e) + "\n")

        async with System(default_cast(), state_dir=tmp_path / "state", li="blanket") as system:
            system.events.subscribe(log)
            await converse(system, SCRIPT)
            keys = [k for d in system.devices.values() for k in secrets_in(d.crypto.to_bytes())]
    assert len(keys) > 20  # identities, prekeys and live sessions of five devices
    state = tmp_path / "state"
    blobs = {
        p.name: p.read_bytes()
        for p in [*state.glob("relay.sqlite*"), *state.glob("tap.sqlite*"), events_file]
    }
    assert "relay.sqlite" in blobs and "tap.sqlite" in blobs
    for name, blob in blobs.items():
        for _, _, text in SCRIPT:
            for word in text.split():
                if len(word) >= 6:
                    assert word.encode() not in blob, f"{word!r} in {name}"
        for key in keys:
            for form in forms(key):
                assert form not in blob, f"a device's secret key is in {name}"
    # The scan can fail: the same method finds the plaintext in a device's own store,
    # where it belongs (the user's chat history).
    own = b"".join(p.read_bytes() for p in state.glob("bob@acme.phone.sqlite*"))
    assert b"Kestrel" in own
