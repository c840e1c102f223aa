"""The enterprise server (BES-like): enrols its own devices.

Enrolment is the classic activation-code flow. The administrator issues a one-time
code for a (user, device); the device redeems it and receives its broker credentials;
the server then tells the relay's key directory that the device belongs to the user.
Only the enterprise's own users can be enrolled by it, and the relay checks that too.

``Enterprise`` is the sans-I/O part (codes, credentials, the device roster);
``enrol_at_relay`` is the thin I/O step that registers devices in the directory.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clients.archive import Archive, ArchiveError, Record
from clients.crypto import seal_to
from infra.files import write_atomic
from infra.link import Link
from infra.plane import Plane
from infra.setaside import store_path as set_aside_path
from wire import strictjson, topics
from wire.b64 import B64Error, b64decode
from wire.envelope import MAX_ENVELOPE_BYTES
from wire.events import EventLog, now_ms
from wire.ids import check_enterprise, check_user, device_id, enterprise_of, is_device, user_of
from wire.li.checks import Decision, Policy, WarrantState, check_warrant_bytes
from wire.li.errors import InterceptError
from wire.li.handover import HANDOVER_INFO, encode_record, handover_record
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.li.warrant import Warrant, parse_warrant, warrant_from_json

log = logging.getLogger(__name__)


# The relay forwards journal records of at most MAX_ENVELOPE_BYTES, base64 in a small
# JSON wrapper.
MAX_WRAPPER_BYTES = MAX_ENVELOPE_BYTES * 4 // 3 + 1024


class EnrolmentError(ValueError):
    """An activation code that is unknown, used, or not for this enterprise's users."""


@dataclass(frozen=True)
class Credentials:
    """What a device receives on activation: its broker login."""

    device: str
    user: str
    password: str


@dataclass
class Enterprise:
    name: str
    archive: bool = False
    _codes: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    devices: dict[str, Credentials] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_enterprise(self.name)

    def issue_activation(self, user: str, device_name: str) -> str:
        """A one-time activation code for ``user``'s new device ``device_name``."""
        check_user(user)
        if enterprise_of(user) != self.name:
            raise EnrolmentError(f"{user} is not a user of {self.name}")
        dev = device_id(user, device_name)
        if dev in self.devices:
            raise EnrolmentError(f"{dev} is already enrolled")
        code = "-".join(secrets.token_hex(2) for _ in range(4))
        self._codes[code] = (user, dev)
        return code

    def activate(self, code: str) -> Credentials:
        """Redeem an activation code; each code works once."""
        for known in list(self._codes):
            # Constant-time comparison: activation codes are secrets.
            if hmac.compare_digest(known.encode(), code.encode()):
                user, dev = self._codes.pop(known)
                creds = Credentials(device=dev, user=user, password=secrets.token_urlsafe(24))
                self.devices[dev] = creds
                return creds
        raise EnrolmentError("unknown or already used activation code")


async def enrol_at_relay(link: Link, enterprise: Enterprise) -> list[str]:
    """Register every activated device with the relay's key directory."""
    enrolled = []
    for creds in enterprise.devices.values():
        answer = await link.request("enrol", user=creds.user, device=creds.device)
        enrolled.append(str(answer["device"]))
    return enrolled


def archive_store(state_dir: str | Path, enterprise: str) -> Path:
    """Where an enterprise's archive keeps its key and records."""
    return Path(state_dir) / f"archive-{enterprise}.sqlite"


def warrants_store(state_dir: str | Path, enterprise: str) -> Path:
    """Where an enterprise server keeps the authorisations it serves (its warrant
    state and live cases)."""
    return Path(state_dir) / f"warrants-{enterprise}.json"


class EnterpriseStateError(RuntimeError):
    """The file of served authorisations cannot be read: the server will not start."""


class EnterpriseServer:
    """The enterprise's running server: its link to the relay and, if it runs one, its
    disclosed compliance archive, fed by the journal records its devices send."""

    def __init__(
        self,
        enterprise: Enterprise,
        password: str,
        host: str,
        port: int,
        events: EventLog,
        state_dir: str | Path,
        *,
        deliver_cc: Callable[[str, list[bytes]], None] | None = None,
        clock: Callable[[], int] = now_ms,
        plane: Plane | None = None,
    ) -> None:
        self.enterprise = enterprise
        self._events = events
        self.archive: Archive | None = None
        if enterprise.archive:
            self.archive = Archive(enterprise.name, archive_store(state_dir, enterprise.name))
        self.link = Link(
            enterprise.name,
            password,
            host,
            port,
            on_other=self._on_other,
            events=events,
            # Beside the archive's store: what this server could not process.
            set_aside=set_aside_path(archive_store(state_dir, enterprise.name)),
            plane=plane,
        )
        self._clock = clock
        # Where CC exported under a warrant goes (to the interceptor, which forwards it to
        # the agency only under a task it runs): set here or by ``accept_warrant``.
        self._deliver_cc = deliver_cc
        # What we serve: our own replay/generation memory and the live cases, persisted
        # beside the archive and reloaded on start.
        self._warrants_path = warrants_store(state_dir, enterprise.name)
        self.cases: dict[str, ArchiveCase] = {}
        self._warrants = WarrantState()
        self._load()

    @property
    def events(self) -> EventLog:
        return self._events

    @property
    def archive_public_key(self) -> bytes | None:
        return None if self.archive is None else self.archive.public_key

    @property
    def connected(self) -> bool:
        """Whether its link to the broker is up right now (it reconnects by itself)."""
        return self.link.connected

    async def start(self) -> None:
        await self.link.start()
        enrolled = await enrol_at_relay(self.link, self.enterprise)
        self._events.emit(
            self.enterprise.name,
            "enterprise.enrolled",
            devices=sorted(enrolled),
            archive=self.archive is not None,
        )

    async def stop(self) -> None:
        await self.link.stop()
        if self.archive is not None:
            self.archive.close()

    async def _on_other(self, kind: str, payload: bytes) -> None:
        if kind != topics.ARCHIVE:
            return
        if self.archive is None:
            self._refuse(kind, payload, "journal record but no archive")
            return
        try:
            device, sealed = self._unwrap(payload)
            record, new = self.archive.ingest_new(device, sealed)
        except ArchiveError as exc:
            # Refused with the reason, kept (set aside), acknowledged: never again in
            # the way of the records behind it (issue 12).
            self._refuse(kind, payload, str(exc))
            return
        if not new:
            # Already archived, exported and reported: a redelivery (we died or lost the
            # connection before acknowledging it) or a device re-sending its outbox.
            return
        self._push_to_cases(record)
        self._events.emit(
            self.enterprise.name,
            "enterprise.archived",
            device=record.device,
            direction=record.direction,
            id=record.id,
            text=record.text,
            **{"from": record.sender},
        )

    def _unwrap(self, payload: bytes) -> tuple[str, bytes]:
        """The relay's wrapper of a journal record: ``{"device", "record"}`` (base64)."""
        try:
            wrapped = strictjson.loads_object(
                payload, "journal wrapper", max_bytes=MAX_WRAPPER_BYTES, max_depth=1
            )
        except strictjson.StrictJSONError as exc:
            raise ArchiveError(str(exc)) from None
        if wrapped.keys() != {"device", "record"}:
            raise ArchiveError("journal wrapper must have exactly 'device' and 'record'")
        device = wrapped["device"]
        if not is_device(device) or enterprise_of(device) != self.enterprise.name:
            raise ArchiveError(f"journal wrapper names {str(device)[:100]!r}, not one of ours")
        try:
            return device, b64decode(wrapped["record"], "journal wrapper 'record'")
        except B64Error as exc:
            raise ArchiveError(str(exc)) from None

    def _refuse(self, kind: str, payload: bytes, reason: str) -> None:
        self._events.emit(self.enterprise.name, "enterprise.rejected", reason=reason)
        self.link.set_aside(topics.inbox(self.enterprise.name, kind), payload, reason)

    # -- warrants (CC from the archive) -------------------------------------------------

    def accept_warrant(
        self,
        data: bytes,
        *,
        agency: AgencyPublicKey,
        trust: TrustStore,
        policy: Policy,
        now: int,
        deliver: Callable[[str, list[bytes]], None] | None = None,
    ) -> Decision:
        """Check a warrant *ourselves* (the interceptor's word is not enough) and act on
        it: a new or amended warrant that collects CC for our users is exported from -
        what the archive holds inside its window now, and prospectively as messages are
        archived - sealed to the agency's pinned key; a cancellation, or an amendment
        that no longer collects CC from our users, stops the export for that
        authorisation at once. What we serve is persisted (``warrants-<name>.json``)
        before anything is exported, so a restarted server keeps serving a live case,
        keeps refusing a replay, and does not resume a stopped one."""
        if deliver is not None:
            self._deliver_cc = deliver
        own = {d for d in self.enterprise.devices} | {
            c.user for c in self.enterprise.devices.values()
        }

        def directory(fmt: str, value: str) -> bool:
            # Targets in other enterprises are theirs to check; ours must exist.
            return enterprise_of(value) != self.enterprise.name or value in own

        decision = check_warrant_bytes(
            data, trust=trust, policy=policy, state=self._warrants, now=now, directory=directory
        )
        self._events.emit(
            self.enterprise.name,
            "enterprise.warrant_checked",
            accepted=decision.accepted,
            reason=decision.reason,
            action=decision.action,
            authorisation_id=decision.authorisation_id,
        )
        if not decision.accepted:
            return decision
        warrant = parse_warrant(data)
        if warrant.status != "cancelled" and agency.fingerprint != warrant.delivery.key_fingerprint:
            raise ValueError("the agency key is not the one the warrant names")
        self._warrants.apply(decision)
        aid = warrant.authorisation_id
        previous = self.cases.pop(aid, None)
        case: ArchiveCase | None = None
        if self.archive is not None and self._collects_from_us(warrant):
            case = ArchiveCase(warrant, agency)
            if previous is not None:
                case.exported = previous.exported  # never the same message twice
            self.cases[aid] = case
        # Persist before acting: a crash now leaves a case recorded, never an export
        # without its record (and a stop is on disk before we report it).
        self._save()
        if previous is not None and case is None:
            self._events.emit(
                self.enterprise.name,
                "enterprise.case_stopped",
                authorisation_id=aid,
                liid=warrant.liid,
                reason=decision.action,
            )
        if case is not None and self.archive is not None:
            for record in self.archive.records():
                self._push(case, record)
            self._save()
        return decision

    def _collects_from_us(self, warrant: Warrant) -> bool:
        return (
            warrant.status == "active"
            and "CC" in warrant.categories
            and any(enterprise_of(t.value) == self.enterprise.name for t in warrant.targets)
        )

    def expire(self) -> None:
        """Drop every case whose window has closed, by our own clock."""
        now_s = self._clock() // 1000
        expired = [aid for aid, c in self.cases.items() if now_s >= c.warrant.not_after]
        for aid in expired:
            case = self.cases.pop(aid)
            self._events.emit(
                self.enterprise.name,
                "enterprise.case_stopped",
                authorisation_id=aid,
                liid=case.warrant.liid,
                reason="expired",
            )
        if expired:
            self._save()

    def _push_to_cases(self, record: Record) -> None:
        self.expire()
        exported = [self._push(case, record) for case in list(self.cases.values())]
        if any(exported):
            self._save()

    def _push(self, case: ArchiveCase, record: Record) -> bool:
        if self._deliver_cc is None or self._clock() // 1000 >= case.warrant.not_after:
            return False
        sealed = case.export(record)
        if sealed is not None:
            self._events.emit(
                self.enterprise.name,
                "enterprise.cc_exported",
                liid=case.warrant.liid,
                id=record.id,
                **{"from": record.sender},
            )
            self._deliver_cc(case.warrant.authorisation_id, [sealed])
        return sealed is not None

    # -- what we serve, on disk ------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = self._warrants_path.read_bytes()
        except FileNotFoundError:
            return
        try:
            obj = json.loads(data)
            state = WarrantState.from_json(obj["state"])
            cases = {}
            for aid, c in obj["cases"].items():
                case = ArchiveCase(
                    warrant_from_json(c["warrant"]), AgencyPublicKey.from_json(c["agency"])
                )
                case.exported = {(str(a), str(b)) for a, b in c["exported"]}
                cases[aid] = case
        except (ValueError, KeyError, TypeError, InterceptError) as exc:
            # Fail closed: without knowing what we served we cannot tell a replay from
            # a new warrant, nor a cancelled case from a live one.
            raise EnterpriseStateError(
                f"{self._warrants_path} is unreadable ({exc}); the enterprise will not "
                "start without knowing which authorisations it serves"
            ) from None
        self._warrants = state
        self.cases = cases

    def _save(self) -> None:
        obj = {
            "v": 1,
            "state": self._warrants.to_json(),
            "cases": {
                aid: {
                    "warrant": c.warrant.to_json(),
                    "agency": c.agency.to_json(),
                    "exported": sorted([a, b] for a, b in c.exported),
                }
                for aid, c in sorted(self.cases.items())
            },
        }
        write_atomic(self._warrants_path, json.dumps(obj, sort_keys=True).encode(), private=True)


@dataclass
class ArchiveCase:
    """One warrant this enterprise accepted: which of its archived messages it covers."""

    warrant: Warrant
    agency: AgencyPublicKey
    exported: set[tuple[str, str]] = field(default_factory=set)

    def covers(self, record: Record) -> bool:
        w = self.warrant
        if not w.not_before * 1000 <= record.ts < w.not_after * 1000:
            return False
        for t in w.targets:
            if t.format == "device" and t.value == record.device:
                return True
            if t.format == "user" and user_of(record.device) == t.value:
                return True
        return False

    def export(self, record: Record) -> bytes | None:
        key = (record.sender, record.id)
        if key in self.exported or not self.covers(record):
            return None
        self.exported.add(key)
        cc = handover_record(
            liid=self.warrant.liid,
            category="CC",
            sequence=len(self.exported),
            source=f"archive:{enterprise_of(record.device)}",
            id=record.id,
            to=record.to_user or record.device,
            ts=record.ts,
            plaintext=record.text,
            **{"from": record.sender},
        )
        return seal_to(self.agency.public_key, encode_record(cc), info=HANDOVER_INFO)
