"""Service commands: one long-running process per part of the system, for docker compose.

    doormat enterprise serve --name acme --broker mqtt://H:P --accounts accounts.json --state DIR
                             [--policy-dir DIR]
    doormat device run alice@acme.phone --broker mqtt://H:P --accounts accounts.json --state DIR
                       [--bot SECONDS --seed N] [--policy-dir DIR]
    doormat tap run --broker mqtt://H:P --accounts accounts.json --db tap.sqlite
    doormat health [--file PATH] [--process relay --broker URL] [--url URL]

(the relay is ``doormat relay``, the broker files ``doormat broker config``). Each service
runs in the foreground, writes its events as JSON lines to stdout, retries a broker or
relay that is not there yet, and stops cleanly on SIGTERM or SIGINT with exit 0. A refused
login or a bad argument is a one-line error, exit 2.

IT policy: what a BES pushes to its devices at activation. With ``--policy-dir DIR``
(``DOORMAT_POLICY_DIR``, a volume the enterprises write and the devices read) an
enterprise that runs a compliance archive writes ``DIR/<enterprise>.archive.pub``, its
archive's public key, before it reports ready; a device that finds its enterprise's file
there journals every message it sends or reads to that archive.

Every option can also come from an environment variable (compose sets them); ``ENV_VARS``
lists them per command and docs/compose.md documents them. A flag beats the variable.

Health: with ``--health-file PATH`` (``DOORMAT_HEALTH_FILE``) a service keeps a small
JSON heartbeat there, rewritten every ``HEARTBEAT_INTERVAL`` seconds: its status
(``starting``, ``ready``, ``disconnected``, ``stopped``), pid and time. ``doormat health``
(same variable) exits 0 if the file says ``ready``, is fresh and its process lives, else 1:
that is the compose healthcheck, and needs nothing but the image's Python.
``doormat health --process relay --broker URL`` checks instead that a ``doormat relay``
process has an established TCP connection to the broker (from /proc, Linux), for the
relay, which writes no heartbeat; ``--url`` checks that an HTTP server answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from doormat.cli import CommandError
from wire.b64 import b64decode, b64encode
from wire.events import Event, EventLog, now_ms

T = TypeVar("T")

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
HEARTBEAT_INTERVAL = 2.0  # seconds between heartbeat writes
DEFAULT_MAX_AGE = 30.0  # a heartbeat older than this is stale
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # back-off while the broker or the relay is not there yet
POLICY_SUFFIX = ".archive.pub"  # DIR/<enterprise>.archive.pub: the pushed archive key

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


def _env(var: str, default: str | None = None) -> str | None:
    value = os.environ.get(var)
    return value if value not in (None, "") else default


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value


# -- argument parsing ---------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--broker", default=_env("DOORMAT_BROKER", DEFAULT_BROKER), metavar="URL",
                   help="the broker, mqtt://HOST:PORT (env DOORMAT_BROKER; default "
                        f"{DEFAULT_BROKER})")
    p.add_argument("--accounts", default=_env("DOORMAT_ACCOUNTS"), metavar="FILE",
                   help="the accounts file `doormat broker config` wrote; the service logs "
                        "in with its own entry (env DOORMAT_ACCOUNTS; required)")
    p.add_argument("--health-file", default=_env("DOORMAT_HEALTH_FILE"), metavar="PATH",
                   help="keep a heartbeat here for `doormat health` (env DOORMAT_HEALTH_FILE)")
    p.set_defaults(service_command=command)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("enterprise", help="run an enterprise server (a compose service)",
                       description="Enterprise server as a long-running service.")
    esub = e.add_subparsers(dest="enterprise_command", metavar="ACTION", required=True)
    es = esub.add_parser(
        "serve",
        help="enrol the enterprise's devices at the relay, then serve its archive",
        description=(
            "Log in as the enterprise's broker account, enrol every device account of its "
            "users found in the accounts file (NAME's users are *@NAME) at the relay's "
            "directory (again on every reconnection), run its compliance archive if it "
            "has one, and stay up until SIGTERM. Events go to stdout as JSON lines."
        ),
    )
    es.add_argument("--name", default=_env("DOORMAT_ENTERPRISE"),
                    help="the enterprise, e.g. acme (env DOORMAT_ENTERPRISE; required)")
    _common(es, "enterprise serve")
    es.add_argument("--state", type=Path, default=_env("DOORMAT_STATE", "."), metavar="DIR",
                    help="folder for the archive's store (env DOORMAT_STATE; default .)")
    es.add_argument("--archive", action=argparse.BooleanOptionalAction, default=None,
                    help="run a disclosed compliance archive (default: as in the default "
                         "cast: acme does, globex does not)")
    es.add_argument("--policy-dir", type=Path, default=_env("DOORMAT_POLICY_DIR"),
                    metavar="DIR",
                    help=f"push the IT policy to devices: write DIR/NAME{POLICY_SUFFIX} "
                         "(the archive's public key) before reporting ready, or remove it "
                         "if there is no archive (env DOORMAT_POLICY_DIR)")
    es.set_defaults(func=run_enterprise)

    d = sub.add_parser("device", help="run a device (a compose service, optionally a bot)",
                       description="A device as a long-running service.")
    dsub = d.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    dr = dsub.add_parser(
        "run",
        help="run one device; with --bot it sends a message every SECONDS",
        description=(
            "Run DEVICE (keys and history in --state), publish its keys, receive and "
            "acknowledge what arrives, and print what it reads and sends as JSON lines. "
            "With --bot SECONDS it also sends a seeded message to a random other user "
            "of the accounts file every SECONDS."
        ),
    )
    dr.add_argument("device", nargs="?", default=_env("DOORMAT_DEVICE"), metavar="DEVICE",
                    help="device id, e.g. alice@acme.phone (env DOORMAT_DEVICE)")
    _common(dr, "device run")
    dr.add_argument("--state", type=Path, default=_env("DOORMAT_STATE", "."), metavar="DIR",
                    help="folder for DEVICE.sqlite (env DOORMAT_STATE; default .)")
    dr.add_argument("--bot", type=_seconds, default=_env("DOORMAT_BOT_INTERVAL", "0"),
                    metavar="SECONDS",
                    help="send a message every SECONDS (env DOORMAT_BOT_INTERVAL; 0 = never)")
    dr.add_argument("--seed", type=int, default=_env("DOORMAT_SEED", "0"),
                    help="seed of the bot's choices of addressee and text (env DOORMAT_SEED)")
    dr.add_argument("--policy-dir", type=Path, default=_env("DOORMAT_POLICY_DIR"),
                    metavar="DIR",
                    help=f"read the enterprise's IT policy: if DIR/ENTERPRISE{POLICY_SUFFIX} "
                         "exists, journal every message to that archive key "
                         "(env DOORMAT_POLICY_DIR)")
    dr.set_defaults(func=run_device)

    t = sub.add_parser("tap", help="run the government's blanket tap (a compose service)",
                       description="The blanket tap as a long-running service.")
    tsub = t.add_subparsers(dest="tap_command", metavar="ACTION", required=True)
    tr = tsub.add_parser(
        "run",
        help="store what the relay mirrors to the tap; it holds no keys",
        description=(
            "Log in as the tap account, store every envelope the relay's LI switch mirrors "
            "to it, and try to read each with the keys it holds: none (no back door). "
            "Events (tap.captured) go to stdout as JSON lines."
        ),
    )
    _common(tr, "tap run")
    tr.add_argument("--db", default=_env("DOORMAT_DB"), metavar="PATH",
                    help="the tap's SQLite store (env DOORMAT_DB; required)")
    tr.set_defaults(func=run_tap)

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
    h.add_argument("--file", default=_env("DOORMAT_HEALTH_FILE"), metavar="PATH",
                   help="heartbeat file (env DOORMAT_HEALTH_FILE)")
    h.add_argument("--max-age", type=_seconds,
                   default=_env("DOORMAT_HEALTH_MAX_AGE", str(DEFAULT_MAX_AGE)),
                   metavar="SECONDS",
                   help="a heartbeat older than this is stale (env DOORMAT_HEALTH_MAX_AGE; "
                        f"default {DEFAULT_MAX_AGE:g})")
    h.add_argument("--process", metavar="NAME",
                   help="a `doormat NAME ...` process must be connected to --broker")
    h.add_argument("--broker", metavar="URL", help="the broker, for --process")
    h.add_argument("--url", metavar="URL", help="an HTTP URL that must answer")
    h.set_defaults(func=run_health)


# -- shared pieces -------------------------------------------------------------------------


class StdoutLog(EventLog):
    """Events as JSON lines on stdout; keeps none in memory (a service runs for days) but
    still calls listeners."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__(sink=None)
        self._out = out if out is not None else sys.stdout

    def emit(self, actor: str, kind: str, **fields: Any) -> Event:
        event: Event = {"t": now_ms(), "actor": actor, "kind": kind, **fields}
        with self._lock:
            self._out.write(json.dumps(event, sort_keys=True) + "\n")
            self._out.flush()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event


class Heartbeat:
    """The heartbeat file: rewritten atomically with the service's current status."""

    def __init__(self, path: str | Path | None, service: str) -> None:
        self.path = Path(path) if path else None
        self.service = service
        self.since = now_ms()

    def write(self, status: str, **detail: Any) -> None:
        if self.path is None:
            return
        record = {"service": self.service, "status": status, "pid": os.getpid(),
                  "t": now_ms(), "since": self.since, **detail}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            logging.getLogger(__name__).warning("heartbeat %s: %s", self.path, exc)

    async def keep(self, status: Callable[[], str], stop: asyncio.Event) -> None:
        """Rewrite the file every HEARTBEAT_INTERVAL seconds until ``stop``."""
        while not stop.is_set():
            self.write(status())
            await sleep_or_stop(stop, HEARTBEAT_INTERVAL)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; True if ``stop`` was set meanwhile (returns at once then)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


class Stopped(Exception):
    """SIGTERM arrived while a step was in progress; the step was cancelled."""


async def until_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """Await ``work`` unless ``stop`` is set first (then cancel it and raise Stopped)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise Stopped


def _run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main(stop)`` in a fresh loop; SIGTERM/SIGINT set ``stop``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
    return 0


def _broker(url: str) -> tuple[str, int]:
    from relay.main import ConfigError, parse_broker_url

    try:
        return parse_broker_url(url)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _accounts(path: str | None, env_hint: str = "DOORMAT_ACCOUNTS") -> list[Any]:
    from doormat.broker.accounts import AccountsError, load_accounts

    if not path:
        raise CommandError(f"give --accounts FILE (or set {env_hint})")
    try:
        return load_accounts(path)
    except AccountsError as exc:
        raise CommandError(str(exc)) from None


def _own_account(accounts: list[Any], username: str, role: str, path: str) -> Any:
    for a in accounts:
        if a.username == username:
            if a.role != role:
                raise CommandError(
                    f"{path}: account {username!r} has role {a.role!r}, not {role!r}"
                )
            return a
    raise CommandError(f"{path}: no account named {username!r}")


def _refused_login(exc: BaseException) -> bool:
    return "refused the login" in str(exc)


async def _start_with_retries(
    stop: asyncio.Event,
    events: EventLog,
    actor: str,
    make: Callable[[], T],
    start: Callable[[T], Awaitable[Any]],
    cleanup: Callable[[T], Awaitable[Any]],
) -> T:
    """Make and start a part, retrying with back-off while the broker or the relay is not
    (yet) there. A refused login is final (CommandError). Raises Stopped on SIGTERM."""
    from infra.link import LinkError

    delay = RETRY_MIN
    attempt = 0
    while True:
        attempt += 1
        part = make()
        try:
            await until_stopped(stop, start(part))
            return part
        except Stopped:
            await cleanup(part)
            raise
        except (LinkError, TimeoutError, OSError) as exc:
            await cleanup(part)
            reason = str(exc) or type(exc).__name__
            if _refused_login(exc):
                events.emit(actor, "service.failed", reason=reason)
                raise CommandError(reason) from None
            events.emit(actor, "service.retry", attempt=attempt, reason=reason,
                        after_s=round(delay, 2))
        if await sleep_or_stop(stop, delay):
            raise Stopped
        delay = min(delay * 2, RETRY_MAX)


# -- the IT policy: the archive key an enterprise pushes to its devices -------------------


def policy_file(policy_dir: Path, enterprise: str) -> Path:
    return policy_dir / f"{enterprise}{POLICY_SUFFIX}"


def write_policy(policy_dir: Path, enterprise: str, archive_key: bytes | None) -> Path:
    """Publish (or withdraw, with None) the enterprise's archive key for its devices.

    Written to a temporary name and renamed, so a device starting meanwhile reads either
    no file or a whole one, never half a key."""
    path = policy_file(policy_dir, enterprise)
    try:
        policy_dir.mkdir(parents=True, exist_ok=True)
        if archive_key is None:
            path.unlink(missing_ok=True)
            return path
        body = {"enterprise": enterprise,
                "archive_public_key": b64encode(archive_key)}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise CommandError(f"cannot write the policy {path}: {exc.strerror or exc}") from None
    return path


def read_policy(policy_dir: Path, enterprise: str) -> bytes | None:
    """The archive key the enterprise pushed, or None if it pushed none (no archive)."""
    path = policy_file(policy_dir, enterprise)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"cannot read the policy {path}: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
        named = body["enterprise"]
        key = b64decode(body["archive_public_key"], "'archive_public_key'")
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"corrupt policy {path}: {type(exc).__name__}: {exc}") from None
    if named != enterprise:
        raise CommandError(f"corrupt policy {path}: it is {named!r}'s, not {enterprise!r}'s")
    if len(key) != 32:
        raise CommandError(f"corrupt policy {path}: archive key is {len(key)} bytes, not 32")
    return key


# -- doormat enterprise serve -------------------------------------------------------------


def run_enterprise(args: argparse.Namespace) -> int:
    from clients.archive import Archive, ArchiveError
    from clients.enterprise import Credentials, Enterprise, EnterpriseServer, archive_store
    from wire.ids import IdError, check_enterprise, enterprise_of, is_device, user_of

    if not args.name:
        raise CommandError("give --name ENTERPRISE (or set DOORMAT_ENTERPRISE)")
    try:
        name = check_enterprise(args.name)
    except IdError as exc:
        raise CommandError(str(exc)) from None
    host, port = _broker(args.broker)
    accounts = _accounts(args.accounts)
    own = _own_account(accounts, name, "enterprise", args.accounts)
    archive = args.archive
    if archive is None:
        from doormat.cast import default_cast

        archive = any(e.archive for e in default_cast().enterprises if e.name == name)
    enterprise = Enterprise(name, archive=archive)
    for a in accounts:
        if a.role == "device" and is_device(a.username) and enterprise_of(a.username) == name:
            # The roster, as activation would have built it; the passwords are the
            # devices' broker logins (the enterprise issued them).
            enterprise.devices[a.username] = Credentials(a.username, user_of(a.username),
                                                         a.password)
    state = Path(args.state)
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create --state {state}: {exc.strerror}") from None
    archive_key: bytes | None = None
    if archive:
        # Opened once here: a corrupt store is a one-line error, and the key (kept in
        # the store, so the same across restarts) is known before the policy is pushed.
        try:
            opened = Archive(name, archive_store(state, name))
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        archive_key = opened.public_key
        opened.close()
    policy = None if args.policy_dir is None else write_policy(args.policy_dir, name, archive_key)

    async def main(stop: asyncio.Event) -> None:
        events = StdoutLog()
        beat = Heartbeat(args.health_file, f"enterprise {name}")
        beat.write("starting")
        events.emit(name, "service.starting", service="enterprise", broker=args.broker,
                    devices=sorted(enterprise.devices), archive=archive)
        if policy is not None:
            events.emit(name, "enterprise.policy", file=str(policy),
                        archive_public_key=None if archive_key is None
                        else b64encode(archive_key),
                        policy=f"devices journal to {name}'s archive" if archive_key
                        else f"no archive: {name}'s devices are end-to-end only")
        try:
            server = await _start_with_retries(
                stop, events, name,
                lambda: EnterpriseServer(enterprise, own.password, host, port, events, state),
                lambda s: s.start(),
                lambda s: s.stop(),
            )
        except Stopped:
            beat.write("stopped")
            events.emit(name, "service.stopped", service="enterprise")
            return
        events.emit(name, "service.ready", service="enterprise")
        # The link reconnects by itself; the relay keeps the enrolment in its store.
        await beat.keep(lambda: "ready" if server.link.connected else "disconnected", stop)
        await server.stop()
        beat.write("stopped")
        events.emit(name, "service.stopped", service="enterprise")

    return _run_service(main)


# -- doormat device run -------------------------------------------------------------------


def run_device(args: argparse.Namespace) -> int:
    from clients.device import Device
    from clients.enterprise import Credentials
    from wire.ids import IdError, check_device, enterprise_of, is_device, user_of

    if not args.device:
        raise CommandError("give the DEVICE id (or set DOORMAT_DEVICE)")
    try:
        device = check_device(args.device)
    except IdError as exc:
        raise CommandError(str(exc)) from None
    host, port = _broker(args.broker)
    accounts = _accounts(args.accounts)
    own = _own_account(accounts, device, "device", args.accounts)
    user = user_of(device)
    creds = Credentials(device, user, own.password)
    others = sorted({user_of(a.username) for a in accounts
                     if a.role == "device" and is_device(a.username)} - {user})
    if args.bot and not others:
        raise CommandError(f"{args.accounts}: no other user to send to")
    state = Path(args.state)
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create --state {state}: {exc.strerror}") from None
    store = state / f"{device}.sqlite"
    enterprise = enterprise_of(device)
    archive_key = None if args.policy_dir is None else read_policy(args.policy_dir, enterprise)
    if archive_key is not None:
        policy = f"journals to {enterprise}'s archive"
    elif args.policy_dir is not None:
        policy = f"no archive: {enterprise} pushed no archive key"
    else:
        policy = "no archive: no policy dir given"

    async def main(stop: asyncio.Event) -> None:
        from infra.link import LinkError

        events = StdoutLog()
        beat = Heartbeat(args.health_file, f"device {device}")
        beat.write("starting")
        events.emit(device, "service.starting", service="device", broker=args.broker,
                    bot_interval=args.bot, seed=args.seed, policy=policy,
                    archive=enterprise if archive_key is not None else None)
        try:
            dev = await _start_with_retries(
                stop, events, device,
                lambda: Device(creds, host, port, store, events, archive_key=archive_key),
                lambda d: d.start(),
                lambda d: d.stop(),
            )
        except Stopped:
            beat.write("stopped")
            events.emit(device, "service.stopped", service="device")
            return
        events.emit(device, "service.ready", service="device")
        keeper = asyncio.create_task(
            beat.keep(lambda: "ready" if dev.connected else "disconnected", stop)
        )
        if args.bot:
            rng = random.Random(f"{args.seed}:{device}")
            n = 0
            while not await sleep_or_stop(stop, args.bot):
                n += 1
                to_user = rng.choice(others)
                text = f"{rng.choice(PHRASES)} ({device} #{n})"
                try:
                    await until_stopped(stop, dev.send(to_user, text))
                except Stopped:
                    break
                except (LinkError, TimeoutError, KeyError, ValueError) as exc:
                    events.emit(device, "bot.failed", to_user=to_user, n=n, reason=str(exc))
        else:
            await stop.wait()
        await keeper
        await dev.stop()
        beat.write("stopped")
        events.emit(device, "service.stopped", service="device")

    return _run_service(main)


# -- doormat tap run ----------------------------------------------------------------------


def run_tap(args: argparse.Namespace) -> int:
    from interceptor.tap import Tap
    from wire.ids import TAP_ID

    if not args.db:
        raise CommandError("give --db PATH (or set DOORMAT_DB)")
    db = Path(args.db)
    if db.is_dir():
        raise CommandError(f"--db {db} is a directory")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {db.parent}: {exc.strerror}") from None
    host, port = _broker(args.broker)
    accounts = _accounts(args.accounts)
    own = _own_account(accounts, TAP_ID, "tap", args.accounts)

    async def main(stop: asyncio.Event) -> None:
        events = StdoutLog()
        beat = Heartbeat(args.health_file, "tap")
        beat.write("starting")
        events.emit(TAP_ID, "service.starting", service="tap", broker=args.broker, keys=0)
        try:
            tap = await _start_with_retries(
                stop, events, TAP_ID,
                # No readers: without a back door the government holds no key.
                lambda: Tap(host, port, own.password, db, events, readers=()),
                lambda t: t.start(),
                lambda t: t.stop(),
            )
        except Stopped:
            beat.write("stopped")
            events.emit(TAP_ID, "service.stopped", service="tap")
            return
        events.emit(TAP_ID, "service.ready", service="tap")
        await beat.keep(lambda: "ready" if tap.connected else "disconnected", stop)
        await tap.stop()
        beat.write("stopped")
        events.emit(TAP_ID, "service.stopped", service="tap")

    return _run_service(main)


# -- doormat health -----------------------------------------------------------------------


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
    host, port = _broker(broker_url)
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


__all__ = ["ENV_VARS", "Heartbeat", "StdoutLog", "register"]
