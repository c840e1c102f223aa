"""The *null relay*: the baseline the real relay is measured against.

    python -m bench.nullrelay --broker mqtt://127.0.0.1:1883 --password-file relay.pw \
        [--username relay] [--subscription 'doormat/out/+/+']

It forwards every ``doormat/out/<id>/msg`` to ``doormat/in/<to>/msg`` and does nothing
else: it finds the ``"to"`` field with a byte search (no JSON parsing, no validation),
stores nothing, de-duplicates nothing, logs nothing, and acknowledges each input as soon
as it takes it (no durable write to wait for). Acks and directory requests from devices
reach it too (same subscription as the relay) and are dropped.

It uses the same client stack as the relay (``infra.transport``: aiomqtt 2 over paho,
QoS 1 in and out, manual acks, TCP_NODELAY, publishes pipelined with the same window),
so the ratio of the two measures what the relay's own work costs, not a difference of
MQTT libraries. It logs in with a clean session, which also wipes whatever an earlier
relay session of the same account had queued at the broker.

Prints ``ready`` on stdout once subscribed; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from infra.signals import stop_on_signals
from infra.transport import Transport

TO = b'"to":"'


async def run(
    host: str, port: int, username: str, password: str, subscription: str, window: int
) -> None:
    stop = asyncio.Event()
    transport = Transport(
        host,
        port,
        username=username,
        password=password,
        identifier=username,
        subscriptions=[subscription],
        clean_session=True,
        keepalive=30,
        max_in_flight=window,
        name="null relay",
    )

    forwarded = 0
    with stop_on_signals(stop, then=transport.wake):  # wake: it may wait for input
        await transport.start()
        print("ready", flush=True)
        try:
            while not stop.is_set():
                # What is already queued is taken without a task per message, as the relay
                # does (relay/service.py): the two read their input the same way.
                batch = transport.take(1 << 30)
                if not batch:
                    await transport.wait()
                    continue
                for message in batch:
                    message.ack()
                    topic = message.topic
                    if not topic.endswith("/msg"):
                        continue
                    payload = message.payload
                    i = payload.find(TO)
                    if i < 0:
                        continue
                    j = payload.find(b'"', i + len(TO))
                    to = payload[i + len(TO) : j].decode("ascii", "replace")
                    await transport.room()
                    transport.publish_soon(f"doormat/in/{to}/msg", payload, retry=False)
                    forwarded += 1
                await asyncio.sleep(0)
        finally:
            await transport.stop()  # drains publishes (5 s at most), then DISCONNECT
    print(f"forwarded {forwarded}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.nullrelay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    p.add_argument("--password-file", required=True)
    p.add_argument("--username", default="relay")
    p.add_argument("--subscription", default="doormat/out/+/+")
    p.add_argument("--window", type=int, default=256)
    args = p.parse_args(argv)
    from doormat.broker import parse_broker_url

    host, port = parse_broker_url(args.broker)
    with open(args.password_file, encoding="utf-8") as fh:
        password = fh.readline().strip()
    asyncio.run(run(host, port, args.username, password, args.subscription, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
