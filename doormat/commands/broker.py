"""``doormat broker config`` and ``doormat broker run``.

``config`` writes what Mosquitto 2 needs for a set of accounts (mosquitto.conf,
mosquitto_passwd, acl); ``run`` serves the embedded amqtt broker in the foreground,
for a classroom without docker. Both take the accounts from ``--accounts FILE`` or,
without it, from the default cast (``doormat.cast.default_accounts()``), whose
generated passwords they keep in ``accounts.json`` next to the output so that the
services can log in. Re-running keeps the passwords already in that file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from doormat.broker.accounts import (
    Account,
    AccountsError,
    load_accounts,
    save_accounts,
)
from doormat.broker.embedded import EmbeddedBroker
from doormat.broker.mosquitto import write_config
from doormat.cli import CommandError
from doormat.commands.args import port
from infra.signals import stop_on_signals

ACCOUNTS_NAME = "accounts.json"
DOCKER_CONFIG_DIR = "/mosquitto/config"
DOCKER_DATA_DIR = "/mosquitto/data"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="write Mosquitto's configuration, or run the embedded broker",
        description="Broker set-up: Mosquitto files for compose, or the embedded broker.",
    )
    bsub = p.add_subparsers(dest="broker_command", metavar="ACTION", required=True)

    c = bsub.add_parser(
        "config",
        help="write mosquitto.conf, mosquitto_passwd and acl for the accounts",
        description=(
            "Write mosquitto.conf, mosquitto_passwd and acl into DIR. Paths inside "
            "mosquitto.conf are where Mosquitto will find the files: by default the "
            "docker mount points (/mosquitto/config, /mosquitto/data); --local points "
            "them at DIR itself, to run `mosquitto -c DIR/mosquitto.conf` by hand."
        ),
    )
    c.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    c.add_argument("--accounts", type=Path, default=None, metavar="FILE",
                   help="accounts JSON file (default: the default cast, with passwords "
                        "generated into DIR/accounts.json)")
    c.add_argument("--port", type=port, default=1883, help="listener port (default 1883)")
    c.add_argument("--bind", default="0.0.0.0", metavar="ADDR",
                   help="listener address (default 0.0.0.0)")
    c.add_argument("--config-dir", default=None, metavar="PATH",
                   help=f"where Mosquitto finds these files (default {DOCKER_CONFIG_DIR})")
    c.add_argument("--data-dir", default=None, metavar="PATH",
                   help=f"Mosquitto's persistence folder (default {DOCKER_DATA_DIR})")
    c.add_argument("--local", action="store_true",
                   help="use DIR and DIR/data as they are on this machine (absolute paths)")
    c.set_defaults(func=run_config)

    r = bsub.add_parser(
        "run",
        help="run the embedded broker in the foreground",
        description=(
            "Run the embedded amqtt broker with authentication and the doormat ACL until "
            "Ctrl-C. Without --accounts it serves the default cast, keeping its passwords "
            "in ./accounts.json."
        ),
    )
    r.add_argument("--accounts", type=Path, default=None, metavar="FILE",
                   help="accounts JSON file (default: the default cast, ./accounts.json)")
    r.add_argument("--port", type=port, default=1883, help="port (default 1883; 0 = any free)")
    r.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address (default 127.0.0.1; 0.0.0.0 to serve the classroom network)")
    r.add_argument("--verbose", action="store_true", help="log every connection")
    r.set_defaults(func=run_embedded)


def _default_accounts_factory() -> Callable[[], list[Account]] | None:
    """``doormat.cast.default_accounts`` if the cast module provides it yet."""
    try:
        from doormat import cast
    except ImportError:
        return None
    factory = getattr(cast, "default_accounts", None)
    return factory if callable(factory) else None


def resolve_accounts(accounts_file: Path | None, generated_file: Path) -> list[Account]:
    """The accounts to serve.

    With ``accounts_file``: exactly its accounts. Without: the default cast's, with the
    passwords of any account already in ``generated_file`` kept (so re-running does not
    lock out services that already read it), saved back to ``generated_file`` (0600).
    """
    try:
        if accounts_file is not None:
            return load_accounts(accounts_file)
        factory = _default_accounts_factory()
        if factory is None:
            raise CommandError(
                "--accounts FILE is required: the default cast's accounts "
                "(doormat.cast.default_accounts) are not available"
            )
        fresh = list(factory())
        if generated_file.exists():
            old = {a.username: a for a in load_accounts(generated_file)}
            fresh = [
                a if a.username not in old or old[a.username].role != a.role
                else Account(a.username, old[a.username].password, a.role)
                for a in fresh
            ]
        save_accounts(generated_file, fresh)
        return fresh
    except AccountsError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {generated_file}: {exc.strerror}", 1) from None


def run_config(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a folder")
    if args.local and (args.config_dir or args.data_dir):
        raise CommandError("--local sets --config-dir and --data-dir; give one or the other")
    for flag, value in (("--config-dir", args.config_dir), ("--data-dir", args.data_dir)):
        if value is not None and not value.startswith("/"):
            raise CommandError(f"{flag} must be an absolute path, got {value!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {out}: {exc.strerror}", 1) from None
    accounts = resolve_accounts(args.accounts, out / ACCOUNTS_NAME)
    if args.local:
        config_dir, data_dir = None, None  # write_config's defaults: DIR, DIR/data
    else:
        config_dir = args.config_dir or DOCKER_CONFIG_DIR
        data_dir = args.data_dir or DOCKER_DATA_DIR
    try:
        files = write_config(
            out, accounts, port=args.port, bind=args.bind,
            config_dir=config_dir, data_dir=data_dir,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write into {out}: {exc.strerror}", 1) from None
    roles: dict[str, int] = {}
    for a in accounts:
        roles[a.role] = roles.get(a.role, 0) + 1
    summary = ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
    print(f"wrote {files.conf}, {files.passwd.name}, {files.acl.name} ({summary})")
    if args.accounts is None:
        print(f"passwords for the services: {out / ACCOUNTS_NAME} (mode 0600)")
    return 0


def run_embedded(args: argparse.Namespace) -> int:
    accounts = resolve_accounts(args.accounts, Path(ACCOUNTS_NAME))
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(accounts, args.bind, args.port, quiet=not args.verbose))
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.bind}:{args.port}: {exc.strerror}", 1) from None
    return 0


async def _serve(accounts: list[Account], bind: str, port: int, *, quiet: bool) -> None:
    with stop_on_signals(asyncio.Event()) as stop:
        try:
            broker = EmbeddedBroker(accounts, host=bind, port=port, quiet=quiet)
            await broker.start()
        except Exception as exc:  # amqtt wraps bind errors in its BrokerError
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            if isinstance(cause, OSError):
                raise cause from None
            raise CommandError(f"the embedded broker did not start: {exc}", 1) from None
        try:
            print(
                f"embedded broker on {broker.url} for {len(accounts)} accounts; Ctrl-C to stop",
                flush=True,
            )
            await stop.wait()
        finally:
            await broker.stop()
            print("broker stopped", file=sys.stderr)
