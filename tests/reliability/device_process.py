"""A real device in its own process, so a test can SIGKILL it mid-conversation.

    python tests/reliability/device_process.py --host H --port P --device D --password PW
        --store FILE --events FILE [--send-to USER --count N --prefix TEXT]
        [--vkey FILE]

It runs ``clients.device.Device`` on its SQLite store and writes every event it emits
(``device.received``, ``device.sent``, ...) as a JSON line to ``--events`` (appended,
flushed per event). With ``--send-to`` it sends messages ``"<prefix> <k>"`` for k up
to ``--count``, resuming after the last one its own history says it sent (a restart
continues the conversation rather than starting over). It prints ``ready`` once
started and ``done`` once it has sent everything, then keeps running (receiving and
acknowledging) until SIGTERM or SIGKILL. ``--vkey FILE`` pins the relay's directory key
(key transparency, and with it the check of new sender identities).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path


async def main(args: argparse.Namespace) -> None:
    from clients.device import Device
    from clients.enterprise import Credentials
    from wire.events import EventLog

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sink = Path(args.events).open("a", encoding="utf-8")  # noqa: SIM115 - process lifetime
    events = EventLog(sink=sink)
    device = Device(
        Credentials(device=args.device, user=args.device.rsplit(".", 1)[0],
                    password=args.password),
        args.host, args.port, args.store, events, device_list_ttl=1e9,
        directory_vkey=Path(args.vkey).read_text().strip() if args.vkey else None,
    )  # fmt: skip
    await device.start()
    print("ready", flush=True)
    if args.send_to:
        done = {
            h.text.decode() for h in device.history()
            if h.direction == "out" and h.text.decode().startswith(args.prefix + " ")
        }  # fmt: skip
        for k in range(args.count):
            text = f"{args.prefix} {k}"
            if text not in done:
                await device.send(args.send_to, text)
        print("done", flush=True)
    await stop.wait()
    await device.stop()
    sink.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--send-to", default=None)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--prefix", default="message")
    p.add_argument("--vkey", default=None)
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
