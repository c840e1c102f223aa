"""doormat.broker.acl: the one rule set both brokers enforce."""

from __future__ import annotations

import pytest

from doormat.broker.accounts import Account
from doormat.broker.acl import (
    filter_covered,
    may_publish,
    may_receive,
    may_subscribe,
    mosquitto_acl,
    topic_matches,
)

ALICE = Account("alice@acme.phone", "pw", "device")
ACME = Account("acme", "pw", "enterprise")
RELAY = Account("relay", "pw", "relay")
TAP = Account("tap", "pw", "tap")


@pytest.mark.parametrize(
    ("topic", "flt", "expected"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/+/c", True),
        ("a/b/c", "a/#", True),
        ("a", "a/#", True),  # '#' includes the parent level
        ("a/b", "a/+", True),
        ("a/b/c", "a/+", False),
        ("a/b", "a/b/c", False),
        ("$SYS/x", "#", False),
        ("$SYS/x", "+/x", False),
        ("a/b", "#", True),
    ],
)
def test_topic_matches(topic: str, flt: str, expected: bool) -> None:
    assert topic_matches(topic, flt) is expected


@pytest.mark.parametrize(
    ("requested", "allowed", "expected"),
    [
        ("doormat/in/x/#", "doormat/in/x/#", True),
        ("doormat/in/x/msg", "doormat/in/x/#", True),
        ("doormat/in/x/+", "doormat/in/x/#", True),
        ("doormat/in/x", "doormat/in/x/#", True),
        ("doormat/in/+/msg", "doormat/in/x/#", False),
        ("doormat/#", "doormat/in/x/#", False),
        ("#", "doormat/in/x/#", False),
        ("doormat/out/+/+", "doormat/#", True),
        ("doormat/+/+", "doormat/+/+", True),
        ("doormat/#", "doormat/+/+", False),
    ],
)
def test_filter_covered(requested: str, allowed: str, expected: bool) -> None:
    assert filter_covered(requested, allowed) is expected


@pytest.mark.parametrize("who", [ALICE, ACME, TAP])
def test_non_relay_accounts_own_exactly_their_two_subtrees(who: Account) -> None:
    me = who.username
    other = "bob@acme.phone"
    assert may_publish(who, f"doormat/out/{me}/msg")
    assert not may_publish(who, f"doormat/out/{other}/msg")
    assert not may_publish(who, f"doormat/in/{me}/msg")  # only the relay writes inboxes
    assert not may_publish(who, "doormat/out/+/msg")  # wildcards are not topics
    assert may_receive(who, f"doormat/in/{me}/msg")
    assert not may_receive(who, f"doormat/in/{other}/msg")
    assert not may_receive(who, f"doormat/out/{other}/msg")
    assert may_subscribe(who, f"doormat/in/{me}/#")
    assert may_subscribe(who, f"doormat/in/{me}/msg")
    for flt in ("#", "doormat/#", "doormat/out/+/msg", "doormat/in/+/msg", "+/in/#", "$SYS/#"):
        assert not may_subscribe(who, flt), flt


def test_prefix_of_another_id_is_not_a_match() -> None:
    # 'acme' must not reach 'acme2' (or 'acme.x') by string prefix.
    assert not may_receive(ACME, "doormat/in/acme2/msg")
    assert not may_publish(ACME, "doormat/out/acme.phone/msg")


def test_tap_reads_only_its_own_inbox() -> None:
    assert may_subscribe(TAP, "doormat/in/tap/#")
    assert not may_subscribe(TAP, "doormat/#")
    assert not may_receive(TAP, "doormat/out/alice@acme.phone/msg")


def test_relay_reads_and_writes_doormat_but_nothing_else() -> None:
    assert may_subscribe(RELAY, "doormat/#")
    assert may_subscribe(RELAY, "doormat/out/+/+")
    assert may_subscribe(RELAY, "$share/relays/doormat/out/+/+")
    assert may_publish(RELAY, "doormat/in/alice@acme.phone/msg")
    assert may_receive(RELAY, "doormat/out/alice@acme.phone/msg")
    assert not may_subscribe(RELAY, "#")
    assert not may_publish(RELAY, "elsewhere/x")


def test_mosquitto_acl_text() -> None:
    text = mosquitto_acl([ALICE, RELAY, ACME, Account("relay-2", "pw", "relay")])
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "pattern write doormat/out/%u/#",
        "pattern read doormat/in/%u/#",
        "user relay",
        "topic readwrite doormat/#",
        "user relay-2",
        "topic readwrite doormat/#",
    ]
