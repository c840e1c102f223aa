"""``doormat ledger verify-proof`` run as a real subprocess, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.encoding import b64
from wire.merkle import MerkleTree

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "merkle" / "inclusion"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"no shared vectors at {VECTORS}")


def run(path: Path | str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doormat", "ledger", "verify-proof", str(path)],
        input=stdin.decode("utf-8", "surrogateescape") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree.from_entries(b"entry %d" % i for i in range(21))


# -- vectors from ../shared ----------------------------------------------------------------


@needs_vectors
def test_happy_path_vector() -> None:
    result = run(VECTORS / "1" / "happy-path.json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("valid inclusion proof: leaf 0")


@needs_vectors
def test_wrong_leaf_vector() -> None:
    line = assert_one_line_error(run(VECTORS / "2" / "wrong-leaf.json"), 1, "invalid inclusion")
    assert "leaf hash is 9 bytes" in line


@needs_vectors
@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        ("1/leafIdx-plus-@1.json", "root mismatch"),
        ("1/leafIdx-sub-@1.json", "index 18446744073709551615 is not below tree size 8"),
        ("1/inserted-component.json", "proof has 4 hashes, expected 3"),
        ("1/removed-component.json", "proof has 2 hashes, expected 3"),
        ("2/treeSize-mul-@2.json", "proof has 3 hashes, expected 4"),
        ("4/modified-proof[1]-bit-@3.json", "root mismatch"),
        ("single-entry/empty-root.json", "root is 0 bytes"),
    ],
)
def test_failing_vectors_say_why(vector: str, reason: str) -> None:
    assert_one_line_error(run(VECTORS / vector), 1, reason)


@needs_vectors
def test_every_vector_exit_code() -> None:
    """All ~100 vectors through the CLI in one process each would be slow; sample them."""
    files = sorted(VECTORS.rglob("*.json"))
    for path in files[::25] + [f for f in files if "happy" in f.name]:
        want_err = json.loads(path.read_text())["wantErr"]
        result = run(path)
        assert result.returncode == (1 if want_err else 0), (path, result.stderr)


# -- generated proofs --------------------------------------------------------------------


def test_generated_inclusion_proof(tmp_path: Path, tree: MerkleTree) -> None:
    proof = {
        "leafIdx": 13,
        "treeSize": 20,
        "root": b64(tree.root(20)),
        "leafHash": b64(tree.leaf_hash(13)),
        "proof": [b64(h) for h in tree.inclusion_proof(13, 20)],
    }
    result = run(write(tmp_path, "incl.json", proof))
    assert result.returncode == 0, result.stderr
    assert "leaf 13" in result.stdout and "size 20" in result.stdout


def test_generated_consistency_proof_good_and_bad(tmp_path: Path, tree: MerkleTree) -> None:
    good: dict[str, Any] = {
        "size1": 7,
        "size2": 21,
        "root1": b64(tree.root(7)),
        "root2": b64(tree.root(21)),
        "proof": [b64(h) for h in tree.consistency_proof(7, 21)],
    }
    result = run(write(tmp_path, "good.json", good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("valid consistency proof: the tree of size 7")

    # A log that rewrote history: the new root is not an extension of the old one.
    forked = MerkleTree.from_entries(
        [b"entry %d" % i for i in range(6)] + [b"rewritten"] + [b"x%d" % i for i in range(14)]
    )
    bad = dict(good, root2=b64(forked.root(21)))
    assert_one_line_error(run(write(tmp_path, "bad.json", bad)), 1, "root2 mismatch")

    shrunk = dict(good, size1=21, size2=7, root1=good["root2"], root2=good["root1"])
    assert_one_line_error(
        run(write(tmp_path, "shrunk.json", shrunk)), 1, "size1 21 is greater than size2 7"
    )
    short = dict(good, proof=good["proof"][:-1])
    assert_one_line_error(run(write(tmp_path, "short.json", short)), 1, "proof has")


def test_stdin(tree: MerkleTree) -> None:
    proof = {
        "size1": 21,
        "size2": 21,
        "root1": b64(tree.root()),
        "root2": b64(tree.root()),
        "proof": None,
    }
    result = run("-", stdin=json.dumps(proof).encode())
    assert result.returncode == 0, result.stderr


# -- malformed files: exit 2, one line, no traceback ---------------------------------------

_GOOD_INCL: dict[str, Any] = {
    "leafIdx": 0,
    "treeSize": 1,
    "root": b64(b"\0" * 32),
    "leafHash": b64(b"\0" * 32),
    "proof": [],
}


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty", "", ("not JSON",)),
        ("not-json", "leafIdx: 1\n", ("not JSON", "line 1")),
        ("truncated", '{"leafIdx": 0, "treeSize"', ("not JSON",)),
        ("binary", b"\xff\xfe\x00garbage", ("not UTF-8",)),
        ("array", [1, 2], ("JSON object", "array")),
        ("string", "just a string", ("not JSON",)),
        ("neither", {"foo": 1}, ("neither an inclusion proof", "nor a consistency proof")),
        ("mixed", dict(_GOOD_INCL, size1=1), ("mixes inclusion",)),
        ("missing-root", {k: v for k, v in _GOOD_INCL.items() if k != "root"}, ("root",)),
        (
            "missing-consistency",
            {"size1": 1, "size2": 2},
            ("consistency proof is missing", "root1, root2, proof"),
        ),
        ("index-string", dict(_GOOD_INCL, leafIdx="0"), ("'leafIdx' must be an integer",)),
        ("index-float", dict(_GOOD_INCL, leafIdx=0.5), ("'leafIdx' must be an integer",)),
        ("index-bool", dict(_GOOD_INCL, treeSize=True), ("'treeSize' must be an integer",)),
        ("index-negative", dict(_GOOD_INCL, leafIdx=-1), ("between 0 and 2^64-1",)),
        ("size-huge", dict(_GOOD_INCL, treeSize=2**64), ("between 0 and 2^64-1",)),
        ("root-not-b64", dict(_GOOD_INCL, root="%%%"), ("'root' is not valid base64",)),
        ("root-number", dict(_GOOD_INCL, root=7), ("'root' must be a base64 string",)),
        ("leaf-unicode", dict(_GOOD_INCL, leafHash="h\u00e9"), ("'leafHash' is not valid base64",)),
        ("proof-object", dict(_GOOD_INCL, proof={}), ("'proof' must be an array",)),
        ("proof-item", dict(_GOOD_INCL, proof=[1]), ("proof[0] must be a base64 string",)),
        ("proof-bad-b64", dict(_GOOD_INCL, proof=["AA=A"]), ("proof[0] is not valid base64",)),
        ("duplicate", '{"leafIdx": 0, "leafIdx": 1}', ("'leafIdx' twice",)),
        ("digits", '{"leafIdx": ' + "9" * 5000 + "}", ("too many digits",)),
        ("deep", "[" * 100_000, ("nested too deeply|not JSON",)),
        ("huge", "[" + "0," * 600_000 + "0]", ("larger than",)),
    ],
)
def test_malformed_file(tmp_path: Path, name: str, content: Any, words: tuple[str, ...]) -> None:
    line = assert_one_line_error(run(write(tmp_path, name + ".json", content)), 2)
    for word in words:  # "a|b": either alternative will do
        assert any(alt in line for alt in word.split("|")), line


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert_one_line_error(run(tmp_path / "nope.json"), 2, "cannot read", "nope.json")
    assert_one_line_error(run(tmp_path), 2, "cannot read")


def test_help_lists_verify_proof() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "doormat", "ledger", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "verify-proof" in result.stdout
