"""The *null relay*: the baseline the real relay is measured against.

    python -m bench.nullrelay --broker mqtt://127.0.0.1:1883 --password-file relay.pw \
        [--username relay] [--subscription 'doormat/out/+/+']

It forwards every ``doormat/out/<id>/msg`` to ``doormat/in/<to>/msg`` and does nothing
else: it finds the ``"to"`` field with a byte search (no JSON parsing, no validation),
stores nothing, de-duplicates nothing, logs nothing, and lets paho acknowledge each
input on receipt (no durable write to wait for). Acks and directory requests from
devices reach it too (same subscription as the relay) and are dropped.

It uses the same client stack as the relay (aiomqtt 2 over paho, QoS 1 in and out,
TCP_NODELAY, publishes pipelined with the same window), so the ratio of the two measures
what the relay's own work costs, not a difference of MQTT libraries. It logs in with a
clean session, which also wipes whatever an earlier relay session of the same account
had queued at the broker.

Prints ``ready`` on stdout once subscribed; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiomqtt

from clients.link import NODELAY

TO = b'"to":"'


async def run(
    host: str, port: int, username: str, password: str, subscription: str, window: int
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = aiomqtt.Client(
        host,
        port,
        username=username,
        password=password,
        identifier=username,
        clean_session=True,
        keepalive=30,
        socket_options=NODELAY,  # as the relay
    )
    client.pending_calls_threshold = window + 16
    sem = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def one(topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=1, timeout=30)
        except aiomqtt.MqttError:
            pass
        finally:
            sem.release()

    forwarded = 0
    async with client:
        await client.subscribe(subscription, qos=1)
        print("ready", flush=True)
        messages = client.messages
        queue: asyncio.Queue[aiomqtt.Message] = client._queue
        stop_wait = asyncio.create_task(stop.wait())
        while not stop.is_set():
            nxt = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                break
            batch = [nxt.result()]
            # What is already queued is taken without a task per message, as the relay
            # does (relay/service.py): the two read their input the same way.
            while True:
                try:
                    batch.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            for message in batch:
                topic = str(message.topic)
                if not topic.endswith("/msg"):
                    continue
                payload = message.payload
                assert isinstance(payload, bytes | bytearray)
                i = payload.find(TO)
                if i < 0:
                    continue
                j = payload.find(b'"', i + len(TO))
                to = payload[i + len(TO) : j].decode("ascii", "replace")
                await sem.acquire()
                task = asyncio.create_task(one(f"doormat/in/{to}/msg", bytes(payload)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                forwarded += 1
            await asyncio.sleep(0)
        if tasks:
            await asyncio.wait(set(tasks), timeout=5)
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
