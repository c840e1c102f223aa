"""Property tests: valid proofs verify; mutated proofs, roots, leaves and sizes do not.

Sizes are the subtle case. An RFC 9162 proof does not bind the tree size on its own:
the same hashes can also be a valid proof for another size whose tree has the same
shape along the path (e.g. leaf 0 of a tree of 5 and of 8 both take three left-hand
steps). So for size mutations the property is: the verifier accepts exactly when the
slow recursive oracle (PATH / SUBPROOF rebuilt from the RFC 6962 definitions, without
the RFC 9162 bit walk) accepts, and whenever the mutation changes the proof's shape
(its length), it is rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.merkle import rfc6962_slow as slow
from wire.merkle import (
    MerkleTree,
    ProofError,
    consistency_proof_length,
    hash_leaf,
    inclusion_proof_length,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def _tree() -> MerkleTree:
    return MerkleTree.from_entries(b"leaf %d" % i for i in range(MAX_SIZE))


def _accepts(verify: Callable[..., None], *args: object) -> bool:
    try:
        verify(*args)
    except ProofError:
        return False
    return True


_accepts_inclusion = partial(_accepts, verify_inclusion)
_accepts_consistency = partial(_accepts, verify_consistency)


def _inclusion_case(index: int, size: int) -> tuple[bytes, list[bytes], bytes]:
    """(leaf hash, inclusion proof, root) of leaf ``index`` in the tree of ``size``."""
    tree = _tree()
    return tree.leaf_hash(index), tree.inclusion_proof(index, size), tree.root(size)


def _consistency_case(size1: int, size2: int) -> tuple[list[bytes], bytes, bytes]:
    """(consistency proof, root at size1, root at size2)."""
    tree = _tree()
    return tree.consistency_proof(size1, size2), tree.root(size1), tree.root(size2)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(2, MAX_SIZE))
    return draw(st.integers(1, size2 - 1)), size2


def _flip(h: bytes, bit: int) -> bytes:
    i, b = divmod(bit, 8)
    return h[:i] + bytes([h[i] ^ (1 << b)]) + h[i + 1 :]


def _flip_one(
    data: st.DataObject, first: bytes, second: bytes, proof: list[bytes]
) -> tuple[bytes, bytes, list[bytes]]:
    """One bit flipped, hypothesis choosing where: in ``first``, ``second`` or one of the
    proof's hashes, then which of its 256 bits."""
    target = data.draw(st.integers(-2, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    if target == -2:
        first = _flip(first, bit)
    elif target == -1:
        second = _flip(second, bit)
    else:
        proof = [*proof[:target], _flip(proof[target], bit), *proof[target + 1 :]]
    return first, second, proof


# -- inclusion ------------------------------------------------------------------------


@SETTINGS
@given(index_and_size())
def test_inclusion_valid(case: tuple[int, int]) -> None:
    index, size = case
    verify_inclusion(index, size, *_inclusion_case(index, size))


@SETTINGS
@given(index_and_size(), st.data())
def test_inclusion_flipped_bit_anywhere_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    leaf, proof, root = _inclusion_case(index, size)
    # Choose among the leaf, the root and each proof hash, then one of its 256 bits.
    leaf, root, proof = _flip_one(data, leaf, root, proof)
    assert not _accepts_inclusion(index, size, leaf, proof, root)


@SETTINGS
@given(index_and_size(), st.data())
def test_inclusion_structural_mutations_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    tree = _tree()
    leaf, proof, root = _inclusion_case(index, size)
    extra = data.draw(st.binary(min_size=32, max_size=32))
    mutations = [[*proof, extra], [extra, *proof], [*proof, root]]
    if proof:
        mutations += [proof[:-1], proof[1:]]
        pos = data.draw(st.integers(0, len(proof) - 1))
        mutations.append([*proof[:pos], extra, *proof[pos:]])
    if len(proof) > 1:
        i, j = data.draw(
            st.lists(st.integers(0, len(proof) - 1), min_size=2, max_size=2, unique=True)
        )
        if proof[i] != proof[j]:
            swapped = list(proof)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            mutations.append(swapped)
    for mutated in mutations:
        assert not _accepts_inclusion(index, size, leaf, mutated, root)
    # Another leaf's hash in this leaf's place.
    other = data.draw(st.integers(0, size - 1))
    if other != index:
        assert not _accepts_inclusion(index, size, tree.leaf_hash(other), proof, root)


@SETTINGS
@given(index_and_size(), st.integers(0, 2 * MAX_SIZE), st.integers(0, 2 * MAX_SIZE))
def test_inclusion_mutated_index_or_size(case: tuple[int, int], index2: int, size2: int) -> None:
    index, size = case
    leaf, proof, root = _inclusion_case(index, size)
    for i, n in [(index2, size), (index, size2), (index2, size2)]:
        if (i, n) == (index, size):
            continue
        accepted = _accepts_inclusion(i, n, leaf, proof, root)
        assert accepted == slow.inclusion_holds(i, n, leaf, proof, root)
        if i >= n or inclusion_proof_length(i, n) != len(proof):
            assert not accepted
        if n == size:
            # Same tree, another position: the path's left/right steps differ somewhere.
            assert not accepted


# -- consistency ----------------------------------------------------------------------


@SETTINGS
@given(two_sizes())
def test_consistency_valid(case: tuple[int, int]) -> None:
    size1, size2 = case
    verify_consistency(size1, size2, *_consistency_case(size1, size2))


@SETTINGS
@given(two_sizes(), st.data())
def test_consistency_flipped_bit_anywhere_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = case
    proof, root1, root2 = _consistency_case(size1, size2)
    root1, root2, proof = _flip_one(data, root1, root2, proof)
    assert not _accepts_consistency(size1, size2, proof, root1, root2)


@SETTINGS
@given(two_sizes(), st.data())
def test_consistency_structural_mutations_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = case
    tree = _tree()
    proof, root1, root2 = _consistency_case(size1, size2)
    extra = data.draw(st.binary(min_size=32, max_size=32))
    pos = data.draw(st.integers(0, len(proof)))
    mutations = [
        [],
        proof[:-1],
        proof[1:],
        [*proof, extra],
        [*proof[:pos], extra, *proof[pos:]],
        [root1, *proof],
        [*proof, root2],
    ]
    for mutated in mutations:
        assert not _accepts_consistency(size1, size2, mutated, root1, root2)
    assert not _accepts_consistency(size1, size2, proof, root2, root1)
    # A root of the same log at a different size is still the wrong root.
    other = data.draw(st.integers(1, MAX_SIZE))
    if other != size1:
        assert not _accepts_consistency(size1, size2, proof, tree.root(other), root2)
    if other != size2:
        assert not _accepts_consistency(size1, size2, proof, root1, tree.root(other))


@SETTINGS
@given(two_sizes(), st.integers(0, 2 * MAX_SIZE), st.integers(0, 2 * MAX_SIZE))
def test_consistency_mutated_sizes(case: tuple[int, int], s1: int, s2: int) -> None:
    size1, size2 = case
    proof, root1, root2 = _consistency_case(size1, size2)
    for m, n in [(s1, size2), (size1, s2), (s1, s2)]:
        if (m, n) == (size1, size2):
            continue
        accepted = _accepts_consistency(m, n, proof, root1, root2)
        assert accepted == slow.consistency_holds(m, n, proof, root1, root2)
        if m > n or consistency_proof_length(m, n) != len(proof):
            assert not accepted


@SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=80), st.data())
def test_arbitrary_entries_match_slow_construction(
    entries: list[bytes], data: st.DataObject
) -> None:
    tree = MerkleTree.from_entries(entries)
    leaves = [hash_leaf(e) for e in entries]
    n = data.draw(st.integers(1, len(entries)))
    m = data.draw(st.integers(0, n))
    i = data.draw(st.integers(0, n - 1))
    assert tree.root(n) == slow.mth(leaves[:n])
    assert tree.inclusion_proof(i, n) == slow.path(i, leaves[:n])
    assert tree.consistency_proof(m, n) == slow.proof(m, leaves[:n])
