"""The audit ledger's errors: :class:`LedgerError` for anything the ledger cannot do,
:class:`EntryError` for an entry that is not valid (``interceptor.ledger.store`` adds
``LedgerFileError`` for a file that is no usable ledger)."""

from __future__ import annotations

from wire.li.errors import InterceptError


class LedgerError(InterceptError):
    """The ledger cannot do what was asked: a refused entry, a damaged or foreign file,
    a checkpoint without a signing key, a proof for sizes the log does not have."""


class EntryError(LedgerError):
    """A ledger entry that is not valid: refused by ``append``, reported by ``verify``."""


__all__ = ["EntryError", "LedgerError"]
