"""doormat.broker.accounts: passwords, the accounts file and its errors."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from doormat.broker.accounts import (
    Account,
    AccountsError,
    generate_password,
    load_accounts,
    save_accounts,
)


def test_generated_passwords_are_url_safe_long_and_distinct() -> None:
    pws = {generate_password() for _ in range(200)}
    assert len(pws) == 200
    for pw in pws:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", pw)
        assert len(pw) * 6 >= 128  # base64url: 6 bits per character


def test_save_then_load_round_trips_with_mode_0600(tmp_path: Path) -> None:
    accs = [
        Account("relay", generate_password(), "relay"),
        Account("acme", generate_password(), "enterprise"),
        Account("alice@acme.phone", generate_password(), "device"),
        Account("tap", generate_password(), "tap"),
    ]
    path = save_accounts(tmp_path / "sub" / "accounts.json", accs)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_accounts(path) == accs
    data = json.loads(path.read_text())
    assert set(data["accounts"][0]) == {"username", "password", "role"}
    # Saving again over an existing file keeps it private.
    path.chmod(0o644)
    save_accounts(path, accs[:1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "accounts.json"]  # no temp left


def test_repr_hides_the_password() -> None:
    acc = Account("alice@acme.phone", "s3cret-pw", "device")
    assert "s3cret" not in repr(acc)
    assert "s3cret" not in str([acc])


@pytest.mark.parametrize(
    ("username", "role", "needle"),
    [
        ("alice@acme.phone", "admin", "unknown role 'admin'"),
        ("alice@acme", "device", "not a device id"),
        ("Acme", "enterprise", "not an enterprise id"),
        ("re:lay", "relay", "not a relay account name"),
        ("doormat/#", "tap", "not a tap account name"),
        # The service names (wire.ids.RESERVED) are no enterprise's, and each is its own
        # service's only: an enterprise "tap" would enrol ghosts, a "relay" tap would not
        # be the relay.
        ("tap", "enterprise", "'tap' is reserved for a service account"),
        ("relay", "enterprise", "'relay' is reserved for a service account"),
        ("interceptor", "enterprise", "'interceptor' is reserved for a service account"),
        ("tap", "relay", "'tap' is reserved for the tap service account"),
        ("relay", "interceptor", "'relay' is reserved for the relay service account"),
    ],
)
def test_bad_accounts_are_refused(username: str, role: str, needle: str) -> None:
    with pytest.raises(AccountsError, match=re.escape(needle)):
        Account(username, "pw", role)


def test_empty_password_is_refused() -> None:
    with pytest.raises(AccountsError, match="password must be a non-empty string"):
        Account("relay", "", "relay")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "invalid JSON at line 1 column 2"),
        ("[]", 'expected an object {"accounts": [...]}'),
        ('{"accounts": {}}', 'expected an object {"accounts": [...]}'),
        ('{"accounts": [3]}', "accounts[0]: expected an object, got int"),
        ('{"accounts": [{"username": "relay", "role": "relay"}]}', "accounts[0]: missing password"),
        (
            '{"accounts": [{"username": "relay", "password": "x", "role": "relay", "x": 1}]}',
            "accounts[0]: unknown field 'x'",
        ),
        (
            '{"accounts": [{"username": "bob", "password": "x", "role": "device"}]}',
            "accounts[0]: device account: not a device id: 'bob'",
        ),
        (
            '{"accounts": [{"username": "relay", "password": 5, "role": "relay"}]}',
            "password must be a non-empty string",
        ),
        (
            '{"accounts": [{"username": "acme", "password": "x", "role": "enterprise"},'
            ' {"username": "acme", "password": "y", "role": "enterprise"}]}',
            "duplicate username 'acme'",
        ),
    ],
)
def test_broken_files_give_one_line_errors(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(content)
    with pytest.raises(AccountsError) as info:
        load_accounts(path)
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AccountsError, match="accounts file not found"):
        load_accounts(tmp_path / "nope.json")
    with pytest.raises(AccountsError, match="is a directory"):
        load_accounts(tmp_path)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"accounts": ["\xff"]}')
    with pytest.raises(AccountsError, match="not UTF-8"):
        load_accounts(bad)
