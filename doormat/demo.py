"""``doormat demo``: the whole system in one process, narrated.

A seeded conversation runs between the cast's users; for each message the narration
shows what the sender wrote, what the relay saw (metadata and ciphertext only), and
what each receiving device read. It ends with the exposure report, computed by
trying to open everything each observer captured with the keys it holds.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doormat.cast import Cast, default_cast, generated_cast
from doormat.exposure import ObserverResult, assess, report
from doormat.narrate import Narrator
from doormat.system import Delivery, System
from wire.events import Event

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
    say.say(
        f"Broker: {opts.broker}. Cast: "
        + "; ".join(
            f"{e.name} ({'compliance archive' if e.archive else 'no archive'}): "
            + ", ".join(f"{u.user} [{'+'.join(u.devices)}]" for u in e.users[:4])
            + (f" and {len(e.users) - 4} more" if len(e.users) > 4 else "")
            for e in cast.enterprises
        )
    )
    async with System(cast, broker=opts.broker, state_dir=opts.state) as system:
        relay_seen: dict[tuple[str, str], list[Event]] = {}

        def on_event(e: Event) -> None:
            if e["kind"] == "relay.accepted":
                relay_seen.setdefault((e["from"], e["id"]), []).append(e)

        system.events.subscribe(on_event)
        say.say(
            f"{len(system.devices)} devices enrolled by their enterprises and published "
            "their prekeys to the relay's directory."
        )
        conversation = script(cast, opts.messages, opts.seed)
        say.heading(f"{len(conversation)} messages, end-to-end encrypted")
        for i, (device, to_user, text) in enumerate(conversation, 1):
            delivery = await system.send(device, to_user, text)
            await system.wait_delivered(delivery)
            _narrate_message(
                say, i, delivery, relay_seen.get((device, delivery.sent.id), []), system
            )
        # The relay's view: the envelopes it stored, tried with every key it holds (none).
        relay = assess("relay", system.relay_capture(), readers=())
        observers: list[ObserverResult] = [relay]
        result = report(
            scenario={
                "broker": opts.broker,
                "seed": opts.seed,
                "messages": opts.messages,
                "cast": cast.describe() if not opts.users else {"users": opts.users},
                "li": "off",
                "backdoor": "none",
            },
            messages_sent=system.messages_sent,
            messages_delivered=system.messages_delivered,
            observers=observers,
            elapsed_s=round(time.monotonic() - started, 3),
        )
    # The report is printed even with --quiet: it is the result.
    _narrate_report(Narrator(say.out, "always" if say.color else "never"), result)
    if opts.report is not None:
        opts.report.write_text(json.dumps(result, indent=2) + "\n")
        say.say(f"Report written to {opts.report}")
    return result


def _narrate_message(
    say: Narrator, i: int, delivery: Delivery, relay_events: list[Event], system: System
) -> None:
    sender_user, _, device_name = delivery.sender.rpartition(".")
    say.say(say.paint(f"#{i}", "dim"))
    say.party(
        sender_user,
        f"({device_name}) writes to {delivery.to_user}: {say.paint(repr(delivery.text), 'green')}",
        "green",
    )
    for e in relay_events:
        say.party(
            "relay",
            f"sees {e['from']} -> {e['to']}, {e['bucket']}-byte ciphertext "
            f"{say.paint(_excerpt(str(e.get('excerpt', ''))), 'yellow')}  [cannot read: no key]",
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
    missing = set(delivery.sent.devices) - delivery.delivered_to
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
