"""``doormat demo``: the whole system in one process, narrated.

A seeded conversation runs between the cast's users; for each message the narration
shows what the sender wrote, what the relay saw (metadata and ciphertext only), and
what each receiving device read. It ends with the exposure report.

The demo is a client of the plane (docs/architecture.md), like ``doormat dashboard
--attach``: it plays the conversation as the lab (``send`` controls to the devices), has
the lab order the scoped case (``warrant.apply``) and the attacks (the attacker's
``attack.*``), narrates from what the observer reads of the parties' events, and builds
the report from the rows the observers computed of themselves (``measure``), combined
by ``doormat.exposure.aggregate``, which holds no key. The one-process ``System`` only
starts the parties; the demo reaches them through ``Console``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doormat.attacks import DeviceImage, first_contact_exposure
from doormat.cast import Cast, default_cast, generated_cast
from doormat.exposure import MEASURED_SERVICES, VICTIM_USER_INDEX, aggregate, report
from doormat.narrate import Narrator
from doormat.system import System
from infra.observer import Observer, gather_rows
from infra.plane import Party
from wire.events import Event, now_ms
from wire.ids import ATTACKER_ID, COURT_ID, user_of
from wire.li.checks import Decision

LINES = (
    "The quarterly numbers are in, see the shared folder.",
    "Can we move the supplier call to 3pm?",
    "Board meeting notes attached. Please keep them internal.",
    "The merger term sheet needs your signature by Friday.",
    "Customer escalation from Rotterdam: shipment delayed again.",
    "New VPN certificates roll out tonight.",
    "Lunch at the usual place?",
    "Legal says the patent filing goes out Monday.",
    "Payroll run is approved.",
    "Please review the draft press release before noon.",
    "The audit team arrives next Tuesday.",
    "Travel to Singapore is booked, itinerary to follow.",
)


@dataclass
class DemoOptions:
    broker: str = "embedded"
    seed: int = 1
    messages: int = 12
    users: int | None = None
    report: Path | None = None
    state: Path | None = None
    color: str = "auto"
    quiet: bool = False
    li: str = "off"
    backdoor: str = "none"
    active_relay: bool = False


def script(cast: Cast, n: int, seed: int) -> list[tuple[str, str, str]]:
    """A seeded conversation: (sending device, recipient user, text) triples."""
    rng = random.Random(seed)
    users = cast.users
    lines = []
    for _ in range(n):
        sender, recipient = rng.sample(users, 2)
        device = rng.choice(sender.device_ids)
        lines.append((device, recipient.user, rng.choice(LINES)))
    return lines


def _excerpt(data: str, n: int = 16) -> str:
    return data[:n] + "…" if len(data) > n else data


@dataclass
class Message:
    """One message the lab had a device send, and what the observer saw of it."""

    sender: str
    to_user: str
    text: str
    id: str
    devices: list[str]
    expected: set[str]  # the enrolled devices it was sealed for (not a ghost)
    delivered_to: set[str] = field(default_factory=set)


@dataclass
class Console:
    """A person's seat on the plane: the observer (reads every party's events, asks for
    their rows) and the lab (gives the lab's controls). It holds no key. The demo needs
    nothing else, so it can play on any deployment whose observer and lab it can log in
    as (the one-process System here)."""

    observer: Observer
    lab: Party
    cast: Cast
    # (kind, sender, id) -> events, from the observer's mirror
    seen: dict[tuple[str, str, str], list[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.devices = set(self.cast.devices)
        for event in self.observer.mirror.events():
            self._index(event)
        self.observer.mirror.subscribe(self._index)

    def _index(self, event: Event) -> None:
        sender, msg_id = event.get("from"), event.get("id")
        if isinstance(sender, str) and isinstance(msg_id, str):
            self.seen.setdefault((event["kind"], sender, msg_id), []).append(event)

    def events_of(self, kind: str, message: Message) -> list[Event]:
        return self.seen.get((kind, message.sender, message.id), [])

    async def send(self, device: str, to_user: str, text: str) -> Message:
        answer = await self.lab.call(device, "send", to_user=to_user, text=text, timeout=60.0)
        devices = [str(d) for d in answer["devices"]]
        return Message(device, to_user, text, str(answer["id"]), devices,
                       {d for d in devices if d in self.devices})

    async def delivered(self, message: Message, timeout: float = 10.0) -> bool:
        """Until every enrolled device it was sealed for showed it and the relay
        accepted every envelope (as the observer reads their ``device.received`` and
        the relay's ``relay.accepted``), or ``timeout``."""

        def done() -> bool:
            message.delivered_to = {
                e["actor"] for e in self.events_of("device.received", message)
            }
            accepted = len(self.events_of("relay.accepted", message))
            return message.expected <= message.delivered_to and accepted >= len(
                message.devices
            )

        try:
            await self.observer.wait(done, timeout)
        except TimeoutError:
            return False
        return True


async def run_demo(opts: DemoOptions, narrator: Narrator | None = None) -> dict[str, Any]:
    say = narrator or Narrator(quiet=opts.quiet, color=opts.color)
    cast = generated_cast(opts.users) if opts.users else default_cast()
    started = time.monotonic()
    say.heading("doormat: who can read what")
    say.say(f"Broker: {opts.broker}. LI switch: {opts.li}. Back door: {opts.backdoor}.")
    say.say(
        "Cast: "
        + "; ".join(
            f"{e.name} ({'compliance archive' if e.archive else 'no archive'}): "
            + ", ".join(f"{u.user} [{'+'.join(u.devices)}]" for u in e.users[:4])
            + (f" and {len(e.users) - 4} more" if len(e.users) > 4 else "")
            for e in cast.enterprises
        )
    )
    _narrate_mandate(say, opts.backdoor)
    async with System(
        cast, broker=opts.broker, state_dir=opts.state, li=opts.li, backdoor=opts.backdoor
    ) as system:
        assert system.observer is not None and system.lab is not None
        victim = cast.users[min(VICTIM_USER_INDEX, len(cast.users) - 1)].device_ids[0]
        # An image before any message: it holds every prekey the first contacts will use
        # (the report compares it with the image at the theft: what deletion prevents).
        # (One-process only, like the two steps below: not yet on the plane.)
        early = _image(system, victim, 0, "before-any-message")
        console = Console(system.observer, system.lab, cast)
        result = await play(console, opts, say, started)
        held = system.attacker.loot.image
        assert held is not None and held.image.device == victim
        first_contact = await _first_contact(system, held.image, early, held.before)
        result = _with(result, "first_contact", first_contact, after="forward_secrecy")
        if opts.active_relay:
            result["active_relay"] = await _active_relay(system, say)
    # The report is printed even with --quiet: it is the result.
    _narrate_report(Narrator(say.out, "always" if say.color else "never"), result)
    if opts.report is not None:
        opts.report.write_text(json.dumps(result, indent=2) + "\n")
        say.say(f"Report written to {opts.report}")
    return result


async def play(
    console: Console, opts: DemoOptions, say: Narrator, started: float
) -> dict[str, Any]:
    """The seeded conversation, the scoped case and the attacks, through ``console``;
    the report from the observers' rows."""
    cast, lab = console.cast, console.lab
    say.say(
        f"{len(cast.devices)} devices enrolled by their enterprises and published "
        "their prekeys to the relay's directory."
    )
    conversation = script(cast, opts.messages, opts.seed)
    victim = cast.users[min(VICTIM_USER_INDEX, len(cast.users) - 1)].device_ids[0]
    imaged = False
    sent: list[Message] = []
    say.heading(f"{len(conversation)} messages, end-to-end encrypted")
    for i, (device, to_user, text) in enumerate(conversation, 1):
        if i == len(conversation) // 2 + 1 and opts.li == "scoped":
            await scoped_case(lab, say)
        if i == len(conversation) // 2 + 1:
            await lab.call(ATTACKER_ID, "attack.image-device", device=victim, timeout=120.0)
            imaged = True
            say.say(
                say.paint(
                    f"-- an attacker extracts an image of {victim} now, after "
                    f"{i - 1} messages --",
                    "magenta",
                )
            )
        message = await console.send(device, to_user, text)
        await console.delivered(message)
        await _settle(console, message, opts.li)
        if opts.li == "scoped":
            await asyncio.sleep(0.05)  # the agency's copies travel relay -> interceptor
        sent.append(message)
        _narrate_message(say, i, message, console)
    if not imaged:
        await lab.call(ATTACKER_ID, "attack.image-device", device=victim, timeout=120.0)
    await asyncio.sleep(0.2)  # let the last X2/X3 records and journal copies land
    # What an attacker holds at the end: a copy of the relay's store, and the escrow
    # key if the government has one to steal.
    await lab.call(ATTACKER_ID, "attack.breach-relay", timeout=120.0)
    await lab.call(ATTACKER_ID, "attack.steal-escrow-key", timeout=120.0)
    ledger = await _close_ledger(lab)
    # Every device audits its own user's entries in the directory log.
    await asyncio.gather(*(lab.call(d, "kt.monitor", timeout=60.0) for d in cast.devices))
    alarms = kt_alarms(console.observer.mirror.events(kind="device.kt_alarm"))
    services = [*MEASURED_SERVICES[:3], *(e.name for e in cast.enterprises),
                *MEASURED_SERVICES[3:]]
    rows = await gather_rows(console.observer, services)
    counts = aggregate(rows)
    return report(
        {
            "broker": opts.broker,
            "seed": opts.seed,
            "messages": opts.messages,
            "cast": cast.describe() if not opts.users else {"users": opts.users},
            "li": opts.li,
            "backdoor": opts.backdoor,
        },
        counts,
        alarms=alarms,
        forward_secrecy=counts.forward_secrecy,
        ledger=ledger,
        elapsed_s=round(time.monotonic() - started, 3),
    )


def kt_alarms(events: list[Event]) -> list[dict[str, Any]]:
    """Key-transparency alarms, one per (user, device, kind)."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        seen.setdefault(
            (e["user"], e["device"], e["alarm_kind"]),
            {"user": e["user"], "device": e["device"], "t": e["time"],
             "kind": e["alarm_kind"], "reason": e["reason"], "raised_by": e["actor"]},
        )
    return list(seen.values())


def _image(system: System, device: str, taken_at: int, label: str) -> DeviceImage:
    return DeviceImage.take(
        device,
        system.state_dir / f"{device}.sqlite",
        system.state_dir / "stolen" / f"{device}.{label}.sqlite",
        taken_at,
    )


async def _first_contact(
    system: System, image: DeviceImage, early: DeviceImage, before: set[tuple[str, str]]
) -> dict[str, Any]:
    """The victim's device lives on for three weeks (its clock moved forward): its signed
    prekey is rotated on schedule and the replaced one deleted after its grace period;
    then a third image. What each image opens of the first contacts before the theft."""
    assert system.relay is not None
    device = system.devices[image.device]
    rotated = now_ms() + int(device.signed_prekey_rotation * 1000)
    await device.maintain_prekeys(rotated)  # rotated; the old one kept for late messages
    await device.maintain_prekeys(rotated + int(device.signed_prekey_grace * 1000))  # deleted
    after = _image(system, image.device, image.taken_at, "after-rotation")
    return first_contact_exposure(system.relay.captured(), before, image, early, after)


async def _active_relay(system: System, say: Narrator) -> dict[str, Any]:
    """The relay operator forges a first message "from" another user's device, to a
    device with the identity check off (the old behaviour), then to one with it on."""
    from doormat.active_relay import run_active_relay

    users = system.cast.users
    if len(users) < 4:
        return {"skipped": "needs four users"}
    say.heading("An active relay forges a first message")
    out = {}
    for label, (target, impersonated), check in (
        ("check_off", (users[2], users[3]), False),
        ("check_on", (users[0], users[1]), True),
    ):
        device = system.devices[target.device_ids[0]]
        device.check_identities = check
        try:
            attack = await run_active_relay(
                system, target=device.id, impersonate=impersonated.device_ids[0]
            )
        finally:
            device.check_identities = True
        out[label] = attack.to_json()
        read = attack.observer.readable if attack.observer is not None else 0
        say.party(
            "relay",
            f"forges a first message from {attack.impersonated} to {attack.target} "
            f"(identity check {'on' if check else 'OFF'}): "
            + (
                f"shown as {user_of(attack.impersonated)}'s; the reply is READ by the relay "
                f"({read} message) and unreadable on {attack.impersonated}"
                if attack.forged_shown
                else f"REFUSED, alarm naming {attack.alarms[0]['user'] if attack.alarms else '?'}"
                f"; the relay reads {read}, {attack.impersonated} reads the reply"
            ),
            "red" if attack.forged_shown else "green",
        )
    return out


def _with(result: dict[str, Any], key: str, value: Any, *, after: str) -> dict[str, Any]:
    """``result`` with ``key`` placed right after ``after`` (the report's order)."""
    out: dict[str, Any] = {}
    for k, v in result.items():
        out[k] = v
        if k == after:
            out[key] = value
    out.setdefault(key, value)
    return out


# The scoped case's targets: one user whose enterprise archives, one whose does not.
SCOPED_TARGETS = ("user:alice@acme", "user:carol@globex")


async def scoped_case(lab: Party, say: Narrator) -> None:
    """Four refused warrants, then one accepted: narrated step by step. The lab applies
    to the court, whose approvers sign and which hands each to the interceptor."""
    say.heading("A scoped, warranted case (no back door)")
    # A window that starts on a fresh second: everything sent so far is outside it.
    await asyncio.sleep(1.01 - time.time() % 1)
    now = int(time.time())
    window = {"not_before": now, "not_after": now + 3600}
    good = {"case": "OP-DOORMAT-1", "targets": list(SCOPED_TARGETS),
            "categories": ["IRI", "CC"], **window}
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("forged (target changed after signing)", "warrant.apply", {**good, "tamper": True}),
        ("expired", "warrant.apply",
         {"case": "OP-OLD", "targets": ["user:alice@acme"], "categories": ["IRI"],
          "not_before": now - 7200, "not_after": now - 3600}),
        ("wildcard target", "warrant.apply",
         {"case": "OP-ALL", "targets": ["user:*"], "categories": ["IRI", "CC"], **window}),
        ("valid: exact targets, both approvals, one hour", "warrant.apply", good),
        ("replayed (the same warrant again)", "warrant.replay", {}),
    ]
    for label, op, args in attempts:
        answer = await lab.call(COURT_ID, op, timeout=60.0, **args)
        decision = Decision.from_json(answer["decision"])
        if decision.accepted:
            say.party(
                "interceptor", say.paint(f"ACCEPTED {label}: {decision.message}", "green"), "green"
            )
        else:
            say.party(
                "interceptor", f"REFUSED {label}: {decision.reason} - {decision.message}", "yellow"
            )
    say.say(
        "Each decision was written to the audit ledger before anything was provisioned. "
        f"Targets: {', '.join(SCOPED_TARGETS)}; acme runs a disclosed archive, globex "
        "does not."
    )


async def _close_ledger(lab: Party) -> dict[str, Any]:
    """A witnessed checkpoint, then the whole ledger verified by oversight (the court):
    with its pinned keys and its witness's latest cosigned checkpoint."""
    result = await lab.call(COURT_ID, "ledger.verify", timeout=120.0)
    return {"entries": result["entries"], "verified": result["verified"]}


async def _settle(console: Console, message: Message, li: str) -> None:
    """Wait (briefly) until the observer saw the tap capture every envelope of the
    message, so the narration shows what it captured. The report does not depend on
    this wait."""
    want = len(message.devices) if li == "blanket" else 0

    def captured() -> bool:
        got = [e for e in console.events_of("tap.captured", message) if e["channel"] == "mirror"]
        return len(got) >= want

    with contextlib.suppress(TimeoutError):
        await console.observer.wait(captured, timeout=1.0)


MANDATES = {
    "none": "Clients are the standard build: keys exist only on the users' devices.",
    "escrow": (
        "Mandated change to every client: each message key is also wrapped (HPKE) to the "
        "government's escrow public key and sent along in the envelope (LEAF-style)."
    ),
    "ghost": (
        "Mandated change to the directory: it silently lists a government device for every "
        "user; unmodified clients encrypt to it as to any of the user's devices."
    ),
    "global-key": (
        "Mandated change to every client: one symmetric key, baked into the app, also "
        "seals every message - the same key on every device of every enterprise."
    ),
}


def _narrate_mandate(say: Narrator, backdoor: str) -> None:
    say.say(say.paint(MANDATES.get(backdoor, ""), "magenta"))


def _narrate_message(say: Narrator, i: int, message: Message, console: Console) -> None:
    sender_user, _, device_name = message.sender.rpartition(".")
    say.say(say.paint(f"#{i}", "dim"))
    say.party(
        sender_user,
        f"({device_name}) writes to {message.to_user}: {say.paint(repr(message.text), 'green')}",
        "green",
    )
    for e in console.events_of("relay.accepted", message):
        say.party(
            "relay",
            f"sees {e['from']} -> {e['to']}, {e['bucket']}-byte ciphertext "
            f"{say.paint(_excerpt(str(e.get('excerpt', ''))), 'yellow')}  [cannot read: no key]",
            "yellow",
        )
    for e in console.events_of("agency.received", message):
        if e.get("readable"):
            say.party(
                "agency",
                f"{e['category']} from {e['source']}: READS "
                f"{say.paint(repr(e.get('text')), 'red')}",
                "red",
            )
        else:
            what = "metadata" if e["category"] == "IRI" else "ciphertext it cannot open"
            say.party(
                "agency",
                f"{e['category']} from {e['source']}: {e['from']} -> {e['to']} ({what})",
                "yellow",
            )
    for e in console.events_of("tap.captured", message):
        if e.get("readable"):
            say.party(
                "tap",
                f"captured {e['from']} -> {e['to']} and READS: "
                f"{say.paint(repr(e.get('text')), 'red')}",
                "red",
            )
        else:
            say.party(
                "tap",
                f"captured {e['from']} -> {e['to']}  [cannot read: no key opens it]",
                "yellow",
            )
    received = console.events_of("device.received", message)
    for dev in sorted(message.delivered_to):
        texts = [e["text"] for e in received if e["actor"] == dev]
        say.party(
            dev.split("@")[0],
            f"({dev.rpartition('.')[2]}) reads: "
            f"{say.paint(repr(texts[0] if texts else '?'), 'cyan')}",
            "cyan",
        )
    missing = message.expected - message.delivered_to
    for dev in sorted(missing):
        say.party(dev, say.paint("NOT DELIVERED", "red", "bold"), "red")


def _narrate_report(say: Narrator, result: dict[str, Any]) -> None:
    say.heading("Exposure report")
    say.say(f"messages sent: {result['messages_sent']}, delivered: {result['messages_delivered']}")
    say.say(f"  {'observer':<24} {'captured':>9} {'readable':>9} {'metadata':>9}")
    for name, o in result["observers"].items():
        verdict = "reads nothing" if o["readable"] == 0 else "READS PLAINTEXT"
        style = "green" if o["readable"] == 0 else "red"
        say.say(
            f"  {name:<24} {o['captured']:>9} {o['readable']:>9} {o['metadata_records']:>9}  "
            + say.paint(verdict, style)
        )
    say.say(
        "Counts come from real decryption attempts with the keys each observer holds; "
        "the relay holds none."
    )
    _narrate_cost(say, result)


def _narrate_cost(say: Narrator, result: dict[str, Any]) -> None:
    sent = result["messages_sent"]
    obs = result["observers"]
    backdoor = result["scenario"]["backdoor"]
    fs = result["forward_secrecy"]
    say.heading("What it cost")
    tap = obs.get("blanket-tap")
    if tap is not None:
        say.say(
            f"The blanket tap captured {tap['captured']} of {sent} messages and read "
            f"{tap['readable']}"
            + (
                " - end-to-end encryption holds."
                if tap["readable"] == 0
                else " - through the back door."
            )
        )
    escrow = obs.get("attacker:escrow-key")
    if escrow is not None:
        say.say(
            say.paint(
                f"Whoever steals the one escrow key reads {escrow['readable']} of {sent} messages: "
                "every user of every enterprise, past and future.",
                "red",
            )
        )
    agency = obs.get("agency")
    if agency is not None:
        say.say(
            f"The agency holds {agency['metadata_records']} metadata records about "
            f"{agency['captured']} messages of its targets inside the warrant's window, and "
            f"reads {agency['readable']}: those a disclosed enterprise archive could export. "
            "The rest stayed end-to-end ciphertext - and no one else's messages were touched."
        )
    image = obs["attacker:device-image"]
    say.say(
        f"One stolen image of {fs['device']} (taken after message "
        f"{fs['image_taken_after_message']}) reads {image['readable']} of {sent} messages."
    )
    say.say(
        f"Of the {fs['messages_before']} messages sent before the theft, the ratchet state "
        f"alone opens {fs['readable_with_ratchet_alone']} (forward secrecy); everything in "
        f"the image opens {fs['readable_with_whole_image']}"
        + (
            " - the global key baked into the app undoes forward secrecy for everyone."
            if backdoor == "global-key"
            else "."
        )
    )
    fc = result.get("first_contact")
    if fc:
        say.say(
            f"Of the {fc['messages']} first-contact messages {fc['device']} received before "
            f"the theft ({fc['without_one_time_prekey']} without a one-time prekey), the "
            f"image opens {fc['opened_by_image']}; an image taken before they arrived, "
            f"holding every key they used, opens {fc['opened_if_no_key_were_deleted']}: "
            "deleting a one-time prekey once used is what closes them. Three weeks later, "
            f"its signed prekey rotated and the old one deleted, an image opens "
            f"{fc['opened_after_rotation']}."
        )
    active = result.get("active_relay") or {}
    if "check_off" in active and "check_on" in active:
        off, on = active["check_off"], active["check_on"]
        say.say(
            say.paint(
                f"An active relay forged first messages. From {off['impersonated']} to "
                f"{off['target']}, identity check off: shown, and the relay read "
                f"{off['observer']['readable']} reply.",
                "red",
            )
            + say.paint(
                f" From {on['impersonated']} to {on['target']}, check on: refused "
                f"({len(on['alarms'])} alarm), and the relay read {on['observer']['readable']}.",
                "green",
            )
        )
    alarms = result.get("alarms") or []
    if alarms:
        users = sorted({a["user"] for a in alarms})
        say.say(
            say.paint(
                f"Key transparency raised {len(alarms)} alarm(s): a device nobody "
                f"enrolled appeared for {', '.join(users)}.",
                "red",
            )
        )
