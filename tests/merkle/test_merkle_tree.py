"""MerkleTree against published RFC 6962 test data and against the slow recursive oracle."""

from __future__ import annotations

import hashlib

import pytest

from tests.merkle import rfc6962_slow as slow
from tests.merkle.reference_tree import LEAF_INPUTS
from wire.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    consistency_proof_length,
    hash_children,
    hash_leaf,
    inclusion_proof_length,
    verify_consistency,
    verify_inclusion,
)

# The reference tree of transparency-dev/merkle testonly/constants.go (also the tree the
# shared inclusion vectors are built on): leaf inputs (reference_tree.py), every complete
# subtree hash, and the root at each size 0..8.
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Proofs from transparency-dev/merkle proof/verify_test.go (leaf indices 0-based here).
INCLUSION_PROOFS = [
    (0, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (5, 8, ["bc1a0643", "ca854ea1", "d37ee418"]),
    (2, 3, ["fac54203"]),
    (1, 5, ["6e340b9c", "5f083f0a", "bc1a0643"]),
]
CONSISTENCY_PROOFS = [
    (1, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (6, 8, ["0ebc5d34", "ca854ea1", "d37ee418"]),
    (2, 5, ["5f083f0a", "bc1a0643"]),
    (6, 7, ["0ebc5d34", "b08693ec", "d37ee418"]),
]
# The vectors above are abbreviated to 8 hex digits; every hash they name is a node of
# the reference tree, so look the full value up there.
_BY_PREFIX = {h[:8]: bytes.fromhex(h) for level in NODE_HASHES for h in level}


def _full(prefixes: list[str]) -> list[bytes]:
    return [_BY_PREFIX[p] for p in prefixes]


@pytest.fixture(scope="module")
def reference_tree() -> MerkleTree:
    return MerkleTree.from_entries(LEAF_INPUTS)


def test_hashing_primitives() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert hash_leaf(b"") == bytes.fromhex(NODE_HASHES[0][0])
    assert hash_children(bytes.fromhex(NODE_HASHES[0][0]), bytes.fromhex(NODE_HASHES[0][1])) == (
        bytes.fromhex(NODE_HASHES[1][0])
    )
    # Domain separation: a leaf hash of two hashes is not their node hash.
    a, b = hash_leaf(b"a"), hash_leaf(b"b")
    assert hash_leaf(a + b) != hash_children(a, b)


def test_reference_tree_root_matches_readme(reference_tree: MerkleTree) -> None:
    assert reference_tree.size == 8
    assert reference_tree.root().hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


def test_reference_tree_roots_at_every_past_size(reference_tree: MerkleTree) -> None:
    assert [reference_tree.root(n).hex() for n in range(9)] == ROOTS


def test_reference_tree_roots_while_growing() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT
    for n, data in enumerate(LEAF_INPUTS, start=1):
        assert tree.append(data) == n - 1
        assert tree.root().hex() == ROOTS[n]


def test_reference_tree_stores_every_complete_subtree(reference_tree: MerkleTree) -> None:
    for level, hashes in enumerate(NODE_HASHES):
        for position, expected in enumerate(hashes):
            assert reference_tree._node(level, position).hex() == expected


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_published_inclusion_proofs(
    reference_tree: MerkleTree, index: int, size: int, proof: list[str]
) -> None:
    expected = _full(proof)
    assert reference_tree.inclusion_proof(index, size) == expected
    verify_inclusion(
        index, size, reference_tree.leaf_hash(index), expected, reference_tree.root(size)
    )


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_PROOFS)
def test_published_consistency_proofs(
    reference_tree: MerkleTree, size1: int, size2: int, proof: list[str]
) -> None:
    expected = _full(proof)
    assert reference_tree.consistency_proof(size1, size2) == expected
    verify_consistency(
        size1, size2, expected, reference_tree.root(size1), reference_tree.root(size2)
    )


# -- all sizes up to 40, against the slow construction ---------------------------------

MAX_N = 40


@pytest.fixture(scope="module")
def tree40() -> tuple[MerkleTree, list[bytes]]:
    leaves = [hash_leaf(i.to_bytes(4, "big")) for i in range(MAX_N)]
    return MerkleTree.from_leaf_hashes(leaves), leaves


def test_roots_match_slow_construction(tree40: tuple[MerkleTree, list[bytes]]) -> None:
    tree, leaves = tree40
    for n in range(MAX_N + 1):
        assert tree.root(n) == slow.mth(leaves[:n])


def test_all_inclusion_proofs_up_to_40(tree40: tuple[MerkleTree, list[bytes]]) -> None:
    tree, leaves = tree40
    for n in range(1, MAX_N + 1):
        root = tree.root(n)
        for i in range(n):
            proof = tree.inclusion_proof(i, n)
            assert proof == slow.path(i, leaves[:n])
            assert len(proof) == inclusion_proof_length(i, n)
            verify_inclusion(i, n, leaves[i], proof, root)
            assert slow.inclusion_holds(i, n, leaves[i], proof, root)


def test_all_consistency_proofs_up_to_40(tree40: tuple[MerkleTree, list[bytes]]) -> None:
    tree, leaves = tree40
    for n in range(MAX_N + 1):
        for m in range(n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == slow.proof(m, leaves[:n])
            assert len(proof) == consistency_proof_length(m, n)
            verify_consistency(m, n, proof, tree.root(m), tree.root(n))
            assert slow.consistency_holds(m, n, proof, tree.root(m), tree.root(n))


def _consistency_probes(
    m: int, n: int, proof: list[bytes], r1: bytes, r2: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """The corruptions transparency-dev's verify_test.go tries on a consistency proof."""
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes = [
        ("size1 - 1", m - 1, n, proof, r1, r2),
        ("size1 + 1", m + 1, n, proof, r1, r2),
        ("size1 ^ 2", m ^ 2, n, proof, r1, r2),
        ("size2 * 2", m, n * 2, proof, r1, r2),
        ("size2 / 2", m, n // 2, proof, r1, r2),
        ("wrong root1", m, n, proof, some, r2),
        ("wrong root2", m, n, proof, r1, some),
        ("swapped roots", m, n, proof, r2, r1),
        ("empty proof", m, n, [], r1, r2),
        ("trailing garbage", m, n, [*proof, some], r1, r2),
        ("trailing root1", m, n, [*proof, r1], r1, r2),
        ("trailing root2", m, n, [*proof, r2], r1, r2),
        ("preceding garbage", m, n, [some, *proof], r1, r2),
        ("preceding root1", m, n, [r1, *proof], r1, r2),
        ("preceding root2", m, n, [r2, *proof], r1, r2),
        ("preceding proof[0]", m, n, [proof[0], *proof], r1, r2),
        ("truncated proof", m, n, proof[:-1], r1, r2),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((f"modified proof[{i}] bit 4", m, n, flipped, r1, r2))
    return probes


def test_corrupted_consistency_proofs_up_to_40(tree40: tuple[MerkleTree, list[bytes]]) -> None:
    """Each corruption is rejected, except a size change the slow oracle also accepts.

    A proof does not bind the sizes by itself: the same hashes can be a valid proof for
    other sizes whose trees have the same shape along the path. Whatever the verifier
    accepts must then be accepted by the recursive oracle too, and vice versa.
    """
    tree, _ = tree40
    for n in range(2, MAX_N + 1):
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            for desc, m2, n2, p2, r1, r2 in _consistency_probes(
                m, n, proof, tree.root(m), tree.root(n)
            ):
                try:
                    verify_consistency(m2, n2, p2, r1, r2)
                    accepted = True
                except ProofError:
                    accepted = False
                oracle = slow.consistency_holds(m2, n2, p2, r1, r2)
                assert accepted == oracle, (m, n, desc)
                if (m2, n2) == (m, n) or p2 is not proof:
                    assert not accepted, (m, n, desc)


# -- the tree itself ----------------------------------------------------------------------


def test_rebuild_from_stored_leaf_hashes(tree40: tuple[MerkleTree, list[bytes]]) -> None:
    tree, leaves = tree40
    stored = list(tree.leaf_hashes())
    assert stored == leaves
    rebuilt = MerkleTree.from_leaf_hashes(stored)
    assert rebuilt.size == tree.size
    assert rebuilt.root() == tree.root()
    assert rebuilt.consistency_proof(17, 33) == tree.consistency_proof(17, 33)
    assert list(tree.leaf_hashes(3, 5)) == leaves[3:5]


def test_past_sizes_unchanged_by_appends() -> None:
    tree = MerkleTree()
    roots = []
    for i in range(70):
        roots.append(tree.root())
        tree.append(b"entry %d" % i)
    assert [tree.root(n) for n in range(70)] == roots
    for n in range(1, 70):
        verify_consistency(n, 70, tree.consistency_proof(n), roots[n], tree.root())


def test_larger_tree_against_slow_construction() -> None:
    leaves = [hash_leaf(b"%d" % i) for i in range(1037)]
    tree = MerkleTree.from_leaf_hashes(leaves)
    for n in (1, 2, 511, 512, 513, 1000, 1024, 1025, 1037):
        assert tree.root(n) == slow.mth(leaves[:n])
    for i, n in [(0, 1037), (1036, 1037), (512, 1025), (700, 1000)]:
        assert tree.inclusion_proof(i, n) == slow.path(i, leaves[:n])
    for m, n in [(1, 1037), (511, 1037), (512, 1037), (1000, 1025), (1036, 1037)]:
        assert tree.consistency_proof(m, n) == slow.proof(m, leaves[:n])


def test_proof_lengths_grow_as_log_n() -> None:
    # A complete tree of 2^k leaves gives every leaf a k-hash path.
    for k in range(12):
        n = 1 << k
        assert inclusion_proof_length(0, n) == k
        assert inclusion_proof_length(n - 1, n) == k
        # Any size up to 2^k needs at most k hashes for inclusion, ~2k for consistency.
        assert all(inclusion_proof_length(i, n) <= k for i in range(0, n, max(1, n // 64)))


def test_tree_argument_errors() -> None:
    tree = MerkleTree.from_entries([b"a", b"b", b"c"])
    with pytest.raises(ValueError, match="index 3 is not below tree size 3"):
        tree.inclusion_proof(3)
    with pytest.raises(ValueError, match="outside the tree's history"):
        tree.root(4)
    with pytest.raises(ValueError, match="outside the tree's history"):
        tree.inclusion_proof(0, 4)
    with pytest.raises(ValueError, match="size1 <= size2"):
        tree.consistency_proof(3, 2)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append_leaf_hash(b"short")
    with pytest.raises(IndexError):
        tree.leaf_hash(3)
    with pytest.raises(TypeError):
        tree.root(True)
    assert tree.consistency_proof(0, 3) == []
    assert tree.consistency_proof(3) == []
    assert len(tree) == 3


# -- verifier messages ----------------------------------------------------------------------


def test_verifier_reasons(reference_tree: MerkleTree) -> None:
    root = reference_tree.root()
    leaf0 = reference_tree.leaf_hash(0)
    proof = reference_tree.inclusion_proof(0, 8)
    cases = [
        ((8, 8, leaf0, proof, root), "index 8 is not below tree size 8"),
        ((0, 8, leaf0, [*proof, root], root), "proof has 4 hashes, expected 3"),
        ((0, 8, leaf0, proof[:2], root), "proof has 2 hashes, expected 3"),
        ((0, 8, leaf0[:31], proof, root), "leaf hash is 31 bytes, expected 32"),
        ((0, 8, leaf0, [proof[0], b"", proof[2]], root), r"proof\[1\] is 0 bytes"),
        ((0, 8, leaf0, proof, b""), "root is 0 bytes"),
        ((0, 8, reference_tree.leaf_hash(1), proof, root), "root mismatch"),
        ((-1, 8, leaf0, proof, root), "index -1 is negative"),
    ]
    for args, reason in cases:
        with pytest.raises(ProofError, match=reason):
            verify_inclusion(*args)

    r3, r8 = reference_tree.root(3), reference_tree.root(8)
    cproof = reference_tree.consistency_proof(3, 8)
    ccases = [
        ((8, 3, cproof, r8, r3), "size1 8 is greater than size2 3"),
        ((3, 8, cproof[:-1], r3, r8), f"proof has {len(cproof) - 1} hashes, expected"),
        ((3, 8, cproof, r8, r8), "root1 mismatch"),
        ((3, 8, cproof, r3, r3), "root2 mismatch"),
        ((3, 3, [], r3, r8), "equal sizes 3 but root1"),
        ((3, 3, [r3], r3, r3), "proof has 1 hashes, expected 0"),
        ((0, 8, [], r3, r8), "root1 is not the empty-tree hash"),
        ((0, 0, [], EMPTY_ROOT, r8), "root2 is not the empty-tree hash"),
    ]
    for cargs, reason in ccases:
        with pytest.raises(ProofError, match=reason):
            verify_consistency(*cargs)
    verify_consistency(0, 8, [], EMPTY_ROOT, r8)
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)


def test_verifier_refuses_wrong_types() -> None:
    with pytest.raises(TypeError):
        verify_inclusion(True, 1, b"\0" * 32, [], b"\0" * 32)
    with pytest.raises(TypeError):
        verify_inclusion(0, 1, "00" * 32, [], b"\0" * 32)  # type: ignore[arg-type]
