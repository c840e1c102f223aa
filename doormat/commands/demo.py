"""``doormat demo``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from doormat.cli import CommandError
from doormat.commands.args import broker, positive
from doormat.demo import DemoOptions, run_demo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole system in one process and narrate who can read what",
        description=(
            "Start a broker, the relay, two enterprises and their devices in one process, "
            "run a seeded end-to-end encrypted conversation, narrate what each party "
            "sees, and end with the exposure report."
        ),
    )
    p.add_argument(
        "--broker",
        type=broker,
        default="embedded",
        help="embedded (amqtt, in-process; default), mosquitto (started locally), "
        "or mqtt://HOST:PORT (an already running broker)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the conversation (default 1)")
    p.add_argument(
        "--messages",
        type=positive,
        default=12,
        metavar="N",
        help="how many messages the users send (default 12)",
    )
    p.add_argument(
        "--users",
        type=positive,
        default=None,
        metavar="N",
        help="a generated cast of N single-device users instead of the default cast",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the exposure report as JSON to FILE",
    )
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the relay's and devices' stores in DIR (default: a temp dir)",
    )
    p.add_argument(
        "--li",
        choices=("off", "scoped", "blanket"),
        default="off",
        help="the relay's lawful-intercept switch: off (default), scoped (warrant "
        "tasks only), blanket (mirror every envelope to the government tap)",
    )
    p.add_argument(
        "--backdoor",
        choices=("none", "escrow", "ghost", "global-key"),
        default="none",
        help="a mandated change to every client or to the directory: none "
        "(default), escrow (message keys wrapped to a government key), ghost "
        "(a hidden government device per user), global-key (one shared key)",
    )
    p.add_argument(
        "--active-relay",
        action="store_true",
        help="after the conversation, the relay operator forges a first message under "
        "another user's name, twice: to a device with the identity check switched off "
        "(the old behaviour), then to one with it on; the report's active_relay section "
        "says what it read each time",
    )
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--quiet", action="store_true", help="print only the exposure report")
    p.add_argument(
        "--dashboard",
        nargs="?",
        const="127.0.0.1:8765",
        default=None,
        metavar="[HOST:]PORT",
        help="also serve the live dashboard (default 127.0.0.1:8765) and keep running",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.users is not None and args.users < 2:
        raise CommandError("--users needs at least 2")
    if args.report is not None and not args.report.parent.exists():
        raise CommandError(f"--report: folder {args.report.parent} does not exist")
    opts = DemoOptions(
        broker=args.broker,
        seed=args.seed,
        messages=args.messages,
        users=args.users,
        report=args.report,
        state=args.state,
        color=args.color,
        quiet=args.quiet,
        li=args.li,
        backdoor=args.backdoor,
        active_relay=args.active_relay,
    )
    if args.dashboard is not None:
        from doormat.dashboard.server import run_demo_with_dashboard

        return run_demo_with_dashboard(opts, args.dashboard)
    try:
        result = asyncio.run(run_demo(opts))
    except OSError as exc:
        raise CommandError(str(exc), 1) from exc
    ok = result["messages_delivered"] == result["messages_sent"]
    return 0 if ok else 1
