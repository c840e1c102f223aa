"""Running the relay as its own process: ``python -m relay`` (and ``doormat relay``).

    python -m relay --broker mqtt://127.0.0.1:1883 --password-file relay.pw --db relay.sqlite

It runs in the foreground until SIGINT or SIGTERM, writing every event as one JSON line
to stdout (or ``--events FILE``, appended). Problems with the arguments or files are
``ConfigError``s with a one-line message; ``doormat relay`` turns them into its own
one-line errors and adds ``--accounts FILE`` (the broker's accounts file, which the
relay package does not parse itself: it imports nothing from the umbrella).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from infra.signals import stop_on_signals
from relay.li import MODES
from relay.router import Limits
from relay.service import RelayError, RelayService
from wire.events import EventLog
from wire.ids import RELAY_ID


class ConfigError(ValueError):
    """A bad argument or file; the message is one line naming the problem."""


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` (port defaults to 1883) -> (host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad --broker URL {url!r}: {exc}") from None
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(f"bad --broker URL {url!r}: expected mqtt://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ConfigError(f"bad --broker URL {url!r}: expected only mqtt://HOST:PORT")
    return parts.hostname, port or 1883


def read_password_file(path: str) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"password file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"password file is a directory: {p}") from None
    except PermissionError:
        raise ConfigError(f"password file not readable: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read password file {p}: {exc}") from None
    lines = text.splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise ConfigError(f"password file is empty: {p}")
    return password


# Mosquitto 2.0 lets any account subscribe to a share group and then drops the group's
# messages that it round-robins to a member without read access (docs/brokers.md): the
# workers' group name is their only protection, so it must be a secret nobody guesses.
MIN_SHARE_GROUP = 16  # characters, and see SHARE_GROUP_BITS
SHARE_GROUP_BITS = 128  # what its characters could hold, at least (check_share_group)
MAX_SHARE_GROUP = 128
_GROUP_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
_HEX = re.compile(r"^[0-9a-f]+$")
# Words a person names a group with; a random name practically never contains one.
_GUESSABLE = ("relay", "doormat", "share", "group", "worker", "secret", "test", "mqtt",
              "mosquitto", "password", "default", "admin", "changeme")  # fmt: skip
_GENERATE = "python3 -c 'import secrets; print(secrets.token_hex(16))'"


def check_share_group(group: str) -> None:
    """Refuse a share group name that MQTT or Mosquitto would not take as meant, or that
    a device could guess. ConfigError saying which rule it breaks.

    * MQTT 5.0 (4.8.2): not empty, no ``/``, ``+`` or ``#`` (MQTT 3.1.1 has no shared
      subscriptions; Mosquitto takes the second level of ``$share/...`` as the name, and
      a ``+`` there would be a wildcard in any other level);
    * ours: only ``A-Z a-z 0-9 _ -`` (no NUL, no blank, nothing a shell, a log line or
      mosquitto.conf would read differently), at most 128 characters;
    * unguessable, as far as a name can show it: its characters could hold at least 128
      bits (32 lower-case hex digits, or 22 of the 64 letters, digits, ``_`` and ``-``),
      at least 8 different characters, and no word a person names a group with. The
      relay cannot prove a name random; it refuses what is visibly not (docs/relay.md)."""
    if not group:
        raise ConfigError("the share group is empty")
    bad = sorted({c for c in group if c in "/+#"})
    if bad:
        raise ConfigError(f"the share group contains {''.join(bad)!r}, which MQTT forbids there")
    if not _GROUP_CHARS.match(group) or len(group) > MAX_SHARE_GROUP:
        raise ConfigError(
            f"the share group must be 1 to {MAX_SHARE_GROUP} of A-Z a-z 0-9 _ - "
            f"(e.g. {_GENERATE})"
        )
    bits = len(group) * (4 if _HEX.match(group) else 6)
    lowered = group.lower()
    word = next((w for w in _GUESSABLE if w in lowered), None)
    if len(group) < MIN_SHARE_GROUP or bits < SHARE_GROUP_BITS or len(set(group)) < 8 or word:
        why = (
            f"it contains the word {word!r}"
            if word
            else f"{len(set(group))} different characters"
            if len(set(group)) < 8
            else f"{len(group)} characters hold at most {bits} bits, under {SHARE_GROUP_BITS}"
        )
        raise ConfigError(
            f"the share group {group[:40]!r} is guessable ({why}); a device that names it "
            "joins the workers' group and makes them lose messages (Mosquitto 2.0). Use a "
            f"random group: 32 hex digits or 22 base64url characters, e.g. {_GENERATE}"
        )


def check_filter(topic_filter: str) -> None:
    """An MQTT topic filter (3.1.1 4.7): levels split by ``/``, ``+`` a whole level, ``#``
    a whole last level, no NUL, at most 65,535 bytes of UTF-8."""
    if not topic_filter or "\0" in topic_filter:
        raise ConfigError("the topic filter is empty or contains NUL")
    if len(topic_filter.encode("utf-8", "surrogatepass")) > 65535:
        raise ConfigError("the topic filter is over 65,535 bytes")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise ConfigError(f"the topic filter level {level[:40]!r} misplaces a wildcard")
        if level == "#" and i != len(levels) - 1:
            raise ConfigError("'#' must be the topic filter's last level")


def check_subscription(topic_filter: str) -> str:
    """Refuse a subscription MQTT would not take as meant, and a shared subscription
    whose group name a device could guess (``check_share_group``)."""
    try:
        if topic_filter.startswith("$share/"):
            parts = topic_filter.split("/", 2)
            if len(parts) < 3 or not parts[2]:
                raise ConfigError("expected $share/GROUP/FILTER")
            check_share_group(parts[1])
            check_filter(parts[2])
        else:
            check_filter(topic_filter)
    except ConfigError as exc:
        raise ConfigError(f"--subscription {topic_filter[:120]!r}: {exc}") from None
    return topic_filter


def add_arguments(parser: argparse.ArgumentParser, *, password_required: bool = True) -> None:
    parser.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        metavar="URL",
        help="the broker, mqtt://HOST:PORT (default %(default)s)",
    )
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        required=password_required,
        help="file whose first line is the relay account's broker password",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="the relay's SQLite store")
    parser.add_argument(
        "--events",
        default="-",
        metavar="FILE",
        help="where to write events as JSON lines (appended; default: stdout)",
    )
    parser.add_argument(
        "--username",
        default=RELAY_ID,
        help="broker account to log in as (default %(default)s)",
    )
    parser.add_argument(
        "--identifier",
        default=None,
        help="MQTT client id (default: the username); give each relay worker its own",
    )
    parser.add_argument(
        "--subscription",
        default=None,
        help="topic filter to consume (default doormat/out/+/+). Workers sharing the "
        "load use $share/GROUP/doormat/out/+/+ with one random GROUP for all of them: "
        "32 hex digits or 22 base64url characters (a device that knows the group can "
        "join it on Mosquitto 2.0: docs/relay.md)",
    )
    parser.add_argument(
        "--synchronous",
        choices=("normal", "full"),
        default="normal",
        help="SQLite durability: normal survives a killed process, full also a power "
        "loss, at a cost in throughput (default %(default)s)",
    )
    parser.add_argument(
        "--device-rate",
        type=float,
        default=None,
        metavar="N",
        help="per-device limit: envelopes (and, separately, directory requests) per "
        f"second, sustained; 0 disables (default {Limits().device_rate:g})",
    )
    parser.add_argument(
        "--device-burst",
        type=int,
        default=None,
        metavar="N",
        help=f"per-device burst allowance (default {Limits().device_burst})",
    )
    parser.add_argument(
        "--no-keep-captured",
        action="store_true",
        help="clear an envelope's bytes once it is acknowledged (default: keep them, as "
        "an operator that keeps everything would)",
    )
    parser.add_argument(
        "--li",
        choices=MODES,
        default="off",
        help="the lawful-intercept switch: off, scoped (only warrant tasks provisioned "
        "over X1 by the interceptor) or blanket (mirror every envelope to the tap); "
        "default %(default)s",
    )
    parser.add_argument("--log-level", default="warning", help="Python logging level")


async def run_foreground(
    *,
    host: str,
    port: int,
    password: str,
    db: str,
    events_out: TextIO,
    options: dict[str, Any],
) -> None:
    # Kept nowhere but the sink: the relay runs for days.
    events = EventLog(events_out, keep=False)
    try:
        service = RelayService(host, port, password, db, events, **options)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the store {db}: {exc}") from None
    with stop_on_signals(asyncio.Event()) as stop:
        try:
            await service.run(stop)
        except RelayError as exc:
            raise ConfigError(str(exc)) from None


def run_from_args(args: argparse.Namespace, password: str | None = None) -> int:
    """Run the relay as the parsed arguments say. Raises ConfigError (one line)."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    host, port = parse_broker_url(args.broker)
    if password is None:
        if not args.password_file:
            raise ConfigError("give the relay's broker password with --password-file FILE")
        password = read_password_file(args.password_file)
    db = Path(args.db)
    if db.is_dir():
        raise ConfigError(f"--db {db} is a directory")
    if not db.parent.is_dir():
        raise ConfigError(f"--db {db}: directory {db.parent} does not exist")
    options: dict[str, Any] = {
        "username": args.username,
        "identifier": args.identifier,
        "synchronous": str(args.synchronous).upper(),
        "keep_captured": not args.no_keep_captured,
        "li_mode": args.li,
    }
    if args.subscription:
        options["subscription"] = check_subscription(args.subscription)
    if args.device_rate is not None or args.device_burst is not None:
        if (args.device_rate is not None and args.device_rate < 0) or (
            args.device_burst is not None and args.device_burst < 1
        ):
            raise ConfigError("--device-rate must be >= 0 and --device-burst >= 1")
        default = Limits()
        options["limits"] = replace(
            default,
            device_rate=default.device_rate if args.device_rate is None else args.device_rate,
            device_burst=default.device_burst if args.device_burst is None else args.device_burst,
        )
    with contextlib.ExitStack() as stack:
        if args.events == "-":
            out: TextIO = sys.stdout
        else:
            try:
                out = stack.enter_context(open(args.events, "a", encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot open --events {args.events}: {exc.strerror}") from None
        asyncio.run(
            run_foreground(
                host=host,
                port=port,
                password=password,
                db=str(db),
                events_out=out,
                options=options,
            )
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay",
        description="The doormat relay: routes sealed envelopes, holds no keys.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ConfigError as exc:
        print(f"relay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
