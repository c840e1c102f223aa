"""RFC 6962 / RFC 9162 computed the slow way, straight from the recursive definitions.

An independent oracle for the tests: no stored subtrees, no bit tricks, every value
recomputed from the list of leaf hashes. Only fit for small trees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (RFC 9162 §2.1.1)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 §2.1.3.1)."""
    n = len(leaves)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 §2.1.4.1), 0 < m < n; empty for the trivial cases."""
    if m == 0 or m == len(leaves):
        return []
    return _subproof(m, leaves, True)


class _Path:
    """Consume proof hashes outermost first, i.e. from the end of the RFC's list."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.hashes = list(hashes)

    def take(self) -> bytes:
        if not self.hashes:
            raise LookupError("proof too short")
        return self.hashes.pop()


def inclusion_holds(
    index: int, size: int, leaf_hash: bytes, hashes: Sequence[bytes], root: bytes
) -> bool:
    """Does the proof rebuild the root, following PATH's recursion (not RFC's bit walk)?"""
    if not 0 <= index < size or any(len(h) != 32 for h in [leaf_hash, root, *hashes]):
        return False
    walk = _Path(hashes)

    def rebuild(m: int, n: int) -> bytes:
        if n == 1:
            return leaf_hash
        k = split(n)
        sibling = walk.take()
        if m < k:
            return node(rebuild(m, k), sibling)
        return node(sibling, rebuild(m - k, n - k))

    try:
        computed = rebuild(index, size)
    except LookupError:
        return False
    return not walk.hashes and computed == root


def consistency_holds(
    size1: int, size2: int, hashes: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """Does the proof rebuild both roots, following SUBPROOF's recursion?"""
    empty = hashlib.sha256(b"").digest()
    if not 0 <= size1 <= size2 or any(len(h) != 32 for h in [root1, root2, *hashes]):
        return False
    if size1 == 0:
        return not hashes and root1 == empty and (size2 > 0 or root2 == empty)
    if size1 == size2:
        return not hashes and root1 == root2
    walk = _Path(hashes)

    def rebuild(m: int, n: int, whole: bool) -> tuple[bytes, bytes]:
        """(hash of the old tree's part of this subtree, hash of this subtree)."""
        if m == n:
            h = root1 if whole else walk.take()
            return h, h
        k = split(n)
        sibling = walk.take()
        if m <= k:
            old, new = rebuild(m, k, whole)
            return old, node(new, sibling)
        old, new = rebuild(m - k, n - k, False)
        return node(sibling, old), node(sibling, new)

    try:
        old, new = rebuild(size1, size2, True)
    except LookupError:
        return False
    return not walk.hashes and old == root1 and new == root2
