"""The registry of event kinds: every kind any actor emits, with what it means.

An event (``wire.events``) is a flat JSON object with ``t``, ``actor`` and ``kind``. The
exposure report, the dashboard and the exercises (``doormat/lab/exercises.yaml``) wait
for kinds by name, so a misspelt kind would wait forever without a word: ``doormat lab
check`` refuses an exercise that waits for a kind not listed here, and
tests/architecture/test_event_kinds.py keeps this list and the code in step (every
``emit`` of the product names a kind listed here, and every kind listed here is emitted
somewhere). A new kind is one line below.

The first word of a kind names the side that reports it (``relay``, ``device``, ...);
the actor field says which one (a device id, an enterprise, ``relay``, ...). The fields
of each kind are documented where it is emitted (docs/relay.md has the relay's).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

KINDS: Mapping[str, str] = MappingProxyType(
    {
        # -- the relay (relay/): routing, the directory, the LI switch --------------------
        "relay.accepted": "an envelope was validated and durably stored (metadata only)",
        "relay.delivered": "a stored envelope was published to its recipient's inbox",
        "relay.duplicate": "an envelope seen before (same sender, id, recipient): dropped",
        "relay.acked": "a recipient device acknowledged an envelope",
        "relay.rejected": "an input was refused (malformed, unknown, over a limit), with why",
        "relay.enrolled": "an enterprise (or, for a ghost, the tap) enrolled a device",
        "relay.published": "a device published its keys to the directory",
        "relay.devices_listed": "the directory answered a device list, with its proofs",
        "relay.bundle_served": "the directory handed out one device's prekey bundle",
        "relay.monitored": "the directory answered a user's key-transparency monitor request",
        "relay.prekeys_counted": "the directory told a device how many one-time prekeys it holds",
        "relay.sync": "a device asked for what is pending for it",
        "relay.ghost": "the ghost back door's directory entries were switched on or off",
        "relay.split_view": "the directory now shows some users a log without ghost entries",
        "relay.started": "the router (re)started and republished what is pending",
        "relay.connected": "the relay service connected to the broker",
        "relay.disconnected": "the relay service's broker connection ended",
        "relay.error": "the relay's store failed; the connection is dropped and retried",
        "relay.pruned": "retention deleted stored rows",
        "relay.stopped": "the relay service stopped",
        "relay.journal": "a device's sealed archive record was forwarded to its enterprise",
        "relay.li_mode": "the lawful-intercept switch changed (off, scoped, blanket)",
        "relay.mirrored": "a blanket copy of an envelope was sent to the tap",
        "relay.task_started": "an X1 task was provisioned at the relay",
        "relay.task_ended": "an X1 task ended (expired, cancelled, replaced)",
        "relay.task_record": "an X2 (metadata) or X3 (ciphertext) record went to a task",
        "relay.x1_refused": "an X1 request to the relay was refused",
        "operator.searched": "the relay operator searched its store for a word",
        "relay.breached": "an attacker took a copy of the relay's store (lab breach)",
        # -- devices and enterprises (clients/) ------------------------------------------
        "device.sent": "a device sent a message (sealed per recipient device)",
        "device.received": "a device opened a message and shows its text",
        "device.unreadable": "a device could not open a message addressed to it",
        "device.rejected": "a device refused an input from the relay",
        "device.bad_bundle": "a device refused a prekey bundle from the directory",
        "device.kt_refused": "a listed device came without a valid key-transparency proof",
        "device.kt_alarm": "key transparency: an unenrolled device, a foreign key, a split view",
        "device.identity_held": "a message with a sender key new to the device waits for a check",
        "device.identity_accepted": "a device accepted a new or changed identity key for a peer",
        "device.identity_alarm": "a device refused a sender's key: not the logged or verified one",
        "device.safety_verified": "a user marked a peer device's safety number as verified",
        "device.prekeys": "a device checked its prekeys at the relay: refilled, rotated, deleted",
        "device.undelivered": "the relay refused an envelope the device sent",
        "device.resent": "a device re-sent envelopes after a rate-limit refusal",
        "device.build_installed": "a device installed a client build the vendor signed",
        "device.build_refused": "a device refused a build: unsigned, not the vendor's, older",
        "device.breached": "an attacker took an image of the device's storage (lab breach)",
        "enterprise.enrolled": "an enterprise server enrolled its devices at the relay",
        "enterprise.archived": "an enterprise archive stored a journal record it opened",
        "enterprise.rejected": "an enterprise server refused a journal record",
        "enterprise.warrant_checked": "an enterprise checked a warrant itself, and decided",
        "enterprise.cc_exported": "an enterprise exported archived content under a warrant",
        "enterprise.case_stopped": "an enterprise stopped exporting CC for an authorisation",
        "enterprise.policy": "an enterprise service started with its archive policy",
        "vendor.signed": "the vendor signed a client build (its name and version)",
        "vendor.shipped": "the vendor shipped a build: how many devices installed or refused it",
        "bot.failed": "a device service's automatic message could not be sent",
        # -- the government side (interceptor/) ------------------------------------------
        "tap.captured": "the blanket tap stored a copy, readable only with a key it holds",
        "tap.rejected": "the blanket tap refused a record it could not parse",
        "tap.breached": "an attacker took a copy of a government key (lab breach)",
        "government.mandate": "the government mandated a back door (a client build)",
        "interceptor.warrant_accepted": "the interceptor accepted a warrant (logged first)",
        "interceptor.warrant_refused": "the interceptor refused a warrant, with a reason code",
        "interceptor.task_started": "the interceptor started a task for an accepted warrant",
        "interceptor.task_stopped": "the interceptor stopped a task",
        "interceptor.delivered": "the interceptor delivered a sealed HI-2/HI-3 record",
        "interceptor.rejected": "the interceptor refused a record or an export",
        "interceptor.x1_answer": "the relay answered an X1 request of the interceptor",
        "interceptor.witnessed": "the court's witness cosigned the ledger's new checkpoint",
        "interceptor.halted": "the interceptor stopped acting: its ledger was not witnessed",
        "agency.received": "the agency opened a delivered record (and read it or not)",
        "agency.rejected": "the agency could not open a delivered record",
        "ledger.verified": "oversight verified the audit ledger (ok or not)",
        "ledger.tamper_detected": "oversight found the audit ledger altered",
        "ledger.rollback_detected": "oversight found the ledger behind what the witness cosigned",
        "ledger.tampered": "an insider altered a stored audit ledger entry",
        "ledger.rolled_back": "an insider rolled the audit ledger back to an older state",
        "attacker.read": "an attacker tried a stolen key on captured traffic",
        # -- the observation and control plane (infra/plane.py, infra/observer.py) -------
        "control.accepted": "a service carried out a control (op, sender and its role)",
        "control.refused": "a service refused a control, with why (op, sender, reason)",
        "exposure.row": "an observer measured what it holds and reads (its own row)",
        "plane.gap": "the observer lost some of a service's events for good (which numbers)",
        # -- every service (doormat serve) -----------------------------------------------
        "service.starting": "a service is starting",
        "service.retry": "a service is waiting for the broker or the relay (backoff)",
        "service.ready": "a service is connected and running",
        "service.stopped": "a service stopped",
        "service.failed": "a service gave up (a refused login) and exits",
        "service.set_aside": "a message a service cannot process was kept aside, with why",
    }
)


def is_kind(kind: object) -> bool:
    """True for a kind listed in the registry."""
    return isinstance(kind, str) and kind in KINDS


def nearest(kind: str) -> str | None:
    """The registered kind closest to ``kind`` (a likely spelling), or None."""
    found = difflib.get_close_matches(kind, list(KINDS), n=1, cutoff=0.6)
    return found[0] if found else None


__all__ = ["KINDS", "is_kind", "nearest"]
