"""``doormat chat USER``: type messages as one of the cast's users.

The whole system starts in this process (as in ``doormat demo``); you are USER's first
device, the other users are simple bots that answer. Every line you send shows what the
relay saw and what the other side read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from clients.limits import TextTooLong
from doormat.cast import default_cast
from doormat.cli import CommandError
from doormat.commands.args import broker
from doormat.demo import LINES
from doormat.narrate import Narrator
from doormat.system import System
from infra.link import LinkError
from wire.events import Event
from wire.ids import user_of

HELP = """Type  USER: TEXT  to send (USER may be short: 'bob' for bob@acme).
Commands: /who (the cast), /history (your device's history), /quit."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        help="chat interactively as one user of the default cast",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("user", metavar="USER", help="who you are, e.g. alice@acme (or just alice)")
    p.add_argument("--broker", type=broker, default="embedded")
    p.add_argument("--seed", type=int, default=1, help="seed of the bots' answers")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.set_defaults(func=run)


def resolve_user(name: str, users: list[str]) -> str:
    if name in users:
        return name
    matches = [u for u in users if u.split("@")[0] == name]
    if len(matches) == 1:
        return matches[0]
    raise CommandError(f"unknown user {name!r}; the cast is: {', '.join(users)}")


def run(args: argparse.Namespace) -> int:
    cast = default_cast()
    users = [u.user for u in cast.users]
    me = resolve_user(args.user, users)
    asyncio.run(chat(me, args.broker, args.seed, Narrator(color=args.color)))
    return 0


async def chat(me: str, broker: str, seed: int, say: Narrator) -> None:
    cast = default_cast()
    users = [u.user for u in cast.users]
    my_device = cast.user(me).device_ids[0]
    rng = random.Random(seed)
    async with System(cast, broker=broker) as system:
        loop = asyncio.get_running_loop()
        answers: set[asyncio.Task[object]] = set()

        def on_event(e: Event) -> None:
            if e["kind"] == "relay.accepted":
                say.party(
                    "relay",
                    f"sees {e['from']} -> {e['to']}, {e['bucket']}-byte ciphertext "
                    "[cannot read: no key]",
                    "yellow",
                )
            elif e["kind"] == "device.received":
                who = "you" if e["actor"] == my_device else e["actor"]
                say.party(
                    who, f"read from {e['from_user']}: {say.paint(repr(e['text']), 'cyan')}", "cyan"
                )
                reader = user_of(e["actor"])
                if reader == me or e["from_user"] != me:
                    return
                # A bot answers once per message: from the first of its devices.
                if e["actor"] == cast.user(reader).device_ids[0]:
                    task = loop.create_task(system.send(e["actor"], me, rng.choice(LINES)))
                    answers.add(task)
                    task.add_done_callback(answers.discard)

        system.events.subscribe(on_event)
        say.say(f"You are {me} on {my_device}. {HELP}")
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/who":
                say.say(", ".join(users))
                continue
            if line == "/history":
                for h in system.devices[my_device].history():
                    arrow = "->" if h.direction == "out" else "<-"
                    say.say(f"  {arrow} {h.peer_user}: {h.text.decode(errors='replace')}")
                continue
            to, sep, text = line.partition(":")
            if not sep or not text.strip():
                say.say(HELP)
                continue
            try:
                target = resolve_user(to.strip(), users)
            except CommandError as exc:
                say.say(str(exc))
                continue
            try:
                delivery = await system.send(my_device, target, text.strip())
            except TextTooLong as exc:  # refused before anything was sealed or sent
                say.say(say.paint(f"not sent: {exc}", "red"))
                continue
            except LinkError as exc:
                say.say(say.paint(f"not sent: {exc}", "red"))
                continue
            if not await system.wait_delivered(delivery):
                say.say(say.paint("not delivered yet (the relay keeps it)", "red"))
            await asyncio.sleep(0.3)  # let the bot's answer print before the prompt
