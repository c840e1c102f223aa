"""The app vendor: it builds the client, signs each build with its Ed25519 key, and ships
it to every device, the way an app update arrives. Devices pin the vendor's public key
and install only a build it signed whose version is newer than theirs
(``wire.li.builds.verify_build``, checked in ``clients.device_plane``). A mandated back
door reaches the devices only as such a build: the government asks the vendor for it
(``build.make``, a control only the government may give).

``Vendor`` is the signing key and the version counter (kept in a folder of its own:
``vendor.key``, mode 0600, and ``vendor.json``); ``VendorControls`` is its place on the
plane: ``build.make {name, escrow_public_key?, global_key?}`` signs the next version and
sends ``build.install`` to every device it knows, waiting (a bounded time) for each to
install or refuse it; ``vendor.shipped`` reports how many did.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from infra.files import write_atomic
from infra.plane import ControlError, Handler, Plane
from wire.b64 import B64Error, b64decode, b64encode
from wire.control import ControlRefused, Request
from wire.events import EventLog
from wire.ids import VENDOR_ID
from wire.li.builds import ClientBuild, build_document, build_message

#: How long the vendor waits for a device to answer an install (seconds): a device that
#: is away gets the build when it is back (its session keeps it), but is not waited for.
INSTALL_TIMEOUT = 5.0
#: Installs in flight at a time.
INSTALL_CONCURRENCY = 64


class Vendor:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        key_path = self.folder / "vendor.key"
        if key_path.exists():
            self._key = Ed25519PrivateKey.from_private_bytes(key_path.read_bytes())
        else:
            self._key = Ed25519PrivateKey.generate()
            raw = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            write_atomic(key_path, raw, private=True)
        state = self.folder / "vendor.json"
        self.version = json.loads(state.read_text())["version"] if state.exists() else 0

    @property
    def public_key(self) -> bytes:
        """What every device pins (raw Ed25519, 32 bytes)."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def make(self, build: ClientBuild) -> tuple[dict[str, Any], bytes]:
        """The next version of ``build``, as shipped, and the vendor's signature of it."""
        self.version += 1
        write_atomic(self.folder / "vendor.json", json.dumps({"version": self.version}))
        document = build_document(build, self.version)
        return document, self._key.sign(build_message(document))

    def __repr__(self) -> str:  # never print key material
        return f"Vendor(version={self.version})"


class VendorControls:
    def __init__(
        self,
        vendor: Vendor,
        plane: Plane,
        events: EventLog,
        devices: Callable[[], Sequence[str]],
    ) -> None:
        self.vendor = vendor
        self.plane = plane
        self.events = events
        self.devices = devices  # the devices it ships to (its customers' roster)
        plane.serve_all(self.handlers())

    def handlers(self) -> dict[str, Handler]:
        return {"build.make": self.build_make}

    async def build_make(self, request: Request) -> dict[str, Any]:
        a = request.args
        try:
            build = ClientBuild(
                name=a["name"],
                escrow_public_key=_key(a.get("escrow_public_key")),
                global_key=_key(a.get("global_key")),
            )
        except (B64Error, ValueError) as exc:
            raise ControlRefused(f"not a build the vendor can make: {exc}") from None
        document, signature = self.vendor.make(build)
        self.events.emit(VENDOR_ID, "vendor.signed", name=build.name,
                         version=document["version"], by=request.sender)
        installed, refused, away = await self.ship(document, signature)
        self.events.emit(VENDOR_ID, "vendor.shipped", name=build.name,
                         version=document["version"], installed=installed,
                         refused=len(refused), away=len(away))
        return {"name": build.name, "version": document["version"], "installed": installed,
                "refused": refused, "away": away}

    async def ship(
        self, document: dict[str, Any], signature: bytes
    ) -> tuple[int, list[str], list[str]]:
        """Send the build to every device: (installed, refused, not answering)."""
        gate = asyncio.Semaphore(INSTALL_CONCURRENCY)
        sig = b64encode(signature)

        async def one(device: str) -> str:
            async with gate:
                try:
                    await self.plane.call(device, "build.install", build=document,
                                          signature=sig, timeout=INSTALL_TIMEOUT)
                except ControlError:
                    return "refused"
                except TimeoutError:
                    return "away"
                return "installed"

        devices = list(self.devices())
        results = await asyncio.gather(*(one(d) for d in devices))
        refused = [d for d, r in zip(devices, results, strict=True) if r == "refused"]
        away = [d for d, r in zip(devices, results, strict=True) if r == "away"]
        return results.count("installed"), refused, away


def _key(text: Any) -> bytes | None:
    return None if text is None else b64decode(text, "build key", length=32)


__all__ = ["Vendor", "VendorControls"]
