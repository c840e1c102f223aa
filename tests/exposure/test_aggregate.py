"""The aggregator (doormat/exposure.py) holds no key and trusts no claim it can check
against the relay's record of what it carried (issue 12, point 5: one device fabricated
journal records and, with one message sent, the report said enterprise 6/6)."""

from __future__ import annotations

from doormat.exposure import aggregate
from wire.plane import ExposureRow

A, B, C = "alice@acme.phone", "bob@acme.phone", "carol@globex.phone"


def relay(*carried: tuple[str, str, list[str], bool]) -> ExposureRow:
    return ExposureRow("relay", captured=[(s, i) for s, i, _, _ in carried],
                       carried=list(carried))


def test_fabricated_journal_records_do_not_count() -> None:
    rows = [
        relay((A, "m1", [B], True)),
        ExposureRow(
            "enterprise:acme",
            keys_held=["acme archive key"],
            journal=[
                (A, "out", A, "m1"),  # genuine: the sender journals its own message
                (B, "in", A, "m1"),  # genuine: a recipient the relay delivered to
                (B, "in", C, "x1"),  # never carried
                (B, "in", C, "x2"),
                (B, "out", C, "x3"),
                (B, "out", A, "m1"),  # "out" of a message it did not send
                (C, "in", A, "m1"),  # a device the relay never delivered m1 to
            ],
            readable=[(A, "m1"), (C, "x1"), (C, "x2"), (C, "x3")],
        ),
    ]
    result = aggregate(rows)
    assert result.messages_sent == 1 and result.messages_delivered == 1
    acme = result.observer("enterprise:acme")
    assert acme is not None
    assert (acme.captured, acme.readable, acme.metadata_records) == (1, 1, 2)
    assert result.ignored["enterprise:acme"] == {"journal_records": 5}


def test_claims_of_messages_the_relay_never_carried_do_not_count() -> None:
    rows = [
        relay((A, "m1", [B], True), (B, "m2", [A], False)),
        ExposureRow("blanket-tap", keys_held=["escrow private key"],
                    captured=[(A, "m1"), (C, "x1")],
                    readable=[(A, "m1"), (C, "x1"), (B, "m2")],  # m2 never captured
                    records=[(A, "m1", 2), (C, "x1", 7)]),
    ]
    result = aggregate(rows)
    assert result.messages_sent == 2 and result.messages_delivered == 1
    tap = result.observer("blanket-tap")
    assert tap is not None
    assert (tap.captured, tap.readable, tap.metadata_records) == (1, 1, 2)
    assert result.ignored["blanket-tap"] == {"messages": 1, "readable": 2, "records": 7}


def test_no_relay_row_counts_nothing() -> None:
    result = aggregate([ExposureRow("blanket-tap", captured=[(A, "m1")], readable=[(A, "m1")],
                                    records=[(A, "m1", 1)])])
    assert result.messages_sent == 0
    tap = result.observer("blanket-tap")
    assert tap is not None and (tap.captured, tap.readable, tap.metadata_records) == (0, 0, 0)
