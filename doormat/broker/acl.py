"""The broker ACL, written once as data and used by both brokers.

Mosquitto gets it as an ``acl_file`` (``mosquitto_acl``); the embedded amqtt broker's
topic plugin evaluates the very same rules with the functions below, so the two brokers
cannot drift apart.

    every account   write doormat/out/%u/#      (its own outbound topics, to the relay)
                    read  doormat/in/%u/#       (its own inbox, from the relay)
                    write doormat/ev/%u/#       (its own events and status)
                    write doormat/to/+/%u/#     (to another party, in its own name)
                    read  doormat/to/%u/#       (what other parties send it)
                    read  doormat/hello         (the observer asks for its status)
    role "relay"    read  doormat/out/+/+       (everything every account sends it)
                    write doormat/in/+/+        (every inbox)
    role "observer" read  doormat/ev/#          (every party's events)
                    write doormat/hello

``%u`` is the account's username (Mosquitto's ``pattern`` substitution). A tap account
named ``tap`` therefore reads ``doormat/in/tap/#``, like any other non-relay account.
Nothing else is allowed: the relay can neither forge another party's events (it writes
only ``doormat/ev/relay``) nor send a control in another's name, nor read one meant for
another party; nobody but the observer reads events; nobody may subscribe to ``#`` or
``doormat/#``; anything outside ``doormat/`` (``$SYS`` included) is closed to everyone.
A receiver therefore learns the sender of a control from the topic's ``<from>`` level,
as the relay learns the sender of an envelope from its topic.

Semantics, as Mosquitto 2 applies them:

* publish: allowed if a ``write`` rule's filter matches the topic;
* receive: a message is delivered only if a ``read`` rule matches its topic;
* subscribe: Mosquitto 2.0 grants any syntactically valid subscription and filters on
  delivery. The embedded broker is stricter: it refuses (SUBACK 0x80) a filter that a
  ``read`` rule does not fully cover. Either way a device subscribed to ``#`` gets
  nothing that is not its own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from wire import topics

from .accounts import Account

Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True)
class Rule:
    access: Access
    topic: str  # an MQTT topic filter; ``%u`` stands for the username

    def reads(self) -> bool:
        return self.access in ("read", "readwrite")

    def writes(self) -> bool:
        return self.access in ("write", "readwrite")

    def for_user(self, username: str) -> str:
        return self.topic.replace("%u", username)


# Applies to every account (Mosquitto ``pattern`` lines).
PATTERN_RULES: tuple[Rule, ...] = (
    Rule("write", f"{topics.OUT}/%u/#"),
    Rule("read", f"{topics.IN}/%u/#"),
    Rule("write", f"{topics.EV}/%u/#"),
    Rule("write", f"{topics.TO}/+/%u/#"),
    Rule("read", f"{topics.TO}/%u/#"),
    Rule("read", topics.HELLO),
)

# Extra rules by role (Mosquitto ``user`` blocks, one per account holding the role).
ROLE_RULES: dict[str, tuple[Rule, ...]] = {
    "relay": (Rule("read", f"{topics.OUT}/+/+"), Rule("write", f"{topics.IN}/+/+")),
    "observer": (Rule("read", f"{topics.EV}/#"), Rule("write", topics.HELLO)),
}


def rules_for(account: Account) -> tuple[Rule, ...]:
    return PATTERN_RULES + ROLE_RULES.get(account.role, ())


@functools.lru_cache(maxsize=65536)
def _filters(account: Account, want: Literal["read", "write"]) -> tuple[str, ...]:
    # Cached: the brokers ask for every message they route (an account is immutable).
    return tuple(
        r.for_user(account.username)
        for r in rules_for(account)
        if (r.reads() if want == "read" else r.writes())
    )


def topic_matches(topic: str, topic_filter: str) -> bool:
    """MQTT 3.1.1 matching of a concrete topic against a filter (section 4.7)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]: wildcards at the first level never match $ topics
    t = topic.split("/")
    f = topic_filter.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return i == len(f) - 1  # '#' also matches the parent level itself
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(t) == len(f)


def filter_covered(requested: str, allowed: str) -> bool:
    """True if every topic matched by filter ``requested`` is matched by ``allowed``."""
    r = requested.split("/")
    a = allowed.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return i == len(a) - 1
        if i >= len(r):
            return False
        if level == "+":
            if r[i] == "#":
                return False  # '#' spans more levels than '+' allows
            continue
        if r[i] != level:
            return False  # also catches a '+' or '#' where a literal is required
    return len(r) == len(a)


def _strip_shared(topic_filter: str) -> str:
    """``$share/GROUP/filter`` -> ``filter``: Mosquitto checks the ACL on the real filter."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return topic_filter


def _valid_topic(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic and "\0" not in topic


def may_publish(account: Account, topic: str) -> bool:
    return _valid_topic(topic) and any(topic_matches(topic, f) for f in _filters(account, "write"))


def may_receive(account: Account, topic: str) -> bool:
    return _valid_topic(topic) and any(topic_matches(topic, f) for f in _filters(account, "read"))


def may_subscribe(account: Account, topic_filter: str) -> bool:
    real = _strip_shared(topic_filter)
    if not real:
        return False
    return any(filter_covered(real, f) for f in _filters(account, "read"))


def mosquitto_acl(accounts: Iterable[Account]) -> str:
    """The same rules as a Mosquitto 2 ``acl_file``."""
    lines = [
        "# Written by `doormat broker config` from doormat/broker/acl.py; regenerate, don't edit.",
        "# %u is the username: each account writes only its outbound topics, its events and",
        "# what it sends other parties in its own name, and reads only its own inbox and",
        "# what other parties send it.",
    ]
    lines += [f"pattern {r.access} {r.topic}" for r in PATTERN_RULES]
    for acc in sorted(accounts, key=lambda a: a.username):
        extra = ROLE_RULES.get(acc.role, ())
        if extra:
            lines += ["", f"# role {acc.role}", f"user {acc.username}"]
            lines += [f"topic {r.access} {r.for_user(acc.username)}" for r in extra]
    return "\n".join(lines) + "\n"
