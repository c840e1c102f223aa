"""``doormat`` with the changes proposed in docs/benchmarks.md applied in-process.

    python -m bench.scale_fixes demo --users 1000 ...

Used by ``bench/scale.py`` to measure what the proposed changes are worth, without
touching the code they belong to (clients/, doormat/). Each is a monkeypatch standing
in for a small source change:

1. TCP_NODELAY on every paho socket (proposed for ``clients/link.py``: set it on
   ``client._client.socket()`` after connecting, as ``relay/service.py`` now does).
   Without it each request/answer round trip waits ~40 ms on Nagle + delayed ACK.
2. amqtt 0.12.1 ``Broker._run_broadcast`` iterates ``self._subscriptions.items()`` with
   an ``await`` inside the loop; a subscription added meanwhile (a device connecting)
   raises ``RuntimeError: dictionary changed size during iteration`` and the message
   being broadcast is lost. Proposed for ``doormat/broker/embedded.py``: override it to
   iterate ``list(...)`` snapshots.
3. At most 50 device start-ups at a time (proposed for ``doormat/system.py``
   ``System.start``): 1000 simultaneous connects + key publications + syncs on one
   event loop make individual starts exceed their 20 s timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import sys
import textwrap
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

    import amqtt.broker as ab

    src = textwrap.dedent(inspect.getsource(ab.Broker._run_broadcast))
    for old, new in (
        ("in self._subscriptions.items():", "in list(self._subscriptions.items()):"),
        (
            "for target_session, sub_qos in subscriptions:",
            "for target_session, sub_qos in list(subscriptions):",
        ),
    ):
        if old in src:
            src = src.replace(old, new)
    namespace: dict[str, Any] = {}
    exec(compile(src, ab.__file__, "exec"), ab.__dict__, namespace)
    ab.Broker._run_broadcast = namespace["_run_broadcast"]  # type: ignore[method-assign]

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
