"""``doormat health``: the compose healthchecks, with nothing but the image's Python.

    doormat health [--file PATH] [--max-age SECONDS] [--process NAME --broker URL] [--url URL]

* ``--file`` (``DOORMAT_HEALTH_FILE``): the heartbeat a service keeps
  (``doormat.services.runner.Heartbeat``: status ``starting``, ``ready``,
  ``disconnected``, ``stopped``, pid and time) says ``ready``, is fresh (``--max-age``,
  ``DOORMAT_HEALTH_MAX_AGE``) and its process lives;
* ``--process NAME --broker URL``: a ``doormat NAME`` process has an established TCP
  connection to the broker (from /proc, Linux), for the relay, which writes no heartbeat;
* ``--url``: an HTTP server answers below 400.

Exit 0 if every check given passes, else one line saying why and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from doormat.cli import CommandError
from doormat.commands.args import from_env, seconds
from doormat.services.runner import broker_address
from wire.events import now_ms

DEFAULT_MAX_AGE = 30.0  # a heartbeat older than this is stale


def register(sub: Any) -> None:
    h = sub.add_parser(
        "health",
        help="health check of a service (for compose healthchecks)",
        description=(
            "Exit 0 if every check given passes, else print why and exit 1. --file: the "
            "heartbeat a service keeps says ready, is fresh and its process lives. "
            "--process NAME --broker URL: a `doormat NAME` process has an established TCP "
            "connection to the broker (Linux /proc). --url: an HTTP GET answers below 400."
        ),
    )
    h.add_argument("--file", default=from_env("DOORMAT_HEALTH_FILE"), metavar="PATH",
                   help="heartbeat file (env DOORMAT_HEALTH_FILE)")
    h.add_argument("--max-age", type=seconds,
                   default=from_env("DOORMAT_HEALTH_MAX_AGE", str(DEFAULT_MAX_AGE)),
                   metavar="SECONDS",
                   help="a heartbeat older than this is stale (env DOORMAT_HEALTH_MAX_AGE; "
                        f"default {DEFAULT_MAX_AGE:g})")
    h.add_argument("--process", metavar="NAME",
                   help="a `doormat NAME ...` process must be connected to --broker")
    h.add_argument("--broker", metavar="URL", help="the broker, for --process")
    h.add_argument("--url", metavar="URL", help="an HTTP URL that must answer")
    h.set_defaults(func=run_health)


def check_heartbeat(path: str | Path, max_age: float) -> str:
    """A one-line verdict on a heartbeat file; raises CommandError(exit 1) if unhealthy."""
    p = Path(path)
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
        status = str(record["status"])
        age = (now_ms() - int(record["t"])) / 1000
        pid = int(record["pid"])
        service = str(record.get("service", "service"))
    except FileNotFoundError:
        raise CommandError(f"no heartbeat at {p} (service not started yet?)", 1) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"unreadable heartbeat {p}: {exc}", 1) from None
    if status != "ready":
        raise CommandError(f"{service} is {status}", 1)
    if age > max_age:
        raise CommandError(f"{service}: heartbeat is {age:.0f} s old (max {max_age:g})", 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise CommandError(f"{service}: process {pid} is gone", 1) from None
    except PermissionError:
        pass  # it exists, as someone else
    return f"{service} ready (heartbeat {age:.1f} s old)"


def _argv_runs(argv: Sequence[str], words: Sequence[str]) -> bool:
    """Whether a command line is ``doormat WORDS...`` (the script, or ``python -m doormat``)."""
    for i, arg in enumerate(argv):
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "doormat":
            rest = argv[i + 2:]
        elif os.path.basename(arg) == "doormat":
            rest = argv[i + 1:]
        else:
            continue
        return list(rest[: len(words)]) == list(words)
    return False


def _proc_sockets(words: Sequence[str]) -> tuple[list[int], set[str]]:
    """Pids running ``doormat WORDS`` and the socket inodes they hold (those we may see)."""
    pids: list[int] = []
    inodes: set[str] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            if not _argv_runs([a.decode(errors="replace") for a in argv if a], words):
                continue
            pids.append(int(entry.name))
            for fd in os.scandir(Path(entry.path, "fd")):
                link = os.readlink(fd.path)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        except OSError:
            continue
    return pids, inodes


def _hex_address(text: str) -> tuple[str, int]:
    """``0100007F:075B`` from /proc/net/tcp{,6} -> ("127.0.0.1", 1883)."""
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    if sys.byteorder == "little":  # each 32-bit word is in host order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw), int(port_hex, 16)
    ip = socket.inet_ntop(socket.AF_INET6, raw)
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[len("::ffff:"):]
    return ip, int(port_hex, 16)


def check_connected(process: str, broker_url: str) -> str:
    """A ``doormat PROCESS`` has an ESTABLISHED TCP connection to the broker."""
    host, port = broker_address(broker_url)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError as exc:
        raise CommandError(f"cannot resolve {host}: {exc}", 1) from None
    words = process.split()
    pids, inodes = _proc_sockets(words)
    if not pids:
        raise CommandError(f"no `doormat {process}` process running", 1)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "01":  # 01 = ESTABLISHED
                continue
            ip, rport = _hex_address(fields[2])
            if rport == port and ip in addresses and fields[9] in inodes:
                who = ", ".join(map(str, pids))
                return f"doormat {process} (pid {who}) connected to {host}:{port}"
    raise CommandError(f"doormat {process} is not connected to {host}:{port}", 1)


def check_url(url: str) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"{url}: {reason}", 1) from None
    if code >= 400:
        raise CommandError(f"{url}: HTTP {code}", 1)
    return f"{url} answers (HTTP {code})"


def run_health(args: argparse.Namespace) -> int:
    verdicts = []
    if args.process or args.broker:
        if not (args.process and args.broker):
            raise CommandError("--process and --broker go together", 1)
        verdicts.append(check_connected(args.process, args.broker))
    if args.url:
        verdicts.append(check_url(args.url))
    if args.file:
        verdicts.append(check_heartbeat(args.file, args.max_age))
    if not verdicts:
        raise CommandError(
            "nothing to check: give --file (or DOORMAT_HEALTH_FILE), --process with "
            "--broker, or --url", 1
        )
    print("healthy: " + "; ".join(verdicts))
    return 0
