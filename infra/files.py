"""Files written whole or not at all, and private files (mode 0600), written once.

    write_atomic(path, text)                 # readers see the old file or the new one
    write_atomic(path, secret, private=True) # the same, mode 0600 from the first byte
    create_private(path, secret)             # only if there is no such file yet: True if created
    signer = load_or_create_signer(path, name)   # a checkpoint signing key kept in a file

Each writes a temporary file in the target's directory (``.<name>.<random>.tmp``),
created mode 0600 so that no other user can open it before its final mode is set, fsyncs
it (unless ``durable=False``: a heartbeat rewritten every few seconds), and renames it
over the target (``os.replace``: atomic on POSIX) or, for ``create_private``, links it
to the target's name (``os.link``: fails if the name exists, so two processes racing to
create a key file end up with the same key); durable writes then fsync the directory, so
that the rename itself survives a crash (a state file a witness answers from must not
come back older after a power cut). On failure the temporary file is removed and the
OSError raised.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from wire.note import Signer

PRIVATE = 0o600
PUBLIC = 0o644


def _temporary(path: Path, data: str | bytes, mode: int, durable: bool, make_parents: bool) -> str:
    """A temporary file beside ``path`` holding ``data`` with ``mode``; its name."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    private: bool = False,
    durable: bool = True,
    make_parents: bool = False,
) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one step. ``private``:
    mode 0600, and the file never exists with looser permissions (passwords, private
    keys); else 0644. ``durable``: on disk (fsync) before the rename. ``make_parents``:
    create missing parent folders."""
    p = Path(path)
    tmp = _temporary(p, data, PRIVATE if private else PUBLIC, durable, make_parents)
    try:
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _sync_directory(p.parent)
    return p


def _sync_directory(directory: Path) -> None:
    """fsync a directory: its entries (a rename, a new link) are then on disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: str | os.PathLike[str], data: str | bytes) -> bool:
    """Create ``path`` (mode 0600) holding ``data``, whole, unless it exists already:
    True if this call created it, False (nothing written) if it was there."""
    p = Path(path)
    tmp = _temporary(p, data, PRIVATE, durable=True, make_parents=False)
    try:
        os.link(tmp, p)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _sync_directory(p.parent)
    return True


def load_or_create_signer(path: str | os.PathLike[str], name: str) -> Signer:
    """A checkpoint signing key (an Ed25519 *signing* key: it decrypts nothing) kept in
    a file. Read from ``path`` (the signer key's text form, ``PRIVATE+KEY+...``) or, if
    there is no such file, generated and written there with mode 0600. The verifier key,
    which clients pin, is (re)written beside it as ``<path>.vkey`` (mode 0644).

    Raises ValueError for a file that holds no valid key of that name, OSError for a
    file that cannot be read or written."""
    p = Path(path)
    fresh = Signer.generate(name)  # cheap; thrown away if the file exists
    if create_private(p, fresh.skey() + "\n"):
        signer = fresh
    else:
        text = p.read_text(encoding="utf-8").strip()
        try:
            signer = Signer.from_skey(text)
        except ValueError as exc:
            raise ValueError(f"{p}: not a signer key: {exc}") from None
        if signer.name != name:
            raise ValueError(f"{p}: the key is named {signer.name!r}, expected {name!r}")
    vkey_path = p.with_name(p.name + ".vkey")
    vkey = signer.verifier().vkey() + "\n"
    if not vkey_path.exists() or vkey_path.read_text(encoding="utf-8") != vkey:
        write_atomic(vkey_path, vkey)
    return signer
