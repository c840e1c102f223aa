"""Key transparency, relay side, sans I/O: the key directory as an append-only Merkle log.

Every change to the directory that binds a device to a key is one *entry* of a Merkle
log (``wire.merkle``: RFC 6962 hashing, RFC 9162 proofs), encoded as ``wire.kt`` says
(``entry_bytes``: canonical JSON, the same function the devices re-hash leaves with)::

    {"device": "alice@acme.phone", "identity": "<b64, as published>",
     "op": "add", "t": 1764400000000, "user": "alice@acme"}

A device's *first* ``publish`` (the one that sets its identity, which is set once) adds
one ``add`` entry. Enrolment alone binds no key and is not logged. ``revoke`` is part
of the format (and of the clients' checks) but no relay operation writes it yet.

The relay signs checkpoints of the log (``wire.checkpoint``: C2SP checkpoints in signed
notes) with an Ed25519 *signing* key of its own, named like the log's origin
(``wire.kt.KT_ORIGIN``). Clients pin its verifier key (``DirectoryLog.vkey``).
Every directory lookup carries a ``kt`` object (its shape is ``wire.kt``'s) built here:
the signed checkpoint, for every device listed its entry and an inclusion proof against
that checkpoint, and, when the request said ``since: SIZE``, that size again and a
consistency proof from it to the checkpoint's size.

Persistence is the store's (``relay.store``, table ``kt_log``): the store appends the
entry in the same transaction that sets the identity, and ``DirectoryLog.extend`` is
fed the stored rows in index order, so a restarted relay rebuilds the same tree and,
Ed25519 signatures being deterministic, the very same checkpoint notes.

Two *views* of the log exist, for the ``ghost`` back door's split-view demonstration:

* the **full** view: every entry, ghost devices' included. This is what every device is
  shown unless the relay is told to lie.
* the **hidden** view: the same log in which each ghost entry is replaced by a filler,
  a verbatim repeat of the latest earlier entry of the same user (an innocuous-looking
  "key refresh" that raises no monitoring alarm). It has the same size as the full view
  at every moment, so a device shown the hidden view and one shown the full view hold
  checkpoints of the same size with different roots: the fork that comparing
  checkpoints (gossip) detects. The router decides who is shown which view.

Nothing here does I/O: the signer is handed in, rows come from the caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wire.b64 import b64encode
from wire.checkpoint import Checkpoint, sign_checkpoint
from wire.kt import KT_ORIGIN
from wire.merkle import MerkleTree, hash_leaf
from wire.note import Signer

#: The device name reserved for the ghost back door's government device, ``<user>.gov``.
GHOST_NAME = "gov"
#: Envelopes addressed to a ghost device go to ``doormat/in/tap/<GHOST_KIND>`` (TAP_ID).
GHOST_KIND = "ghost"


class DirectoryLogError(ValueError):
    """A request the log cannot answer (e.g. ``since`` beyond its size), or rows that do
    not continue it. The message says why."""


def ghost_device(user: str) -> str:
    """``alice@acme`` -> ``alice@acme.gov``."""
    return f"{user}.{GHOST_NAME}"


def has_ghost_name(device: str) -> bool:
    """True for a device id whose device name is the reserved ``gov``."""
    return device.rsplit(".", 1)[-1] == GHOST_NAME


@dataclass(frozen=True)
class LogRow:
    """One stored entry of the log."""

    index: int  # leaf index, from 0
    user: str
    device: str
    op: str
    entry: bytes  # canonical JSON, exactly as hashed
    ghost: bool  # a ghost device's entry (enrolled by the tap)


class DirectoryLog:
    """The key directory's Merkle log in memory, its signed checkpoints and proofs."""

    def __init__(self, signer: Signer, *, origin: str = KT_ORIGIN) -> None:
        if signer.name != origin:
            # open_checkpoint insists that the log's own key be named like its origin.
            raise ValueError(f"the signing key is named {signer.name!r}, expected {origin!r}")
        self.origin = origin
        self._signer = signer
        self._full = MerkleTree()
        # Created at the first ghost entry; until then the hidden view is the full view.
        self._hidden: MerkleTree | None = None
        self._last_by_user: dict[str, bytes] = {}  # latest non-ghost entry of each user
        self._last_any: bytes | None = None  # latest non-ghost entry of anyone
        self._notes: dict[bool, tuple[int, str]] = {}  # view -> (size, signed note)

    # -- the log -------------------------------------------------------------------

    @property
    def vkey(self) -> str:
        """The verifier key clients pin (Go ``note`` text form)."""
        return self._signer.verifier().vkey()

    @property
    def size(self) -> int:
        return self._full.size

    def root(self, size: int | None = None, *, hidden: bool = False) -> bytes:
        """The view's root hash at ``size`` (default: now)."""
        return self._tree(hidden).root(size)

    def extend(self, rows: Iterable[LogRow]) -> int:
        """Append stored rows, which must continue the log (row.index == size). Returns
        how many were appended."""
        added = 0
        for row in rows:
            if row.index != self._full.size:
                raise DirectoryLogError(
                    f"log row {row.index} does not continue the log of size {self._full.size}"
                )
            leaf = hash_leaf(row.entry)
            if row.ghost:
                if self._hidden is None:
                    self._hidden = MerkleTree.from_leaf_hashes(self._full.leaf_hashes())
                filler = self._last_by_user.get(row.user) or self._last_any or row.entry
                self._hidden.append(filler)
            else:
                self._last_by_user[row.user] = row.entry
                self._last_any = row.entry
                if self._hidden is not None:
                    self._hidden.append_leaf_hash(leaf)
            self._full.append_leaf_hash(leaf)
            added += 1
        return added

    def _tree(self, hidden: bool) -> MerkleTree:
        if hidden and self._hidden is not None:
            return self._hidden
        return self._full

    # -- checkpoints and proofs ----------------------------------------------------

    def checkpoint(self, *, hidden: bool = False) -> str:
        """The signed checkpoint note of the view's current size (signed once per size)."""
        tree = self._tree(hidden)
        cached = self._notes.get(hidden)
        if cached is not None and cached[0] == tree.size:
            return cached[1]
        note = sign_checkpoint(Checkpoint(self.origin, tree.size, tree.root()), self._signer)
        self._notes[hidden] = (tree.size, note)
        return note

    def answer(
        self, rows: Sequence[LogRow], *, since: int | None = None, hidden: bool = False
    ) -> dict[str, Any]:
        """The ``kt`` object of a directory answer: the view's checkpoint, each row's
        entry with its inclusion proof against it, and with ``since`` a consistency proof
        from that size. Rows of ghost entries are left out of the hidden view."""
        tree = self._tree(hidden)
        size = tree.size
        if since is not None and since > size:
            raise DirectoryLogError(f"'since' {since} is beyond the directory log's size {size}")
        entries = []
        for row in rows:
            if row.index >= size or (hidden and row.ghost):
                continue
            entries.append(
                {
                    "index": row.index,
                    "entry": json.loads(row.entry),
                    "proof": [b64encode(h) for h in tree.inclusion_proof(row.index, size)],
                }
            )
        kt: dict[str, Any] = {"checkpoint": self.checkpoint(hidden=hidden), "entries": entries}
        if since is not None:
            kt["since"] = since
            kt["consistency"] = [b64encode(h) for h in tree.consistency_proof(since, size)]
        return kt
