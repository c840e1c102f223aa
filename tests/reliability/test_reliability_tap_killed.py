"""A blanket tap SIGKILLed twice mid-stream loses no mirror record and stores none twice.

The tap runs as its own process (``python -m doormat tap run``, with the environment
compose gives it) against a real Mosquitto. This test publishes, as the relay account,
a stream of mirror records onto the tap's inbox, the way relay/li.py does in blanket
mode. The tap is SIGKILLed twice while it works through them and restarted on the same
SQLite store. It has no application-level ack and the relay never re-sends a mirror
record, so what keeps it whole is the Link acknowledging each record to the broker only
after the tap committed it. (With paho's automatic PUBACK every record the tap had read
off the socket but not yet stored when it was killed was lost for good.)

Also: an enterprise's compliance archive stores and reports a redelivered journal
record once (clients/archive.py de-duplicates by the record's identity).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import aiomqtt
import pytest

from clients.archive import Record, journal_record
from clients.enterprise import Enterprise, EnterpriseServer, archive_store
from doormat.broker.accounts import Account, generate_password, save_accounts
from tests.support.polling import until
from wire import topics
from wire.envelope import Envelope
from wire.events import EventLog

N = 4000  # mirror records in the stream
RATE = 500.0  # records per second the "relay" publishes: the stream lasts about 8 s
# When to SIGKILL: the first life after this many captures; the second life after this
# many of its own, while it works through what the broker queued while it was down
# (the broker hands a resumed session its queue at once, up to its in-flight window:
# the records a tap had read but not yet stored when it died).
KILLS = (1000, 150)
DOWN_FOR = 1.0  # seconds between a kill and the restart, as a supervisor would wait
WINDOW = 32  # the relay's publishes in flight at a time
MIRROR_TOPIC = topics.inbox("tap", "mirror")


def _record(seq: int) -> bytes:
    """A mirror record as relay/li.py writes it in blanket mode (random ciphertext: the
    tap stores it whatever it holds)."""
    env = Envelope(
        id=os.urandom(16).hex(),
        sender="alice@acme.phone",
        recipient="bob@acme.phone",
        ts=1_764_400_000_000 + seq,
        header=os.urandom(40),
        body=os.urandom(256),
    )
    raw = env.encode()
    record = {
        "liid": "BLANKET",
        "seq": seq,
        "t": 1_764_400_000_000 + seq,
        "id": env.id,
        "from": env.sender,
        "to": env.recipient,
        "size": len(raw),
        "bucket": len(env.body),
        "envelope": base64.b64encode(raw).decode("ascii"),
    }
    return json.dumps(record, separators=(",", ":")).encode()


class TapProcess:
    """``doormat tap run`` as compose runs it; each life writes its own stdout file (a
    SIGKILL can leave half a line at the end)."""

    def __init__(self, root: Path, broker_url: str, accounts: Path) -> None:
        self.root = root
        self.db = root / "state" / "tap.sqlite"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOORMAT_")}
        self.env.update(
            DOORMAT_BROKER=broker_url,
            DOORMAT_ACCOUNTS=str(accounts),
            DOORMAT_DB=str(self.db),
            DOORMAT_HEALTH_FILE=str(root / "tap-health.json"),
            PYTHONUNBUFFERED="1",
        )
        self.env.pop("PYTHONASYNCIODEBUG", None)
        self.lives: list[tuple[subprocess.Popen[bytes], Path, Path, list[IO[bytes]]]] = []

    def start(self) -> None:
        n = len(self.lives) + 1
        out_path, err_path = self.root / f"tap-{n}.out", self.root / f"tap-{n}.err"
        out, err = open(out_path, "wb"), open(err_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "doormat", "tap", "run"],
            stdout=out,
            stderr=err,
            env=self.env,
        )
        self.lives.append((proc, out_path, err_path, [out, err]))

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.lives[-1][0]

    def events(self, life: int | None = None) -> list[dict[str, Any]]:
        """The events of one life (or all), skipping a line a SIGKILL cut short."""
        found: list[dict[str, Any]] = []
        lives = self.lives if life is None else [self.lives[life]]
        for _, out_path, _, _ in lives:
            for line in out_path.read_bytes().split(b"\n"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def count(self, kind: str, life: int | None = None) -> int:
        return sum(1 for e in self.events(life) if e["kind"] == kind)

    def quick_count(self, kind: str, life: int | None = None) -> int:
        """``count`` for polling: a byte search (the EventLog sink's json.dumps layout), not a
        parse of thousands of lines many times a second."""
        needle = f'"kind": {json.dumps(kind)}'.encode()
        lives = self.lives if life is None else [self.lives[life]]
        return sum(out.read_bytes().count(needle) for _, out, _, _ in lives)

    def rows(self) -> tuple[int, int]:
        """(rows, distinct seqs) of mirror captures in the tap's store."""
        if not self.db.exists():
            return 0, 0
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            total, distinct = con.execute(
                "SELECT count(*), count(DISTINCT seq) FROM captures WHERE kind = 'mirror'"
            ).fetchone()
            return int(total), int(distinct)
        finally:
            con.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stderr(self) -> str:
        return "\n".join(err.read_text(errors="replace")[-2000:] for _, _, err, _ in self.lives)

    def close(self) -> None:
        for proc, _, _, files in self.lives:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in files:
                f.close()


async def _wait_ready(tap: TapProcess, life: int) -> None:
    await until(
        lambda: tap.count("service.ready", life) >= 1
        or tap.proc.poll() is not None,
        60,
        f"the tap (life {life + 1}) to be ready",
        step=0.1,
    )
    assert tap.proc.poll() is None, tap.stderr()


@pytest.mark.mosquitto
async def test_tap_sigkilled_twice_mid_stream_captures_every_record_once(
    make_broker: Any, tmp_path: Path
) -> None:
    relay = Account("relay", generate_password(), "relay")
    tap_account = Account("tap", generate_password(), "tap")
    broker = await make_broker("mosquitto", [relay, tap_account])
    accounts = save_accounts(tmp_path / "accounts.json", [relay, tap_account])
    tap = TapProcess(tmp_path, broker.url, accounts)
    try:
        tap.start()
        # Its persistent session (and subscription) exists from now on: the broker
        # queues the stream for it while it is dead.
        await _wait_ready(tap, 0)

        records = [_record(seq) for seq in range(1, N + 1)]
        async with aiomqtt.Client(
            broker.host, broker.port, username="relay", password=relay.password,
            identifier="relay",
        ) as client:
            window = asyncio.Semaphore(WINDOW)
            published = 0

            async def one(payload: bytes) -> None:
                nonlocal published
                try:
                    await client.publish(MIRROR_TOPIC, payload, qos=1)
                    published += 1
                finally:
                    window.release()

            async def feed() -> None:
                # Paced, so that both kills land while the stream still flows.
                loop = asyncio.get_running_loop()
                start, sending = loop.time(), []
                for i, payload in enumerate(records):
                    await asyncio.sleep(max(0.0, start + i / RATE - loop.time()))
                    await window.acquire()
                    sending.append(asyncio.create_task(one(payload)))
                await asyncio.gather(*sending)

            feeder = asyncio.create_task(feed())
            killed_at: list[tuple[int, int, int]] = []  # (published, events, rows) at kills
            for life, threshold in enumerate(KILLS):

                def reached(t: int = threshold, life: int = life) -> bool:
                    return tap.quick_count("tap.captured", life) >= t

                await until(reached, 120, f"{threshold} captures", step=0.05)
                tap.kill()
                killed_at.append((published, tap.quick_count("tap.captured"), tap.rows()[0]))
                await asyncio.sleep(DOWN_FOR)
                tap.start()
                await _wait_ready(tap, len(tap.lives) - 1)
            mid_stream = [p < N for p, _, _ in killed_at]
            await feeder

        def settled() -> bool:
            return tap.rows()[0] >= N

        with contextlib.suppress(AssertionError):  # reported with the numbers below
            await until(settled, 120, f"all {N} records in the tap's store", step=0.2)
        await asyncio.sleep(1.0)  # anything still arriving would be a duplicate
        tap.proc.send_signal(signal.SIGTERM)
        assert tap.proc.wait(30) == 0, tap.stderr()

        rows, distinct = tap.rows()
        captured = [e for e in tap.events() if e["kind"] == "tap.captured"]
        seqs = Counter(int(e["seq"]) for e in captured)
        repeated = sum(c - 1 for c in seqs.values())
        print(
            f"\n{N} mirror records; tap SIGKILLed at "
            + ", ".join(f"({p} published, {c} captured events, {r} rows)" for p, c, r in killed_at)
            + f": {rows} rows ({distinct} distinct seqs, {N - distinct} missing), "
            f"{len(captured)} tap.captured events ({len(seqs)} distinct, {repeated} repeated, "
            f"{N - len(seqs)} missing); rejected {tap.count('tap.rejected')}"
        )
        assert mid_stream == [True, True], "a kill came after the stream had ended"
        assert tap.count("tap.rejected") == 0
        # The store is the tap's truth: every record, each once.
        assert (rows, distinct) == (N, N)
        # Its report: no record reported twice and none it does not hold. The event is
        # written just after the commit, so a SIGKILL landing between the two can cost
        # that one record's event (never the record): at most one per kill.
        assert repeated == 0
        assert set(seqs) <= set(range(1, N + 1))
        assert N - len(seqs) <= len(KILLS)
    finally:
        tap.close()


async def test_a_redelivered_journal_record_is_archived_and_reported_once(
    make_broker: Any, tmp_path: Path
) -> None:
    relay = Account("relay", generate_password(), "relay")
    acme = Account("acme", generate_password(), "enterprise")
    broker = await make_broker("mosquitto", [relay, acme])
    events = EventLog()

    def server() -> EnterpriseServer:
        return EnterpriseServer(
            Enterprise("acme", archive=True), acme.password, broker.host, broker.port,
            events, tmp_path,
        )

    def archived() -> list[dict[str, Any]]:
        return events.events("enterprise.archived")

    first = server()
    # Only the link (no enrolment: there is no relay here, we play it).
    await first.link.start()
    key = first.archive_public_key
    assert key is not None
    record = Record("alice@acme.phone", "out", "m1", "alice@acme.phone", "bob@acme", 1, "hi")
    wrapped = json.dumps(
        {"device": record.device, "record": base64.b64encode(journal_record(key, record)).decode()}
    ).encode()
    archive_topic = topics.inbox("acme", topics.ARCHIVE)
    async with aiomqtt.Client(
        broker.host, broker.port, username="relay", password=relay.password, identifier="relay"
    ) as client:
        for _ in range(3):  # the first copy and two redeliveries (sealed afresh or not)
            await client.publish(archive_topic, wrapped, qos=1)
        await client.publish(
            archive_topic,
            json.dumps({
                "device": record.device,
                "record": base64.b64encode(journal_record(key, record)).decode(),
            }).encode(),
            qos=1,
        )
        await until(lambda: len(archived()) >= 1, 20, "the record to be archived")
        await asyncio.sleep(0.5)
        await first.stop()
        # A restarted server on the same store: a copy arriving now is no news either.
        await client.publish(archive_topic, wrapped, qos=1)
        second = server()
        await second.link.start()
        try:
            await asyncio.sleep(2.0)
            assert second.archive is not None
            assert second.archive.records() == [record]
        finally:
            await second.stop()
    assert [e["id"] for e in archived()] == ["m1"]
    assert not events.events("enterprise.rejected")
    con = sqlite3.connect(archive_store(tmp_path, "acme"))
    try:
        assert con.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    finally:
        con.close()
