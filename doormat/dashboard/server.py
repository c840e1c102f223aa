"""Serving the dashboard with uvicorn in the system's own asyncio loop.

    async with serve(hub, "127.0.0.1", 0) as running:   # port 0: a free one
        print(running.url)

``run_dashboard(options)`` is ``doormat dashboard``: a System, the lab engine, the hub
and the server, until Ctrl-C or SIGTERM. ``run_demo_with_dashboard`` is ``doormat demo
--dashboard``: the same, playing the demo's seeded conversation once it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from doormat.cast import Cast, default_cast, generated_cast
from doormat.dashboard.app import LOOPBACK_HOSTS, create_app
from doormat.dashboard.hub import Hub
from doormat.lab import LabEngine, ScoreStore, load_exercises
from doormat.system import System
from infra.signals import wait_for_stop_signal


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class Running:
    url: str
    host: str
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket first, so a port in use is a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(
    hub: Hub, host: str = "127.0.0.1", port: int = 8765, sock: socket.socket | None = None
) -> AsyncIterator[Running]:
    """Serve ``hub`` (already started) until the block ends; then end the pages' streams
    and stop the server (the hub itself is the caller's to stop). ``sock``: a socket
    already bound with ``bind`` (else one is bound here)."""
    sock = sock if sock is not None else bind(host, port)
    real_port = sock.getsockname()[1]
    allowed = LOOPBACK_HOSTS if is_loopback(host) else None
    config = uvicorn.Config(
        create_app(hub, allowed_hosts=allowed),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
        access_log=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard")
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the dashboard's server stopped while starting")
            await asyncio.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        yield Running(f"http://{shown}:{real_port}/", host, real_port, server, task)
    finally:
        for q in list(hub._queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(5):
                await task
        if not task.done():
            task.cancel()
        sock.close()


@dataclass
class DashboardOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    broker: str = "embedded"
    li: str = "off"
    backdoor: str = "none"
    state: Path | None = None
    users: int | None = None
    home: Path | None = None
    exercises: Path | None = None
    lab: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def system_factory(opts: DashboardOptions, cast: Cast) -> Callable[[], System]:
    runs = {"n": 0}

    def make() -> System:
        runs["n"] += 1
        state = None if opts.state is None else opts.state / f"run-{runs['n']}"
        return System(cast, broker=opts.broker, state_dir=state, li=opts.li,
                      backdoor=opts.backdoor)

    return make


def make_lab(opts: DashboardOptions) -> LabEngine | None:
    if not opts.lab:
        return None
    return LabEngine(load_exercises(opts.exercises), ScoreStore(opts.home))


async def run_dashboard(
    opts: DashboardOptions,
    *,
    after_start: Callable[[Hub, Running], Any] | None = None,
    until: Callable[[], Any] | None = None,
) -> int:
    cast = generated_cast(opts.users) if opts.users else default_cast()
    lab = make_lab(opts)
    hub = Hub(system_factory(opts, cast), lab=lab)
    sock = bind(opts.host, opts.port)  # a port in use fails before the system starts
    try:
        await hub.start()
        async with serve(hub, opts.host, opts.port, sock) as running:
            print(f"doormat dashboard: {running.url}  (score board: {running.url}lab; "
                  "Ctrl-C to stop)", flush=True)
            if after_start is not None:
                result = after_start(hub, running)
                if asyncio.iscoroutine(result):
                    await result
            await (until() if until is not None else wait_for_stop_signal())
    finally:
        sock.close()
        await hub.stop()
        if lab is not None:
            lab.store.close()
    return 0


async def play_demo_script(hub: Hub, messages: int, seed: int, pause: float = 0.4) -> None:
    """The demo's seeded conversation, sent through the dashboard's system, paced so the
    page can be watched filling up."""
    from doormat.demo import script

    system = hub.system
    for device, to_user, text in script(system.cast, messages, seed):
        if hub.system is not system:
            return  # reset meanwhile
        delivery = await system.send(device, to_user, text)
        await system.wait_delivered(delivery)
        print(f"  {device} -> {to_user}: {text}", flush=True)
        await asyncio.sleep(pause)
    print("demo conversation done; the dashboard keeps running (Ctrl-C to stop)",
          flush=True)


def run_demo_with_dashboard(demo_opts: Any, address: str) -> int:
    """``doormat demo --dashboard [HOST:]PORT``."""
    host, _, port_text = address.rpartition(":")
    opts = DashboardOptions(
        host=host or "127.0.0.1",
        port=int(port_text),
        broker=demo_opts.broker,
        li=demo_opts.li,
        backdoor=demo_opts.backdoor,
        state=demo_opts.state,
        users=demo_opts.users,
    )

    async def after(hub: Hub, running: Running) -> None:
        asyncio.get_running_loop().create_task(
            play_demo_script(hub, demo_opts.messages, demo_opts.seed))

    try:
        return asyncio.run(run_dashboard(opts, after_start=after))
    except OSError as exc:
        print(f"doormat demo: error: {exc}", file=sys.stderr)
        return 1
