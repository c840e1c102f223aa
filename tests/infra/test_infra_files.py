"""infra.files: whole files or none, private files 0600 from the first byte, a key file
created once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.files import create_private, load_or_create_signer, write_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "policy.json"
    write_atomic(target, "one\n")
    write_atomic(target, b"two\n", durable=False)
    assert target.read_text() == "two\n" and mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json"]


def test_a_private_file_is_0600_and_parents_only_on_request(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "secret", "pw", private=True)
    assert not (tmp_path / "missing").exists()
    target = write_atomic(tmp_path / "made" / "secret", "pw", private=True, make_parents=True)
    assert target.read_text() == "pw" and mode(target) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inside").write_text("old")
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "d", "x")  # the target is a directory: the rename fails
    assert (tmp_path / "d" / "inside").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_create_private_creates_once(tmp_path: Path) -> None:
    key = tmp_path / "key"
    assert create_private(key, "first") is True
    assert create_private(key, "second") is False
    assert key.read_text() == "first" and mode(key) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_the_signer_file_is_kept_and_its_vkey_written_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "kt-key"
    signer = load_or_create_signer(path, "doormat.example/directory")
    assert mode(path) == 0o600 and mode(tmp_path / "kt-key.vkey") == 0o644
    (tmp_path / "kt-key.vkey").unlink()
    again = load_or_create_signer(path, "doormat.example/directory")
    assert again.skey() == signer.skey()
    assert (tmp_path / "kt-key.vkey").read_text() == signer.verifier().vkey() + "\n"
