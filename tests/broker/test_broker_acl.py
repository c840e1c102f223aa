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


OBSERVER = Account("observer", "pw", "observer")
OPERATOR = Account("operator", "pw", "operator")


@pytest.mark.parametrize("who", [ALICE, ACME, TAP, RELAY, OPERATOR])
def test_every_account_owns_its_events_and_its_name_on_the_plane(who: Account) -> None:
    me, other = who.username, "bob@acme.phone"
    assert may_publish(who, f"doormat/ev/{me}")
    assert may_publish(who, f"doormat/ev/{me}/status")
    assert not may_publish(who, f"doormat/ev/{other}")
    assert not may_publish(who, f"doormat/ev/{other}/status")
    # A control to anyone, in its own name only; what others send it, to it only.
    assert may_publish(who, f"doormat/to/{other}/{me}/ctl")
    assert not may_publish(who, f"doormat/to/{other}/operator/ctl" if me != "operator"
                           else f"doormat/to/{other}/lab/ctl")
    assert not may_publish(who, f"doormat/to/{other}/{other}/ctl")
    assert may_receive(who, f"doormat/to/{me}/{other}/ctl")
    assert may_subscribe(who, f"doormat/to/{me}/+/+")
    assert not may_receive(who, f"doormat/to/{other}/{me}/ans")
    assert not may_subscribe(who, "doormat/to/+/+/+")
    # Nobody but the observer reads events; the hello is the observer's to send.
    assert not may_receive(who, f"doormat/ev/{me}")
    assert not may_subscribe(who, "doormat/ev/#")
    assert may_receive(who, "doormat/hello")
    assert not may_publish(who, "doormat/hello")


def test_the_observer_reads_every_event_and_nothing_else() -> None:
    assert may_subscribe(OBSERVER, "doormat/ev/#")
    assert may_receive(OBSERVER, "doormat/ev/relay")
    assert may_receive(OBSERVER, "doormat/ev/alice@acme.phone/status")
    assert may_publish(OBSERVER, "doormat/hello")
    assert may_receive(OBSERVER, "doormat/to/observer/relay/ans")
    for topic in ("doormat/in/alice@acme.phone/msg", "doormat/out/alice@acme.phone/msg",
                  "doormat/to/relay/operator/ctl", "doormat/in/tap/mirror"):
        assert not may_receive(OBSERVER, topic), topic
    for flt in ("#", "doormat/#", "doormat/in/+/+", "doormat/out/+/+", "doormat/to/+/+/+"):
        assert not may_subscribe(OBSERVER, flt), flt
    assert not may_publish(OBSERVER, "doormat/ev/relay")
    assert not may_publish(OBSERVER, "doormat/to/relay/operator/ctl")


def test_prefix_of_another_id_is_not_a_match() -> None:
    # 'acme' must not reach 'acme2' (or 'acme.x') by string prefix.
    assert not may_receive(ACME, "doormat/in/acme2/msg")
    assert not may_publish(ACME, "doormat/out/acme.phone/msg")


def test_tap_reads_only_its_own_inbox() -> None:
    assert may_subscribe(TAP, "doormat/in/tap/#")
    assert not may_subscribe(TAP, "doormat/#")
    assert not may_receive(TAP, "doormat/out/alice@acme.phone/msg")


def test_relay_reads_every_outbound_and_writes_every_inbox_but_nothing_else() -> None:
    # Not doormat/# any more (issue 11): the relay must not forge another party's
    # events or controls, nor read what parties send each other.
    assert not may_subscribe(RELAY, "doormat/#")
    assert may_subscribe(RELAY, "doormat/out/+/+")
    assert may_subscribe(RELAY, "$share/relays/doormat/out/+/+")
    assert may_publish(RELAY, "doormat/in/alice@acme.phone/msg")
    assert may_receive(RELAY, "doormat/out/alice@acme.phone/msg")
    assert not may_subscribe(RELAY, "#")
    assert not may_publish(RELAY, "elsewhere/x")
    assert not may_publish(RELAY, "doormat/ev/tap")
    assert not may_publish(RELAY, "doormat/ev/alice@acme.phone")
    assert not may_publish(RELAY, "doormat/to/tap/lab/ctl")
    assert not may_publish(RELAY, "doormat/to/relay/operator/ctl")
    assert not may_publish(RELAY, "doormat/out/alice@acme.phone/msg")
    assert not may_receive(RELAY, "doormat/ev/tap")
    assert not may_receive(RELAY, "doormat/to/tap/lab/ctl")
    assert not may_subscribe(RELAY, "doormat/ev/#")
    assert not may_subscribe(RELAY, "doormat/to/+/+/+")
    # Its own plane topics, like every account's.
    assert may_publish(RELAY, "doormat/ev/relay")
    assert may_publish(RELAY, "doormat/to/observer/relay/ans")
    assert may_subscribe(RELAY, "doormat/to/relay/+/+")


def test_mosquitto_acl_text() -> None:
    text = mosquitto_acl([ALICE, RELAY, ACME, Account("relay-2", "pw", "relay")])
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "pattern write doormat/out/%u/#",
        "pattern read doormat/in/%u/#",
        "pattern write doormat/ev/%u/#",
        "pattern write doormat/to/+/%u/#",
        "pattern read doormat/to/%u/#",
        "pattern read doormat/hello",
        "user relay",
        "topic read doormat/out/+/+",
        "topic write doormat/in/+/+",
        "user relay-2",
        "topic read doormat/out/+/+",
        "topic write doormat/in/+/+",
    ]
