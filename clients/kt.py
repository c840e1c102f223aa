"""Key transparency, client side, sans I/O: what a device checks in every directory answer.

The relay's key directory is an append-only Merkle log (docs/key-transparency.md). A
device pins the relay's checkpoint verifier key and keeps a ``DirectoryView``: the latest
checkpoint it verified (and a short history of earlier ones). With it the device

* **verifies every lookup** (``verify_lookup``): the answer's ``kt`` object must carry a
  checkpoint signed by the pinned key; a checkpoint larger than the one held is
  accepted only with a valid consistency proof from the held one (equal sizes need equal
  roots, a smaller one must be one the device already saw); and every listed device
  needs its log entry (an ``add`` binding it to a key) with a valid inclusion proof
  against that checkpoint, whose key equals the key in the bundle about to be used. A
  device that fails is *not used*; ``LookupResult.refused`` says which and why;
* **monitors its own user** (``monitor``): every log entry about the user, each proven;
  an entry naming a device the user's enterprise did not enrol is an ``Alarm``;
* **compares checkpoints** with other devices (``compare``): two validly signed
  checkpoints of the same size with different roots, or a consistency proof between
  two of them that fails, are proof that the relay shows different logs to different
  parties (a *split view*): an ``Alarm``.

What a plain log does not give (and this module does not pretend to): proof that a
``devices`` list or a ``monitor`` answer is *complete*. A relay can leave a device out of
an answer; it cannot show a device a key that is not in the log it signed, and it cannot
show two parties two logs without the fork being provable once they compare notes.

The contract this module checks against (the entry encoding, the strict parsing of a
``kt`` object, the errors raised and the results returned) is ``wire.kt``, shared with the
relay that writes the log.

No asyncio, no I/O: answers come in as parsed JSON, state goes out as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wire.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from wire.events import now_ms
from wire.ids import user_of
from wire.kt import (
    KT_ORIGIN,
    Alarm,
    CheckpointInvalid,
    IdentityMismatch,
    InconsistentCheckpoint,
    KTError,
    LogEntry,
    LookupResult,
    MalformedKTAnswer,
    StaleCheckpoint,
    UnprovenDevice,
    parse_kt,
    text_field,
)
from wire.merkle import ProofError, hash_leaf, verify_consistency, verify_inclusion
from wire.note import NoteError, Verifier

#: Reasons, as the exposure report and the tests name them.
REASON_NOT_ENROLLED = "device not enrolled by the user's enterprise"
REASON_KEY_MISMATCH = "the log binds the device to a key it did not publish"
REASON_SPLIT_VIEW = "split view: the relay signed two different logs"
#: How many earlier verified checkpoints a view remembers (to check answers that were
#: built before the latest one, and gossip about them).
HISTORY = 64
_STATE_VERSION = 1


# -- the view -------------------------------------------------------------------------


def _short(root: bytes) -> str:
    return root.hex()[:12] + "…"


class DirectoryView:
    """One device's view of the key directory: the pinned key and the checkpoints it
    verified. Serialise it with ``to_json`` after every call that may change it
    (``verify_lookup``, ``monitor``: check ``changed``) and keep it in the device store."""

    def __init__(
        self,
        vkey: str,
        *,
        owner: str | None = None,
        origin: str = KT_ORIGIN,
    ) -> None:
        try:
            self._verifier = Verifier.from_vkey(vkey)
        except NoteError as exc:
            raise ValueError(f"not a directory verifier key: {exc}") from None
        if self._verifier.name != origin:
            raise ValueError(f"the pinned key is for {self._verifier.name!r}, not {origin!r}")
        self.vkey = vkey
        self.origin = origin
        self.owner = owner  # the device whose view this is (its user is monitored)
        self.note: str | None = None  # the latest verified checkpoint, as signed
        self._checkpoint: Checkpoint | None = None
        self._history: dict[int, tuple[bytes, str]] = {}  # size -> (root, note) verified
        self._alarmed: set[tuple[str, int]] = set()  # (device, index) already raised
        self.alarms: list[Alarm] = []
        self.changed = False  # set when the state changed; the caller clears it

    # -- state ---------------------------------------------------------------------

    @property
    def user(self) -> str | None:
        return None if self.owner is None else user_of(self.owner)

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self._checkpoint

    @property
    def since(self) -> int | None:
        """The ``since`` to put in directory requests: the held checkpoint's size, or
        None before the first one (then leave ``since`` out)."""
        return None if self._checkpoint is None else self._checkpoint.size

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": _STATE_VERSION,
                "vkey": self.vkey,
                "origin": self.origin,
                "owner": self.owner,
                "checkpoint": self.note,
                "history": [note for _, (_, note) in sorted(self._history.items())],
                "alarmed": sorted([d, i] for d, i in self._alarmed),
                "alarms": [a.to_json() for a in self.alarms],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DirectoryView:
        try:
            state = json.loads(text)
            if not isinstance(state, dict) or state.get("v") != _STATE_VERSION:
                raise ValueError("not a directory view state of version 1")
            view = cls(state["vkey"], owner=state["owner"], origin=state["origin"])
            if state["checkpoint"] is not None:
                view.note = state["checkpoint"]
                view._checkpoint = view._open(state["checkpoint"])
            for note in state["history"]:
                cp = view._open(note)
                view._history[cp.size] = (cp.root, note)
            view._alarmed = {(str(d), int(i)) for d, i in state["alarmed"]}
            view.alarms = [
                Alarm(
                    a["user"],
                    a["device"],
                    a["time"],
                    a["reason"],
                    a["kind"],
                    a["index"],
                    tuple(a["evidence"]),
                )
                for a in state["alarms"]
            ]
        except (KeyError, TypeError, ValueError, KTError) as exc:
            raise ValueError(f"unusable directory view state: {exc}") from None
        return view

    # -- checkpoints -----------------------------------------------------------------

    def _open(self, note: str) -> Checkpoint:
        try:
            return open_checkpoint(note, [self._verifier], origin=self.origin).checkpoint
        except CheckpointError as exc:
            raise CheckpointInvalid(f"directory checkpoint refused: {exc}") from None

    def _remember(self, cp: Checkpoint, note: str) -> None:
        self._history[cp.size] = (cp.root, note)
        while len(self._history) > HISTORY:
            del self._history[min(self._history)]

    def _split_alarm(self, note_a: str, note_b: str, detail: str, now: int | None) -> Alarm:
        return Alarm(
            user=self.user,
            device=self.owner,
            time=now_ms() if now is None else now,
            reason=f"{REASON_SPLIT_VIEW} ({detail})",
            kind="split-view",
            evidence=(note_a, note_b),
        )

    def _accept(self, note: str, since: int | None, consistency: list[bytes] | None) -> Checkpoint:
        """Verify the answer's checkpoint against the held one; move the view forward
        if it is newer and proven consistent. Returns the checkpoint to verify the
        answer's inclusion proofs against."""
        new = self._open(note)
        held = self._checkpoint
        if held is None:
            # The first checkpoint: trusted because the pinned key signed it.
            self._set(new, note)
            return new
        assert self.note is not None
        if new.size > held.size:
            if consistency is None or since != held.size:
                # Not (yet) a sign of a fork: the request was sent before this view held
                # its current checkpoint. A new checkpoint needs a proof from that one.
                raise StaleCheckpoint(
                    f"checkpoint of size {new.size} came without a consistency proof from "
                    f"the held size {held.size}: ask again with since={held.size}"
                )
            try:
                verify_consistency(held.size, new.size, consistency, held.root, new.root)
            except ProofError as exc:
                alarm = self._split_alarm(
                    self.note, note, f"no valid consistency from {held.size} to {new.size}", None
                )
                self._record(alarm)
                raise InconsistentCheckpoint(
                    f"checkpoint of size {new.size} is not an extension of the held one of "
                    f"size {held.size}: {exc.reason}",
                    alarm,
                ) from None
            self._set(new, note)
            return new
        known = self._history.get(new.size)
        if new.size == held.size or known is not None:
            expected, seen = (held.root, self.note) if known is None else known
            if new.root != expected:
                alarm = self._split_alarm(
                    seen,
                    note,
                    f"size {new.size} with roots {_short(expected)} and {_short(new.root)}",
                    None,
                )
                self._record(alarm)
                raise InconsistentCheckpoint(
                    f"checkpoint of size {new.size} has root {_short(new.root)}, but the "
                    f"relay signed root {_short(expected)} for that size before",
                    alarm,
                )
            return new
        raise StaleCheckpoint(
            f"checkpoint of size {new.size} is older than the held size {held.size}: ask again"
        )

    def _set(self, cp: Checkpoint, note: str) -> None:
        if self._checkpoint is None or cp.size != self._checkpoint.size:
            self.changed = True
        self._checkpoint = cp
        self.note = note
        self._remember(cp, note)

    def _prove(self, cp: Checkpoint, index: int, entry: LogEntry, proof: list[bytes]) -> None:
        try:
            verify_inclusion(index, cp.size, hash_leaf(entry.data()), proof, cp.root)
        except ProofError as exc:
            raise UnprovenDevice(
                entry.device, f"inclusion proof of log entry {index} fails: {exc.reason}"
            ) from None

    # -- lookups ---------------------------------------------------------------------

    def verify_lookup(
        self, kt: Mapping[str, Any] | None, listed: Sequence[str | Mapping[str, Any]]
    ) -> LookupResult:
        """Verify a ``devices`` or ``bundles`` answer. ``kt`` is the answer's ``kt``
        (None if it had none); ``listed`` is the answer's ``devices`` (ids) or
        ``bundles`` (objects with ``device`` and ``identity``).

        Raises (and uses nothing of the answer) when the checkpoint is not acceptable:
        ``CheckpointInvalid``, ``InconsistentCheckpoint`` (with ``.alarm`` when the
        relay provably forked), ``StaleCheckpoint``, ``MalformedKTAnswer``. Otherwise
        returns the devices proven, and each one refused (``UnprovenDevice``,
        ``IdentityMismatch``) with its reason: those must not be used."""
        wanted: list[tuple[str, str | None]] = []
        for i, item in enumerate(listed):
            if isinstance(item, str):
                wanted.append((item, None))
            elif isinstance(item, Mapping):
                wanted.append(
                    (
                        text_field(item.get("device"), f"listed[{i}].device", 200),
                        text_field(item.get("identity"), f"listed[{i}].identity"),
                    )
                )
            else:
                raise MalformedKTAnswer(f"listed[{i}] is neither a device id nor a bundle")
        if kt is None:
            return LookupResult(
                [],
                [
                    UnprovenDevice(d, "the answer carries no key-transparency proof")
                    for d, _ in wanted
                ],
                0 if self._checkpoint is None else self._checkpoint.size,
            )
        parsed = parse_kt(kt)
        cp = self._accept(parsed.note, parsed.since, parsed.consistency)
        latest: dict[str, tuple[int, LogEntry, list[bytes]]] = {}
        for index, entry, proof in parsed.entries:
            if entry.device not in latest or index > latest[entry.device][0]:
                latest[entry.device] = (index, entry, proof)
        verified: list[tuple[str, str]] = []
        refused: list[UnprovenDevice] = []
        for device, identity in wanted:
            try:
                found = latest.get(device)
                if found is None:
                    raise UnprovenDevice(device, "no log entry for it in the answer")
                index, entry, proof = found
                self._prove(cp, index, entry, proof)
                if entry.op != "add":
                    raise UnprovenDevice(device, f"its latest log entry ({index}) revokes it")
                if identity is not None and identity != entry.identity:
                    raise IdentityMismatch(
                        device,
                        f"the bundle's identity key is not the one logged in entry {index}",
                    )
                verified.append((device, entry.identity))
            except UnprovenDevice as exc:
                refused.append(exc)
        return LookupResult(verified, refused, cp.size)

    # -- monitoring ------------------------------------------------------------------

    def monitor(
        self,
        answer: Mapping[str, Any],
        enrolled_devices: Iterable[str],
        *,
        known_identities: Mapping[str, str] | None = None,
    ) -> list[Alarm]:
        """Audit a ``monitor`` answer for the view's own user.

        Every entry must be about that user and proven included (else ``KTError``: the
        answer is unusable, which is not an alarm). An entry naming a device not in
        ``enrolled_devices`` (the devices the user's enterprise enrolled) is an alarm,
        ``REASON_NOT_ENROLLED``; with ``known_identities`` (device -> the identity it
        published, e.g. this device's own) an entry binding one of those devices to
        another key is an alarm too, ``REASON_KEY_MISMATCH``. Returns the alarms not
        raised before (each (device, entry) alarms once; all are in ``self.alarms``)."""
        user = answer.get("user")
        if self.user is not None and user != self.user:
            raise MalformedKTAnswer(f"monitor answer is about {user!r:.80}, not {self.user}")
        user = text_field(user, "user", 200)
        parsed = parse_kt(answer.get("kt"))
        cp = self._accept(parsed.note, parsed.since, parsed.consistency)
        enrolled = set(enrolled_devices)
        known = dict(known_identities or {})
        new: list[Alarm] = []
        for index, entry, proof in parsed.entries:
            if entry.user != user:
                raise MalformedKTAnswer(
                    f"monitor answer for {user} has an entry about {entry.user}"
                )
            self._prove(cp, index, entry, proof)
            alarm: Alarm | None = None
            if entry.device not in enrolled:
                alarm = Alarm(
                    user, entry.device, entry.t, REASON_NOT_ENROLLED, "unenrolled-device", index
                )
            elif (
                entry.device in known
                and entry.op == "add"
                and entry.identity != known[entry.device]
            ):
                alarm = Alarm(
                    user, entry.device, entry.t, REASON_KEY_MISMATCH, "key-mismatch", index
                )
            if alarm is not None and (entry.device, index) not in self._alarmed:
                self._alarmed.add((entry.device, index))
                self.alarms.append(alarm)
                self.changed = True
                new.append(alarm)
        return new

    # -- gossip ----------------------------------------------------------------------

    def gossip(self) -> str | None:
        """The held checkpoint note, to hand to other devices."""
        return self.note

    def compare(
        self, other: str, *, consistency: Sequence[bytes] | None = None, now: int | None = None
    ) -> Alarm | None:
        """Compare another party's checkpoint note with this view's (the held one, or an
        earlier one of the same size). See the module function ``compare``. Alarms are
        also recorded in ``self.alarms``. Returns None when nothing can be told."""
        if self.note is None:
            return None
        mine = self.note
        other_cp = self._open(other)
        earlier = self._history.get(other_cp.size)
        if earlier is not None:
            # A checkpoint of that size was verified here (the held one or an earlier
            # one): compare with it, whatever the held size is now.
            mine = earlier[1]
        alarm = compare(
            mine,
            other,
            verifier=self._verifier,
            origin=self.origin,
            consistency=consistency,
            user=self.user,
            device=self.owner,
            now=now,
        )
        if alarm is not None:
            self._record(alarm)
        return alarm

    def _record(self, alarm: Alarm) -> None:
        if all(a.evidence != alarm.evidence for a in self.alarms):
            self.alarms.append(alarm)
            self.changed = True


def compare(
    checkpoint_a: str,
    checkpoint_b: str,
    *,
    verifier: Verifier | str,
    origin: str = KT_ORIGIN,
    consistency: Sequence[bytes] | None = None,
    user: str | None = None,
    device: str | None = None,
    now: int | None = None,
) -> Alarm | None:
    """Split-view detection between two checkpoint notes (e.g. one's own and one a
    peer gossiped). Both must be signed by the directory key (else ``CheckpointInvalid``:
    an unsigned note proves nothing). Same size and different roots -> alarm. Different
    sizes: with a ``consistency`` proof from the smaller to the larger, a proof that
    fails -> alarm; without one nothing can be told (None). Same size and root, or a
    proof that holds -> None."""
    v = Verifier.from_vkey(verifier) if isinstance(verifier, str) else verifier
    cps = []
    for note in (checkpoint_a, checkpoint_b):
        try:
            cps.append(open_checkpoint(note, [v], origin=origin).checkpoint)
        except CheckpointError as exc:
            raise CheckpointInvalid(f"directory checkpoint refused: {exc}") from None
    a, b = cps
    when = now_ms() if now is None else now

    def alarm(detail: str) -> Alarm:
        return Alarm(
            user,
            device,
            when,
            f"{REASON_SPLIT_VIEW} ({detail})",
            "split-view",
            evidence=(checkpoint_a, checkpoint_b),
        )

    if a.size == b.size:
        if a.root != b.root:
            return alarm(f"size {a.size} with roots {_short(a.root)} and {_short(b.root)}")
        return None
    if consistency is None:
        return None
    small, large = (a, b) if a.size < b.size else (b, a)
    try:
        verify_consistency(small.size, large.size, list(consistency), small.root, large.root)
    except ProofError as exc:
        return alarm(f"no valid consistency from {small.size} to {large.size}: {exc.reason}")
    return None
