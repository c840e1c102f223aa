"""SIGINT and SIGTERM into a stop event, for every long-running process (the relay, the
services, the embedded broker, the dashboard, the benchmarks' null relay): the process
finishes what it has in hand, stops cleanly and exits 0, instead of dying mid-write.

    exit_code = run_until_signal(main)          # main(stop) -> its result; stop is set on a signal

    async def serve() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop, then=transport.wake):
            ...                                  # until stop.is_set()

Where the loop cannot take signal handlers (not the main thread, or Windows), nothing is
installed and the default behaviour stays (SIGINT raises KeyboardInterrupt).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(
    stop: asyncio.Event,
    *,
    then: Callable[[], None] | None = None,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> Iterator[asyncio.Event]:
    """While the block runs (inside the running loop), each of ``signals`` sets ``stop``
    and then calls ``then`` (e.g. to wake a loop that waits for input). The handlers are
    removed when the block ends."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        if then is not None:
            then()

    installed = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await stop.wait()


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` in a fresh event loop (``asyncio.run``); SIGINT and SIGTERM set
    ``stop``, and ``main`` decides how to wind down. Returns what ``main`` returns."""

    async def runner() -> T:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            return await main(stop)

    return asyncio.run(runner())
