"""``doormat demo``: the whole system in one process, narrated.

A seeded conversation runs between the cast's users; for each message the narration
shows what the sender wrote, what the relay saw (metadata and ciphertext only), and
what each receiving device read. It ends with the exposure report, computed by
trying to open everything each observer captured with the keys it holds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doormat.attacks import DeviceImage, first_contact_exposure
from doormat.cast import Cast, default_cast, generated_cast
from doormat.exposure import (
    VICTIM_USER_INDEX,
    forward_secrecy,
    observers_of,
    report,
    take_image,
)
from doormat.narrate import Narrator
from doormat.system import Delivery, System
from wire.events import Event, now_ms
from wire.ids import user_of

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
        seen: dict[str, dict[tuple[str, str], list[Event]]] = {
            "relay.accepted": {},
            "tap.captured": {},
            "agency.received": {},
        }

        def on_event(e: Event) -> None:
            if e["kind"] in seen:
                seen[e["kind"]].setdefault((e["from"], e["id"]), []).append(e)

        system.events.subscribe(on_event)
        say.say(
            f"{len(system.devices)} devices enrolled by their enterprises and published "
            "their prekeys to the relay's directory."
        )
        conversation = script(cast, opts.messages, opts.seed)
        victim = cast.users[min(VICTIM_USER_INDEX, len(cast.users) - 1)].device_ids[0]
        # An image before any message: it holds every prekey the first contacts will use
        # (the report compares it with the image at the theft: what deletion prevents).
        early = _image(system, victim, 0, "before-any-message")
        image: DeviceImage | None = None
        say.heading(f"{len(conversation)} messages, end-to-end encrypted")
        for i, (device, to_user, text) in enumerate(conversation, 1):
            if i == len(conversation) // 2 + 1 and opts.li == "scoped":
                await scoped_case(system, say)
            if i == len(conversation) // 2 + 1:
                image = take_image(system, victim, i - 1)
                say.say(
                    say.paint(
                        f"-- an attacker extracts an image of {victim} now, after "
                        f"{i - 1} messages --",
                        "magenta",
                    )
                )
            delivery = await system.send(device, to_user, text)
            await system.wait_delivered(delivery)
            await _settle(system, delivery, opts.li)
            if opts.li == "scoped":
                await asyncio.sleep(0.05)  # the agency's copies travel relay -> interceptor
            key = (device, delivery.sent.id)
            _narrate_message(say, i, delivery, {k: v.get(key, []) for k, v in seen.items()}, system)
        if image is None:
            image = take_image(system, victim, len(conversation))
        await asyncio.sleep(0.2)  # let the last X2/X3 records and journal copies land
        observers = observers_of(system, image)
        ledger = _close_ledger(system, say)
        # Every device audits its own user's entries in the directory log.
        await system.monitor()
        alarms = system.alarms()
        before = {(d.sender, d.sent.id) for d in list(system.deliveries.values())[: image.taken_at]}
        fs = forward_secrecy(system, image, before)
        first_contact = await _first_contact(system, image, early, before)
        result = report(
            scenario={
                "broker": opts.broker,
                "seed": opts.seed,
                "messages": opts.messages,
                "cast": cast.describe() if not opts.users else {"users": opts.users},
                "li": opts.li,
                "backdoor": opts.backdoor,
            },
            messages_sent=system.messages_sent,
            messages_delivered=system.messages_delivered,
            observers=observers,
            alarms=alarms,
            forward_secrecy=fs,
            first_contact=first_contact,
            ledger=ledger,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        if opts.active_relay:
            result["active_relay"] = await _active_relay(system, say)
    # The report is printed even with --quiet: it is the result.
    _narrate_report(Narrator(say.out, "always" if say.color else "never"), result)
    if opts.report is not None:
        opts.report.write_text(json.dumps(result, indent=2) + "\n")
        say.say(f"Report written to {opts.report}")
    return result


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


# The scoped case's targets: one user whose enterprise archives, one whose does not.
SCOPED_TARGETS = ("user:alice@acme", "user:carol@globex")


async def scoped_case(system: System, say: Narrator) -> None:
    """Four refused warrants, then one accepted: narrated step by step."""
    say.heading("A scoped, warranted case (no back door)")
    # A window that starts on a fresh second: everything sent so far is outside it.
    await asyncio.sleep(1.01 - time.time() % 1)
    now = int(time.time())
    legal = system.legal
    good = legal.warrant(
        case="OP-DOORMAT-1",
        targets=list(SCOPED_TARGETS),
        categories=["IRI", "CC"],
        not_before=now,
        not_after=now + 3600,
    )
    forged = json.loads(good.encode())
    forged["targets"][0]["value"] = "bob@acme"  # changed after both approvers signed
    attempts = [
        ("forged (target changed after signing)", json.dumps(forged).encode()),
        (
            "expired",
            legal.warrant(
                case="OP-OLD",
                targets=["user:alice@acme"],
                categories=["IRI"],
                not_before=now - 7200,
                not_after=now - 3600,
            ).encode(),
        ),
        (
            "wildcard target",
            legal.warrant(
                case="OP-ALL",
                targets=["user:*"],
                categories=["IRI", "CC"],
                not_before=now,
                not_after=now + 3600,
            ).encode(),
        ),
        ("valid: exact targets, both approvals, one hour", good.encode()),
        ("replayed (the same warrant again)", good.encode()),
    ]
    for label, data in attempts:
        decision = await system.submit_warrant(data)
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


def _close_ledger(system: System, say: Narrator) -> dict[str, Any]:
    """A witnessed checkpoint, then the whole ledger verified as oversight would: with
    the court's pinned keys and its witness's latest cosigned checkpoint."""
    result = system.verify_ledger()
    return {"entries": result["entries"], "verified": result["ok"]}


async def _settle(system: System, delivery: Delivery, li: str) -> None:
    """Wait (briefly) until the tap has every envelope of the message, so the narration
    shows what it captured. The report does not depend on this wait."""
    if system.tap is None:
        return
    want = len(delivery.sent.devices) if li == "blanket" else 0
    for _ in range(100):
        got = sum(
            1
            for e in system.events.events(kind="tap.captured")
            if e["id"] == delivery.sent.id and e["channel"] == "mirror"
        )
        if got >= want:
            return
        await asyncio.sleep(0.01)


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


def _narrate_message(
    say: Narrator,
    i: int,
    delivery: Delivery,
    seen: dict[str, list[Event]],
    system: System,
) -> None:
    sender_user, _, device_name = delivery.sender.rpartition(".")
    say.say(say.paint(f"#{i}", "dim"))
    say.party(
        sender_user,
        f"({device_name}) writes to {delivery.to_user}: {say.paint(repr(delivery.text), 'green')}",
        "green",
    )
    for e in seen["relay.accepted"]:
        say.party(
            "relay",
            f"sees {e['from']} -> {e['to']}, {e['bucket']}-byte ciphertext "
            f"{say.paint(_excerpt(str(e.get('excerpt', ''))), 'yellow')}  [cannot read: no key]",
            "yellow",
        )
    for e in seen["agency.received"]:
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
    for e in seen["tap.captured"]:
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
    readers = sorted(delivery.delivered_to)
    for dev in readers:
        texts = [
            e["text"]
            for e in system.events.events(kind="device.received", actor=dev)
            if e["id"] == delivery.sent.id
        ]
        say.party(
            dev.split("@")[0],
            f"({dev.rpartition('.')[2]}) reads: "
            f"{say.paint(repr(texts[0] if texts else '?'), 'cyan')}",
            "cyan",
        )
    missing = delivery.expected - delivery.delivered_to
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
