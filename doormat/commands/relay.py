"""``doormat relay``: run the relay in the foreground (compose runs it this way).

    doormat relay --broker mqtt://HOST:PORT --accounts accounts.json --db relay.sqlite
    doormat relay --broker mqtt://HOST:PORT --password-file relay.pw --db relay.sqlite

Events go to stdout as JSON lines (or ``--events FILE``). The relay package parses
everything but the accounts file, which belongs to the broker module.
"""

from __future__ import annotations

import argparse
from typing import Any

from doormat.cli import CommandError


def register(subparsers: Any) -> None:
    from relay.main import add_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "relay",
        help="run the relay (routes sealed envelopes, holds no keys)",
        description="Run the relay in the foreground until SIGINT/SIGTERM, logging every "
        "routing decision as a JSON line.",
    )
    add_arguments(parser, password_required=False)
    parser.add_argument(
        "--accounts",
        metavar="FILE",
        help="the broker's accounts file (JSON); the relay logs in with its own entry",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from relay.main import ConfigError, run_from_args

    if bool(args.accounts) == bool(args.password_file):
        raise CommandError("give exactly one of --password-file FILE and --accounts FILE")
    password = None
    if args.accounts:
        from doormat.broker.accounts import AccountsError, load_accounts

        try:
            accounts = load_accounts(args.accounts)
        except AccountsError as exc:
            raise CommandError(str(exc)) from None
        mine = [a for a in accounts if a.username == args.username]
        if not mine:
            raise CommandError(f"{args.accounts}: no account named {args.username!r}")
        if mine[0].role != "relay":
            raise CommandError(
                f"{args.accounts}: account {args.username!r} has role {mine[0].role!r}, not 'relay'"
            )
        password = mine[0].password
    try:
        return run_from_args(args, password)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
