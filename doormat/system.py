"""The whole system in one process: every party a service with its own broker account.

``System`` starts, over one broker (the embedded one by default), the same parties that
run as separate services in docker compose - the relay, the government (its tap, its
mandates and keys), the vendor, the court, the agency, the scoped interceptor, each
enterprise server, each device, an attacker - and the three consoles a person uses: the
observer (reads every party's events, asks for their rows), the operator (the LI
switch) and the lab (a teacher's or student's actions: send as a user, mandate, warrant,
attack). Each party holds only its own keys and talks to the others only over the
broker (``infra.plane``: events and controls; ``infra.link``: envelopes through the
relay). The System wires nothing between them: what it does, it does as the lab or the
operator, by control, exactly as ``doormat dashboard --attach`` will against compose.

For tests and in-process consumers, ``events`` is every party's events merged in the
order they were emitted (each party has its own log, published on the plane); the
observer's view of the plane is ``observed``. The service objects stay reachable
(``relay``, ``tap``, ``agency``, ``servers``, ``interceptor``, ``devices``, ...) for tests
that look inside one party.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.device import Device, Sent
from clients.device_plane import DeviceControls
from clients.enterprise import EnterpriseServer
from clients.enterprise_plane import EnterpriseControls
from clients.limits import check_text
from clients.vendor import Vendor, VendorControls
from doormat.attacker import Attacker, AttackerControls
from doormat.broker import start_broker
from doormat.broker.accounts import Account
from doormat.cast import Cast, enrol
from infra.observer import Observer
from infra.plane import Party, Plane
from interceptor.agency import Agency
from interceptor.agency_plane import AgencyControls
from interceptor.court import AgencyKeyPair
from interceptor.court_service import Bench, CourtControls
from interceptor.government import Government
from interceptor.government_plane import GovernmentControls
from interceptor.interceptor_plane import InterceptorControls, InterceptorLinks
from interceptor.ledger import DEFAULT_ORIGIN, Ledger, WitnessError, Witnessing
from interceptor.scoped import ScopedInterceptor
from interceptor.service import InterceptorService
from interceptor.tap import Tap
from interceptor.witness import DEFAULT_WITNESS_NAME, Witness
from relay.service import RelayService
from wire.events import Event, EventLog, now_ms
from wire.ids import (
    AGENCY_ID,
    ATTACKER_ID,
    COURT_ID,
    INTERCEPTOR_ID,
    LAB_ID,
    OBSERVER_ID,
    OPERATOR_ID,
    RELAY_ID,
    TAP_ID,
    VENDOR_ID,
    enterprise_of,
    user_of,
)
from wire.li.builds import ClientBuild
from wire.li.checks import Decision
from wire.note import Signer
from wire.witness import Cosigner

# How many devices start at once (see System.start).
DEVICE_START_CONCURRENCY = 50


@dataclass
class Delivery:
    """One message as a user sent it, and which devices have shown it to their user."""

    sent: Sent
    sender: str  # device
    to_user: str
    text: str
    delivered_to: set[str]
    # The enrolled devices it was sealed for (a ghost gets a copy too, but is nobody's
    # screen: it does not count towards delivery).
    expected: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.expected <= self.delivered_to


class System:
    def __init__(
        self,
        cast: Cast,
        *,
        broker: str = "embedded",
        state_dir: str | Path | None = None,
        events: EventLog | None = None,
        li: str = "off",
        backdoor: str = "none",
        measure_interval: float = 1.0,
    ) -> None:
        self.cast = cast
        self.broker_kind = broker
        self.li = li
        self.backdoor = "none"
        self._initial_backdoor = backdoor
        self.measure_interval = measure_interval
        self.events = events if events is not None else EventLog()
        # What the observer sees of the plane (every party's events, with ``svc``).
        self.observed = EventLog()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="doormat-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.enrolment = enrol(cast)
        self.enterprises = self.enrolment.enterprises
        self.credentials = self.enrolment.credentials
        self.accounts = self.enrolment.accounts
        self.devices: dict[str, Device] = {}
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self._stack = contextlib.AsyncExitStack()
        self.events.subscribe(self._on_event)
        self.broker: Any = None
        self.relay: RelayService | None = None
        self.tap: Tap | None = None
        self.servers: dict[str, EnterpriseServer] = {}
        self._enterprise_controls: dict[str, EnterpriseControls] = {}
        self.observer: Observer | None = None
        self.lab: Party | None = None
        self.operator: Party | None = None
        # Each party's keys are made where they belong and stay there; the others get
        # the public halves they pin.
        self.government = Government()  # the government's (the tap's) keys
        self.agency = Agency(AgencyKeyPair.generate(), self._log(AGENCY_ID))
        self.bench = Bench.generate(self.agency.keys.public)  # the court's approvers
        self.ledger_signer = Signer.generate(DEFAULT_ORIGIN)  # the interceptor's
        self.witness_cosigner = Cosigner.generate(DEFAULT_WITNESS_NAME)  # the court's
        self.vendor = Vendor(self.state_dir / "vendor")
        self.vendor_plane: Plane | None = None
        self.attacker = Attacker(self.state_dir / "attacker")
        self.ledger: Ledger | None = None
        # Separate directories model separate trust domains: the interceptor's (its
        # ledger) and the court's (the witness's key and state, and the court's pinned
        # copy of the ledger's verifier key).
        self.interceptor_dir = self.state_dir / "interceptor"
        self.court_dir = self.state_dir / "court"
        self.witness: Witness | None = None
        self.court: CourtControls | None = None
        self.interceptor: InterceptorService | None = None
        self._interceptor_stop_registered = False

    # -- set-up ------------------------------------------------------------------------

    def account(self, username: str) -> Account:
        return self.enrolment.account(username)

    def _password(self, username: str) -> str:
        return self.account(username).password

    def _log(self, svc: str) -> EventLog:
        """A party's own event log (published on the plane by its Plane), also merged
        into ``events`` as emitted."""
        log = EventLog(keep=False)
        merged = self.events

        def forward(event: Event) -> None:
            merged.append(event)

        log.subscribe(forward)
        return log

    @property
    def legal(self) -> Bench:
        """The court's approvers (tests sign warrants with them directly)."""
        return self.bench

    @property
    def build(self) -> ClientBuild:
        """The client build the government's mandate calls for now."""
        return self.government.client_build()

    def _party(self, svc: str, kind: str, **kw: Any) -> Party:
        return Party(svc, kind, self._password(svc), self.broker.host, self.broker.port, **kw)

    async def _started(self, party: Party) -> Party:
        await party.start()
        self._stack.push_async_callback(party.stop)
        return party

    async def start(self) -> None:
        self.broker = await self._stack.enter_async_context(
            start_broker(self.broker_kind, self.accounts, self.state_dir / "broker")
        )
        host, port = self.broker.host, self.broker.port
        # The observer first: it sees every party's events from their first.
        self.observer = Observer(host, port, self._password(OBSERVER_ID), mirror=self.observed)
        await self.observer.start()
        self._stack.push_async_callback(self.observer.stop)
        self.lab = await self._started(self._party(
            LAB_ID, "lab", events=None, publish_events=False, clean_session=True))
        self.operator = await self._started(self._party(
            OPERATOR_ID, "operator", events=None, publish_events=False, clean_session=True))
        self.relay = RelayService(
            host=host,
            port=port,
            password=self._password(RELAY_ID),
            db_path=self.state_dir / "relay.sqlite",
            events=self._log(RELAY_ID),
            li_mode=self.li,
            plane=True,
            measure_interval=self.measure_interval,
        )
        await self.relay.start()
        self._stack.push_async_callback(self._stop_relay)
        await self._start_vendor()
        await self._start_agency()
        await self._start_court()
        await self._start_tap()
        self._stack.push_async_callback(self._stop_servers)
        for name in self.enterprises:
            await self._start_enterprise(name)
        await self._start_interceptor()
        await self._start_attacker()
        # Devices start a few dozen at a time: every start is a connect, a key
        # publication and a sync on this one event loop (shared with the relay and,
        # by default, the broker).
        gate = asyncio.Semaphore(DEVICE_START_CONCURRENCY)

        async def start_one(device: str) -> None:
            async with gate:
                await self.start_device(device)

        await asyncio.gather(*(start_one(d) for d in self.credentials))
        if self._initial_backdoor != "none":
            await self.set_backdoor(self._initial_backdoor)

    async def _start_vendor(self) -> None:
        log = self._log(VENDOR_ID)
        party = self._party(VENDOR_ID, "vendor", events=log)
        VendorControls(self.vendor, party.plane, log, devices=lambda: list(self.credentials))
        self.vendor_plane = party.plane  # the vendor's own seat (tests ship forged builds)
        await self._started(party)

    async def _start_agency(self) -> None:
        party = self._party(AGENCY_ID, "agency", events=self.agency.events)
        controls = AgencyControls(self.agency, party.plane, self.measure_interval)
        await self._started(party)
        self._stack.push_async_callback(controls.close)

    async def _start_court(self) -> None:
        self._start_witness()
        assert self.witness is not None
        log = self._log(COURT_ID)
        party = self._party(COURT_ID, "court", events=log)
        self.court = CourtControls(
            self.bench, party.plane, log, court_dir=self.court_dir, witness=self.witness,
            pinned_keys_path=self.pinned_keys_path,
        )
        await self._started(party)

    async def _start_tap(self) -> None:
        log = self._log(TAP_ID)
        plane = Plane(TAP_ID, "tap", log)
        # The government's tap is always connected; the relay's LI switch decides
        # whether anything reaches it, and its keys decide what it can read.
        self.tap = Tap(self.broker.host, self.broker.port, self._password(TAP_ID),
                       self.state_dir / "tap.sqlite", log, readers=self.government.readers,
                       plane=plane)
        self.government_controls = GovernmentControls(
            self.tap, self.government, plane, users=[u.user for u in self.cast.users],
            measure_interval=self.measure_interval,
        )
        await self.tap.start()
        self._stack.push_async_callback(self.tap.stop)
        self._stack.push_async_callback(self.government_controls.close)

    async def _start_attacker(self) -> None:
        log = self._log(ATTACKER_ID)
        party = self._party(ATTACKER_ID, "attacker", events=log)
        controls = AttackerControls(self.attacker, party.plane, log)
        await self._started(party)
        self._stack.push_async_callback(controls.close)

    async def _start_enterprise(self, name: str) -> None:
        log = self._log(name)
        plane = Plane(name, "enterprise", log)
        holder: list[EnterpriseControls] = []
        server = EnterpriseServer(
            self.enterprises[name], self._password(name), self.broker.host, self.broker.port,
            log, self.state_dir, plane=plane,
            deliver_cc=lambda aid, sealed: holder[0].export(aid, sealed),
        )  # fmt: skip
        controls = EnterpriseControls(
            server, plane, trust=self.bench.trust, policy=self.bench.policy,
            agency=self.agency.keys.public, measure_interval=self.measure_interval,
        )  # fmt: skip
        holder.append(controls)
        self.servers[name] = server
        self._enterprise_controls[name] = controls
        await server.start()

    async def _stop_servers(self) -> None:
        for name, server in list(self.servers.items()):
            await self._enterprise_controls[name].close()
            await server.stop()

    async def restart_enterprise(self, name: str) -> None:
        """Stop an enterprise server and start a new one built from its files alone
        (its archive, and the authorisations it serves)."""
        await self._enterprise_controls[name].close()
        await self.servers[name].stop()
        await self._start_enterprise(name)

    @property
    def pinned_keys_path(self) -> Path:
        """The court's pinned copy of the ledger's verifier key and the witness's key
        (``doormat ledger verify --keys``): in the court's directory, never beside the
        ledger."""
        return self.court_dir / "ledger.vkeys"

    @property
    def witness_path(self) -> Path:
        """The witness's state: the latest checkpoint it cosigned (``--witnessed``)."""
        return self.court_dir / "witness.json"

    def _start_witness(self) -> None:
        """The court's witness of the ledger, built from its key and its state file."""
        self.court_dir.mkdir(parents=True, exist_ok=True)
        self.witness = Witness(
            self.witness_path,
            self.witness_cosigner,
            {DEFAULT_ORIGIN: [self.ledger_signer.verifier()]},
        )
        keys = (
            "# The court's pinned keys for the audit ledger (doormat ledger verify --keys):\n"
            "# the ledger's checkpoint key, and the court witness's cosignature key.\n"
            f"{self.ledger_signer.verifier().vkey()}\n{self.witness_cosigner.verifier().vkey()}\n"
        )
        self.pinned_keys_path.write_text(keys)
        if self.court is not None:
            self.court.witness = self.witness

    def restart_witness(self) -> None:
        """Rebuild the court's witness from its key and state file."""
        self._start_witness()

    async def _start_interceptor(self) -> None:
        self.interceptor_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.interceptor_dir / "ledger.sqlite", signer=self.ledger_signer)
        witnessing = Witnessing(
            self.ledger,
            log_key=self.ledger_signer.verifier(),
            witness_key=self.witness_cosigner.verifier(),
        )
        known_users = {u.user for u in self.cast.users}
        known_devices = set(self.credentials)
        archiving = {e.name for e in self.cast.enterprises if e.archive}
        log = self._log(INTERCEPTOR_ID)
        plane = Plane(INTERCEPTOR_ID, "interceptor", log)
        links = InterceptorLinks(plane)
        core = ScopedInterceptor(
            self.ledger,
            trust=self.bench.trust,
            policy=self.bench.policy,
            agency=self.agency.keys.public,
            directory=lambda fmt, v: v in (known_devices if fmt == "device" else known_users),
            archives=lambda ent: ent in archiving,
            events=log,
            clock_ms=now_ms,
            witnessing=witnessing,
        )
        self.interceptor = InterceptorService(
            core,
            self.broker.host,
            self.broker.port,
            self._password(INTERCEPTOR_ID),
            log,
            deliver=links.deliver,
            ask_enterprise=links.ask_enterprise,
            witness=links.witness,
            plane=plane,
        )
        InterceptorControls(self.interceptor, plane)
        if not self._interceptor_stop_registered:
            self._stack.push_async_callback(self._stop_interceptor)
            self._interceptor_stop_registered = True
        try:
            await self.interceptor.start()
        except WitnessError:
            # It refuses to act on this ledger; the reason is its `interceptor.halted`.
            self.ledger.close()
            self.ledger = None
            self.interceptor = None
            raise

    async def _stop_interceptor(self) -> None:
        if self.interceptor is not None:
            await self.interceptor.stop()
        if self.ledger is not None:
            self.ledger.close()

    async def restart_interceptor(self) -> None:
        """Stop the interceptor and start a new one built from its files alone: the
        ledger (the source of truth) and its keys."""
        await self._stop_interceptor()
        self.interceptor = None
        await self._start_interceptor()

    async def _stop_relay(self) -> None:
        if self.relay is not None:
            await self.relay.stop()

    # -- what the lab and the operator do, by control -------------------------------------

    def _lab(self) -> Party:
        if self.lab is None:
            raise RuntimeError("the system is not started")
        return self.lab

    async def submit_warrant(self, warrant: bytes) -> Decision:
        """The court hands a warrant (its bytes, as they are) to the interceptor (HI-1)."""
        assert self.court is not None
        return await self.court.submit(warrant)

    async def verify_ledger(self) -> dict[str, Any]:
        """Oversight (the court) verifies the audit ledger: a witnessed checkpoint, then
        every entry and checkpoint of a copy against the court's pinned keys and its
        witness's latest cosigned checkpoint (``ledger.verified``, ...)."""
        answer = await self._lab().call(COURT_ID, "ledger.verify", timeout=120.0)
        return {"ok": answer["verified"], "problems": answer["problems"],
                "entries": answer["entries"], "checkpoints": answer["checkpoints"],
                "witnessed": answer["witnessed"]}

    async def set_li(self, mode: str) -> None:
        """The operator flips the relay's LI switch (off | scoped | blanket)."""
        if self.operator is None:
            raise RuntimeError("the system is not started")
        await self.operator.call(RELAY_ID, "li.set", mode=mode)
        self.li = mode

    async def set_backdoor(self, backdoor: str) -> dict[str, Any]:
        """The lab has the government mandate a back door: its keys made, a build signed
        by the vendor and installed by every device (or, ghost, a government device
        listed for every user). Returns the government's answer."""
        was = self.backdoor
        answer = await self._lab().call(TAP_ID, "mandate.set", backdoor=backdoor,
                                        timeout=600.0)
        self.backdoor = backdoor
        if "ghost" in (was, backdoor):
            # The directory changed: every device fetches its lists afresh.
            await asyncio.gather(*(self._lab().call(d, "directory.refresh")
                                   for d in list(self.devices)))
        return answer

    async def ghosts_installed(self) -> None:
        """(The ghost mandate is complete when ``set_backdoor`` returns.)"""

    async def monitor(self) -> list[dict[str, Any]]:
        """Every device audits its own user's directory entries; the alarms raised."""
        answers = await asyncio.gather(
            *(self._lab().call(d, "kt.monitor", timeout=60.0) for d in list(self.devices))
        )
        return [a for answer in answers for a in answer["alarms"]]

    async def gossip(self) -> list[dict[str, Any]]:
        """Devices compare the checkpoints they hold, pairwise (the lab carries the
        notes): a split view shows."""
        lab = self._lab()
        devices = list(self.devices)
        notes = {d: (await lab.call(d, "kt.checkpoint"))["note"] for d in devices}
        alarms = []
        for a in devices:
            for b in devices:
                if a == b or notes[b] is None:
                    continue
                answer = await lab.call(a, "kt.compare", note=notes[b])
                if answer.get("alarm") is not None:
                    alarms.append(answer["alarm"])
        return alarms

    def alarms(self) -> list[dict[str, Any]]:
        """Key-transparency alarms raised so far, one per (user, device, kind)."""
        seen: dict[tuple[str, str, str], dict[str, Any]] = {}
        for e in self.events.events(kind="device.kt_alarm"):
            seen.setdefault(
                (e["user"], e["device"], e["alarm_kind"]),
                {
                    "user": e["user"],
                    "device": e["device"],
                    "t": e["time"],
                    "kind": e["alarm_kind"],
                    "reason": e["reason"],
                    "raised_by": e["actor"],
                },
            )
        return list(seen.values())

    def _enrolled_devices(self, user: str) -> set[str]:
        """What the user's enterprise says it enrolled (provisioned with the device, as
        its activation would: devices learn it from there, not from the relay, or
        monitoring the relay's log would prove nothing)."""
        ent = self.enterprises[enterprise_of(user)]
        return {c.device for c in ent.devices.values() if c.user == user}

    async def start_device(self, device: str) -> Device:
        log = self._log(device)
        plane = Plane(device, "device", log)
        dev = Device(
            self.credentials[device],
            self.broker.host,
            self.broker.port,
            self.state_dir / f"{device}.sqlite",
            log,
            # Its enterprise's IT policy (the archive key it pushes) and the pins a
            # client ships with: the directory's checkpoint key, the vendor's key.
            archive_key=self.servers[enterprise_of(device)].archive_public_key,
            directory_vkey=self.relay.directory_vkey if self.relay is not None else None,
            enrolled=functools.partial(self._enrolled_devices, user_of(device)),
            plane=plane,
        )
        DeviceControls(dev, plane, vendor_key=self.vendor.public_key)
        await dev.start()
        self.devices[device] = dev
        return dev

    async def stop_device(self, device: str) -> None:
        await self.devices.pop(device).stop()

    async def stop(self) -> None:
        for dev in list(self.devices):
            await self.stop_device(dev)
        await self._stack.aclose()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def __aenter__(self) -> System:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- traffic -----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event["kind"] == "device.received":
            delivery = self.deliveries.get((event["from"], event["id"]))
            if delivery is not None:
                delivery.delivered_to.add(event["actor"])

    async def send(self, device: str, to_user: str, text: str) -> Delivery:
        """The lab has ``device`` send ``text`` to ``to_user`` (a ``send`` control).

        TextTooLong if the text is longer than the device's build lets a user send: the
        app refuses it before anything is sent (the device itself refuses the control
        too, for a lab that does not ask first)."""
        if device in self.devices:
            check_text(text.encode(), self.devices[device].build)
        answer = await self._lab().call(device, "send", to_user=to_user, text=text,
                                        timeout=60.0)
        sent = Sent(id=str(answer["id"]), devices=[str(d) for d in answer["devices"]])
        expected = {d for d in sent.devices if d in self.credentials}
        delivery = Delivery(sent, device, to_user, text, set(), expected)
        # Events from a fast delivery may already be in; count them.
        for e in self.events.events(kind="device.received"):
            if e["from"] == device and e["id"] == sent.id:
                delivery.delivered_to.add(e["actor"])
        self.deliveries[(device, sent.id)] = delivery
        return delivery

    async def wait_delivered(self, delivery: Delivery, timeout: float = 10.0) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not delivery.complete:
                    await asyncio.sleep(0.005)
        return delivery.complete

    @property
    def messages_sent(self) -> int:
        return len(self.deliveries)

    @property
    def messages_delivered(self) -> int:
        return sum(1 for d in self.deliveries.values() if d.complete)
