"""``doormat device run``: one device as a long-running service, optionally a bot.

It runs a ``clients.device.Device`` with its keys and history in ``--state/DEVICE.sqlite``:
it publishes its prekeys, receives, decrypts and acknowledges, and prints what it reads
(``device.received`` with the plaintext: the device's own view). With ``--policy-dir``
it journals to its enterprise's archive if the enterprise pushed one
(``doormat.services.policy``). With ``--bot SECONDS`` it sends, every SECONDS, a seeded
message to another user of the accounts file; a failed send is a ``bot.failed`` event,
not an exit. The lifecycle is the runner's (``doormat.services.runner``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doormat.cli import CommandError
from doormat.services import runner
from doormat.services.policy import read_policy
from wire.events import EventLog

if TYPE_CHECKING:
    from clients.device import Device
    from clients.enterprise import Credentials

# What the bots say (seeded choice); each message also names its sender and number.
PHRASES = (
    "the quarterly numbers are in",
    "lunch at noon?",
    "can you review the contract draft",
    "meeting moved to 3pm",
    "the shipment left the warehouse",
    "call me when you land",
    "new prices attached",
    "who has the key to room 4?",
)


@dataclass
class DeviceService(runner.Service["Device"]):
    kind = "device"
    creds: Credentials
    store: Path  # its keys, sessions and history
    archive_key: bytes | None  # the enterprise's, if it pushed one (the IT policy)
    policy: str  # the policy it runs with, in words
    bot: float  # seconds between the bot's messages (0: no bot)
    seed: int
    others: list[str]  # the users the bot may write to

    @property
    def actor(self) -> str:
        return self.creds.device

    def starting(self) -> dict[str, Any]:
        from wire.ids import enterprise_of

        archive = enterprise_of(self.actor) if self.archive_key is not None else None
        return {"bot_interval": self.bot, "seed": self.seed, "policy": self.policy,
                "archive": archive}

    def make(self, events: EventLog) -> Device:
        from clients.device import Device

        return Device(self.creds, self.host, self.port, self.store, events,
                      archive_key=self.archive_key)

    async def work(self, part: Device, stop: asyncio.Event, events: EventLog) -> None:
        if not self.bot:
            await stop.wait()
            return
        from infra.link import LinkError

        device = self.actor
        rng = random.Random(f"{self.seed}:{device}")
        n = 0
        while not await runner.sleep_or_stop(stop, self.bot):
            n += 1
            to_user = rng.choice(self.others)
            text = f"{rng.choice(PHRASES)} ({device} #{n})"
            try:
                await runner.until_stopped(stop, part.send(to_user, text))
            except runner.Stopped:
                break
            except (LinkError, TimeoutError, KeyError, ValueError) as exc:
                events.emit(device, "bot.failed", to_user=to_user, n=n, reason=str(exc))


def run_device(args: argparse.Namespace) -> int:
    from clients.enterprise import Credentials
    from wire.ids import check_device, enterprise_of, is_device, user_of

    device = runner.checked_id(args.device, check_device,
                               "give the DEVICE id (or set DOORMAT_DEVICE)")
    accounts, own = runner.login(args, device, "device")
    user = user_of(device)
    creds = Credentials(device, user, own.password)
    others = sorted({user_of(a.username) for a in accounts
                     if a.role == "device" and is_device(a.username)} - {user})
    if args.bot and not others:
        raise CommandError(f"{args.accounts}: no other user to send to")
    state = runner.make_folder(Path(args.state), f"--state {args.state}")
    enterprise = enterprise_of(device)
    archive_key = None if args.policy_dir is None else read_policy(args.policy_dir, enterprise)
    if archive_key is not None:
        policy = f"journals to {enterprise}'s archive"
    elif args.policy_dir is not None:
        policy = f"no archive: {enterprise} pushed no archive key"
    else:
        policy = "no archive: no policy dir given"
    return runner.run(DeviceService(args.broker, args.health_file, creds,
                                    state / f"{device}.sqlite", archive_key, policy, args.bot,
                                    args.seed, others))
