"""The ``doormat`` command.

Each subcommand lives in its own module under ``doormat.commands`` and exposes
``register(subparsers)``; this module only wires them together and turns expected
failures into one-line errors (exit 2 for usage, 1 for a failed check), never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Modules under doormat.commands, in the order --help lists them.
COMMANDS = (
    "demo", "chat", "relay", "broker", "ledger", "court", "serve", "health", "dashboard", "lab"
)
# The commands a module registers under another name than its own.
MODULE_OF = {"enterprise": "serve", "device": "serve", "tap": "serve"}


class CommandError(Exception):
    """An expected failure: bad input, a missing file, a refused check. Printed in one line."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def command_module(argv: Sequence[str]) -> str | None:
    """The one module under doormat.commands that ``argv``'s command needs, or None (no
    command, an option first, ``--help``, an unknown word: then every module)."""
    if not argv or argv[0].startswith("-"):
        return None
    module = MODULE_OF.get(argv[0], argv[0])
    return module if module in COMMANDS else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``doormat`` parser; with ``only``, just that module's commands.

    ``main`` passes the one module the command line needs, so that a process imports
    only what its command uses: ``doormat relay`` (the process compose runs) must not
    load the clients' decryption code through the other commands' imports (issue 12,
    point 7; tests/architecture/test_relay_process.py)."""
    parser = argparse.ArgumentParser(
        prog="doormat",
        description=(
            "A lab on end-to-end encryption and lawful intercept: see who can read what, "
            "with real cryptography and a real MQTT broker."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"doormat.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"doormat.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_module(words))
    args = parser.parse_args(words)
    try:
        result = args.func(args)
    except CommandError as exc:
        print(f"doormat {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"doormat {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`doormat lab status | head`): not an error of ours.
        # Point stdout at /dev/null so Python's exit-time flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
