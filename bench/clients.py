"""The bench's devices, run in worker processes so they can use every core.

Two kinds of client, both speaking the real wire protocol through the real broker and
relay, both really end-to-end encrypting (X3DH + Double Ratchet, 512-byte plaintexts):

* ``device``: real ``clients.device.Device`` objects, exactly as the demo runs them:
  durable SQLite store per device (``synchronous=FULL``), outbox, de-duplication,
  ``infra.link.Link`` over ``infra.transport``. This is the product's own client stack.
* ``core``: the E2EE core (``clients.crypto.DeviceCrypto``) driven directly by a thin
  client on the same transport (``infra.transport``: TCP_NODELAY), that keeps nothing on
  disk and acknowledges each envelope without waiting. It is there to load the relay
  harder than the real client stack can, so that the relay, not the clients, is what
  the figure measures.

Each message's plaintext carries its send time (``time.monotonic_ns()``, the same clock
in every process on Linux), its run tag, conversation and sequence number, so latency
is measured from the decrypted plaintext, and a message is counted once whatever the
number of copies delivered.

A worker runs an asyncio loop and takes commands from the parent over a pipe
(``setup``, ``run``, ``stop``); see ``bench/relay.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from infra.transport import Transport
from wire import strictjson
from wire.events import EventLog

PLAINTEXT_BYTES = 512


def plaintext(tag: str, conv: int, seq: int, at_ns: int | None = None) -> bytes:
    """``at_ns``: when the message was due (open loop), so that time spent waiting to be
    sent counts in its latency (no coordinated omission)."""
    at = time.monotonic_ns() if at_ns is None else at_ns
    head = f"T{at:020d} {tag} {conv:06d} {seq:09d} ".encode()
    return head + b"." * (PLAINTEXT_BYTES - len(head))


def parse_plaintext(data: bytes) -> tuple[int, str, int, int] | None:
    try:
        t, tag, conv, seq = data[:64].split(b" ", 4)[:4]
        if not t.startswith(b"T"):
            return None
        return int(t[1:]), tag.decode(), int(conv), int(seq)
    except ValueError:
        return None


# -- the core client ----------------------------------------------------------------


class CoreClient:
    """DeviceCrypto + the transport: the E2EE work of a device without its durable store."""

    def __init__(
        self,
        device: str,
        password: str,
        host: str,
        port: int,
        on_plaintext: Callable[[str, bytes], None],
    ) -> None:
        from clients.crypto import DeviceCrypto

        self.id = device
        self.user = device.rsplit(".", 1)[0]
        self.crypto = DeviceCrypto.create(device, one_time_prekeys=2)
        self._transport = Transport(
            host,
            port,
            username=device,
            password=password,
            identifier=device,
            subscriptions=[f"doormat/in/{device}/#"],
            clean_session=True,
            keepalive=60,
            # The workers bound their own sends (a window per conversation, or a
            # semaphore in the open loop).
            max_in_flight=10_000,
        )
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._on_plaintext = on_plaintext
        self._reader: asyncio.Task[None] | None = None
        self.seen: set[tuple[str, str]] = set()
        self.duplicates = 0
        self.unreadable = 0

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())
        await self._transport.start()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._transport.stop()

    async def request(self, op: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        req = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[req] = fut
        body = json.dumps({"req": req, "op": op, **fields}).encode()
        await self._transport.publish(f"doormat/out/{self.id}/dir", body)
        try:
            async with asyncio.timeout(timeout):
                answer = await fut
        finally:
            self._answers.pop(req, None)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.id}: {op} refused: {answer.get('error')}")
        return answer

    async def publish_keys(self) -> None:
        await self.request("publish", **self.crypto.publish_material())

    async def open_session(self, peer: str) -> None:
        answer = await self.request("bundles", user=peer.rsplit(".", 1)[0], devices=[peer])
        bundles = [b for b in answer["bundles"] if b.get("device") == peer]
        if not bundles:
            raise RuntimeError(f"{self.id}: no bundle for {peer}")
        self.crypto.start_session(peer, bundles[0])

    def seal(self, peer: str, data: bytes) -> bytes:
        from wire.envelope import Envelope

        sealed = self.crypto.encrypt(peer, data)
        return Envelope(
            id=secrets.token_hex(16),
            sender=self.id,
            recipient=peer,
            ts=time.time_ns() // 1_000_000,
            header=sealed.header,
            body=sealed.body,
            prekey=sealed.prekey,
        ).encode()

    async def send(self, peer: str, data: bytes) -> None:
        await self._transport.publish(f"doormat/out/{self.id}/msg", self.seal(peer, data))

    async def _read(self) -> None:
        from clients.crypto import CryptoError, Sealed
        from wire.envelope import EnvelopeError, parse

        async for m in self._transport.messages():
            # Nothing durable to wait for: acknowledged to the broker at once.
            m.ack()
            payload = m.payload
            if m.topic.endswith("/dir"):
                try:  # strict: a benchmark's reader must not die on one bad answer
                    answer = strictjson.loads_object(payload, "answer", max_bytes=1 << 20)
                except strictjson.StrictJSONError:
                    continue
                fut = self._answers.get(str(answer.get("req")))
                if fut is not None and not fut.done():
                    fut.set_result(answer)
                continue
            try:
                env = parse(payload)
            except EnvelopeError:
                self.unreadable += 1
                continue
            ack = json.dumps({"from": env.sender, "id": env.id}).encode()
            key = (env.sender, env.id)
            if key in self.seen:
                self.duplicates += 1
            else:
                try:
                    data = self.crypto.decrypt(
                        env.sender, Sealed(header=env.header, body=env.body, prekey=env.prekey)
                    )
                except CryptoError:
                    self.unreadable += 1
                    data = None
                self.seen.add(key)
                if data is not None:
                    self._on_plaintext(env.sender, data)
            # Not awaited: sent in order; a lost ack only means a redelivery.
            self._transport.publish_soon(f"doormat/out/{self.id}/ack", ack)


# -- the real device -----------------------------------------------------------------


def _received_log(on_received: Callable[[str, str], None]) -> EventLog:
    """An EventLog that keeps nothing and hands ``device.received`` to a callback."""
    log = EventLog(keep=False)

    def listener(event: dict[str, Any]) -> None:
        if event["kind"] == "device.received":
            on_received(str(event.get("from")), str(event.get("text")))

    log.subscribe(listener)
    return log


# -- the worker ------------------------------------------------------------------------


@dataclass
class Conversation:
    index: int
    sender: str
    receiver: str
    waiting: dict[int, asyncio.Future[None]] = field(default_factory=dict)


@dataclass
class WorkerConfig:
    mode: str  # "core" | "device"
    host: str
    port: int
    pairs: list[tuple[int, str, str, str, str]]  # (index, sender, pw, receiver, pw)
    workdir: str


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.convs = {i: Conversation(i, s, r) for i, s, _, r, _ in cfg.pairs}
        self.clients: dict[str, Any] = {}
        self._tag = "none"
        self._recv: list[tuple[int, float]] = []  # (monotonic ns at receipt, latency ms)
        self._seen: set[tuple[int, int]] = set()
        self._dups = 0
        self._other = 0

    # -- receipt -------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        parsed = parse_plaintext(data)
        if parsed is None:
            self._other += 1
            return
        sent_ns, tag, conv, seq = parsed
        if tag != self._tag:
            self._other += 1  # a warm-up reply or a late copy from an earlier run
            return
        if (conv, seq) in self._seen:
            self._dups += 1
            return
        self._seen.add((conv, seq))
        self._recv.append((now, (now - sent_ns) / 1e6))
        c = self.convs.get(conv)
        if c is not None:
            fut = c.waiting.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    # -- commands ------------------------------------------------------------------

    async def setup(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.monotonic()
        if cfg.mode == "core":
            for _, s, spw, r, rpw in cfg.pairs:
                self.clients[s] = CoreClient(
                    s, spw, cfg.host, cfg.port, lambda _f, d: self._received(d)
                )
                self.clients[r] = CoreClient(
                    r, rpw, cfg.host, cfg.port, lambda _f, d: self._received(d)
                )
            await asyncio.gather(*(c.start() for c in self.clients.values()))
            await asyncio.gather(*(self.clients[r].publish_keys() for _, _, _, r, _ in cfg.pairs))
            await asyncio.gather(*(self.clients[s].publish_keys() for _, s, _, _, _ in cfg.pairs))
            await asyncio.gather(*(self.clients[s].open_session(r) for _, s, _, r, _ in cfg.pairs))
        else:
            from clients.device import Device
            from clients.enterprise import Credentials

            log = _received_log(lambda _f, text: self._received(text.encode()))
            for _, s, spw, r, rpw in cfg.pairs:
                for dev, pw in ((s, spw), (r, rpw)):
                    user = dev.rsplit(".", 1)[0]
                    self.clients[dev] = Device(
                        Credentials(device=dev, user=user, password=pw),
                        cfg.host,
                        cfg.port,
                        Path(cfg.workdir) / f"{dev}.sqlite",
                        log,
                        device_list_ttl=1e9,  # no directory lookups once warmed up
                    )
            await asyncio.gather(*(c.start() for c in self.clients.values()))
        # Warm-up: one message each way, so sessions are past X3DH (no prekey message
        # on every envelope) and device lists are cached.
        self._tag = "warm"
        await self._exchange_warmup()
        return {"clients": len(self.clients), "seconds": round(time.monotonic() - started, 2)}

    async def _exchange_warmup(self) -> None:
        async def one(c: Conversation) -> None:
            fut = asyncio.get_running_loop().create_future()
            c.waiting[0] = fut
            await self._send(c, "warm", 0)
            async with asyncio.timeout(60):
                await fut
            reply = plaintext("reply", c.index, 0)
            if self.cfg.mode == "core":
                await self.clients[c.receiver].send(c.sender, reply)
            else:
                await self.clients[c.receiver].send(c.sender.rsplit(".", 1)[0], reply)

        await asyncio.gather(*(one(c) for c in self.convs.values()))
        await asyncio.sleep(0.5)  # the replies land (counted as "other")

    async def _send(self, c: Conversation, tag: str, seq: int, at_ns: int | None = None) -> None:
        data = plaintext(tag, c.index, seq, at_ns)
        if self.cfg.mode == "core":
            await self.clients[c.sender].send(c.receiver, data)
        else:
            await self.clients[c.sender].send(c.receiver.rsplit(".", 1)[0], data)

    async def run(
        self,
        tag: str,
        start_at: float,
        duration: float,
        window: int = 4,
        rate: float | None = None,
        drain: float = 30.0,
    ) -> dict[str, Any]:
        """Send for ``duration`` seconds from ``start_at`` (time.monotonic()): closed
        loop with ``window`` messages in flight per conversation, or open loop at
        ``rate`` messages per second over all this worker's conversations. Then wait up
        to ``drain`` seconds for the rest to arrive."""
        self._tag, self._recv, self._seen, self._dups, self._other = tag, [], set(), 0, 0
        loop = asyncio.get_running_loop()
        end = start_at + duration
        sent = 0
        errors: list[str] = []
        pending: set[tuple[int, int]] = set()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))

        async def closed(c: Conversation, lane: int) -> None:
            nonlocal sent
            seq = lane
            while time.monotonic() < end:
                fut = loop.create_future()
                c.waiting[seq] = fut
                pending.add((c.index, seq))
                try:
                    await self._send(c, tag, seq)
                    sent += 1
                    await asyncio.wait_for(fut, timeout=max(0.1, end - time.monotonic() + 0.05))
                except TimeoutError:
                    break
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    break
                seq += window

        async def open_loop() -> None:
            nonlocal sent
            convs = list(self.convs.values())
            interval = 1.0 / rate if rate else 0.0
            tasks: set[asyncio.Task[None]] = set()
            n = 0
            # At most this many sends under way: past it, messages wait their turn (and
            # the wait counts in their latency: they carry the time they were due). An
            # unbounded number of concurrent sends would only pile up in the client.
            outstanding = asyncio.Semaphore(256)

            async def one(c: Conversation, seq: int, due_ns: int) -> None:
                nonlocal sent
                try:
                    async with outstanding:
                        await self._send(c, tag, seq, due_ns)
                    sent += 1
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

            while True:
                due = start_at + n * interval
                if due >= end:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                c = convs[n % len(convs)]
                seq = n // len(convs)
                pending.add((c.index, seq))
                t = asyncio.create_task(one(c, seq, int(due * 1e9)))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(set(tasks), timeout=drain)

        if rate is None:
            await asyncio.gather(
                *(closed(c, lane) for c in self.convs.values() for lane in range(window))
            )
        else:
            await open_loop()
        send_end = time.monotonic()
        # Drain: what was sent must arrive (nothing lost), within a bound.
        deadline = time.monotonic() + drain
        while not pending <= self._seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in self.convs.values():
            for fut in c.waiting.values():
                fut.cancel()
            c.waiting.clear()
        lost = len(pending - self._seen)
        return {
            "sent": sent,
            "received": len(self._recv),
            "lost": lost,
            "duplicates": self._dups,
            "other": self._other,
            "errors": errors[:5],
            "n_errors": len(errors),
            "send_end": send_end,
            "recv": self._recv,
        }

    async def stop(self) -> dict[str, Any]:
        await asyncio.gather(*(c.stop() for c in self.clients.values()), return_exceptions=True)
        return {}


def worker_main(conn: Connection, cfg: WorkerConfig) -> None:
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    asyncio.run(_serve(conn, cfg))


async def _serve(conn: Connection, cfg: WorkerConfig) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(cfg)
    while True:
        cmd, args = await loop.run_in_executor(None, conn.recv)
        try:
            result = await getattr(worker, cmd)(**args)
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))
        if cmd == "stop":
            return
