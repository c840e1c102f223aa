"""``doormat ledger``: check the Merkle logs (audit ledger, key directory) from outside.

Subcommands:

* ``verify-proof FILE``: check one RFC 9162 proof given as JSON in the
  transparency-dev format, inclusion or consistency (decided by its keys)::

      {"leafIdx": 5, "treeSize": 8, "root": "<b64>", "leafHash": "<b64>", "proof": ["<b64>", ...]}
      {"size1": 3, "size2": 8, "root1": "<b64>", "root2": "<b64>", "proof": ["<b64>", ...]}

  Exit 0 and a one-line verdict when the proof holds, 1 with the reason when it does not,
  2 when the file itself is unusable (unreadable, not JSON, missing or mistyped fields,
  bad base64, too large).

* ``verify --ledger PATH (--key VKEY | --keys FILE) [--witnessed FILE]``: check a whole
  audit ledger file (every entry re-hashed, the tree recomputed, every checkpoint's
  signature, root and consistency) against keys pinned elsewhere (the court's copy),
  and against the latest checkpoint the court's witness cosigned: a ledger behind it (an
  older copy, entries cut off) or with another history (rewritten, re-signed) fails.
  Exit 0 when everything checks, 1 with every problem located (one per line on
  stdout), 2 when the file or a key is unusable.
* ``report --ledger PATH [--json]``: the transparency report (warrants, tasks, records,
  how often encryption prevented plaintext).
* ``checkpoint --ledger PATH --signing-key FILE``: sign and store a checkpoint now.
* ``prove --ledger PATH (--index N | --from M) [--size S]``: an inclusion (or consistency)
  proof from the ledger, in the JSON that ``verify-proof`` reads.

Each subcommand is a ``_register_*`` function listed in ``_SUBCOMMANDS``. The audit
ledger itself is the ``interceptor.ledger`` package (sans I/O, and its SQLite store).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doormat.cli import CommandError
from interceptor.ledger import Ledger, LedgerError, render_report, report, verify
from interceptor.witness import WitnessState, WitnessStateError
from wire.b64 import B64Error, b64decode
from wire.merkle import ProofError, verify_consistency, verify_inclusion
from wire.note import NoteError, Signer

# A proof for a tree of 2^64 leaves has at most ~130 hashes (~6 kB of JSON); anything
# far larger is not a proof, and reading it whole would only cost memory.
MAX_PROOF_FILE_BYTES = 1024 * 1024
_UINT64_MAX = 2**64 - 1

_INCLUSION_KEYS = ("leafIdx", "treeSize", "root", "leafHash", "proof")
_CONSISTENCY_KEYS = ("size1", "size2", "root1", "root2", "proof")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="the audit ledger and Merkle log proofs: verify, report, checkpoint, prove",
        description=(
            "Check the lab's append-only Merkle logs: RFC 9162 proofs, the audit ledger and "
            "its signed checkpoints, and its transparency report."
        ),
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
        return b64decode(value, what)
    except B64Error as exc:
        raise CommandError(str(exc), 2) from None


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


# -- the audit ledger: verify, report, checkpoint, prove ----------------------------------

# A key file holds a few lines of text; anything much larger is not one.
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_WITNESS_FILE_BYTES = 16 * 1024 * 1024


def _add_ledger_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger", required=True, metavar="PATH", help="the audit ledger (SQLite file)"
    )


def _read_text_file(name: str, what: str) -> str:
    try:
        with Path(name).open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {what} {name}: {exc.strerror or exc}", 2) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise CommandError(f"{what} {name} is larger than {MAX_KEY_FILE_BYTES} bytes", 2)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{what} {name} is not UTF-8 text (byte {exc.start})", 2) from None


def _vkeys(args: argparse.Namespace) -> list[str]:
    """Verifier keys from --key (repeatable) and --keys FILE (one per line, # comments)."""
    keys = list(args.key or [])
    if args.keys is not None:
        text = _read_text_file(args.keys, "key file")
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("PRIVATE+KEY+"):
                # A signing key where a verifier key belongs: say so, and never echo it.
                raise CommandError(
                    f"{args.keys} line {number} is a private signing key; give the verifier "
                    "key (name+id+key) instead",
                    2,
                )
            keys.append(line)
    if not keys:
        raise CommandError("give the ledger's verifier key with --key VKEY or --keys FILE", 2)
    return keys


def _register_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "verify",
        help="check a whole audit ledger and its signed checkpoints",
        description=(
            "Re-hash every entry, recompute the Merkle tree, check every checkpoint's "
            "signature, root and consistency, and the entries' indices; with --witnessed, "
            "also that the ledger holds what the court's witness cosigned (not an older "
            "copy, not entries cut off, not another history). Use keys pinned elsewhere "
            "(the court's copy): a key beside the ledger proves nothing. Exit 0 when "
            "everything checks, 1 with every problem located, 2 for unusable input."
        ),
    )
    _add_ledger_argument(parser)
    parser.add_argument(
        "--key",
        action="append",
        metavar="VKEY",
        help="a verifier key, <name>+<hex id>+<base64 key> (repeatable)",
    )
    parser.add_argument(
        "--keys",
        metavar="FILE",
        help="a file of verifier keys, one per line: the ledger's key and the witness's "
        "(type 0x04), as the court pinned them - never a copy kept beside the ledger",
    )
    parser.add_argument(
        "--witnessed",
        metavar="FILE",
        help="the witness's latest cosigned checkpoint: its state file (witness.json) or "
        "the cosigned note; the ledger must hold what it cosigned (needs the witness's key)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_cmd_verify)


def _witnessed(name: str) -> bytes | dict[str, bytes]:
    """The witness's state file (origin -> cosigned note) or one cosigned note."""
    try:
        with Path(name).open("rb") as handle:
            data = handle.read(MAX_WITNESS_FILE_BYTES + 1)
    except OSError as exc:
        raise CommandError(
            f"cannot read witnessed checkpoint {name}: {exc.strerror or exc}", 2
        ) from None
    if len(data) > MAX_WITNESS_FILE_BYTES:
        raise CommandError(f"{name} is larger than {MAX_WITNESS_FILE_BYTES} bytes", 2)
    if not data.lstrip().startswith(b"{"):
        return data
    try:
        state = WitnessState.parse(data)
    except WitnessStateError as exc:
        raise CommandError(f"{name}: {exc}", 2) from None
    return {origin: held.note.encode() for origin, held in state.logs.items()}


def _warn_if_beside(args: argparse.Namespace) -> None:
    ledger_dir = Path(args.ledger).resolve().parent
    if args.keys is not None and Path(args.keys).resolve().parent == ledger_dir:
        print(
            f"warning: {args.keys} is beside the ledger: whoever can rewrite the ledger can "
            "replace it too; verify with the copy the court (or oversight) pinned",
            file=sys.stderr,
        )


def _cmd_verify(args: argparse.Namespace) -> int:
    keys = _vkeys(args)
    _warn_if_beside(args)
    witnessed = None if args.witnessed is None else _witnessed(args.witnessed)
    try:
        result = verify(args.ledger, keys, witnessed=witnessed)
    except LedgerError as exc:  # no ledger at all, or a malformed key
        raise CommandError(str(exc), 2) from None
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True, ensure_ascii=False))
    elif result.ok:
        print(f"ledger OK: {result.summary()}")
    else:
        for problem in result.problems:
            print(problem)
    if not result.ok:
        count = len(result.problems)
        raise CommandError(
            f"{args.ledger} does not verify: {count} problem{'s' if count != 1 else ''}, "
            f"first: {result.problems[0]}",
            1,
        )
    return 0


def _register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "report",
        help="print the transparency report of an audit ledger",
        description=(
            "Count warrants (accepted, refused and why) per case and category, targets, "
            "tasks, records delivered, and how often encryption prevented plaintext. "
            "Reads the ledger; `ledger verify` checks it."
        ),
    )
    _add_ledger_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        result = report(args.ledger)
    except LedgerError as exc:
        raise CommandError(str(exc), 2) from None
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        sys.stdout.write(render_report(result))
    return 0


def _register_checkpoint(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "checkpoint",
        help="sign and store a checkpoint of the audit ledger now",
        description=(
            "Sign a C2SP checkpoint over the ledger's current size and root with the log's "
            "key (Go note signer form, PRIVATE+KEY+<origin>+...), store it, and print it."
        ),
    )
    _add_ledger_argument(parser)
    parser.add_argument(
        "--signing-key", required=True, metavar="FILE", help="the log's signer key file"
    )
    parser.set_defaults(func=_cmd_checkpoint)


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    text = _read_text_file(args.signing_key, "signing key file").strip()
    try:
        signer = Signer.from_skey(text)
    except NoteError as exc:
        raise CommandError(f"{args.signing_key}: {exc}", 2) from None
    try:
        with Ledger(args.ledger, signer=signer, create=False) as ledger:
            note = ledger.checkpoint()
    except LedgerError as exc:
        raise CommandError(str(exc), 2) from None
    sys.stdout.write(note.decode("utf-8"))
    return 0


def _register_prove(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "prove",
        help="print an inclusion or consistency proof from the audit ledger",
        description=(
            "Print, as transparency-dev JSON that `ledger verify-proof` accepts, the "
            "inclusion proof of entry N (--index) or the consistency proof from size M "
            "(--from) in the log of --size entries (default: all). The stored checkpoint "
            "for that size, if any, is included as the 'checkpoint' field."
        ),
    )
    _add_ledger_argument(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=_count, metavar="N", help="the entry to prove")
    which.add_argument(
        "--from",
        dest="from_size",
        type=_count,
        metavar="M",
        help="prove that the log of M entries is a prefix of the log of --size entries",
    )
    parser.add_argument("--size", type=_count, metavar="S", help="the tree size (default: all)")
    parser.set_defaults(func=_cmd_prove)


def _count(text: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def _cmd_prove(args: argparse.Namespace) -> int:
    try:
        with Ledger(args.ledger, readonly=True) as ledger:
            size = ledger.size if args.size is None else args.size
            if size > ledger.size:
                raise CommandError(
                    f"--size {size} is beyond the log, which has {ledger.size} entries", 2
                )
            if args.index is not None:
                if args.index >= size:
                    raise CommandError(
                        f"entry {args.index} is not in the first {size} entries of the log", 2
                    )
                obj = ledger.inclusion_proof(args.index, size).to_json()
            else:
                if args.from_size > size:
                    raise CommandError(f"--from {args.from_size} is beyond --size {size}", 2)
                obj = ledger.consistency_proof(args.from_size, size).to_json()
            note = ledger.checkpoint_at(size)
    except LedgerError as exc:
        raise CommandError(str(exc), 2) from None
    if note is not None:
        obj["checkpoint"] = note.decode("utf-8", "replace")
    print(json.dumps(obj, indent=2))
    return 0


# Registration order is the order ``doormat ledger --help`` lists them.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _register_verify_proof,
    _register_verify,
    _register_report,
    _register_checkpoint,
    _register_prove,
)
