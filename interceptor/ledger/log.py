"""The audit ledger's log core, sans I/O: the Merkle tree over the entries, signed
checkpoints, and inclusion and consistency proofs.

Each entry (``interceptor.ledger.entries``) is one leaf of an RFC 6962 Merkle tree
(``wire.merkle``): leaf hash = SHA-256(0x00 || entry bytes). The log signs C2SP
checkpoints (``wire.checkpoint``) over (size, root); with them anyone can check that an
entry is in the log (inclusion proof) and that the log only grew (consistency proof).

:class:`LedgerCore` does no I/O and reads no clock: the caller passes ``time_ms``, and
the SQLite store (``interceptor.ledger.store``) persists what it prepares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from interceptor.ledger.entries import Entry, make_entry
from interceptor.ledger.errors import LedgerError
from wire.b64 import b64encode
from wire.checkpoint import Checkpoint, sign_checkpoint
from wire.merkle import MerkleTree, hash_leaf, verify_consistency, verify_inclusion
from wire.note import Signer, is_valid_key_name

#: The log's name in its checkpoints; the signing key must carry the same name.
DEFAULT_ORIGIN = "doormat.example/ledger"


@dataclass(frozen=True)
class Receipt:
    """What ``append`` returns once the entry is durable: where it is and the new head."""

    index: int
    leaf_hash: bytes
    tree_size: int
    root: bytes


@dataclass(frozen=True)
class PreparedEntry:
    """An entry ready to be stored; it joins the tree only when ``commit`` is called."""

    entry: Entry
    data: bytes
    leaf_hash: bytes


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    root: bytes
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """transparency-dev's JSON form, as ``doormat ledger verify-proof`` reads it."""
        return {
            "leafIdx": self.index,
            "treeSize": self.size,
            "root": b64encode(self.root),
            "leafHash": b64encode(self.leaf_hash),
            "proof": [b64encode(h) for h in self.hashes],
        }

    def verify(self) -> None:
        verify_inclusion(self.index, self.size, self.leaf_hash, list(self.hashes), self.root)


@dataclass(frozen=True)
class ConsistencyProof:
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "size1": self.size1,
            "size2": self.size2,
            "root1": b64encode(self.root1),
            "root2": b64encode(self.root2),
            "proof": [b64encode(h) for h in self.hashes],
        }

    def verify(self) -> None:
        verify_consistency(self.size1, self.size2, list(self.hashes), self.root1, self.root2)


def check_origin(origin: str) -> str:
    # The origin doubles as the signing key's name (the checkpoint spec's SHOULD, which
    # wire.checkpoint enforces), so it must be a valid key name as well.
    if not is_valid_key_name(origin):
        raise LedgerError(f"ledger origin {origin!r} must be non-empty without spaces or '+'")
    return origin


class LedgerCore:
    """The log in memory: the Merkle tree over the stored leaf hashes, and what to store next.

    Two-phase append so that the store decides durability: ``prepare`` validates and
    encodes the next entry without changing anything; the store writes it and commits;
    only then ``commit`` adds it to the tree and returns the receipt. A failed write
    leaves the core exactly as it was.
    """

    def __init__(self, origin: str = DEFAULT_ORIGIN, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._origin = check_origin(origin)
        try:
            self._tree = MerkleTree.from_leaf_hashes(leaf_hashes)
        except LedgerError:
            raise  # the store's own, more precise, complaint about its rows
        except ValueError as exc:
            raise LedgerError(f"stored leaf hashes are unusable: {exc}") from None

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def size(self) -> int:
        return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        try:
            return self._tree.root(size)
        except (ValueError, TypeError) as exc:
            raise LedgerError(str(exc)) from None

    def leaf_hash(self, index: int) -> bytes:
        try:
            return self._tree.leaf_hash(index)
        except IndexError as exc:
            raise LedgerError(str(exc)) from None

    def prepare(self, entry: Mapping[str, Any], *, time_ms: int) -> PreparedEntry:
        made = make_entry(self._tree.size, entry, time_ms=time_ms)
        data = made.encode()
        return PreparedEntry(made, data, hash_leaf(data))

    def commit(self, prepared: PreparedEntry) -> Receipt:
        if prepared.entry.index != self._tree.size:
            raise LedgerError(
                f"prepared entry {prepared.entry.index} is not the next one ({self._tree.size})"
            )
        index = self._tree.append_leaf_hash(prepared.leaf_hash)
        return Receipt(index, prepared.leaf_hash, self._tree.size, self._tree.root())

    def checkpoint(self, signer: Signer) -> tuple[Checkpoint, str]:
        """A signed C2SP checkpoint over the current size and root."""
        if signer.name != self._origin:
            raise LedgerError(
                f"the signing key is named {signer.name!r}; the ledger's checkpoints need a "
                f"key named as its origin {self._origin!r}"
            )
        checkpoint = Checkpoint(self._origin, self._tree.size, self._tree.root())
        return checkpoint, sign_checkpoint(checkpoint, signer)

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        size = self._tree.size if size is None else size
        if not 0 <= size <= self._tree.size:
            raise LedgerError(f"size {size} is outside the log's history (0..{self._tree.size})")
        if not 0 <= index < size:
            raise LedgerError(f"entry {index} is not in the first {size} entries of the log")
        hashes = self._tree.inclusion_proof(index, size)
        return InclusionProof(
            index, size, self._tree.leaf_hash(index), self._tree.root(size), tuple(hashes)
        )

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        size2 = self._tree.size if size2 is None else size2
        if not 0 <= size1 <= size2 <= self._tree.size:
            raise LedgerError(
                f"sizes {size1} and {size2} must satisfy 0 <= size1 <= size2 <= {self._tree.size}"
            )
        hashes = self._tree.consistency_proof(size1, size2)
        return ConsistencyProof(
            size1, size2, self._tree.root(size1), self._tree.root(size2), tuple(hashes)
        )


__all__ = [
    "DEFAULT_ORIGIN",
    "ConsistencyProof",
    "InclusionProof",
    "LedgerCore",
    "PreparedEntry",
    "Receipt",
    "check_origin",
]
