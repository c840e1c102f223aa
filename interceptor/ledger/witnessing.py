"""The ledger's side of witnessing, sans I/O: get each new checkpoint cosigned by the
witness (``interceptor.witness``, the court's) before acting, and refuse a ledger that is
behind, or not consistent with, what the witness cosigned.

:class:`Witnessing` builds add-checkpoint requests (``wire.witness.AddCheckpoint``) from
the ledger and reads the witness's answers; whoever holds it carries the bytes (a direct
call, a control message, HTTP) - :func:`witness_now` does it with a plain callable.

The exchange follows c2sp.org/tlog-witness. After a (re)start the interceptor does not
know what the witness holds, and must not trust anything in its own directory to say so
(that is what an attacker would roll back too), so it asks with ``old 0``; the witness
answers 409 with the size it cosigned, S. Then:

* S is larger than the ledger: the ledger was rolled back (an older copy restored, or
  entries deleted from the end) - :class:`LedgerRollbackError`, the interceptor will not
  start;
* otherwise it proves that its first S entries are the ones the witness cosigned (an
  RFC 9162 consistency proof from S); the witness refuses (422, or 409 at equal sizes) if
  they are not - the history was rewritten: :class:`LedgerRollbackError` again;
* a 403 means the checkpoint is not signed by the key the witness pins for this ledger
  (a ledger re-signed with a new key): :class:`WitnessError`.

Every cosignature received is checked against the witness's pinned key, so a forged
"OK" from someone else counts for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from interceptor.ledger.errors import LedgerError
from interceptor.ledger.store import Ledger
from wire.checkpoint import CheckpointError, open_checkpoint
from wire.note import Verifier
from wire.witness import (
    CONFLICT,
    FORBIDDEN,
    OK,
    UNPROCESSABLE,
    AddCheckpoint,
    CosignatureVerifier,
    WitnessFormatError,
    WitnessResponse,
    cosigned,
)

#: Rounds of one witnessing: a 409 tells the size the witness holds, then one more.
MAX_ROUNDS = 3


class WitnessError(LedgerError):
    """The ledger's latest checkpoint could not be witnessed: do not act on it."""


class LedgerRollbackError(WitnessError):
    """The ledger is behind, or not consistent with, a checkpoint the witness cosigned."""


@dataclass(frozen=True)
class WitnessedHead:
    """The latest checkpoint of this ledger the witness cosigned (this session)."""

    size: int
    root: bytes
    note: bytes  # the checkpoint with the log's signature and the witness's cosignature


class Witnessing:
    """One ledger's witnessing state: what the witness has cosigned (once it has said so
    this session) and the request in flight."""

    def __init__(self, ledger: Ledger, *, log_key: Verifier, witness_key: CosignatureVerifier):
        if log_key.name != ledger.origin:
            raise LedgerError(f"the log key is named {log_key.name!r}, not {ledger.origin!r}")
        self.ledger = ledger
        self.log_key = log_key
        self.witness_key = witness_key
        self.witnessed: WitnessedHead | None = None
        self._old: int = 0  # the size we will claim the witness holds
        self._pending: tuple[int, int, bytes] | None = None  # (old, size, checkpoint note)

    @property
    def up_to_date(self) -> bool:
        return self.witnessed is not None and self.witnessed.size == self.ledger.size

    def request(self) -> bytes:
        """An add-checkpoint request for a fresh checkpoint of the whole ledger."""
        note = self.ledger.checkpoint()
        size = self.ledger.size
        old = self.witnessed.size if self.witnessed is not None else self._old
        if old > size:
            raise self._behind(old, size)
        proof = self.ledger.consistency_proof(old, size).hashes if old > 0 else ()
        self._pending = (old, size, note)
        return AddCheckpoint(old, tuple(proof), note).encode()

    def handle(self, response: WitnessResponse) -> bool:
        """Read the witness's answer to the last ``request``. True: witnessed. False:
        the witness holds another size; make a new request. Raises WitnessError (or
        LedgerRollbackError) when the ledger must not be acted on."""
        if self._pending is None:
            raise WitnessError("an answer from the witness without a request")
        old, size, note = self._pending
        self._pending = None
        if response.status == OK:
            self._accept(size, note, response.body)
            return True
        if response.status == CONFLICT:
            try:
                held = response.conflict_size()
            except WitnessFormatError as exc:
                raise WitnessError(f"the witness's answer is malformed: {exc}") from None
            if held > size:
                raise self._behind(held, size)
            if held == old:
                raise LedgerRollbackError(
                    f"the witness cosigned size {held} of {self.ledger.origin!r} with another "
                    f"root: this ledger's history was rewritten ({response.reason})"
                )
            self.witnessed = None
            self._old = held
            return False
        if response.status == UNPROCESSABLE:
            raise LedgerRollbackError(
                f"this ledger ({size} entries) is not consistent with what the witness "
                f"cosigned: {response.reason}"
            )
        if response.status == FORBIDDEN:
            raise WitnessError(
                f"the witness does not accept this ledger's checkpoint signature (a ledger "
                f"re-signed with another key?): {response.reason}"
            )
        raise WitnessError(f"the witness refused ({response.status}): {response.reason}")

    def _accept(self, size: int, note: bytes, lines: bytes) -> None:
        full = cosigned(note, lines)
        try:
            verified = open_checkpoint(
                full, [self.log_key, self.witness_key], origin=self.ledger.origin
            )
        except CheckpointError as exc:
            raise WitnessError(f"the witness's cosignature does not verify: {exc}") from None
        if self.witness_key.name not in verified.note.signers:
            raise WitnessError("the answer carries no cosignature from the pinned witness key")
        self.witnessed = WitnessedHead(size, verified.checkpoint.root, full.encode())
        self._old = size

    def _behind(self, held: int, size: int) -> LedgerRollbackError:
        return LedgerRollbackError(
            f"the witness has cosigned {held} entries of {self.ledger.origin!r}, but this "
            f"ledger has only {size}: it was rolled back (an older copy restored, or entries "
            f"{size}..{held - 1} deleted); refusing to act on it"
        )


def witness_now(witnessing: Witnessing, call: Callable[[bytes], WitnessResponse]) -> None:
    """Get the ledger's current head witnessed through ``call`` (request bytes in, the
    witness's answer out), or raise WitnessError."""
    for _ in range(MAX_ROUNDS):
        if witnessing.up_to_date:
            return
        if witnessing.handle(call(witnessing.request())):
            return
    raise WitnessError("the witness kept answering with another size")


__all__ = [
    "LedgerRollbackError",
    "WitnessError",
    "WitnessedHead",
    "Witnessing",
    "witness_now",
]
