"""Vendor-signed builds (issue 11): a mandated back door reaches the devices only as a
build the vendor signed; a device installs a build only if the vendor key it pinned
signed it and its version is newer than the one it runs, and refuses (with the reason,
and a ``device.build_refused`` event) an unsigned, wrongly signed, altered or older one."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from doormat.system import System
from infra.plane import ControlError
from wire.b64 import b64encode
from wire.li.builds import ClientBuild, build_document, build_message

ALICE = "alice@acme.phone"


async def test_a_mandate_reaches_every_device_as_a_vendor_signed_build(system: System) -> None:
    await system.set_backdoor("escrow")
    escrow = system.government.client_build().escrow_public_key
    assert escrow is not None
    for device in system.devices.values():
        assert device.build_version == 1
        assert device.build.name == "escrow" and device.build.escrow_public_key == escrow
    shipped = system.events.events(kind="vendor.shipped")
    assert shipped and shipped[-1]["installed"] == len(system.devices)


async def test_a_device_refuses_unsigned_wrongly_signed_altered_or_older_builds(
    system: System,
) -> None:
    await system.set_backdoor("escrow")
    vendor = system.vendor_plane
    assert vendor is not None
    device = system.devices[ALICE]
    before = (device.build_version, device.build)
    # The vendor's genuine version 1, as shipped: replayed, it is not newer.
    genuine, signature = system.vendor.make(ClientBuild(name="global-key",
                                                        global_key=bytes(32)))
    system.vendor.version = 0  # make a version-1 document again, genuinely signed
    old, old_signature = system.vendor.make(ClientBuild(name="none"))
    forger = Ed25519PrivateKey.generate()
    altered = {**genuine, "name": "ghost"}
    cases: list[tuple[dict[str, Any], bytes, str]] = [
        (genuine, forger.sign(build_message(genuine)), "not signed by the vendor key"),
        (altered, signature, "not signed by the vendor key"),
        (old, old_signature, "is not newer than the installed version 1"),
        (build_document(ClientBuild(name="none"), 5), b"\0" * 64,
         "not signed by the vendor key"),
    ]
    for document, sig, why in cases:
        with pytest.raises(ControlError, match=why):
            await vendor.call(ALICE, "build.install", build=document,
                              signature=b64encode(sig))
    assert (device.build_version, device.build) == before
    refused = [e for e in system.events.events(kind="device.build_refused")
               if e["actor"] == ALICE]
    assert len(refused) == len(cases)
    # The genuine newer build installs.
    answer = await vendor.call(ALICE, "build.install", build=genuine,
                               signature=b64encode(signature))
    assert answer["version"] == genuine["version"] == 2
    assert device.build_version == 2 and device.build.name == "global-key"
