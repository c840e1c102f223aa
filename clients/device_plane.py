"""A device on the plane: the controls it takes (``wire.control`` says from whom).

* ``build.install {build, signature}`` (the vendor): an app update. Installed only if the
  vendor key this device pinned signed it and its version is newer than the installed
  one (``wire.li.builds.verify_build``); refused otherwise, with the reason, and a
  ``device.build_refused`` event. A mandated back door reaches a device only this way.
* ``send {to_user, text}`` (the lab): the device sends as its user; its ``device.sent``
  carries ``lab: true``.
* ``breach.image`` (an attacker): a copy of the device's whole store, as a forensic
  image of the phone would give (``device.breached`` says it was taken).
* ``kt.monitor``, ``kt.checkpoint``, ``kt.compare {note}``, ``directory.refresh`` (the
  lab): audit its own user's directory entries, hand over or compare a directory
  checkpoint (gossip), fetch device lists afresh.
"""

from __future__ import annotations

from typing import Any

from clients.device import Device, emit_alarm
from clients.limits import TextTooLong
from infra.plane import Handler, Plane
from wire.b64 import B64Error, b64decode, b64encode
from wire.control import ControlRefused, Request
from wire.kt import KTError
from wire.li.builds import BuildError, verify_build


class DeviceControls:
    def __init__(self, device: Device, plane: Plane, vendor_key: bytes | None) -> None:
        self.device = device
        self.vendor_key = vendor_key  # the vendor's Ed25519 public key, pinned at install
        plane.serve_all(self.handlers())

    def handlers(self) -> dict[str, Handler]:
        return {
            "build.install": self.build_install,
            "send": self.send,
            "breach.image": self.breach_image,
            "kt.monitor": self.kt_monitor,
            "kt.checkpoint": self.kt_checkpoint,
            "kt.compare": self.kt_compare,
            "directory.refresh": self.directory_refresh,
        }

    def _emit(self, kind: str, **fields: Any) -> None:
        self.device.events.emit(self.device.id, kind, **fields)

    def build_install(self, request: Request) -> dict[str, Any]:
        document = request.args["build"]
        try:
            if self.vendor_key is None:
                raise BuildError("this device pins no vendor key: it installs no update")
            signature = b64decode(request.args["signature"], "signature")
            build, version = verify_build(
                self.vendor_key, document, signature, self.device.build_version
            )
        except (BuildError, B64Error) as exc:
            self._emit("device.build_refused", name=str(document.get("name"))[:40],
                       version=document.get("version"), reason=str(exc), by=request.sender)
            raise ControlRefused(str(exc)) from None
        self.device.set_build(build, version)
        # A new build may encrypt differently: ask the directory afresh next time.
        self.device.forget_device_lists()
        self._emit("device.build_installed", name=build.name, version=version,
                   by=request.sender)
        return {"name": build.name, "version": version}

    async def send(self, request: Request) -> dict[str, Any]:
        try:
            sent = await self.device.send(request.args["to_user"], request.args["text"], lab=True)
        except TextTooLong as exc:  # refused at the sender, with the limit
            raise ControlRefused(str(exc)) from None
        return {"id": sent.id, "devices": sent.devices}

    def breach_image(self, request: Request) -> dict[str, Any]:
        image = self.device.image()
        self._emit("device.breached", by=request.sender, size=len(image))
        return {"device": self.device.id, "image": b64encode(image)}

    async def kt_monitor(self, request: Request) -> dict[str, Any]:
        alarms = await self.device.monitor()
        return {"alarms": [a.to_json() for a in alarms]}

    def kt_checkpoint(self, request: Request) -> dict[str, Any]:
        kt = self.device.kt
        return {"note": None if kt is None else kt.gossip()}

    def kt_compare(self, request: Request) -> dict[str, Any]:
        kt = self.device.kt
        if kt is None:
            return {"alarm": None}
        try:
            alarm = kt.compare(request.args["note"])
        except (KTError, ValueError) as exc:
            raise ControlRefused(f"not a checkpoint this device can compare: {exc}") from None
        if alarm is not None:
            emit_alarm(self.device.events, self.device.id, alarm)
        return {"alarm": None if alarm is None else alarm.to_json()}

    def directory_refresh(self, request: Request) -> dict[str, Any]:
        self.device.forget_device_lists()
        return {}


__all__ = ["DeviceControls"]
