"""infra.signals: SIGINT/SIGTERM set a stop event while the block runs, then the
handlers are gone again."""

from __future__ import annotations

import asyncio
import os
import signal

from infra.signals import run_until_signal, stop_on_signals


def test_a_signal_sets_stop_and_calls_then() -> None:
    woken: list[bool] = []

    async def main(stop: asyncio.Event) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
        return "stopped cleanly"

    assert run_until_signal(main) == "stopped cleanly"

    async def with_then() -> bool:
        stop = asyncio.Event()
        with stop_on_signals(stop, then=lambda: woken.append(True)):
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(stop.wait(), 5)
        return stop.is_set()

    assert asyncio.run(with_then()) and woken == [True]


def test_the_handlers_are_removed_when_the_block_ends() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        with stop_on_signals(asyncio.Event()):
            pass
        # remove_signal_handler answers False when no handler is installed
        return loop.remove_signal_handler(signal.SIGTERM)

    assert asyncio.run(main()) is False
