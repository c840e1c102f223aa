"""The IT policy: what a BES pushes to its devices at activation.

With ``--policy-dir DIR`` (``DOORMAT_POLICY_DIR``, a volume the enterprises write and the
devices read) an enterprise that runs a compliance archive writes
``DIR/<enterprise>.archive.pub``, its archive's public key, before it reports ready; a
device that finds its enterprise's file there journals every message it sends or reads
to that archive.
"""

from __future__ import annotations

import json
from pathlib import Path

from doormat.cli import CommandError
from infra.files import write_atomic
from wire.b64 import b64decode, b64encode

POLICY_SUFFIX = ".archive.pub"  # DIR/<enterprise>.archive.pub: the pushed archive key


def policy_file(policy_dir: Path, enterprise: str) -> Path:
    return policy_dir / f"{enterprise}{POLICY_SUFFIX}"


def write_policy(policy_dir: Path, enterprise: str, archive_key: bytes | None) -> Path:
    """Publish (or withdraw, with None) the enterprise's archive key for its devices.

    Written to a temporary name and renamed, so a device starting meanwhile reads either
    no file or a whole one, never half a key."""
    path = policy_file(policy_dir, enterprise)
    try:
        policy_dir.mkdir(parents=True, exist_ok=True)
        if archive_key is None:
            path.unlink(missing_ok=True)
            return path
        body = {"enterprise": enterprise, "archive_public_key": b64encode(archive_key)}
        write_atomic(path, json.dumps(body) + "\n")
    except OSError as exc:
        raise CommandError(f"cannot write the policy {path}: {exc.strerror or exc}") from None
    return path


def read_policy(policy_dir: Path, enterprise: str) -> bytes | None:
    """The archive key the enterprise pushed, or None if it pushed none (no archive)."""
    path = policy_file(policy_dir, enterprise)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"cannot read the policy {path}: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
        named = body["enterprise"]
        key = b64decode(body["archive_public_key"], "'archive_public_key'")
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"corrupt policy {path}: {type(exc).__name__}: {exc}") from None
    if named != enterprise:
        raise CommandError(f"corrupt policy {path}: it is {named!r}'s, not {enterprise!r}'s")
    if len(key) != 32:
        raise CommandError(f"corrupt policy {path}: archive key is {len(key)} bytes, not 32")
    return key
