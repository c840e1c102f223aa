"""The whole system in one process: broker, relay, enterprise servers and devices.

``System`` is what the demo narrates, and what tests, the dashboard and benchmarks
drive. Each part is the same code that runs as a separate service in docker-compose;
only the wiring (one asyncio loop, one event log) is shared here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.crypto import DeviceCrypto
from clients.device import Device, Sent, emit_alarm
from clients.enterprise import EnterpriseServer
from doormat.broker import start_broker
from doormat.broker.accounts import Account
from doormat.cast import Cast, enrol
from doormat.legal import LegalWorld
from interceptor.agency import Agency
from interceptor.government import Government
from interceptor.ledger import (
    DEFAULT_ORIGIN,
    Ledger,
    WitnessError,
    Witnessing,
    witness_now,
)
from interceptor.ledger import verify as verify_ledger_file
from interceptor.scoped import ScopedInterceptor
from interceptor.service import InterceptorService
from interceptor.tap import Tap
from interceptor.witness import DEFAULT_WITNESS_NAME, Witness
from relay.service import RelayService
from wire.events import Event, EventLog, now_ms
from wire.ids import INTERCEPTOR_ID, RELAY_ID, TAP_ID, enterprise_of, user_of
from wire.li.checks import Decision
from wire.note import Signer
from wire.witness import Cosigner, WitnessResponse

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
    ) -> None:
        self.cast = cast
        self.broker_kind = broker
        self.li = li
        # The back door is a mandate: the government's keys, and the client build every
        # device must run because of it.
        self.government = Government(backdoor)
        self.build = self.government.client_build()
        self.events = events if events is not None else EventLog()
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
        # The legal side: court, agency, policy; the interceptor and its audit ledger.
        self.legal = LegalWorld()
        self.agency = Agency(self.legal.agency, self.events)
        self.ledger_signer = Signer.generate(DEFAULT_ORIGIN)
        self.ledger: Ledger | None = None
        # Separate directories model separate trust domains: the interceptor's (its
        # ledger) and the court's (the witness's key and state, and the court's pinned
        # copy of the ledger's verifier key). Whoever can rewrite the ledger cannot
        # rewrite what the court holds - in a deployment they are separate machines;
        # here, separate directories of one process.
        self.interceptor_dir = self.state_dir / "interceptor"
        self.court_dir = self.state_dir / "court"
        self.witness_cosigner = Cosigner.generate(DEFAULT_WITNESS_NAME)
        self.witness: Witness | None = None
        self.interceptor: InterceptorService | None = None
        self._interceptor_stop_registered = False
        self._ghosts: asyncio.Task[None] | None = None

    # -- set-up ------------------------------------------------------------------------

    def account(self, username: str) -> Account:
        return self.enrolment.account(username)

    async def start(self) -> None:
        self.broker = await self._stack.enter_async_context(
            start_broker(self.broker_kind, self.accounts, self.state_dir / "broker")
        )
        self.relay = RelayService(
            host=self.broker.host,
            port=self.broker.port,
            password=self.account(RELAY_ID).password,
            db_path=self.state_dir / "relay.sqlite",
            events=self.events,
            li_mode=self.li,
        )
        await self.relay.start()
        self._stack.push_async_callback(self._stop_relay)
        # The government's tap is always connected; the relay's LI switch decides
        # whether anything reaches it, and its keys decide what it can read.
        self.tap = Tap(
            self.broker.host,
            self.broker.port,
            self.account(TAP_ID).password,
            self.state_dir / "tap.sqlite",
            self.events,
            readers=self.government.readers,
        )
        await self.tap.start()
        self._stack.push_async_callback(self.tap.stop)
        self._stack.push_async_callback(self._stop_servers)
        for name in self.enterprises:
            await self._start_enterprise(name)
        await self._start_interceptor()
        # Devices start a few dozen at a time: every start is a connect, a key
        # publication and a sync on this one event loop (shared with the relay and,
        # by default, the broker), and a thousand at once push single starts past
        # Device.start's timeout although the whole finishes sooner in batches.
        gate = asyncio.Semaphore(DEVICE_START_CONCURRENCY)

        async def start_one(device: str) -> None:
            async with gate:
                await self.start_device(device)

        await asyncio.gather(*(start_one(d) for d in self.credentials))
        if self.government.backdoor == "ghost":
            self._ghosts = asyncio.get_running_loop().create_task(self._install_ghosts())
            await self._ghosts

    async def _start_enterprise(self, name: str) -> None:
        server = EnterpriseServer(
            self.enterprises[name],
            self.account(name).password,
            self.broker.host,
            self.broker.port,
            self.events,
            self.state_dir,
            deliver_cc=functools.partial(self._cc_from_archive, name),
        )
        self.servers[name] = server
        await server.start()

    async def _stop_servers(self) -> None:
        for server in list(self.servers.values()):
            await server.stop()

    async def restart_enterprise(self, name: str) -> None:
        """Stop an enterprise server and start a new one built from its files alone
        (its archive, and the authorisations it serves)."""
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

    def restart_witness(self) -> None:
        """Rebuild the court's witness from its key and state file."""
        self._start_witness()

    async def _start_interceptor(self) -> None:
        if self.witness is None:
            self._start_witness()
        assert self.witness is not None
        self.interceptor_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.interceptor_dir / "ledger.sqlite", signer=self.ledger_signer)
        witnessing = Witnessing(
            self.ledger,
            log_key=self.ledger_signer.verifier(),
            witness_key=self.witness_cosigner.verifier(),
        )
        known_users = {u.user for u in self.cast.users}
        known_devices = set(self.credentials)
        core = ScopedInterceptor(
            self.ledger,
            trust=self.legal.trust,
            policy=self.legal.policy,
            agency=self.legal.agency.public,
            directory=lambda fmt, v: v in (known_devices if fmt == "device" else known_users),
            archives=lambda ent: ent in self.servers and self.servers[ent].archive is not None,
            events=self.events,
            clock_ms=now_ms,
            witnessing=witnessing,
        )
        self.interceptor = InterceptorService(
            core,
            self.broker.host,
            self.broker.port,
            self.account(INTERCEPTOR_ID).password,
            self.events,
            deliver=self.agency.receive,
            ask_enterprise=self._ask_enterprise,
            witness=self._witness_call,
        )
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

    def _witness_call(self, request: bytes) -> WitnessResponse:
        """The interceptor asks the court's witness to cosign (a direct call here; a
        control message when the court runs as its own service)."""
        assert self.witness is not None
        return self.witness.add_checkpoint(request)

    def verify_ledger(self) -> dict[str, Any]:
        """Oversight verifies the audit ledger: the interceptor checkpoints it and gets
        the checkpoint witnessed; then every entry and checkpoint is checked against the
        court's pinned keys (not the interceptor's) and the witness's latest cosigned
        checkpoint. Reports ``ledger.verified``, and ``ledger.tamper_detected`` at the
        first problem (``ledger.rollback_detected`` when the witness shows it)."""
        if self.ledger is None or self.witness is None:
            raise RuntimeError("this system has no running audit ledger")
        problems: list[str] = []
        if self.interceptor is not None and self.interceptor.core.witnessing is not None:
            try:
                witness_now(self.interceptor.core.witnessing, self._witness_call)
            except WitnessError as exc:
                problems.append(f"witness: {exc}")
        keys = [
            line.strip()
            for line in self.pinned_keys_path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        report = verify_ledger_file(
            self.ledger.path, keys, witnessed=self.witness.latest(self.ledger.origin)
        )
        problems += [str(p) for p in report.problems]
        ok = not problems
        self.events.emit(
            "oversight",
            "ledger.verified",
            ok=ok,
            problems=problems,
            entries=report.entries,
            checkpoints=report.checkpoints,
            witnessed=None if report.witnessed is None else report.witnessed.size,
        )
        if not ok:
            where = problems[0].split(":", 1)[0]
            self.events.emit(
                "oversight", "ledger.tamper_detected", location=where, problems=problems
            )
            if any(p.startswith("witness:") and "rolled back" in p for p in problems):
                self.events.emit(
                    "oversight", "ledger.rollback_detected", problems=problems
                )
        return {"ok": ok, "problems": problems, "entries": report.entries}

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

    def _cc_from_archive(self, enterprise: str, authorisation_id: str, sealed: list[bytes]) -> None:
        """CC an enterprise exported, handed to the interceptor running *now* (which
        forwards it to the agency only under a task it runs)."""
        if self.interceptor is not None:
            self.interceptor.archive_export(enterprise, authorisation_id, sealed)

    def _ask_enterprise(self, enterprise: str, warrant: bytes) -> None:
        """The interceptor serves the warrant on the enterprise, which checks it itself."""
        self.servers[enterprise].accept_warrant(
            warrant,
            agency=self.legal.agency.public,
            trust=self.legal.trust,
            policy=self.legal.policy,
            now=now_ms() // 1000,
        )

    async def submit_warrant(self, warrant: bytes) -> Decision:
        """Hand a warrant (JSON bytes) to the scoped interceptor (HI-1)."""
        assert self.interceptor is not None
        return await self.interceptor.submit(warrant)

    async def _stop_relay(self) -> None:
        if self.relay is not None:
            await self.relay.stop()

    # -- switches -----------------------------------------------------------------------

    def set_li(self, mode: str) -> None:
        """Flip the relay's LI switch (off | scoped | blanket) while the system runs."""
        assert self.relay is not None
        self.relay.li.set_mode(mode)
        self.li = mode

    def set_backdoor(self, backdoor: str) -> None:
        """Impose a mandate: every device from now on runs the mandated client build, or
        (ghost) the directory lists a government device for every user - installed in
        the background; ``await system.ghosts_installed()`` waits for it."""
        self.government.mandate(backdoor)
        self.build = self.government.client_build()
        for dev in self.devices.values():
            dev.set_build(self.build)
        if backdoor == "ghost" and self._ghosts is None:
            self._ghosts = asyncio.get_running_loop().create_task(self._install_ghosts())
        elif backdoor != "ghost" and self._ghosts is not None and self.relay is not None:
            # Lifting the mandate: the directory stops listing the ghosts (their log
            # entries stay: the log is append-only).
            self.relay.relay.set_ghost(False)
            self._ghosts = None
            for dev in self.devices.values():
                dev.forget_device_lists()
        self.events.emit(
            "government", "government.mandate", backdoor=backdoor, build=self.build.name
        )

    async def ghosts_installed(self) -> None:
        if self._ghosts is not None:
            await self._ghosts

    async def _install_ghosts(self) -> None:
        """The ghost back door: the relay's directory lets the government add a device
        of its own to every user, and unmodified clients will encrypt to it."""
        assert self.relay is not None and self.tap is not None
        self.relay.relay.set_ghost(True)
        for user in self.cast.users:
            ghost = f"{user.user}.gov"
            if ghost in self.government.ghosts:
                continue
            crypto = DeviceCrypto.create(ghost, one_time_prekeys=50)
            await self.tap.link.request("enrol", user=user.user, device=ghost)
            await self.tap.link.request("publish", device=ghost, **crypto.publish_material())
            self.government.ghosts[ghost] = crypto
        for dev in self.devices.values():
            dev.forget_device_lists()

    def _enrolled_devices(self, user: str) -> set[str]:
        """What the user's enterprise says it enrolled (devices learn it from there, not
        from the relay, or monitoring the relay's log would prove nothing)."""
        ent = self.enterprises[enterprise_of(user)]
        return {c.device for c in ent.devices.values() if c.user == user}

    async def monitor(self) -> list[dict[str, Any]]:
        """Every device audits its own user's directory entries; the alarms raised."""
        alarms = []
        for dev in list(self.devices.values()):
            alarms += [a.to_json() for a in await dev.monitor()]
        return alarms

    def gossip(self) -> list[dict[str, Any]]:
        """Devices compare the checkpoints they hold, pairwise: a split view shows."""
        alarms = []
        devices = [d for d in self.devices.values() if d.kt is not None]
        for a in devices:
            for b in devices:
                note = b.kt.gossip() if b.kt is not None else None
                if a is b or note is None or a.kt is None:
                    continue
                alarm = a.kt.compare(note)
                if alarm is not None:
                    emit_alarm(self.events, a.id, alarm)
                    alarms.append(alarm.to_json())
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

    async def start_device(self, device: str) -> Device:
        dev = Device(
            self.credentials[device],
            self.broker.host,
            self.broker.port,
            self.state_dir / f"{device}.sqlite",
            self.events,
            build=self.build,
            archive_key=self.servers[enterprise_of(device)].archive_public_key,
            directory_vkey=self.relay.directory_vkey if self.relay is not None else None,
            enrolled=functools.partial(self._enrolled_devices, user_of(device)),
        )
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
        sent = await self.devices[device].send(to_user, text)
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

    def relay_capture(self) -> AsyncIterator[bytes] | Any:
        assert self.relay is not None
        return self.relay.captured()
