"""``doormat`` with the changes proposed in docs/benchmarks.md applied in-process.

    python -m bench.scale_fixes demo --users 1000 ...

Used by ``bench/scale.py`` to measure what the proposed changes are worth, without
touching the code they belong to (clients/, doormat/). Each is a monkeypatch standing
in for a small source change:

1. TCP_NODELAY on every paho socket (proposed for ``clients/link.py``: set it on
   ``client._client.socket()`` after connecting, as ``relay/service.py`` now does).
   Without it each request/answer round trip waits ~40 ms on Nagle + delayed ACK.
2. (No longer patched: the snapshot iteration of amqtt's ``Broker._run_broadcast``,
   docs/benchmarks.md "Found" 3, now ships in ``doormat/broker/embedded.py``.)
3. At most 50 device start-ups at a time (proposed for ``doormat/system.py``
   ``System.start``): 1000 simultaneous connects + key publications + syncs on one
   event loop make individual starts exceed their 20 s timeout.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

START_CONCURRENCY = 50


def apply() -> None:
    import paho.mqtt.client as pc

    original = pc.Client._create_socket_connection

    def nodelay(self: Any) -> Any:
        sock = original(self)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    pc.Client._create_socket_connection = nodelay  # type: ignore[method-assign]

    from doormat.system import System

    start_device = System.start_device
    limits: dict[int, asyncio.Semaphore] = {}

    async def bounded(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = id(asyncio.get_running_loop())
        sem = limits.setdefault(loop, asyncio.Semaphore(START_CONCURRENCY))
        async with sem:
            return await start_device(self, *args, **kwargs)

    System.start_device = bounded  # type: ignore[method-assign]


def main() -> int:
    apply()
    from doormat.cli import main as doormat_main

    return doormat_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
