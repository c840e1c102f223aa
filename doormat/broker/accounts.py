"""Broker accounts: who may log in to the MQTT broker, with which password, in which role.

An account's username is the id it speaks for (``wire/ids.py``): a device
``alice@acme.phone``, an enterprise server ``acme``, the relay ``relay``, the blanket
tap ``tap``. The broker's ACL (``doormat.broker.acl``) is derived from the username and
the role, so a username is also a topic level: it can never contain ``/``, ``+``,
``#`` (MQTT levels and wildcards), ``:`` (the password-file separator) or whitespace.

The accounts file is JSON, ``{"accounts": [{"username", "password", "role"}]}``. It
holds plaintext passwords (services read it to log in), so it is written with mode 0600.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.files import write_atomic
from wire import ids

# Every role an account can hold: the reserved services' (wire.ids.SERVICE_ROLES; the
# government's account is "tap", its role too), devices and enterprise servers.
ROLES = ("relay", "device", "enterprise", "tap", "interceptor", "vendor", "court", "agency",
         "attacker", "operator", "lab", "observer")
# The reserved service names (wire.ids.RESERVED) and the one role each may log in as.
_RESERVED_ROLE = dict(ids.SERVICE_ROLES)

# Service accounts (relay, tap) are not ids of users or enterprises, but their names
# land in ACL patterns and topics all the same, so they get the same safe alphabet.
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

# 24 random bytes = 192 bits, comfortably above the 128-bit floor.
_PASSWORD_BYTES = 24


class AccountsError(ValueError):
    """A broken account or accounts file; the message is one line naming the problem."""


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    role: str

    def __post_init__(self) -> None:
        check_account(self.username, self.password, self.role)

    def __repr__(self) -> str:
        # Keep passwords out of logs, tracebacks and pytest failure output.
        return f"Account(username={self.username!r}, role={self.role!r})"

    def to_json(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "role": self.role}


def check_account(username: object, password: object, role: object) -> None:
    """Raise AccountsError (one line) unless the three fields make a valid account."""
    if role not in ROLES:
        raise AccountsError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if not isinstance(username, str):
        raise AccountsError(f"username must be a string, not {type(username).__name__}")
    try:
        if role == "device":
            ids.check_device(username)
        elif role == "enterprise":
            ids.check_enterprise(username)
        elif not _SERVICE_RE.match(username):
            raise AccountsError(
                f"not a {role} account name: {username!r} "
                "(lower-case letters, digits, '-' and '_', e.g. 'relay')"
            )
    except ids.IdError as exc:
        raise AccountsError(f"{role} account: {exc}") from None
    if username in ids.RESERVED and role != _RESERVED_ROLE[username]:
        raise AccountsError(
            f"{role} account: {username!r} is reserved for the {_RESERVED_ROLE[username]} "
            "service account"
        )
    if not isinstance(password, str) or not password:
        raise AccountsError(f"account {username!r}: password must be a non-empty string")
    if any(c in password for c in "\r\n\0"):
        raise AccountsError(f"account {username!r}: password contains a line break or NUL")


def generate_password() -> str:
    """A fresh random password: URL-safe, 192 bits of entropy."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def new_account(username: str, role: str) -> Account:
    """An account with a freshly generated password."""
    return Account(username=username, password=generate_password(), role=role)


def check_unique(accounts: Iterable[Account]) -> list[Account]:
    """The accounts as a list; AccountsError if a username appears twice."""
    seen: set[str] = set()
    out: list[Account] = []
    for acc in accounts:
        if acc.username in seen:
            raise AccountsError(f"duplicate username {acc.username!r}")
        seen.add(acc.username)
        out.append(acc)
    return out


def accounts_from_json(data: Any, source: str = "accounts") -> list[Account]:
    """Parse the decoded JSON document; errors name ``source`` and the offending entry."""
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
        raise AccountsError(f'{source}: expected an object {{"accounts": [...]}}')
    out: list[Account] = []
    for i, entry in enumerate(data["accounts"]):
        where = f"{source}: accounts[{i}]"
        if not isinstance(entry, dict):
            raise AccountsError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in ("username", "password", "role") if k not in entry]
        if missing:
            raise AccountsError(f"{where}: missing {', '.join(missing)}")
        extra = sorted(set(entry) - {"username", "password", "role"})
        if extra:
            raise AccountsError(f"{where}: unknown field {extra[0]!r}")
        try:
            out.append(Account(entry["username"], entry["password"], entry["role"]))
        except AccountsError as exc:
            raise AccountsError(f"{where}: {exc}") from None
    try:
        return check_unique(out)
    except AccountsError as exc:
        raise AccountsError(f"{source}: {exc}") from None


def load_accounts(path: str | os.PathLike[str]) -> list[Account]:
    """Read an accounts file. Any problem is an AccountsError with a one-line message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccountsError(f"accounts file not found: {p}") from None
    except IsADirectoryError:
        raise AccountsError(f"accounts file is a directory: {p}") from None
    except PermissionError:
        raise AccountsError(f"accounts file not readable: {p}") from None
    except UnicodeDecodeError:
        raise AccountsError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise AccountsError(f"cannot read accounts file {p}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AccountsError(
            f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return accounts_from_json(data, str(p))


def save_accounts(path: str | os.PathLike[str], accounts: Iterable[Account]) -> Path:
    """Write the accounts file atomically with mode 0600 (it holds plaintext passwords)."""
    accs = check_unique(accounts)
    body = json.dumps({"accounts": [a.to_json() for a in accs]}, indent=2) + "\n"
    return write_atomic(path, body, private=True, make_parents=True)
