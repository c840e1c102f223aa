"""Whose identity key a device accepts for a peer device, sans I/O (issue 12, point 1).

A device binds a peer device to an identity key in two places: when it starts a session
from a directory bundle (sending), and when a message arrives carrying a *prekey
message* that would start a new session (receiving). The second is the one an active
relay abuses: it can publish into any inbox, so it can send a prekey message "from"
any device under an identity of its own making, and a device that takes it replaces
its session with the relay's.

The rules, for an identity presented for a peer device (docs/key-transparency.md,
"Checking who writes"):

* the same identity as the one held for that device (``Known``): accepted;
* another identity for a device whose **safety number the user verified**: refused,
  whatever the directory says (``verified-identity-changed``). Verification is the
  user's word, checked out of band; the directory cannot overrule it;
* otherwise, with key transparency: the identity must be the one the directory's log
  binds the device to, proven against a checkpoint consistent with the one held
  (``CHECK``, then ``after_lookup``). Not in the log, another key in the log, or an
  answer that proves a split view: refused (``identity-not-logged``);
* without key transparency: trust on first use, and a change is accepted with a notice.

A refusal installs nothing: the session is not replaced and the ratchet state is not
touched; the device raises an alarm naming the user and the device.

What this does **not** catch, and says so: a relay that writes its forged key into its
own log before the victim looks it up. The log then proves the lie, and an unverified
peer accepts it (with an ``identity_changed`` notice if it knew another key). The lie is
now in an append-only, signed log: the impersonated device's own monitoring raises a
``key-mismatch`` alarm, and anyone can show the relay signed it. Only a verified safety
number stops it outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verdict = Literal["accept", "refuse", "check"]

#: alarm kinds (``device.identity_alarm``'s ``alarm_kind``)
NOT_LOGGED = "identity-not-logged"
VERIFIED_CHANGED = "verified-identity-changed"
UNVERIFIABLE = "identity-unverifiable"


@dataclass(frozen=True)
class Known:
    """The identity a device holds for a peer device, and whether its user verified the
    safety number made with it."""

    identity: str  # base64 of the encoded identity, as the directory publishes it
    verified: bool = False


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    alarm_kind: str | None = None  # for a refusal
    changed: bool = False  # accepted, and it replaces another identity held
    how: str = ""  # for an acceptance: same | first-use | key-transparency | directory


def first_look(known: Known | None, presented: str, *, kt: bool) -> Decision:
    """What can be decided without asking the directory."""
    if known is not None and known.identity == presented:
        return Decision("accept", how="same")
    if known is not None and known.verified:
        return Decision(
            "refuse",
            "another identity for a device whose safety number the user verified",
            VERIFIED_CHANGED,
        )
    if kt:
        return Decision("check")
    if known is None:
        return Decision("accept", how="first-use")
    return Decision("accept", changed=True, how="first-use")


def after_lookup(known: Known | None, presented: str, logged: str | None, why: str) -> Decision:
    """The decision once the directory's log has answered: ``logged`` is the identity the
    log proves for the device (None: not proven; ``why`` says why)."""
    first = first_look(known, presented, kt=True)
    if first.verdict != "check":
        return first
    if logged is None:
        reason = f"the directory's log does not prove the device: {why}"
        return Decision("refuse", reason, NOT_LOGGED)
    if logged != presented:
        return Decision(
            "refuse", "the directory's log binds the device to another identity key", NOT_LOGGED
        )
    return Decision("accept", changed=known is not None, how="key-transparency")


def unverifiable(reason: str) -> Decision:
    """The directory's answers cannot be trusted (a split view): nothing is accepted."""
    return Decision("refuse", f"key transparency failed: {reason}", UNVERIFIABLE)
