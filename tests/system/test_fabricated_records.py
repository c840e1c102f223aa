"""A device that fabricates journal records for its enterprise's archive (issue 12, point
5) inflates nothing: the archive opens them (it holds the key), its row lists them, and
the aggregator counts a record only if the relay carried that message and the
journalling device was its sender (``out``) or a recipient it was delivered to (``in``)."""

from __future__ import annotations

import asyncio

from clients.archive import ARCHIVE_KIND, Record, journal_record
from doormat.exposure import aggregate
from doormat.system import System
from infra.observer import gather_rows
from tests.system.observers import observers

ALICE = "alice@acme.phone"
BOB = "bob@acme.phone"
CAROL = "carol@globex.phone"


async def test_fabricated_journal_records_do_not_count(system: System) -> None:
    d = await system.send(ALICE, "carol@globex", "the one real message")
    assert await system.wait_delivered(d)
    archive = system.servers["acme"].archive
    assert archive is not None

    async def records(n: int) -> None:
        async with asyncio.timeout(10):
            while len(list(archive.records())) < n:
                await asyncio.sleep(0.02)

    await records(2)  # alice's phone ("out") and her laptop's copy ("in")
    honest = await observers(system)
    assert (honest["enterprise:acme"].captured, honest["enterprise:acme"].readable,
            honest["enterprise:acme"].metadata_records) == (1, 1, 2)

    # bob's phone seals records "of" messages: never sent, sent by others, not to him.
    bob = system.devices[BOB]
    key = bob.archive_key
    assert key is not None
    fakes = [
        Record(BOB, "in", f"{i:032x}", CAROL, None, 1, f"made up {i}") for i in range(4)
    ] + [
        Record(BOB, "out", d.sent.id, ALICE, "carol@globex", 1, "not his to send"),
        Record(BOB, "in", d.sent.id, ALICE, None, 1, "never delivered to him"),
    ]
    for fake in fakes:
        await bob._link.publish(ARCHIVE_KIND, journal_record(key, fake))
    await records(2 + len(fakes))  # the archive took them all

    after = await observers(system)
    acme = after["enterprise:acme"]
    assert (acme.captured, acme.readable, acme.metadata_records) == (1, 1, 2)
    # The six are not silently lost: the aggregate says what it left out, and why.
    assert system.observer is not None
    result = aggregate(await gather_rows(system.observer, ["relay", "acme"]))
    assert result.messages_sent == 1
    assert result.ignored["enterprise:acme"] == {"journal_records": len(fakes)}
