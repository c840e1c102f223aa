"""The dashboard's hub: one running ``System``, its events fanned out to the pages.

The hub lives in the same asyncio loop as the system. It subscribes to the system's
``EventLog``, turns each event into pane lines (``panes.route``), keeps the recent ones
for pages that connect later, and pushes everything to every connected page through a
queue per page (the app streams them as server-sent events). It also owns the controls:
LI switch, back door, sending as a user, warrants, the attackers, the operator's
search, the exposure matrix (recomputed in a worker thread, debounced) and reset (a
fresh ``System`` from the factory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from clients.limits import TextTooLong
from doormat.active_relay import NAME as ACTIVE_RELAY
from doormat.active_relay import ActiveRelay, run_active_relay
from doormat.attacker import read_fields
from doormat.dashboard import observe, oversight
from doormat.dashboard.panes import STATUSES, panes_of, route
from doormat.lab.engine import LabEngine
from doormat.system import System
from infra.link import LinkError
from interceptor.ledger import LedgerError
from interceptor.measure import measure_envelopes
from interceptor.scoped import InterceptorHalted
from relay.li import MODES
from wire.events import Event
from wire.ids import user_of
from wire.li.builds import BACKDOORS

log = logging.getLogger(__name__)

RECENT = 800  # events a page that connects late gets
QUEUE = 2000  # messages a slow page may fall behind before it is dropped (it reconnects)
# Events after which the exposure matrix is recomputed (debounced).
EXPOSURE_KINDS = ("relay.accepted", "tap.captured", "government.mandate", "relay.li_mode",
                  "agency.received", "relay.ghost", "attacker.read")
MAX_TEXT = 2000

WARRANT_NOTE = (
    "This system has no scoped interceptor: the form shows what a warrant holds, but "
    "there is nobody to submit it to."
)


class ActionError(Exception):
    """A control the page used was refused (bad input, or the system said no)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _jsonable(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(event, default=str))  # an event is an object
    return out


class Hub:
    def __init__(
        self,
        factory: Callable[[], System],
        *,
        system: System | None = None,
        lab: LabEngine | None = None,
        exposure_delay: float = 1.0,
    ) -> None:
        """``factory`` makes a fresh (not started) System, for the start and each reset.
        ``system``: an already running one to show first (not stopped by the hub)."""
        self._factory = factory
        self._system = system
        self._owned = system is None
        self._cast: Any = system.cast if system is not None else None
        self.lab = lab
        self.exposure_delay = exposure_delay
        self.generation = 0
        self._seq = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._exposure: dict[str, Any] | None = None
        self._exposure_lock = asyncio.Lock()
        self._exposure_task: asyncio.Task[None] | None = None
        self._exposure_dirty = False
        self._reset_lock = asyncio.Lock()
        self._attack_lock = asyncio.Lock()
        # The active relay: the identities the operator forged in this system (their
        # keys measure its exposure row) and the devices' identity check (on, as built).
        self._active: list[ActiveRelay] = []
        self.identity_check = True
        self._closed = False
        if lab is not None:
            lab.subscribe(self._on_lab)

    # -- life cycle ---------------------------------------------------------------------

    @property
    def system(self) -> System:
        if self._system is None:
            raise ActionError("the system is not running", 503)
        return self._system

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        if self._system is None:
            system = self._factory()
            self._attach(system)
            await system.start()
            self._system = system
            self._owned = True
        else:
            self._attach(self._system)
        self._schedule_exposure()

    def _attach(self, system: System) -> None:
        self.generation += 1
        generation = self.generation
        self._cast = system.cast
        self._recent.clear()
        self._exposure = None
        self._active = []
        self.identity_check = all(d.check_identities for d in system.devices.values())

        def listener(event: Event) -> None:
            self._threadsafe(self._on_event, generation, event)

        system.events.subscribe(listener)
        for event in system.events.events():
            self._on_event(generation, event, broadcast=False)
        if self.lab is not None:
            self.lab.attach(system.events)

    async def reset(self) -> dict[str, Any]:
        """Stop the system (if the hub started it) and start a fresh one."""
        async with self._reset_lock:
            old, owned = self._system, self._owned
            self._system = None
            self.generation += 1  # events of the old system are ignored from now on
            if self._exposure_task is not None:
                self._exposure_task.cancel()
                self._exposure_task = None
            if old is not None and owned:
                with contextlib.suppress(Exception):
                    await old.stop()
            system = self._factory()
            self._attach(system)
            try:
                await system.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await system.stop()
                raise
            self._system = system
            self._owned = True
            snap = self.snapshot()
            self._broadcast(snap)
            self._schedule_exposure()
            return {"generation": self.generation}

    async def stop(self) -> None:
        """End every page's stream and stop the system if the hub started it."""
        self._closed = True
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        if self._exposure_task is not None:
            self._exposure_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._exposure_task
        if self._system is not None and self._owned:
            await self._system.stop()
        self._system = None

    # -- events -------------------------------------------------------------------------

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is None or threading.get_ident() == self._thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_event(self, generation: int, event: Event, broadcast: bool = True) -> None:
        if generation != self.generation:
            return
        self._seq += 1
        msg = {"type": "event", "seq": self._seq, "event": _jsonable(event),
               "items": route(event)}
        self._recent.append(msg)
        if broadcast:
            self._broadcast(msg)
            kind = event.get("kind", "")
            if kind in ("relay.li_mode", "government.mandate"):
                modes = self.modes()
                # The relay emits before System.set_li records the new mode.
                if kind == "relay.li_mode" and isinstance(event.get("mode"), str):
                    modes["li"] = event["mode"]
                if kind == "government.mandate" and isinstance(event.get("backdoor"), str):
                    modes["backdoor"] = event["backdoor"]
                self._broadcast({"type": "modes", **modes})
            if kind in EXPOSURE_KINDS:
                self._schedule_exposure()

    def _on_lab(self, note: dict[str, Any]) -> None:
        def push() -> None:
            if self.lab is None:
                return
            self._broadcast({"type": "lab", "solved": note, "summary": self.lab_summary()})

        self._threadsafe(push)

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:
                # Too far behind: end its stream; the page reconnects and gets a snapshot.
                self._queues.discard(q)
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                q.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A page's queue: first a snapshot, then every message; None ends the stream."""
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=QUEUE)
        if self._closed:
            q.put_nowait(None)
            return q
        q.put_nowait(self.snapshot())
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(q)

    # -- state ----------------------------------------------------------------------------

    def modes(self) -> dict[str, Any]:
        s = self._system
        return {
            "li": s.li if s else "off",
            "backdoor": s.government.backdoor if s else "none",
            "identity_check": self.identity_check,
        }

    def warrant_status(self) -> dict[str, Any]:
        enabled = oversight.warrants_available(self._system)
        ledger = self._system is not None and getattr(self._system, "ledger", None) is not None
        return {"enabled": enabled, "note": "" if enabled else WARRANT_NOTE, "ledger": ledger}

    def lab_summary(self) -> dict[str, Any] | None:
        if self.lab is None:
            return None
        b = self.lab.board()
        return {k: b[k] for k in ("solved", "total", "score", "max_score")}

    def snapshot(self) -> dict[str, Any]:
        s = self._system
        cast = s.cast if s is not None else self._cast
        return {
            "type": "snapshot",
            "generation": self.generation,
            "seq": self._seq,
            "enterprises": [
                {"name": e.name, "archive": e.archive,
                 "users": [{"user": u.user, "devices": u.device_ids} for u in e.users]}
                for e in cast.enterprises
            ],
            "devices": cast.devices,
            "users": [u.user for u in cast.users],
            "panes": panes_of(cast),
            "statuses": list(STATUSES),
            "choices": {"li": list(MODES), "backdoor": list(BACKDOORS)},
            **self.modes(),
            "events": list(self._recent),
            "exposure": self._exposure,
            "warrant": self.warrant_status(),
            "lab": self.lab_summary(),
            "victim": observe.victim_device(s) if s is not None else None,
            "running": s is not None,
        }

    # -- the exposure matrix ------------------------------------------------------------------

    def _schedule_exposure(self) -> None:
        if self._closed or self._system is None:
            return
        if self._exposure_task is not None and not self._exposure_task.done():
            self._exposure_dirty = True
            return
        self._exposure_task = asyncio.get_running_loop().create_task(self._exposure_loop())

    async def _exposure_loop(self) -> None:
        while True:
            self._exposure_dirty = False
            await asyncio.sleep(self.exposure_delay)
            try:
                await self.exposure_now()
            except ActionError:
                return
            except Exception:  # a failed measurement must not take the hub down
                log.exception("exposure matrix: computation failed")
                return
            if not self._exposure_dirty:
                return

    async def exposure_now(self) -> dict[str, Any]:
        """Recompute the exposure matrix now (real decryption, in a worker thread)."""
        async with self._exposure_lock:
            generation = self.generation
            system = self.system
            extra = [observe.active_relay_row(system, self._active)] if self._active else []
            result = await observe.exposure(system, extra)
            if generation != self.generation:
                raise ActionError("the system was reset during the computation", 409)
            previous = self._exposure
            if previous is not None:
                before = {o["name"]: o for o in previous["observers"]}
                for o in result["observers"]:
                    p = before.get(o["name"])
                    o["previous"] = None if p is None else {
                        k: p[k] for k in ("captured", "readable", "metadata_records")}
            self._exposure = result
            self._broadcast({"type": "exposure", "exposure": result})
            return result

    @property
    def exposure(self) -> dict[str, Any] | None:
        return self._exposure

    # -- controls -----------------------------------------------------------------------

    async def set_li(self, mode: Any) -> dict[str, Any]:
        if mode not in MODES:
            raise ActionError(f"unknown LI mode {mode!r}: use one of {', '.join(MODES)}")
        await self.system.set_li(mode)
        return self.modes()

    async def set_backdoor(self, backdoor: Any) -> dict[str, Any]:
        if backdoor not in BACKDOORS:
            raise ActionError(
                f"unknown back door {backdoor!r}: use one of {', '.join(BACKDOORS)}")
        await self.system.set_backdoor(backdoor)
        return self.modes()

    async def send(self, device: Any, to_user: Any, text: Any) -> dict[str, Any]:
        system = self.system
        if not isinstance(device, str) or device not in system.devices:
            raise ActionError(f"no running device {device!r}")
        if not isinstance(to_user, str) or to_user not in [u.user for u in system.cast.users]:
            raise ActionError(f"no user {to_user!r}")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise ActionError(f"the message must be 1 to {MAX_TEXT} characters")
        try:
            delivery = await system.send(device, to_user, text)
        except TextTooLong as exc:
            # Refused at the sender, before anything was sealed: say why, with the limit.
            raise ActionError(str(exc), 413) from None
        except (OSError, TimeoutError, RuntimeError, LinkError) as exc:
            raise ActionError(f"sending failed: {exc}", 409) from exc
        return {"id": delivery.sent.id, "devices": delivery.sent.devices}

    async def search(self, query: Any) -> dict[str, Any]:
        if not isinstance(query, str):
            raise ActionError("'query' must be text")
        try:
            return await observe.search_relay(self.system, query)
        except ValueError as exc:
            raise ActionError(str(exc)) from None

    async def attack(self, attack: Any, device: Any = None) -> dict[str, Any]:
        if attack == "escrow-key":
            return await observe.steal_escrow(self.system)
        if attack == "device-image":
            try:
                return await observe.image_device(self.system, str(device))
            except ValueError as exc:
                raise ActionError(str(exc)) from None
        if attack == "active-relay":
            return await self.active_relay()
        raise ActionError(
            f"unknown attack {attack!r}: use escrow-key, device-image or active-relay")

    async def set_identity_check(self, on: Any) -> dict[str, Any]:
        """Every device's check of a sender's new or changed identity key (key
        transparency and verified safety numbers, issue 12): on as built; off shows what
        a device did before it (takes any new key silently)."""
        if not isinstance(on, bool):
            raise ActionError("'on' must be true or false")
        for device in self.system.devices.values():
            device.check_identities = on
        self.identity_check = on
        modes = self.modes()
        self._broadcast({"type": "modes", **modes})
        return modes

    async def active_relay(self, target: Any = None, impersonate: Any = None) -> dict[str, Any]:
        """The relay operator as an active attacker (``doormat.active_relay``): it forges
        a first message "from" ``impersonate`` to ``target`` (devices; the default pair
        below) under an identity it made, lets the target's user reply, and reads what
        it can. Runs against the system as it is (the identity check as switched).
        Reports ``attacker.read`` (``attack: active-relay``) and adds the operator's row
        to the exposure matrix."""
        system = self.system
        users = system.cast.users
        # The default pair, as ``doormat demo --active-relay`` has it: with the check on,
        # alice's phone "from" bob's; off, carol's "from" dave's. A device that once took
        # a forged key keeps its session with the forger (the check guards what comes
        # next, not what was accepted before it), so the two runs do not share a victim.
        first = 2 if not self.identity_check and len(users) >= 4 else 0
        target = users[first].device_ids[0] if target is None else target
        impersonate = users[first + 1].device_ids[0] if impersonate is None else impersonate
        for name, dev in (("target", target), ("impersonate", impersonate)):
            if not isinstance(dev, str) or dev not in system.devices:
                raise ActionError(f"{name}: no running device {dev!r}")
        if user_of(target) == user_of(impersonate):
            raise ActionError("the target and the impersonated device must be of two users")
        async with self._attack_lock:
            generation = self.generation
            try:
                name = user_of(impersonate).split("@")[0]
                result = await run_active_relay(
                    system, target=target, impersonate=impersonate,
                    forged_text=f"It's {name}, new phone. Send me the figures?")
            except (TimeoutError, ValueError, RuntimeError, OSError, LinkError) as exc:
                raise ActionError(f"the active relay failed: {exc!r}", 409) from None
            if generation != self.generation:
                raise ActionError("the system was reset during the attack", 409)
            assert result.attacker is not None and system.relay is not None
            self._active.append(result.attacker)
            # What this forgery read, measured again by real decryption, as attacker.read
            # reports it for the other attacks (no key; one sample of what it opened).
            raws = list(system.relay.captured())
            measured = measure_envelopes(ACTIVE_RELAY, raws, [result.attacker])
            fields = read_fields(measured, raws, None)
            fields["keys"] = f"forged identity of {impersonate}"
            alarm = result.alarms[0] if result.alarms else {}
            summary = {
                "impersonated": impersonate,
                "impersonated_user": user_of(impersonate),
                "identity_check": result.checked,
                "forged_shown": result.forged_shown,
                "reply_read_by_attacker": result.reply_read_by_attacker,
                "reply_read_by_peer": result.reply_read_by_peer,
                "alarms": len(result.alarms),
                "alarm_user": alarm.get("user"),
                "alarm_device": alarm.get("device"),
                "alarm_kind": alarm.get("alarm_kind"),
            }
            system.events.emit(observe.OPERATOR, "attacker.read", attack="active-relay",
                               device=target, **fields, **summary)
        return {"attack": "active-relay", "target": target, **summary,
                **{k: v for k, v in fields.items() if k != "sample"}}

    async def submit_warrant(self, form: dict[str, Any]) -> dict[str, Any]:
        """Draft the form as a warrant with the system's court (signed by the approvers
        ticked, altered after signing if asked) and submit it: ``System.submit_warrant``
        checks it, logs the decision and acts. Returns the decision."""
        system = self.system
        if not oversight.warrants_available(system):
            raise ActionError(WARRANT_NOTE, 501)
        targets = form.get("targets")
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        categories = form.get("categories")
        approvals = form.get("approvals", ["executive", "judicial"])
        starts, duration = form.get("starts_in_s", 0), form.get("duration_s", 86400)
        checks = (
            (isinstance(targets, list) and 0 < len(targets) <= 16
             and all(isinstance(t, str) and 0 < len(t) <= 200 for t in targets),
             "targets: 1 to 16, e.g. user:carol@globex"),
            (isinstance(categories, list) and categories
             and all(c in ("IRI", "CC") for c in categories), "categories: IRI and/or CC"),
            (isinstance(approvals, list)
             and all(a in ("executive", "judicial") for a in approvals), "approvals"),
            (isinstance(starts, int) and not isinstance(starts, bool)
             and abs(starts) <= 10 * 365 * 86400, "starts_in_s: whole seconds"),
            (isinstance(duration, int) and not isinstance(duration, bool)
             and 0 <= duration <= 10 * 365 * 86400, "duration_s: whole seconds"),
            (isinstance(form.get("tamper", False), bool), "tamper: true or false"),
        )
        for ok, name in checks:
            if not ok:
                raise ActionError(f"bad warrant field: {name}")
        fields = {"targets": targets, "categories": categories, "approvals": approvals,
                  "starts_in_s": starts, "duration_s": duration,
                  "tamper": bool(form.get("tamper", False))}
        try:
            data = oversight.draft_warrant(system, fields)
        except oversight.OversightError as exc:
            raise ActionError(str(exc)) from None
        try:
            decision = await system.submit_warrant(data)
        except (LedgerError, InterceptorHalted) as exc:
            raise ActionError(
                f"the interceptor will not act: {exc} (reset the system to start again)", 409
            ) from None
        answer = decision.to_json() if hasattr(decision, "to_json") else decision
        return answer if isinstance(answer, dict) else {"result": str(answer)}

    async def verify_ledger(self) -> dict[str, Any]:
        try:
            return await oversight.verify_ledger(self.system)
        except oversight.OversightError as exc:
            raise ActionError(str(exc), 409) from None

    async def tamper_ledger(self) -> dict[str, Any]:
        try:
            return oversight.tamper_ledger(self.system)
        except oversight.OversightError as exc:
            raise ActionError(str(exc), 409) from None

    async def rollback_ledger(self) -> dict[str, Any]:
        try:
            return oversight.rollback_ledger(self.system)
        except oversight.OversightError as exc:
            raise ActionError(str(exc), 409) from None
