"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, sans I/O.

A signed note is UTF-8 text ending in a newline, a blank line, then one or more
signature lines::

    If you think cryptography is the answer to your problem,
    then you don't know what your problem is.

    — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN…

(signature abbreviated; the full note is golang.org/x/mod/sumdb/note's example).

Each signature line is an em dash (U+2014), a space, the key name, a space, and
base64(4-byte big-endian key ID || signature). The signature covers the text including
its final newline, not the blank line. For Ed25519 (signature type 0x01) the key ID is
the first four bytes of SHA-256(key name || "\\n" || 0x01 || 32-byte public key).

Keys travel in the text forms of Go's golang.org/x/mod/sumdb/note, so keys made by
either side work on the other:

* verifier key: ``<name>+<8 hex key ID>+<base64(0x01 || public key)>``
* signer key:   ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte seed)>``

``open_note`` applies the spec's verification rules: signatures from unknown keys are
ignored (they may be witnesses' or a rotated key's); every signature from a known key
must verify, or the whole note is rejected; at least one must verify. Parsing is strict:
anything not exactly in the format is refused with a message saying what is wrong, and
notes are bounded in size and in number of signatures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from wire.b64 import B64Error, b64decode, b64encode

#: Signature type byte for Ed25519 (c2sp.org/signed-note, "Signature types").
ALG_ED25519 = 0x01
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

#: Refuse notes larger than this. The spec asks verifiers to accept at least 16
#: signatures, and post-quantum ones can reach ~5 kB (~6.7 kB in base64), so the bound
#: leaves room for that while keeping a hostile input from costing much.
MAX_NOTE_BYTES = 256 * 1024
#: Go's note package refuses more than 100 signature lines; so do we.
MAX_SIGNATURES = 100

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """A note or key that cannot be used. Subclasses say why."""


class MalformedNoteError(NoteError):
    """The text is not a well-formed signed note."""


class KeyFormatError(NoteError):
    """A verifier or signer key string is malformed or inconsistent."""


class UnverifiedNoteError(NoteError):
    """The note is well formed but carries no signature from any known key."""


class InvalidSignatureError(NoteError):
    """A signature from a known key does not verify: the note is rejected whole."""


def _is_space(ch: str) -> bool:
    # str.isspace covers the Unicode White_Space set Go's unicode.IsSpace uses, plus the
    # ASCII separators 0x1c-0x1f, which are control characters and refused anyway.
    return ch.isspace()


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces or '+' (c2sp.org/signed-note)."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(_is_space(ch) or ord(ch) < 0x20 for ch in name)
    )


def _check_key_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise KeyFormatError(
            f"invalid key name {name!r}: it must be non-empty, without spaces or '+'"
        )


def key_id(name: str, public_key: bytes) -> int:
    """The Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise KeyFormatError(
            f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes, got {len(public_key)}"
        )
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode_strict(text: str, what: str, error: type[NoteError]) -> bytes:
    """Standard base64 with padding, and only the canonical encoding of its bytes
    (``wire.b64``): one byte string has exactly one accepted text, so a signature line
    cannot be re-encoded into a different-looking line that still verifies."""
    try:
        return b64decode(text, what)
    except B64Error as exc:
        raise error(str(exc)) from None


def _raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


@dataclass(frozen=True)
class Verifier:
    """A known Ed25519 public key with its name: what a note is checked against."""

    name: str
    public_key: bytes  # 32 raw bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise KeyFormatError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<8 hex key ID>+<base64(0x01 || public key)>``."""
        # Split at the first two '+' only: the base64 key material may contain '+'
        # (names and hex ids cannot).
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a verifier key has the form <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_key_name(name)
        if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
            raise KeyFormatError(f"verifier key id {hex_id!r} is not 8 hex digits")
        raw = _b64decode_strict(b64, "verifier key material", KeyFormatError)
        if not raw or raw[0] != ALG_ED25519:
            raise KeyFormatError("verifier key is not an Ed25519 key (type byte 0x01)")
        if len(raw) != 1 + ED25519_PUBLIC_KEY_SIZE:
            raise KeyFormatError(
                f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes, got {len(raw) - 1}"
            )
        verifier = cls(name, raw[1:])
        if verifier.key_id != int(hex_id, 16):
            raise KeyFormatError(
                f"verifier key id {hex_id} does not match its name and key "
                f"(expected {verifier.key_id:08x})"
            )
        return verifier

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey | bytes) -> Verifier:
        raw = public_key if isinstance(public_key, bytes) else _raw_public_key(public_key)
        return cls(name, raw)

    def vkey(self) -> str:
        key = b64encode(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """An Ed25519 private key with its name: signs note texts."""

    __slots__ = ("_key", "_name", "_public")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self._name = name
        self._key = private_key
        self._public = _raw_public_key(private_key.public_key())

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || seed)>``."""
        if not skey.startswith(_PRIVATE_PREFIX):
            raise KeyFormatError("a signer key starts with PRIVATE+KEY+")
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)  # base64 may contain '+'
        if len(parts) != 3:
            raise KeyFormatError(
                "a signer key has the form PRIVATE+KEY+<name>+<hex key id>+<base64 seed>"
            )
        name, hex_id, b64 = parts
        _check_key_name(name)
        if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
            raise KeyFormatError(f"signer key id {hex_id!r} is not 8 hex digits")
        raw = _b64decode_strict(b64, "signer key material", KeyFormatError)
        if not raw or raw[0] != ALG_ED25519:
            raise KeyFormatError("signer key is not an Ed25519 key (type byte 0x01)")
        if len(raw) != 33:
            raise KeyFormatError(f"an Ed25519 seed is 32 bytes, got {len(raw) - 1}")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        # The id names the *public* key, so it can only be checked after deriving it.
        if signer.key_id != int(hex_id, 16):
            raise KeyFormatError(
                f"signer key id {hex_id} does not match its name and key "
                f"(expected {signer.key_id:08x})"
            )
        return signer

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return key_id(self._name, self._public)

    @property
    def public_key(self) -> bytes:
        return self._public

    def verifier(self) -> Verifier:
        return Verifier(self._name, self._public)

    def skey(self) -> str:
        """The secret key in Go's text form. Anyone holding it can sign as this key."""
        seed = self._key.private_bytes_raw()
        b64 = b64encode(bytes([ALG_ED25519]) + seed)
        return f"{_PRIVATE_PREFIX}{self._name}+{self.key_id:08x}+{b64}"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:  # never print key material
        return f"Signer({self._name!r}, key_id={self.key_id:08x})"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID, and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(blob)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed, not yet verified note."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose text is vouched for by ``verified`` (at least one known key)."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]

    @property
    def signers(self) -> tuple[str, ...]:
        return tuple(sig.name for sig in self.verified)


def _decode(data: bytes | str, max_bytes: int) -> str:
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedNoteError("note is not valid UTF-8 (lone surrogate)") from None
    elif isinstance(data, bytes):
        raw = data
    else:
        raise TypeError(f"a note is bytes or str, not {type(data).__name__}")
    if len(raw) > max_bytes:
        raise MalformedNoteError(f"note is {len(raw)} bytes, more than the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNoteError(f"note is not valid UTF-8 (at byte {exc.start})") from None
    for i, ch in enumerate(text):
        if ord(ch) < 0x20 and ch != "\n":
            raise MalformedNoteError(
                f"note contains control character U+{ord(ch):04X} at character {i}"
            )
    return text


def _check_text(text: str) -> None:
    """What a note's text must be to be signed (and to come back out of parse_note)."""
    if not isinstance(text, str):
        raise TypeError("note text must be str")
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    for i, ch in enumerate(text):
        if ord(ch) < 0x20 and ch != "\n":
            raise MalformedNoteError(
                f"note text contains control character U+{ord(ch):04X} at character {i}"
            )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedNoteError("note text is not valid UTF-8 (lone surrogate)") from None


def parse_note(data: bytes | str, *, max_bytes: int = MAX_NOTE_BYTES) -> Note:
    """Split a signed note into its text and signature lines, checking only syntax."""
    message = _decode(data, max_bytes)
    # The text is separated from the signatures by the *last* blank line: the text
    # may contain blank lines, the signature block may not.
    split = message.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block:
        raise MalformedNoteError("note has no signature lines")
    if not block.endswith("\n"):
        raise MalformedNoteError("note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"note has {len(lines)} signature lines, more than the limit of {MAX_SIGNATURES}"
        )
    signatures = []
    for number, line in enumerate(lines, start=1):
        where = f"signature line {number}"
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNoteError(f"{where} does not start with an em dash and a space")
        name, sep, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not sep or not b64:
            raise MalformedNoteError(f"{where} has no signature after the key name")
        if not is_valid_key_name(name):
            raise MalformedNoteError(f"{where} has an invalid key name {name!r}")
        blob = _b64decode_strict(b64, f"the signature on {where}", MalformedNoteError)
        if len(blob) < 5:
            raise MalformedNoteError(f"the signature on {where} is too short")
        signatures.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
    return Note(text, tuple(signatures))


def sign_note(text: str, *signers: Signer, max_bytes: int = MAX_NOTE_BYTES) -> str:
    """Sign ``text`` (which must end in a newline) with each signer; return the note."""
    _check_text(text)
    if not signers:
        raise ValueError("a note needs at least one signer")
    seen: set[tuple[str, int]] = set()
    lines = []
    message = text.encode("utf-8")
    for signer in signers:
        ident = (signer.name, signer.key_id)
        if ident in seen:
            continue  # one signature per key is all a verifier uses
        seen.add(ident)
        lines.append(NoteSignature(signer.name, signer.key_id, signer.sign(message)).line())
    note = text + "\n" + "".join(lines)
    if len(note.encode("utf-8")) > max_bytes:
        raise MalformedNoteError(f"signed note would exceed the limit of {max_bytes} bytes")
    return note


def open_note(
    data: bytes | str, verifiers: Iterable[Verifier], *, max_bytes: int = MAX_NOTE_BYTES
) -> VerifiedNote:
    """Parse a note and verify it against known keys (c2sp.org/signed-note, "Signatures").

    Signatures whose (name, key ID) is not a known key are ignored and returned as
    ``unverified``, even if they share the name or the ID (but not both) with a known
    key. Every signature from a known key is verified, repeats included, and one that
    fails rejects the whole note (``InvalidSignatureError``). If none verifies, the
    note is rejected (``UnverifiedNoteError``). Two different known keys with the same
    name and ID make the trust store ambiguous and are refused outright.
    """
    known: dict[tuple[str, int], Verifier] = {}
    for verifier in verifiers:
        ident = (verifier.name, verifier.key_id)
        other = known.get(ident)
        if other is not None and other.public_key != verifier.public_key:
            raise KeyFormatError(f"ambiguous key {verifier.name}+{verifier.key_id:08x}")
        known[ident] = verifier

    note = parse_note(data, max_bytes=max_bytes)
    message = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    for sig in note.signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if not key.verify(message, sig.signature):
            raise InvalidSignatureError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        if all((v.name, v.key_id) != (sig.name, sig.key_id) for v in verified):
            verified.append(sig)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified[:5])
        more = f" and {len(unverified) - 5} more" if len(unverified) > 5 else ""
        raise UnverifiedNoteError(
            f"note has no signature from a known key (signed by: {names}{more})"
        )
    return VerifiedNote(note.text, tuple(verified), tuple(unverified))
