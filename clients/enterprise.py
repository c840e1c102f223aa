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
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clients.archive import Archive, ArchiveError, Record
from clients.crypto import seal_to
from infra.link import Link
from infra.setaside import store_path as set_aside_path
from wire import strictjson, topics
from wire.b64 import B64Error, b64decode
from wire.envelope import MAX_ENVELOPE_BYTES
from wire.events import EventLog
from wire.ids import check_enterprise, check_user, device_id, enterprise_of, is_device, user_of
from wire.li.checks import Decision, Policy, WarrantState, check_warrant_bytes
from wire.li.handover import HANDOVER_INFO, encode_record, handover_record
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.li.warrant import Warrant, parse_warrant

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
        )
        self.cases: dict[str, ArchiveCase] = {}
        self._warrants = WarrantState()  # our own replay/generation memory

    @property
    def archive_public_key(self) -> bytes | None:
        return None if self.archive is None else self.archive.public_key

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
        deliver: Callable[[str, list[bytes]], None],
    ) -> Decision:
        """Check a warrant *ourselves* (the interceptor's word is not enough) and, if it
        holds, export our targeted users' archived messages inside its window - now, and
        prospectively as they are archived - sealed to the agency's pinned key."""
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
            authorisation_id=decision.authorisation_id,
        )
        if not decision.accepted or self.archive is None:
            return decision
        self._warrants.apply(decision)
        warrant = parse_warrant(data)
        if agency.fingerprint != warrant.delivery.key_fingerprint:
            raise ValueError("the agency key is not the one the warrant names")
        case = ArchiveCase(warrant, agency, deliver)
        self.cases[warrant.authorisation_id] = case
        for record in self.archive.records():
            self._push(case, record)
        return decision

    def _push_to_cases(self, record: Record) -> None:
        for case in list(self.cases.values()):
            self._push(case, record)

    def _push(self, case: ArchiveCase, record: Record) -> None:
        sealed = case.export(record)
        if sealed is not None:
            self._events.emit(
                self.enterprise.name,
                "enterprise.cc_exported",
                liid=case.warrant.liid,
                id=record.id,
                **{"from": record.sender},
            )
            case.deliver(case.warrant.authorisation_id, [sealed])


@dataclass
class ArchiveCase:
    """One warrant this enterprise accepted: which of its archived messages it covers."""

    warrant: Warrant
    agency: AgencyPublicKey
    deliver: Callable[[str, list[bytes]], None]
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
