"""The enterprise server (BES-like): enrols its own devices.

Enrolment is the classic activation-code flow. The administrator issues a one-time
code for a (user, device); the device redeems it and receives its broker credentials;
the server then tells the relay's key directory that the device belongs to the user.
Only the enterprise's own users can be enrolled by it, and the relay checks that too.

``Enterprise`` is the sans-I/O part (codes, credentials, the device roster);
``enrol_at_relay`` is the thin I/O step that registers devices in the directory.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from clients.link import Link
from wire.ids import check_enterprise, check_user, device_id, enterprise_of


class EnrolmentError(ValueError):
    """An activation code that is unknown, used, or not for this enterprise's users."""


@dataclass(frozen=True)
class Credentials:
    """What a device receives on activation: its broker login."""

    device: str
    user: str
    password: str


@dataclass
class Enterprise:
    name: str
    archive: bool = False
    _codes: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    devices: dict[str, Credentials] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_enterprise(self.name)

    def issue_activation(self, user: str, device_name: str) -> str:
        """A one-time activation code for ``user``'s new device ``device_name``."""
        check_user(user)
        if enterprise_of(user) != self.name:
            raise EnrolmentError(f"{user} is not a user of {self.name}")
        dev = device_id(user, device_name)
        if dev in self.devices:
            raise EnrolmentError(f"{dev} is already enrolled")
        code = "-".join(secrets.token_hex(2) for _ in range(4))
        self._codes[code] = (user, dev)
        return code

    def activate(self, code: str) -> Credentials:
        """Redeem an activation code; each code works once."""
        for known in list(self._codes):
            # Constant-time comparison: activation codes are secrets.
            if hmac.compare_digest(known.encode(), code.encode()):
                user, dev = self._codes.pop(known)
                creds = Credentials(device=dev, user=user, password=secrets.token_urlsafe(24))
                self.devices[dev] = creds
                return creds
        raise EnrolmentError("unknown or already used activation code")


async def enrol_at_relay(link: Link, enterprise: Enterprise) -> list[str]:
    """Register every activated device with the relay's key directory."""
    enrolled = []
    for creds in enterprise.devices.values():
        answer = await link.request("enrol", user=creds.user, device=creds.device)
        enrolled.append(str(answer["device"]))
    return enrolled
