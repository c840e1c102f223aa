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
# level (doormat/in/<id>/...) and an event actor, so it is defined here once.
#: The operator's relay.
RELAY_ID = "relay"
#: The government's blanket tap (read-only: its own inbox). Ghost devices of the ``ghost``
#: back door are enrolled under this name too, and delivered to its inbox.
TAP_ID = "tap"
#: The scoped interceptor: provisions X1 tasks at the relay, receives X2/X3 records.
INTERCEPTOR_ID = "interceptor"
#: Names no enterprise may take: an enterprise called ``tap`` would enrol ghosts, one
#: called ``relay`` or ``interceptor`` would read that service's inbox.
RESERVED: tuple[str, ...] = (RELAY_ID, TAP_ID, INTERCEPTOR_ID)


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
