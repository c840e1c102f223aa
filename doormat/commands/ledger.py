"""``doormat ledger``: check the Merkle logs (audit ledger, key directory) from outside.

Subcommands:

* ``verify-proof FILE``: check one RFC 9162 proof given as JSON in the
  transparency-dev format, inclusion or consistency (decided by its keys)::

      {"leafIdx": 5, "treeSize": 8, "root": "<b64>", "leafHash": "<b64>", "proof": ["<b64>", ...]}
      {"size1": 3, "size2": 8, "root1": "<b64>", "root2": "<b64>", "proof": ["<b64>", ...]}

  Exit 0 and a one-line verdict when the proof holds, 1 with the reason when it does not,
  2 when the file itself is unusable (unreadable, not JSON, missing or mistyped fields,
  bad base64, too large).

Each subcommand is a ``_register_*`` function listed in ``_SUBCOMMANDS``; ``ledger verify``
and ``ledger report`` (the audit ledger issue) plug in the same way.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doormat.cli import CommandError
from wire.merkle import ProofError, verify_consistency, verify_inclusion

# A proof for a tree of 2^64 leaves has at most ~130 hashes (~6 kB of JSON); anything
# far larger is not a proof, and reading it whole would only cost memory.
MAX_PROOF_FILE_BYTES = 1024 * 1024
_UINT64_MAX = 2**64 - 1

_INCLUSION_KEYS = ("leafIdx", "treeSize", "root", "leafHash", "proof")
_CONSISTENCY_KEYS = ("size1", "size2", "root1", "root2", "proof")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="verify Merkle log proofs (audit ledger, key directory)",
        description="Check the lab's append-only Merkle logs: RFC 9162 proofs, checkpoints.",
    )
    sub = parser.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True)
    for register_subcommand in _SUBCOMMANDS:
        register_subcommand(sub)


# -- verify-proof ---------------------------------------------------------------------


def _register_verify_proof(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "verify-proof",
        help="check an RFC 9162 inclusion or consistency proof given as JSON",
        description=(
            "Check an RFC 9162 inclusion proof (leafIdx, treeSize, root, leafHash, proof) "
            "or consistency proof (size1, size2, root1, root2, proof) in the "
            "transparency-dev JSON format, hashes in base64. Exit 0 if it holds, 1 if it "
            "does not, 2 if the file is malformed."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the JSON proof ('-' for stdin)")
    parser.set_defaults(func=_cmd_verify_proof)


def _read_limited(name: str) -> bytes:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_PROOF_FILE_BYTES + 1)
        else:
            with Path(name).open("rb") as handle:
                data = handle.read(MAX_PROOF_FILE_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror or exc}", 2) from None
    if len(data) > MAX_PROOF_FILE_BYTES:
        raise CommandError(
            f"{name} is larger than {MAX_PROOF_FILE_BYTES} bytes; not a proof file", 2
        )
    return data


def _load_json(name: str, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{name} is not UTF-8 text (byte {exc.start})", 2) from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise CommandError(f"{name} has the field {exc.key!r} twice", 2) from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{name} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", 2
        ) from None
    except RecursionError:
        raise CommandError(f"{name} is not usable JSON: nested too deeply", 2) from None
    except ValueError:
        # json.loads refuses integers of more than 4300 digits (CVE-2020-10735 guard).
        raise CommandError(f"{name} is not usable JSON: a number has too many digits", 2) from None
    if not isinstance(value, dict):
        raise CommandError(f"{name} must hold a JSON object, not {_json_type(value)}", 2)
    return value


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys; a proof file whose
    # meaning depends on which one you read is refused instead.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _uint64(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    # bool is an int in Python; a JSON true is not a size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"field {key!r} must be an integer, not {_json_type(value)}", 2)
    if not 0 <= value <= _UINT64_MAX:
        raise CommandError(f"field {key!r} must be between 0 and 2^64-1, got {value}", 2)
    return value


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CommandError(f"{what} must be a base64 string, not {_json_type(value)}", 2)
    # Only the encoding is checked here. The length (32 bytes) is the verifier's check,
    # so a short or empty hash is an invalid proof (exit 1, as the transparency-dev
    # vectors count it), not a malformed file.
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CommandError(f"{what} is not valid base64", 2) from None


def _proof(obj: dict[str, Any]) -> list[bytes]:
    value = obj["proof"]
    if value is None:
        return []  # Go's encoding/json writes an empty proof as null
    if not isinstance(value, list):
        raise CommandError(f"field 'proof' must be an array, not {_json_type(value)}", 2)
    return [_hash(item, f"proof[{i}]") for i, item in enumerate(value)]


def _short(h: bytes) -> str:
    return h[:6].hex() + "…" if h else "(empty)"


def _cmd_verify_proof(args: argparse.Namespace) -> int:
    data = _read_limited(args.file)
    name = "stdin" if args.file == "-" else args.file
    obj = _load_json(name, data)
    inclusion = any(key in obj for key in ("leafIdx", "treeSize", "leafHash"))
    consistency = any(key in obj for key in ("size1", "size2", "root1", "root2"))
    if inclusion and consistency:
        raise CommandError(
            f"{name} mixes inclusion (leafIdx, treeSize, leafHash) and consistency "
            "(size1, size2, root1, root2) fields",
            2,
        )
    if not inclusion and not consistency:
        raise CommandError(
            f"{name} is neither an inclusion proof ({', '.join(_INCLUSION_KEYS)}) "
            f"nor a consistency proof ({', '.join(_CONSISTENCY_KEYS)})",
            2,
        )
    required = _INCLUSION_KEYS if inclusion else _CONSISTENCY_KEYS
    missing = [key for key in required if key not in obj]
    if missing:
        kind = "inclusion" if inclusion else "consistency"
        raise CommandError(f"{kind} proof is missing field(s): {', '.join(missing)}", 2)

    if inclusion:
        index, size = _uint64(obj, "leafIdx"), _uint64(obj, "treeSize")
        root, leaf = _hash(obj["root"], "field 'root'"), _hash(obj["leafHash"], "field 'leafHash'")
        proof = _proof(obj)
        try:
            verify_inclusion(index, size, leaf, proof, root)
        except ProofError as exc:
            raise CommandError(f"invalid inclusion proof: {exc.reason}", 1) from None
        print(
            f"valid inclusion proof: leaf {index} ({_short(leaf)}) is in the tree of size "
            f"{size} with root {_short(root)}"
        )
        return 0

    size1, size2 = _uint64(obj, "size1"), _uint64(obj, "size2")
    root1, root2 = _hash(obj["root1"], "field 'root1'"), _hash(obj["root2"], "field 'root2'")
    proof = _proof(obj)
    try:
        verify_consistency(size1, size2, proof, root1, root2)
    except ProofError as exc:
        raise CommandError(f"invalid consistency proof: {exc.reason}", 1) from None
    print(
        f"valid consistency proof: the tree of size {size1} (root {_short(root1)}) is a "
        f"prefix of the tree of size {size2} (root {_short(root2)})"
    )
    return 0


# Registration order is the order ``doormat ledger --help`` lists them.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _register_verify_proof,
)
