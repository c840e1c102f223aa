"""One lifecycle for every long-running service of the compose demo (the enterprise
servers, the devices, the tap): a :class:`Service` says what is particular to it, and
:func:`run` does the rest, the same way for all.

    starting   heartbeat "starting", event service.starting (service, broker, ...)
    connecting make a part (its own link to the relay) and start it; while the broker or
               the relay is not there yet: stop it, service.retry, wait (back-off 0.5 s
               doubling to 5 s), make a new one. A refused login: service.failed, exit 2.
    ready      service.ready; the heartbeat says "ready" or "disconnected" (the link
               reconnects by itself) every HEARTBEAT_INTERVAL seconds; the service works
               (a device's bot sends) until SIGTERM or SIGINT
    stopped    stop the part, heartbeat "stopped", service.stopped, exit 0

Events go to stdout as JSON lines and are kept nowhere else (a service runs for days).
The heartbeat file (``--health-file``) is what ``doormat health`` checks
(doormat/commands/health.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TextIO, TypeVar

from doormat.cli import CommandError
from infra.files import write_atomic
from infra.retry import Backoff
from infra.signals import run_until_signal
from wire.events import EventLog, now_ms

T = TypeVar("T")
P = TypeVar("P", bound="Part")  # what a service runs (EnterpriseServer, Device, Tap)

HEARTBEAT_INTERVAL = 2.0  # seconds between heartbeat writes
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # back-off while the broker or the relay is not there yet

log = logging.getLogger(__name__)


# -- the configuration every service reads ------------------------------------------------


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` -> (host, port); CommandError for anything else."""
    from relay.main import ConfigError, parse_broker_url

    try:
        return parse_broker_url(url)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def checked_id(value: str | None, check: Callable[[str], str], missing: str) -> str:
    """An id from the command line, checked (``wire.ids``); CommandError if absent or bad."""
    from wire.ids import IdError

    if not value:
        raise CommandError(missing)
    try:
        return check(value)
    except IdError as exc:
        raise CommandError(str(exc)) from None


def load_accounts(path: str | None, env_hint: str = "DOORMAT_ACCOUNTS") -> list[Any]:
    """The accounts file `doormat broker config` wrote; CommandError if missing or bad."""
    from doormat.broker.accounts import AccountsError
    from doormat.broker.accounts import load_accounts as load

    if not path:
        raise CommandError(f"give --accounts FILE (or set {env_hint})")
    try:
        return load(path)
    except AccountsError as exc:
        raise CommandError(str(exc)) from None


def own_account(accounts: list[Any], username: str, role: str, path: str) -> Any:
    """The service's own entry of the accounts file, which must have ``role``."""
    for a in accounts:
        if a.username == username:
            if a.role != role:
                raise CommandError(
                    f"{path}: account {username!r} has role {a.role!r}, not {role!r}"
                )
            return a
    raise CommandError(f"{path}: no account named {username!r}")


def login(args: argparse.Namespace, username: str, role: str) -> tuple[list[Any], Any]:
    """The accounts file (``--accounts``) and the service's own entry in it; a bad
    ``--broker`` is reported first."""
    broker_address(args.broker)
    accounts = load_accounts(args.accounts)
    return accounts, own_account(accounts, username, role, args.accounts)


def make_folder(path: Path, label: str) -> Path:
    """Create ``path`` (and its parents) if missing; CommandError naming ``label``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {label}: {exc.strerror}") from None
    return path


# -- the heartbeat and stopping -----------------------------------------------------------


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
        try:
            # Not fsynced: it is rewritten every few seconds, and a reader wants it whole.
            write_atomic(self.path, json.dumps(record) + "\n", durable=False, make_parents=True)
        except OSError as exc:
            log.warning("heartbeat %s: %s", self.path, exc)

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


class Part(Protocol):
    """What a service runs: an EnterpriseServer, a Device, a Tap (each with its link)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def connected(self) -> bool: ...


# -- starting until connected -------------------------------------------------------------


def _refused_login(exc: BaseException) -> bool:
    return "refused the login" in str(exc)


async def start_with_retries(
    stop: asyncio.Event, events: EventLog, actor: str, make: Callable[[], P]
) -> P:
    """Make and start a part, retrying with back-off while the broker or the relay is not
    (yet) there (a part that failed to start is stopped, and a new one made). A refused
    login is final (CommandError). Raises Stopped on SIGTERM."""
    from infra.link import LinkError

    backoff = Backoff(RETRY_MIN, RETRY_MAX)
    attempt = 0
    while True:
        attempt += 1
        part = make()
        try:
            await until_stopped(stop, part.start())
            return part
        except Stopped:
            await part.stop()
            raise
        except (LinkError, TimeoutError, OSError) as exc:
            await part.stop()
            reason = str(exc) or type(exc).__name__
            refused = _refused_login(exc)
        if refused:
            events.emit(actor, "service.failed", reason=reason)
            raise CommandError(reason)
        delay = backoff.next()
        events.emit(actor, "service.retry", attempt=attempt, reason=reason,
                    after_s=round(delay, 2))
        if await sleep_or_stop(stop, delay):
            raise Stopped


# -- the service --------------------------------------------------------------------------


@dataclass
class Service(ABC, Generic[P]):
    """What is particular to one service; :func:`serve` does the lifecycle.

    ``kind`` is the ``service`` field of its events ("enterprise", "device", "tap"),
    ``actor`` the actor of its events, ``label`` the service its heartbeat names."""

    kind: ClassVar[str]
    broker: str  # mqtt://HOST:PORT (service.starting says it)
    health_file: str | None
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.host, self.port = broker_address(self.broker)

    @property
    @abstractmethod
    def actor(self) -> str: ...

    @property
    def label(self) -> str:
        return f"{self.kind} {self.actor}"

    def starting(self) -> dict[str, Any]:
        """More fields of the ``service.starting`` event."""
        return {}

    def announce(self, events: EventLog) -> None:
        """Events right after ``service.starting`` (the enterprise's IT policy)."""

    @abstractmethod
    def make(self, events: EventLog) -> P:
        """A new part, not started (one per attempt: each has its own link)."""

    async def work(self, part: P, stop: asyncio.Event, events: EventLog) -> None:
        """What the service does once ready, until ``stop`` (by default: nothing)."""
        await stop.wait()


async def serve(service: Service[P], stop: asyncio.Event, out: TextIO | None = None) -> None:
    """The lifecycle of the module docstring, until ``stop``."""
    events = EventLog(out if out is not None else sys.stdout, keep=False)
    beat = Heartbeat(service.health_file, service.label)
    beat.write("starting")
    events.emit(service.actor, "service.starting", service=service.kind, broker=service.broker,
                **service.starting())
    service.announce(events)
    try:
        part = await start_with_retries(stop, events, service.actor, partial(service.make, events))
    except Stopped:
        beat.write("stopped")
        events.emit(service.actor, "service.stopped", service=service.kind)
        return
    events.emit(service.actor, "service.ready", service=service.kind)
    keeper = asyncio.create_task(
        beat.keep(lambda: "ready" if part.connected else "disconnected", stop)
    )
    await service.work(part, stop, events)
    await keeper
    await part.stop()
    beat.write("stopped")
    events.emit(service.actor, "service.stopped", service=service.kind)


def run(service: Service[Any]) -> int:
    """Run ``service`` in the foreground until SIGTERM or SIGINT; exit code 0 (a refused
    login raises CommandError: exit 2)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_until_signal(partial(serve, service))
    return 0
