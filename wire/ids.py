"""Identifiers: users, devices, enterprises, and the service accounts.

A user id is ``name@enterprise`` (``alice@acme``); a device id is
``name@enterprise.device`` (``alice@acme.phone``). Ids double as MQTT usernames and
topic levels, so they are restricted to characters that are safe in both: lower-case
letters, digits, ``-`` and ``_``, with the ``@`` and ``.`` separators. No ``+``, ``#``,
``/`` (MQTT wildcards and levels) and no ``:`` (the password-file separator).
"""

from __future__ import annotations

import re

_NAME = r"[a-z0-9][a-z0-9_-]{0,31}"
ENTERPRISE_RE = re.compile(rf"^{_NAME}$")
USER_RE = re.compile(rf"^({_NAME})@({_NAME})$")
DEVICE_RE = re.compile(rf"^({_NAME})@({_NAME})\.({_NAME})$")

# Service accounts on the broker (not devices, not enterprises). Each is also a topic
# level (doormat/in/<id>/..., doormat/ev/<id>, doormat/to/<id>/...) and an event actor,
# so it is defined here once. Every party of the lab is one account with its own
# password and its own process (docs/architecture.md, "The observation and control
# plane").
#: The operator's relay.
RELAY_ID = "relay"
#: The government: the blanket tap, the mandates and their keys (escrow, global key),
#: the ghost devices (enrolled under this name and delivered to its inbox).
TAP_ID = "tap"
#: The scoped interceptor: provisions X1 tasks at the relay, receives X2/X3 records,
#: keeps the audit ledger.
INTERCEPTOR_ID = "interceptor"
#: The app vendor: signs the client builds and ships them to every device.
VENDOR_ID = "vendor"
#: The court: the approvers who sign warrants, and oversight (the ledger's witness and
#: verifier).
COURT_ID = "court"
#: The agency (police): receives the HI-2/HI-3 records sealed to its key.
AGENCY_ID = "agency"
#: An attacker: holds only what it stole.
ATTACKER_ID = "attacker"
#: The operator's console (a person): the LI switch.
OPERATOR_ID = "operator"
#: The lab's own controls (a teacher's or student's actions that are no party's).
LAB_ID = "lab"
#: Reads every party's events; asks for replays and measurements. Holds no key.
OBSERVER_ID = "observer"

#: Each reserved account and its role (the role of any other account follows from the
#: shape of its id: a device or an enterprise; see ``role_of``).
SERVICE_ROLES: dict[str, str] = {
    RELAY_ID: "relay",
    TAP_ID: "tap",
    INTERCEPTOR_ID: "interceptor",
    VENDOR_ID: "vendor",
    COURT_ID: "court",
    AGENCY_ID: "agency",
    ATTACKER_ID: "attacker",
    OPERATOR_ID: "operator",
    LAB_ID: "lab",
    OBSERVER_ID: "observer",
}
#: Names no enterprise may take: an enterprise called ``tap`` would enrol ghosts, one
#: called ``relay`` or ``observer`` would read that service's inbox or every event.
RESERVED: tuple[str, ...] = tuple(SERVICE_ROLES)


class IdError(ValueError):
    """An id does not have the expected shape."""


def check_enterprise(value: str) -> str:
    if not isinstance(value, str) or not ENTERPRISE_RE.fullmatch(value):
        raise IdError(f"not an enterprise id: {value!r} (expected e.g. 'acme')")
    if value in RESERVED:
        raise IdError(
            f"{value!r} is reserved for a service account ({', '.join(RESERVED)}); "
            "an enterprise needs another name"
        )
    return value


def check_user(value: str) -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise IdError(f"not a user id: {value!r} (expected e.g. 'alice@acme')")
    return value


def check_device(value: str) -> str:
    if not isinstance(value, str) or not DEVICE_RE.fullmatch(value):
        raise IdError(f"not a device id: {value!r} (expected e.g. 'alice@acme.phone')")
    return value


def is_device(value: object) -> bool:
    return isinstance(value, str) and DEVICE_RE.fullmatch(value) is not None


def device_id(user: str, device: str) -> str:
    return check_device(f"{check_user(user)}.{device}")


def user_of(device: str) -> str:
    """``alice@acme.phone`` -> ``alice@acme``."""
    m = DEVICE_RE.fullmatch(device)
    if not m:
        raise IdError(f"not a device id: {device!r}")
    return f"{m.group(1)}@{m.group(2)}"


def enterprise_of(user_or_device: str) -> str:
    m = DEVICE_RE.fullmatch(user_or_device) or USER_RE.fullmatch(user_or_device)
    if not m:
        raise IdError(f"not a user or device id: {user_or_device!r}")
    return m.group(2)


def role_of(account: str) -> str | None:
    """The role an account id speaks in: a reserved service's (``SERVICE_ROLES``),
    ``device`` for a device id, ``enterprise`` for an enterprise id; None otherwise
    (a user id, or no id at all). What a party may do on the plane follows from it
    (``wire.control``), as what the broker lets it read and write does (its ACL)."""
    if not isinstance(account, str):
        return None
    role = SERVICE_ROLES.get(account)
    if role is not None:
        return role
    if DEVICE_RE.fullmatch(account):
        return "device"
    if ENTERPRISE_RE.fullmatch(account):
        return "enterprise"
    return None
