"""MQTT topic layout.

Every device (and every service account) talks on two subtrees keyed by its broker
username, so one ACL ``pattern`` pair covers all of them:

    doormat/out/<id>/<kind>   written by <id> only, read by the relay
    doormat/in/<id>/<kind>    written by the relay only, read by <id>

Because the broker only lets ``<id>`` publish under ``doormat/out/<id>/``, the relay
takes the sender's identity from the topic a message arrived on, never from its body.

Kinds:
    msg   an envelope (device -> relay; relay -> device)
    ack   the device has durably processed an envelope (device -> relay)
    dir   a key-directory request (device -> relay) or its answer (relay -> device)
    archive  a device's sealed journal record (device -> relay -> its enterprise)
    x1    an LI task (interceptor -> relay) or its answer; x2 / x3 the records a task
          yields (relay -> interceptor), named after ETSI TS 103 221's X1/X2/X3

The observation and control plane (docs/architecture.md) adds three subtrees, keyed the
same way, so the same ACL patterns cover every account:

    doormat/ev/<id>              <id>'s events, in batches (written by <id> only,
                                 read by the observer role only)
    doormat/ev/<id>/status       <id>'s presence: its kind, when it started, its last seq
    doormat/to/<to>/<from>/<kind>  party to party, not through the relay: written by
                                 <from> only, read by <to> only; kinds ``ctl`` (a control
                                 request), ``ans`` (its answer) and ``ev`` (replayed events)
    doormat/hello                the observer asks every service for its status (written
                                 by the observer role, read by everyone)

As with envelopes, a receiver takes the sender of a control from the topic's
``<from>`` level, which the broker let only ``<from>`` write.
"""

from __future__ import annotations

ROOT = "doormat"
OUT = f"{ROOT}/out"
IN = f"{ROOT}/in"

MSG = "msg"
ACK = "ack"
DIR = "dir"
X1 = "x1"  # lawful-intercept task administration (interceptor -> relay, and answers)
X2 = "x2"  # IRI records (relay -> interceptor): metadata of a task's targets
X3 = "x3"  # CC records (relay -> interceptor): the envelope bytes, still encrypted
ARCHIVE = "archive"  # a sealed journal record for the sender's enterprise archive
KINDS = (MSG, ACK, DIR, X1, ARCHIVE)

#: The largest MQTT packet (fixed header, topic and payload) either broker takes; a client
#: that sends a larger one is disconnected (docs/brokers.md, "Limits"). It sits well above
#: everything the protocol sends - an envelope (64 KiB), a journal record or an X3 record
#: with an envelope in base64 (about 88 KB), a directory request (128 KiB), the relay's
#: largest directory answer (``relay.actions.MAX_ANSWER_BYTES``, refused beyond) - and
#: bounds what one half-sent packet can make a broker hold.
MAX_PACKET_BYTES = 1024 * 1024


# -- the observation and control plane --------------------------------------------------

EV = f"{ROOT}/ev"
TO = f"{ROOT}/to"
HELLO = f"{ROOT}/hello"
STATUS = "status"
#: The kinds of a party-to-party topic (doormat/to/<to>/<from>/<kind>).
CTL = "ctl"  # a control request {"req", "op", "args"}
ANS = "ans"  # a control answer {"req", "ok", ...}
REPLAY = "ev"  # replayed event batches, before the answer to events.replay
TO_KINDS = (CTL, ANS, REPLAY)
#: What the observer role subscribes to: every service's events.
OBSERVER_SUBSCRIPTION = f"{EV}/#"


def events_topic(svc: str) -> str:
    """``doormat/ev/<svc>``: where ``svc`` publishes its event batches."""
    return f"{EV}/{svc}"


def status_topic(svc: str) -> str:
    """``doormat/ev/<svc>/status``: ``svc``'s presence (on start, on hello, on stop)."""
    return f"{EV}/{svc}/{STATUS}"


def to_topic(to: str, sender: str, kind: str) -> str:
    """``doormat/to/<to>/<sender>/<kind>``: from one party to another."""
    return f"{TO}/{to}/{sender}/{kind}"


def plane_subscriptions(me: str) -> list[str]:
    """What every service subscribes to for the plane: what other parties send it, and
    the observer's hello."""
    return [f"{TO}/{me}/+/+", HELLO]


def parse_to(topic: str) -> tuple[str, str, str] | None:
    """``doormat/to/relay/operator/ctl`` -> ``("relay", "operator", "ctl")``; None for
    anything that is not exactly such a topic."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TO or parts[4] not in TO_KINDS:
        return None
    if not parts[2] or not parts[3]:
        return None
    return parts[2], parts[3], parts[4]


def parse_events(topic: str) -> tuple[str, bool] | None:
    """``doormat/ev/relay`` -> ``("relay", False)``; ``doormat/ev/relay/status`` ->
    ``("relay", True)``; None otherwise."""
    parts = topic.split("/")
    if f"{parts[0]}/{parts[1] if len(parts) > 1 else ''}" != EV or len(parts) not in (3, 4):
        return None
    if not parts[2] or (len(parts) == 4 and parts[3] != STATUS):
        return None
    return parts[2], len(parts) == 4


def outbound(owner: str, kind: str) -> str:
    return f"{OUT}/{owner}/{kind}"


def inbox(owner: str, kind: str) -> str:
    return f"{IN}/{owner}/{kind}"


# What the relay subscribes to: everything every account sends.
RELAY_SUBSCRIPTION = f"{OUT}/+/+"


def parse_outbound(topic: str) -> tuple[str, str] | None:
    """``doormat/out/alice@acme.phone/msg`` -> ``("alice@acme.phone", "msg")``.

    Returns None for anything that is not exactly an outbound topic.
    """
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != OUT or parts[3] not in KINDS:
        return None
    if not parts[2]:
        return None
    return parts[2], parts[3]
