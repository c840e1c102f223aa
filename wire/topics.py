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
