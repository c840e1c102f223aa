"""Service commands: one long-running process per part of the system, for docker compose.

    doormat enterprise serve --name acme --broker mqtt://H:P --accounts accounts.json --state DIR
                             [--policy-dir DIR]
    doormat device run alice@acme.phone --broker mqtt://H:P --accounts accounts.json --state DIR
                       [--bot SECONDS --seed N] [--policy-dir DIR]
    doormat tap run --broker mqtt://H:P --accounts accounts.json --db tap.sqlite
    doormat health [--file PATH] [--process relay --broker URL] [--url URL]

(the relay is ``doormat relay``, the broker files ``doormat broker config``). This module
is their command lines; what each runs is ``doormat.services.enterprise``, ``.device``
and ``.tap``, over one lifecycle (``doormat.services.runner``): each service runs in the
foreground, writes its events as JSON lines to stdout, retries a broker or relay that is
not there yet, and stops cleanly on SIGTERM or SIGINT with exit 0. A refused login or a
bad argument is a one-line error, exit 2. ``doormat health`` is
doormat/commands/health.py.

IT policy (``doormat.services.policy``): with ``--policy-dir DIR``
(``DOORMAT_POLICY_DIR``) an enterprise that runs a compliance archive writes
``DIR/<enterprise>.archive.pub`` before it reports ready; a device that finds its
enterprise's file there journals every message it sends or reads to that archive.

Every option can also come from an environment variable (compose sets them); ``ENV_VARS``
lists them per command (``doormat health``'s too) and docs/compose.md documents them. A
flag beats the variable.

Health: with ``--health-file PATH`` (``DOORMAT_HEALTH_FILE``) a service keeps a small
JSON heartbeat there (``doormat.services.runner.Heartbeat``), which ``doormat health``
checks: that is the compose healthcheck.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from doormat.commands.args import from_env, seconds
from doormat.services.device import run_device
from doormat.services.enterprise import run_enterprise
from doormat.services.policy import POLICY_SUFFIX
from doormat.services.tap import run_tap

# The environment variables each command reads (the flag wins when both are given).
ENV_VARS: dict[str, dict[str, str]] = {
    "enterprise serve": {
        "DOORMAT_ENTERPRISE": "--name: the enterprise (its broker account and its users' domain)",
        "DOORMAT_BROKER": "--broker: mqtt://HOST:PORT",
        "DOORMAT_ACCOUNTS": "--accounts: the accounts file `doormat broker config` wrote",
        "DOORMAT_STATE": "--state: folder for the enterprise's compliance archive",
        "DOORMAT_POLICY_DIR": "--policy-dir: where to write the archive key for devices",
        "DOORMAT_HEALTH_FILE": "--health-file: heartbeat file for `doormat health`",
    },
    "device run": {
        "DOORMAT_DEVICE": "DEVICE: the device id, e.g. alice@acme.phone",
        "DOORMAT_BROKER": "--broker: mqtt://HOST:PORT",
        "DOORMAT_ACCOUNTS": "--accounts: the accounts file `doormat broker config` wrote",
        "DOORMAT_STATE": "--state: folder for the device's keys and history",
        "DOORMAT_BOT_INTERVAL": "--bot: seconds between the bot's messages (0: no bot)",
        "DOORMAT_SEED": "--seed: seed of the bot's choices",
        "DOORMAT_POLICY_DIR": "--policy-dir: where to read the enterprise's archive key",
        "DOORMAT_HEALTH_FILE": "--health-file: heartbeat file for `doormat health`",
    },
    "tap run": {
        "DOORMAT_BROKER": "--broker: mqtt://HOST:PORT",
        "DOORMAT_ACCOUNTS": "--accounts: the accounts file `doormat broker config` wrote",
        "DOORMAT_DB": "--db: the tap's SQLite store of captures",
        "DOORMAT_HEALTH_FILE": "--health-file: heartbeat file for `doormat health`",
    },
    "health": {
        "DOORMAT_HEALTH_FILE": "--file: the heartbeat file to check",
        "DOORMAT_HEALTH_MAX_AGE": "--max-age: seconds after which a heartbeat is stale",
    },
}

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def _common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--broker", default=from_env("DOORMAT_BROKER", DEFAULT_BROKER), metavar="URL",
                   help="the broker, mqtt://HOST:PORT (env DOORMAT_BROKER; default "
                        f"{DEFAULT_BROKER})")
    p.add_argument("--accounts", default=from_env("DOORMAT_ACCOUNTS"), metavar="FILE",
                   help="the accounts file `doormat broker config` wrote; the service logs "
                        "in with its own entry (env DOORMAT_ACCOUNTS; required)")
    p.add_argument("--health-file", default=from_env("DOORMAT_HEALTH_FILE"), metavar="PATH",
                   help="keep a heartbeat here for `doormat health` (env DOORMAT_HEALTH_FILE)")
    p.set_defaults(service_command=command)


def _state(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--state", type=Path, default=from_env("DOORMAT_STATE", "."), metavar="DIR",
                   help=help)


def _policy_dir(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--policy-dir", type=Path, default=from_env("DOORMAT_POLICY_DIR"),
                   metavar="DIR", help=help)


def _service(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    action: str,
    run: Callable[[argparse.Namespace], int],
    help: tuple[str, str],
    description: tuple[str, str],
) -> argparse.ArgumentParser:
    """``doormat NAME ACTION``, which ``run`` runs: a command group with one action (help
    and description: the group's, then the action's)."""
    group = sub.add_parser(name, help=help[0], description=description[0])
    actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
    parser = actions.add_parser(action, help=help[1], description=description[1])
    parser.set_defaults(func=run)
    return parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    es = _service(
        sub, "enterprise", "serve", run_enterprise,
        help=("run an enterprise server (a compose service)",
              "enrol the enterprise's devices at the relay, then serve its archive"),
        description=(
            "Enterprise server as a long-running service.",
            "Log in as the enterprise's broker account, enrol every device account of its "
            "users found in the accounts file (NAME's users are *@NAME) at the relay's "
            "directory (again on every reconnection), run its compliance archive if it "
            "has one, and stay up until SIGTERM. Events go to stdout as JSON lines.",
        ),
    )
    es.add_argument("--name", default=from_env("DOORMAT_ENTERPRISE"),
                    help="the enterprise, e.g. acme (env DOORMAT_ENTERPRISE; required)")
    _common(es, "enterprise serve")
    _state(es, "folder for the archive's store (env DOORMAT_STATE; default .)")
    es.add_argument("--archive", action=argparse.BooleanOptionalAction, default=None,
                    help="run a disclosed compliance archive (default: as in the default "
                         "cast: acme does, globex does not)")
    _policy_dir(es, f"push the IT policy to devices: write DIR/NAME{POLICY_SUFFIX} (the "
                    "archive's public key) before reporting ready, or remove it if there is "
                    "no archive (env DOORMAT_POLICY_DIR)")

    dr = _service(
        sub, "device", "run", run_device,
        help=("run a device (a compose service, optionally a bot)",
              "run one device; with --bot it sends a message every SECONDS"),
        description=(
            "A device as a long-running service.",
            "Run DEVICE (keys and history in --state), publish its keys, receive and "
            "acknowledge what arrives, and print what it reads and sends as JSON lines. "
            "With --bot SECONDS it also sends a seeded message to a random other user "
            "of the accounts file every SECONDS.",
        ),
    )
    dr.add_argument("device", nargs="?", default=from_env("DOORMAT_DEVICE"), metavar="DEVICE",
                    help="device id, e.g. alice@acme.phone (env DOORMAT_DEVICE)")
    _common(dr, "device run")
    _state(dr, "folder for DEVICE.sqlite (env DOORMAT_STATE; default .)")
    dr.add_argument("--bot", type=seconds, default=from_env("DOORMAT_BOT_INTERVAL", "0"),
                    metavar="SECONDS",
                    help="send a message every SECONDS (env DOORMAT_BOT_INTERVAL; 0 = never)")
    dr.add_argument("--seed", type=int, default=from_env("DOORMAT_SEED", "0"),
                    help="seed of the bot's choices of addressee and text (env DOORMAT_SEED)")
    _policy_dir(dr, f"read the enterprise's IT policy: if DIR/ENTERPRISE{POLICY_SUFFIX} "
                    "exists, journal every message to that archive key "
                    "(env DOORMAT_POLICY_DIR)")

    tr = _service(
        sub, "tap", "run", run_tap,
        help=("run the government's blanket tap (a compose service)",
              "store what the relay mirrors to the tap; it holds no keys"),
        description=(
            "The blanket tap as a long-running service.",
            "Log in as the tap account, store every envelope the relay's LI switch mirrors "
            "to it, and try to read each with the keys it holds: none (no back door). "
            "Events (tap.captured) go to stdout as JSON lines.",
        ),
    )
    _common(tr, "tap run")
    tr.add_argument("--db", default=from_env("DOORMAT_DB"), metavar="PATH",
                    help="the tap's SQLite store (env DOORMAT_DB; required)")


__all__ = ["DEFAULT_BROKER", "ENV_VARS", "register"]
