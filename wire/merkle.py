"""An append-only Merkle tree with RFC 6962 hashing and RFC 9162 proofs, sans I/O.

The audit ledger and the key directory are both logs of this kind: every entry is a
leaf, the root hash commits to every entry so far, and two kinds of proof let a client
check the log without holding it:

* an *inclusion proof* (RFC 9162 §2.1.3) shows that one leaf is in the tree of a given
  size and root;
* a *consistency proof* (RFC 9162 §2.1.4) shows that the tree of one size is a prefix
  of the tree of a larger size, i.e. nothing was rewritten or removed.

Hashing (RFC 6962 §2.1, RFC 9162 §2.1.1), with SHA-256:

    leaf hash  = SHA-256(0x00 || data)
    node hash  = SHA-256(0x01 || left || right)
    empty root = SHA-256("")

The distinct 0x00 / 0x01 prefixes make a leaf hash never equal an interior node hash
of the same bytes (the second-preimage attack on plain Merkle trees).

``MerkleTree`` keeps the hash of every *complete* subtree (2^k leaves starting at a
multiple of 2^k), one flat ``bytearray`` per level. Appending a leaf adds at most
log2(n) such hashes; any root or proof for any past size is then assembled from
O(log n) of them, never recomputed from the leaves. Storage is about 2 * 32 bytes per
leaf (64 MB for 10^6 leaves).

The module functions ``verify_inclusion`` and ``verify_consistency`` follow the RFC 9162
verification algorithms step by step and raise ``ProofError`` with a reason that says
what failed. Nothing here does I/O or keeps global state; persistence belongs to the
caller (``MerkleTree.from_leaf_hashes`` rebuilds a tree from stored leaf hashes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

#: The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof did not verify. ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _short(h: bytes) -> str:
    """A hash abbreviated for an error message: enough to tell two apart by eye."""
    return h[:6].hex() + "…"


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes an inclusion proof for leaf ``index`` in a tree of ``size`` has.

    The path splits into an "inner" part, where the leaf and the last leaf of the tree
    (size - 1) are still in different subtrees, and a "border" part along the right
    edge of the tree, where one hash is needed per 1 bit of what is left of the index.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not below tree size {size}")
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner + border


def consistency_proof_length(size1: int, size2: int) -> int:
    """How many hashes a consistency proof from ``size1`` to ``size2`` has (0 if trivial)."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"sizes must satisfy 0 <= size1 <= size2, got {size1} and {size2}")
    if size1 == 0 or size1 == size2:
        return 0
    # The proof is the inclusion path of the old tree's last leaf, minus the levels
    # where that leaf sits inside a complete subtree that the old tree contains whole
    # (those hashes are implied by root1), plus the old subtree's own hash unless the
    # old tree is a single complete subtree (then root1 itself stands in for it).
    shift = (size1 & -size1).bit_length() - 1
    path = inclusion_proof_length(size1 - 1, size2)
    seed = 0 if size1 == 1 << shift else 1
    return seed + path - shift


class MerkleTree:
    """An append-only RFC 6962 Merkle tree held in memory.

    Not thread-safe: one writer appends; readers must not run concurrently with it.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        # _levels[k] holds, concatenated, the hashes of the complete subtrees of 2^k
        # leaves, left to right: _levels[0] is every leaf hash, _levels[k] has
        # floor(size / 2^k) entries.
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MerkleTree:
        """Rebuild a tree from leaf hashes as stored (e.g. read back from SQLite), in order."""
        tree = cls()
        for leaf in leaf_hashes:
            tree.append_leaf_hash(leaf)
        return tree

    @classmethod
    def from_entries(cls, entries: Iterable[bytes]) -> MerkleTree:
        """Build a tree from raw entries, hashing each as a leaf."""
        tree = cls()
        for data in entries:
            tree.append(data)
        return tree

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def storage_bytes(self) -> int:
        """Bytes of hashes held: about 64 per leaf (every leaf and complete subtree)."""
        return sum(len(level) for level in self._levels)

    def append(self, data: bytes) -> int:
        """Append one entry (hashed as a leaf); return its index."""
        return self.append_leaf_hash(hash_leaf(data))

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        """Append a precomputed leaf hash; return its index.

        Amortised O(1), worst case O(log n): each new leaf closes one complete subtree
        per trailing 1 bit of its index.
        """
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
        index = self._size
        levels = self._levels
        levels[0] += leaf_hash
        node = leaf_hash
        level, position = 0, index
        # While the new node is a right child, its left sibling is already stored:
        # the pair forms a complete subtree one level up.
        while position & 1:
            start = (position - 1) * HASH_SIZE
            node = hash_children(bytes(levels[level][start : start + HASH_SIZE]), node)
            level += 1
            position >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += node
        self._size = index + 1
        return index

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        if not 0 <= index < self._size:
            raise IndexError(f"leaf index {index} out of range for tree size {self._size}")
        return self._node(0, index)

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The leaf hashes in [start, end), e.g. to persist them."""
        end = self._size if end is None else end
        if not 0 <= start <= end <= self._size:
            raise IndexError(f"range [{start}, {end}) out of bounds for tree size {self._size}")
        level0 = self._levels[0]
        for i in range(start, end):
            yield bytes(level0[i * HASH_SIZE : (i + 1) * HASH_SIZE])

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the tree as it was at ``size`` leaves (default: now)."""
        size = self._check_size(size, "size")
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size``.

        PATH(m, D[n]) recurses into the half holding leaf m and appends the hash of the
        other half. Here the recursion is unrolled top-down; the hashes are collected
        outermost first and reversed into the RFC's order (leaf level first).
        """
        size = self._check_size(size, "size")
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not below tree size {size}")
        siblings: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _largest_power_of_two_below(end - start)
            if index < start + k:
                siblings.append(self._range_hash(start + k, end))
                end = start + k
            else:
                siblings.append(self._range_hash(start, start + k))
                start += k
        siblings.reverse()
        return siblings

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """The RFC 9162 §2.1.4.1 consistency proof from size ``size1`` to ``size2``.

        Empty when size1 is 0 or equals size2 (nothing to prove). Otherwise
        SUBPROOF(m, D[n], b): while m lies in the left half, recurse left and append the
        right half's hash; once m reaches into the right half, recurse right (b becomes
        false: the old tree is no longer a whole subtree) and append the left half's
        hash; when the subtree is exactly the first m leaves, append its hash unless b is
        still true (the verifier already has it as root1).
        """
        size2 = self._check_size(size2, "size2")
        if not 0 <= size1 <= size2:
            raise ValueError(f"sizes must satisfy 0 <= size1 <= size2, got {size1} and {size2}")
        if size1 == 0 or size1 == size2:
            return []
        hashes: list[bytes] = []
        start, end, whole = 0, size2, True
        while True:
            if size1 == end:
                if not whole:
                    hashes.append(self._range_hash(start, end))
                break
            k = _largest_power_of_two_below(end - start)
            if size1 - start <= k:
                hashes.append(self._range_hash(start + k, end))
                end = start + k
            else:
                hashes.append(self._range_hash(start, start + k))
                start += k
                whole = False
        # Collected outermost first (and the innermost subtree last); the RFC lists
        # the innermost first.
        hashes.reverse()
        return hashes

    # -- internals ---------------------------------------------------------------

    def _check_size(self, size: int | None, name: str) -> int:
        if size is None:
            return self._size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{name} must be an int")
        if not 0 <= size <= self._size:
            raise ValueError(f"{name} {size} is outside the tree's history (0..{self._size})")
        return size

    def _node(self, level: int, position: int) -> bytes:
        offset = position * HASH_SIZE
        return bytes(self._levels[level][offset : offset + HASH_SIZE])

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a non-empty range as the RFC recursion produces it.

        Such ranges start at a multiple of a power of two at least as large as the range
        (0 always qualifies), so MTH splits them into complete subtrees greedily from the
        left (largest first), all of them already stored, and folds them from the right:
        MTH = H(P1, H(P2, ... H(Pk-1, Pk))). At most log2(n) lookups and hashes.
        """
        parts: list[bytes] = []
        while start < end:
            level = (end - start).bit_length() - 1
            if start:
                # Never cross the alignment of start (cannot happen for RFC ranges, but
                # keeps each part a stored complete subtree).
                level = min(level, (start & -start).bit_length() - 1)
            parts.append(self._node(level, start >> level))
            start += 1 << level
        result = parts.pop()
        while parts:
            result = hash_children(parts.pop(), result)
        return result


# -- verification ---------------------------------------------------------------------


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{name} {value} is negative")


def _check_hash(value: bytes, name: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``leaf_index`` of the tree of ``tree_size`` and ``root``.

    RFC 9162 §2.1.3.2, with its extra checks: the index must be below the size, every
    hash must be 32 bytes, and the walk must end exactly at the root (sn == 0). The
    proof length is checked up front too, so a wrong length gets its own reason. Raises
    ``ProofError``; returns None when the proof holds.
    """
    _check_count(leaf_index, "index")
    _check_count(tree_size, "tree size")
    if leaf_index >= tree_size:
        raise ProofError(f"index {leaf_index} is not below tree size {tree_size}")
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    for i, node in enumerate(proof):
        _check_hash(node, f"proof[{i}]")
    expected = inclusion_proof_length(leaf_index, tree_size)
    if len(proof) != expected:
        raise ProofError(f"proof has {len(proof)} hashes, expected {expected}")

    # The RFC's steps, with its names: fn walks up from the leaf, sn from the last leaf.
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("proof is longer than the path from the leaf to the root")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                # The leaf is on the tree's right edge: skip the levels where its
                # subtree has no right sibling.
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the path from the leaf to the root")
    if r != root:
        raise ProofError(
            f"root mismatch: the proof leads to {_short(r)}, not to the given root {_short(root)}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size1, root1) is a prefix of the tree (size2, root2).

    RFC 9162 §2.1.4.2 for 0 < size1 < size2. The trivial cases, which have an empty
    proof: size1 == size2 needs root1 == root2; size1 == 0 is consistent with any tree,
    but root1 must then be the empty-tree hash (stricter than some verifiers, which
    ignore root1 there: a size-0 checkpoint with another root is itself bogus).
    Raises ``ProofError``; returns None when the proof holds.
    """
    _check_count(size1, "size1")
    _check_count(size2, "size2")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}: logs only grow")
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    for i, node in enumerate(proof):
        _check_hash(node, f"proof[{i}]")
    expected = consistency_proof_length(size1, size2)
    if len(proof) != expected:
        raise ProofError(f"proof has {len(proof)} hashes, expected {expected}")

    if size1 == 0:
        if root1 != EMPTY_ROOT:
            raise ProofError("root1 is not the empty-tree hash, yet size1 is 0")
        if size2 == 0 and root2 != EMPTY_ROOT:
            raise ProofError("root2 is not the empty-tree hash, yet size2 is 0")
        return
    if size1 == size2:
        if root1 != root2:
            raise ProofError(
                f"root mismatch: equal sizes {size1} but root1 {_short(root1)} "
                f"differs from root2 {_short(root2)}"
            )
        return

    # Step 1 is covered by the length check (the expected length here is never 0).
    path = list(proof)
    # 2. If size1 is an exact power of two, the old tree is a complete subtree of the
    # new one and root1 itself is the first hash of the walk.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # 3.-4. Walk up from the old tree's last leaf, skipping the levels where it is a
    # right child inside a subtree wholly contained in the old tree.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.-6. fr rebuilds root1, sr rebuilds root2 from the same path.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("proof is shorter than the path to the root")
    if fr != root1:
        raise ProofError(
            f"root1 mismatch: the proof leads to {_short(fr)}, not to root1 {_short(root1)}"
        )
    if sr != root2:
        raise ProofError(
            f"root2 mismatch: the proof leads to {_short(sr)}, not to root2 {_short(root2)}"
        )
