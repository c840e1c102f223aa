"""Signed notes and checkpoints: Go's published vectors, round trips, and every tampering."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tests.merkle.reference_tree import LEAF_INPUTS
from wire.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
    verifiers_from_vkeys,
)
from wire.merkle import MerkleTree
from wire.note import (
    MAX_SIGNATURES,
    InvalidSignatureError,
    KeyFormatError,
    MalformedNoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    key_id,
    open_note,
    parse_note,
    sign_note,
)

# From golang.org/x/mod/sumdb/note (note.go's package example and note_test.go).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
    "fqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOT"
    "GwnWLox33WWd1RvMc+QQ=\n"
)

ORIGIN = "doormat.example/audit"


@pytest.fixture(scope="module")
def log_signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture(scope="module")
def signed(log_signer: Signer) -> tuple[Checkpoint, str]:
    tree = MerkleTree.from_entries([b"warrant accepted", b"task started", b"record delivered"])
    checkpoint = Checkpoint(ORIGIN, tree.size, tree.root())
    return checkpoint, sign_checkpoint(checkpoint, log_signer)


# -- Go's vectors -----------------------------------------------------------------------


def test_go_keys_parse_and_round_trip() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    verifier = Verifier.from_vkey(PETER_VKEY)
    assert signer.skey() == PETER_SKEY
    assert verifier.vkey() == PETER_VKEY
    assert signer.verifier() == verifier
    assert signer.key_id == verifier.key_id == 0xC74F20A3
    assert key_id("PeterNeumann", verifier.public_key) == 0xC74F20A3


def test_go_signature_is_reproduced_byte_for_byte() -> None:
    # Ed25519 is deterministic, so signing Go's text with Go's key gives Go's note.
    assert sign_note(GO_TEXT, Signer.from_skey(PETER_SKEY)) == GO_TEXT + "\n" + PETER_SIG


def test_go_open_semantics() -> None:
    peter, enoch = Verifier.from_vkey(PETER_VKEY), Verifier.from_vkey(ENOCH_VKEY)
    both = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG

    note = open_note(both, [peter])
    assert note.text == GO_TEXT
    assert note.signers == ("PeterNeumann",)
    assert [s.name for s in note.unverified] == ["EnochRoot"]

    assert open_note(both, [peter, enoch]).signers == ("PeterNeumann", "EnochRoot")

    with pytest.raises(UnverifiedNoteError, match="no signature from a known key"):
        open_note(both, [])

    # A repeated identical signature is fine and counted once.
    assert open_note(GO_TEXT + "\n" + PETER_SIG + PETER_SIG, [peter]).signers == ("PeterNeumann",)

    # Too many signature lines.
    with pytest.raises(MalformedNoteError, match="more than the limit"):
        open_note(GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), [peter])

    # A corrupted signature from a known key rejects the whole note.
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignatureError, match="PeterNeumann\\+c74f20a3"):
        open_note(GO_TEXT + "\n" + bad, [peter])
    # ...but from an unknown key it is merely ignored.
    bad_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    assert open_note(GO_TEXT + "\n" + PETER_SIG + bad_enoch, [peter]).signers == ("PeterNeumann",)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (GO_TEXT, "no blank line"),
        (GO_TEXT + "\n", "no signature lines"),
        (GO_TEXT + "\n" + PETER_SIG[:-1], "does not end with a newline"),
        ("\x01" + GO_TEXT + "\n" + PETER_SIG, "control character U\\+0001"),
        (
            "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
            "dngotpRZb6KE6RyyBwJnAM=",
            "no blank line",
        ),
        (
            GO_TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN"
            "1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
            "invalid key name 'Bad'|no signature after|not valid base64",
        ),
        (
            GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
            "line 2 does not start with an em dash",
        ),
        (GO_TEXT + "\n" + PETER_SIG.replace("\u2014", "-"), "does not start with an em dash"),
        (GO_TEXT + "\n" + PETER_SIG.replace("\u2014 ", "\u2014"), "does not start with an em"),
        (GO_TEXT + "\n" + "\u2014 PeterNeumann\n", "no signature after the key name"),
        (GO_TEXT + "\n" + "\u2014 PeterNeumann \n", "no signature after the key name"),
        (GO_TEXT + "\n" + "\u2014 PeterNeumann AAAA\n", "too short"),
        (GO_TEXT + "\n" + "\u2014 Peter+Neumann AAAAAAA=\n", "invalid key name"),
        (GO_TEXT + "\n" + "\u2014 PeterNeumann AAAAAAA\n", "not valid base64"),
        (GO_TEXT + "\n" + "\u2014 PeterNeumann AAAAAAB=\n", "not canonical base64"),
        (GO_TEXT + "\n" + PETER_SIG.replace("\n", "\r\n"), "control character U\\+000D"),
        (GO_TEXT + "\n" + PETER_SIG + "\n", "no signature lines|does not start"),
    ],
)
def test_malformed_notes_are_refused(message: str, reason: str) -> None:
    with pytest.raises(MalformedNoteError, match=reason):
        open_note(message, [Verifier.from_vkey(PETER_VKEY)])


def test_invalid_utf8_and_size_limit() -> None:
    with pytest.raises(MalformedNoteError, match="not valid UTF-8"):
        parse_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode())
    with pytest.raises(MalformedNoteError, match="more than the limit"):
        parse_note(("x" * 2000 + "\n\n" + PETER_SIG).encode(), max_bytes=1000)


def test_bad_verifier_keys() -> None:
    for bad in [
        PETER_VKEY[:-1],
        PETER_VKEY + "A",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong name
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not Ed25519
        "PeterNeumann+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "",
    ]:
        with pytest.raises(KeyFormatError):
            Verifier.from_vkey(bad)
    # Go's test: every byte of the key incremented in turn must break it.
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(KeyFormatError):
            Verifier.from_vkey(mangled)
    with pytest.raises(KeyFormatError):
        Signer.from_skey(PETER_SKEY.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(KeyFormatError):
        Signer.from_skey(PETER_SKEY[len("PRIVATE+KEY+") :])
    with pytest.raises(KeyFormatError):
        Signer.generate("bad name")


def test_ambiguous_trust_store_is_refused() -> None:
    peter = Verifier.from_vkey(PETER_VKEY)
    # Same name and id, different key: only possible by a crafted collision.
    impostor = _FixedId(peter.name, bytes(32))
    with pytest.raises(KeyFormatError, match="ambiguous key"):
        open_note(GO_TEXT + "\n" + PETER_SIG, [peter, impostor])
    # The same key listed twice is not ambiguous.
    assert open_note(GO_TEXT + "\n" + PETER_SIG, [peter, peter]).signers == ("PeterNeumann",)


class _FixedId(Verifier):
    """A verifier that claims Peter's key id whatever its key (to fake a collision)."""

    @property
    def key_id(self) -> int:
        return 0xC74F20A3


# -- checkpoints ------------------------------------------------------------------------


def test_round_trip(log_signer: Signer, signed: tuple[Checkpoint, str]) -> None:
    checkpoint, note = signed
    lines = note.split("\n")
    assert lines[0] == ORIGIN
    assert lines[1] == "3"
    assert base64.b64decode(lines[2]) == checkpoint.root
    assert lines[3] == ""
    assert lines[4].startswith(f"\u2014 {ORIGIN} ")
    assert note.endswith("\n")

    opened = open_checkpoint(note, [log_signer.verifier()], origin=ORIGIN)
    assert opened.checkpoint == checkpoint
    assert opened.note.signers == (ORIGIN,)
    assert parse_checkpoint(checkpoint.body()) == checkpoint


def test_round_trip_through_vkey_text(log_signer: Signer, signed: tuple[Checkpoint, str]) -> None:
    checkpoint, note = signed
    verifiers = verifiers_from_vkeys([log_signer.verifier().vkey()])
    assert open_checkpoint(note.encode("utf-8"), verifiers).checkpoint == checkpoint


def test_extensions_and_cosignatures(log_signer: Signer) -> None:
    witness = Signer.generate("witness.example/w1")
    checkpoint = Checkpoint(ORIGIN, 0, MerkleTree().root(), ("extension one", "two"))
    note = sign_checkpoint(checkpoint, log_signer, witness)
    opened = open_checkpoint(note, [log_signer.verifier(), witness.verifier()])
    assert opened.checkpoint.extensions == ("extension one", "two")
    assert opened.note.signers == (ORIGIN, "witness.example/w1")
    # The log's key alone is enough; the witness's signature is then ignored.
    assert open_checkpoint(note, [log_signer.verifier()]).note.signers == (ORIGIN,)


def _flip_char(text: str, index: int) -> str:
    ch = text[index]
    replacement = "B" if ch == "A" else "A"
    return text[:index] + replacement + text[index + 1 :]


def test_any_change_to_the_body_is_rejected(
    log_signer: Signer, signed: tuple[Checkpoint, str]
) -> None:
    _, note = signed
    body_end = note.index("\n\n")
    for i in range(body_end):
        if note[i] == "\n":
            continue
        tampered = _flip_char(note, i)
        with pytest.raises(CheckpointError):
            open_checkpoint(tampered, [log_signer.verifier()])


def test_flipped_signature_bytes_are_rejected(
    log_signer: Signer, signed: tuple[Checkpoint, str]
) -> None:
    _, note = signed
    head, sig_line = note.rsplit("\n\n", 1)
    prefix, b64 = sig_line.rstrip("\n").rsplit(" ", 1)
    blob = base64.b64decode(b64)
    for i in range(4, len(blob)):  # the signature proper (bytes 0-3 are the key id)
        bad = bytearray(blob)
        bad[i] ^= 0x01
        tampered = f"{head}\n\n{prefix} {base64.b64encode(bytes(bad)).decode()}\n"
        with pytest.raises(CheckpointError, match="invalid signature"):
            open_checkpoint(tampered, [log_signer.verifier()])
    # Changing the key id makes it another (unknown) key's signature: nothing verifies.
    bad = bytearray(blob)
    bad[0] ^= 0x01
    tampered = f"{head}\n\n{prefix} {base64.b64encode(bytes(bad)).decode()}\n"
    with pytest.raises(CheckpointError, match="no signature from a known key"):
        open_checkpoint(tampered, [log_signer.verifier()])


def test_wrong_key_and_unknown_key(signed: tuple[Checkpoint, str]) -> None:
    _, note = signed
    # Another key with the same name: a different key id, so an unknown signature.
    impostor = Signer.generate(ORIGIN)
    with pytest.raises(CheckpointError, match="no signature from a known key"):
        open_checkpoint(note, [impostor.verifier()])
    with pytest.raises(CheckpointError, match="no signature from a known key"):
        open_checkpoint(note, [])
    # Signed by a key we know, but not the log's: refused unless asked not to care.
    witness = Signer.generate("witness.example/w1")
    witness_only = sign_checkpoint(parse_checkpoint(note.split("\n\n")[0] + "\n"), witness)
    with pytest.raises(CheckpointError, match="not signed by a known key of that name"):
        open_checkpoint(witness_only, [witness.verifier()])
    opened = open_checkpoint(witness_only, [witness.verifier()], require_origin_key=False)
    assert opened.note.signers == ("witness.example/w1",)


def test_right_key_but_another_log(log_signer: Signer) -> None:
    other = Checkpoint("doormat.example/directory", 1, b"\x11" * 32)
    signer = Signer.generate("doormat.example/directory")
    note = sign_checkpoint(other, signer)
    with pytest.raises(CheckpointError, match=r"is for origin 'doormat\.example/directory'"):
        open_checkpoint(note, [signer.verifier(), log_signer.verifier()], origin=ORIGIN)


def test_signature_from_a_forged_line_under_the_log_name(
    log_signer: Signer, signed: tuple[Checkpoint, str]
) -> None:
    # An attacker adds their own line with the log's name and id but their signature.
    _, note = signed
    forged = sign_note(note.split("\n\n")[0] + "\n", Signer.generate("evil"))
    evil_line = forged.rsplit("\n", 2)[1]
    blob = base64.b64decode(evil_line.rsplit(" ", 1)[1])
    fake = log_signer.key_id.to_bytes(4, "big") + blob[4:]
    line = f"\u2014 {ORIGIN} {base64.b64encode(fake).decode()}\n"
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(note + line, [log_signer.verifier()])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "does not end with a newline"),
        ("origin\n8\n", "2 lines"),
        ("\n8\n" + "A" * 43 + "=\n", "origin is empty"),
        ("origin\n08\n" + "A" * 43 + "=\n", "leading zeros"),
        ("origin\n-1\n" + "A" * 43 + "=\n", "not a decimal"),
        ("origin\n+1\n" + "A" * 43 + "=\n", "not a decimal"),
        ("origin\n 1\n" + "A" * 43 + "=\n", "not a decimal"),
        ("origin\n18446744073709551616\n" + "A" * 43 + "=\n", "larger than 2\\^64-1"),
        ("origin\n" + "9" * 5000 + "\n" + "A" * 43 + "=\n", "larger than 2\\^64-1"),
        ("origin\n8\nYmFuYW5hcw==\n", "7 bytes, expected 32"),
        ("origin\n8\nnot base64!\n", "not valid base64"),
        ("origin\n8\n" + "A" * 42 + "B=\n", "not canonical base64"),
        ("origin\n8\n" + "A" * 44 + "\n", "33 bytes, expected 32"),
        ("origin\n8\n" + "A" * 43 + "=\n\n", "extension line 1 is empty"),
        ("origin\n8\n" + "A" * 43 + "=\nok\n\n", "extension line 2 is empty"),
        ("origin\n8\n" + "A" * 43 + "=", "does not end with a newline"),
        ("ori\tgin\n8\n" + "A" * 43 + "=\n", "control character"),
    ],
)
def test_malformed_checkpoint_bodies(body: str, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        parse_checkpoint(body)


def test_malformed_checkpoint_inside_a_valid_note(log_signer: Signer) -> None:
    # A correctly signed note whose text is not a checkpoint is still refused.
    note = sign_note("origin\nnot a size\nroot\n", log_signer)
    with pytest.raises(CheckpointError, match="not a decimal"):
        open_checkpoint(note, [log_signer.verifier()], require_origin_key=False)


def test_checkpoint_constructor_checks() -> None:
    with pytest.raises(CheckpointError):
        Checkpoint("", 1, b"\0" * 32)
    with pytest.raises(CheckpointError):
        Checkpoint("o", -1, b"\0" * 32)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 2**64, b"\0" * 32)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, b"\0" * 31)
    with pytest.raises(CheckpointError):
        Checkpoint("o\nx", 1, b"\0" * 32)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, b"\0" * 32, ("",))
    assert Checkpoint("o", 2**64 - 1, b"\0" * 32).body().split("\n")[1] == str(2**64 - 1)


def test_signing_refuses_bad_text(log_signer: Signer) -> None:
    with pytest.raises(MalformedNoteError, match="end with a newline"):
        sign_note("no newline", log_signer)
    with pytest.raises(MalformedNoteError, match="control character"):
        sign_note("tab\there\n", log_signer)
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("text\n")


def test_signer_repr_hides_the_key(log_signer: Signer) -> None:
    # The key material is everything after "PRIVATE+KEY+<name>+<id>+" (its base64 may
    # itself contain or end in "+", so it is not simply the last "+"-separated field).
    name_and_id = f"{log_signer.name}+{log_signer.key_id:08x}+"
    secret = log_signer.skey().split(name_and_id, 1)[1]
    assert len(secret) == 44  # base64 of the algorithm byte and the 32-byte seed
    assert secret not in repr(log_signer)


def test_docs_example_checkpoint_verifies() -> None:
    """The signed checkpoint shown in docs/merkle.md verifies under the key shown there."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "merkle.md").read_text("utf-8")
    blocks = re.findall(r"```text\n(.*?)```", doc, flags=re.DOTALL)
    note = next(b for b in blocks if b.startswith(ORIGIN + "\n8\n"))
    vkey = next(b for b in blocks if b.startswith(ORIGIN + "+")).strip()
    opened = open_checkpoint(note, verifiers_from_vkeys([vkey]), origin=ORIGIN)
    reference = MerkleTree.from_entries(LEAF_INPUTS)
    assert opened.checkpoint == Checkpoint(ORIGIN, 8, reference.root())
