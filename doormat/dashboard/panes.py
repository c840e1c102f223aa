"""Which pane shows which event, and how: one row of ``ROUTES`` per (event kind, pane).

A new event kind is one line here. A row names

* ``kind``: the event kind, or a prefix ending in ``.*`` (used only when no exact row
  matches, e.g. ``enterprise.*``);
* ``pane``: a pane id, or a template resolved against the event: ``user:{user}`` (the
  user of the acting device), ``enterprise:{actor}``, ``enterprise:{enterprise}``;
* ``text``: a ``str.format`` template over the event's fields and the derived fields
  below (a missing field shows as ``?``);
* ``status``: what the line means, shown as a text badge and a shape, never by colour
  alone: ``plain`` (plaintext this party can read), ``sealed`` (ciphertext it cannot
  read), ``alarm``, ``refused``, ``ok``, ``info``;
* ``when``: only for events whose fields equal these values (e.g. ``readable: True``);
* ``key``: lines with the same key in one pane are one line (a message read on two of
  a user's devices shows once, with both devices noted in ``note``).

Derived fields: ``user`` / ``dev`` / ``ent`` (user, device name and enterprise of the
acting device), ``from_dev`` / ``to_dev`` (short device names: ``alice.phone``),
``excerpt_short``, ``categories_text``, ``readable_text``.

What a pane shows is only what its party can see: the relay's and the tap's lines are
built from their own events, which carry plaintext only where that party read it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wire.ids import is_device, user_of

STATUSES = ("plain", "sealed", "alarm", "refused", "ok", "info")


@dataclass(frozen=True)
class Route:
    kind: str
    pane: str
    text: str
    status: str = "info"
    when: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None
    note: str | None = None


R = Route
ROUTES: tuple[Route, ...] = (
    # -- the users' devices: what each user sees (their own plaintext) -----------------
    R("device.sent", "user:{user}", "{dev} → {to_user}: {text}", "plain",
      key="{actor}/{id}", note="sent from {dev}"),
    R("device.received", "user:{user}", "{from_dev} → {user}: {text}", "plain",
      key="{from}/{id}", note="shown on {dev}"),
    R("device.unreadable", "user:{user}", "{dev} could not open a message from {from_dev}: "
      "{reason}", "alarm"),
    R("device.bad_bundle", "user:{user}", "{dev} refused a key bundle for {device}: {reason}",
      "alarm"),
    R("device.rejected", "user:{user}", "{dev} rejected an envelope: {reason}", "alarm"),
    R("device.kt_alarm", "user:{user}", "KEY TRANSPARENCY ALARM on {dev}: {device} was not "
      "enrolled by {user}'s enterprise ({reason})", "alarm"),
    R("device.kt_alarm", "attackers", "the ghost was detected: {device} ({reason})", "alarm"),
    R("device.identity_held", "user:{user}", "{dev} holds a message from {from_dev} until "
      "the sender's new key is checked", "info"),
    R("device.identity_alarm", "user:{user}", "IDENTITY ALARM on {dev}: refused a key for "
      "{device_short}: {reason} ({alarm_kind})", "alarm"),
    # -- the relay operator: metadata and ciphertext -----------------------------------
    R("relay.accepted", "relay", "{from_dev} → {to_dev}, {bucket}-byte ciphertext "
      "{excerpt_short}", "sealed"),
    R("relay.rejected", "relay", "rejected from {owner}: {reason}", "refused"),
    R("relay.li_mode", "relay", "LI switch: {previous} → {mode}", "info"),
    R("relay.mirrored", "relay", "mirrored {from_dev} → {to_dev} to the tap ({liid})", "sealed"),
    R("relay.ghost", "relay", "ghost directory entries on: {on}", "alarm"),
    R("relay.enrolled", "relay", "directory: a government device {device} for {user}",
      "alarm", when={"ghost": True}),
    R("relay.split_view", "relay", "split view of the directory log, hidden from: "
      "{hidden_from}", "alarm"),
    R("relay.task_started", "relay", "LI task started: {liid}", "info"),
    R("relay.task_ended", "relay", "LI task ended: {task_id} ({reason})", "info"),
    R("relay.task_record", "relay", "LI task {liid}: {from_dev} → {to_dev} "
      "({categories_text})", "sealed"),
    R("operator.searched", "relay", "the operator searched the store for “{query}”: found in "
      "{found} of {envelopes} envelopes", "sealed"),
    # -- the government's blanket tap -------------------------------------------------
    R("tap.captured", "tap", "READS {from_dev} → {to_dev} ({channel}): {text}", "plain",
      when={"readable": True}),
    R("tap.captured", "tap", "captured {from_dev} → {to_dev} ({channel}): sealed, no key "
      "opens it", "sealed", when={"readable": False}),
    R("tap.rejected", "tap", "rejected a {channel} record: {reason}", "refused"),
    R("government.mandate", "tap", "mandate: back door = {backdoor} (client build "
      "{build})", "alarm"),
    R("government.mandate", "attackers", "new mandate {backdoor}: new keys to steal",
      "info"),
    # -- warrants, the agency, oversight -----------------------------------------------
    R("interceptor.warrant_refused", "court", "warrant refused: {reason} ({message})",
      "refused"),
    R("interceptor.warrant_accepted", "court", "warrant accepted ({action}): {case_reference}, "
      "LIID {liid}, {categories_text} on {targets_text}", "ok"),
    R("interceptor.warrant_accepted", "agency", "case {case_reference} opened: "
      "{categories_text} on {targets_text}", "ok"),
    R("interceptor.task_started", "court", "task provisioned at the relay for {liid}", "info"),
    R("interceptor.task_stopped", "court", "task {task_id} stopped: {reason}", "info"),
    R("interceptor.rejected", "court", "interceptor rejected a record: {reason}", "refused"),
    R("agency.received", "agency", "{category} #{sequence} {from_dev} → {to_dev} via {source}: "
      "{text}", "plain", when={"readable": True}),
    R("agency.received", "agency", "{category} #{sequence} {from_dev} → {to_dev} via "
      "{source}: {readable_text}", "sealed", when={"readable": False}),
    R("agency.rejected", "agency", "could not open a delivery: {reason}", "refused"),
    R("ledger.verified", "court", "oversight verified the audit ledger: {entries} entries, "
      "no problem", "ok", when={"ok": True}),
    R("ledger.verified", "court", "audit ledger FAILED verification: {problems}", "alarm",
      when={"ok": False}),
    R("ledger.tamper_detected", "court", "TAMPERING detected in the audit ledger at "
      "{location}", "alarm"),
    R("ledger.tampered", "attackers", "an insider edited ledger entry {index}: {what}",
      "alarm"),
    R("ledger.rolled_back", "attackers", "an insider rolled the audit ledger back: {removed} "
      "entries removed, {kept} kept", "alarm"),
    R("ledger.rollback_detected", "court", "ROLLBACK detected: the ledger is behind, or "
      "another history than, what the court's witness cosigned", "alarm"),
    R("interceptor.halted", "court", "the interceptor HALTED: {reason}", "alarm"),
    # -- the enterprises ----------------------------------------------------------------
    R("enterprise.enrolled", "enterprise:{actor}", "enrolled {devices_text}", "info"),
    R("enterprise.archived", "enterprise:{actor}", "archive ({direction}, {device_short}): "
      "{text}", "plain"),
    R("enterprise.warrant_checked", "enterprise:{actor}", "checked warrant "
      "{authorisation_id}: {reason}", "ok", when={"accepted": True}),
    R("enterprise.warrant_checked", "enterprise:{actor}", "refused warrant "
      "{authorisation_id}: {reason}", "refused", when={"accepted": False}),
    R("enterprise.cc_exported", "enterprise:{actor}", "exported {from_dev}'s message to the "
      "agency under {liid}", "info"),
    R("enterprise.rejected", "enterprise:{actor}", "rejected: {reason}", "refused"),
    R("enterprise.case_stopped", "enterprise:{actor}", "stopped exporting for "
      "{authorisation_id} ({reason})", "info"),
    R("enterprise.*", "enterprise:{actor}", "{kind}", "info"),
    # -- attackers ----------------------------------------------------------------------
    R("attacker.read", "attackers", "{attack} {device}: read {readable} of {captured} "
      "messages ({users_read} users; {others_read} not to or from the victim). Keys: "
      "{keys}", "plain", when={"readable_any": True, "active_relay": False}),
    R("attacker.read", "attackers", "{attack} {device}: read 0 of {captured} messages. "
      "Keys: {keys}", "sealed", when={"readable_any": False, "active_relay": False}),
    # the relay operator, turned active (doormat.active_relay; the dashboard's control)
    R("attacker.read", "attackers", "active relay: a forged first message from "
      "{impersonated} was SHOWN on {device} (identity check off); the operator reads "
      "{readable} of {captured} messages. Keys: {keys}", "plain",
      when={"active_relay": True, "forged_shown": True}),
    R("attacker.read", "attackers", "active relay: the forged first message from "
      "{impersonated} was REFUSED on {device} (identity alarm: {alarm_kind}); the operator "
      "reads {readable} of {captured} messages. Keys: {keys}", "refused",
      when={"active_relay": True, "forged_shown": False}),
    R("attacker.read", "relay", "the operator forged an identity key for {impersonated} "
      "and wrote to {device} in its name", "alarm", when={"active_relay": True}),
)


def short_device(dev: Any) -> str:
    """``alice@acme.phone`` -> ``alice.phone``."""
    if not isinstance(dev, str) or "@" not in dev:
        return str(dev)
    user, _, rest = dev.partition("@")
    _, _, name = rest.partition(".")
    return f"{user}.{name}" if name else user


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


_fmt = string.Formatter()


def _render(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return _fmt.vformat(template, (), fields)
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


def _derived(event: Mapping[str, Any]) -> _Fields:
    f = _Fields(event)
    actor = event.get("actor", "")
    if isinstance(actor, str) and is_device(actor):
        f["user"] = user_of(actor)
        f["dev"] = actor.rsplit(".", 1)[-1]
        f["ent"] = f["user"].partition("@")[2]
    f["from_dev"] = short_device(event.get("from", "?"))
    f["to_dev"] = short_device(event.get("to", "?"))
    ex = event.get("excerpt")
    f["excerpt_short"] = (str(ex)[:16] + "…") if ex else ""
    cats = event.get("categories")
    f["categories_text"] = "+".join(cats) if isinstance(cats, list | tuple) else str(cats or "?")
    f["readable_text"] = "content readable" if event.get("readable") else \
        "ciphertext only: nobody on this path holds a key"
    targets = event.get("targets")
    if isinstance(targets, list):
        f["targets_text"] = ", ".join(
            str(t.get("value")) if isinstance(t, dict) else str(t) for t in targets)
    devices = event.get("devices")
    if isinstance(devices, list):
        f["devices_text"] = ", ".join(short_device(d) for d in devices)
    f["device_short"] = short_device(event.get("device", "?"))
    r = event.get("readable")
    f["readable_any"] = bool(r) if not isinstance(r, bool) else r
    f["active_relay"] = event.get("attack") == "active-relay"
    return f


def _when_ok(route: Route, fields: Mapping[str, Any]) -> bool:
    for k, v in route.when.items():
        actual = fields.get(k)
        if isinstance(v, bool):
            if not isinstance(actual, bool) or actual != v:
                return False
        elif actual != v:
            return False
    return True


def routes_for(kind: str, routes: Iterable[Route] = ROUTES) -> list[Route]:
    routes = list(routes)
    exact = [r for r in routes if r.kind == kind]
    if exact:
        return exact
    return [r for r in routes if r.kind.endswith(".*") and kind.startswith(r.kind[:-1])]


def route(event: Mapping[str, Any], routes: Iterable[Route] = ROUTES) -> list[dict[str, Any]]:
    """The pane lines an event makes: ``[{"pane", "text", "status", "key"?, "note"?}]``.
    An event no row names makes none (it still shows in the event log)."""
    fields = _derived(event)
    out = []
    for r in routes_for(str(event.get("kind", "")), routes):
        if not _when_ok(r, fields):
            continue
        pane = _render(r.pane, fields)
        if "?" in pane:
            continue  # e.g. a device event whose actor is not a device
        item: dict[str, Any] = {"pane": pane, "text": _render(r.text, fields),
                                "status": r.status}
        if r.key:
            item["key"] = _render(r.key, fields)
        if r.note:
            item["note"] = _render(r.note, fields)
        out.append(item)
    return out


def panes_of(cast: Any) -> list[dict[str, Any]]:
    """The panes of a cast, in the order the page shows them."""
    panes: list[dict[str, Any]] = []
    for ent in cast.enterprises:
        for u in ent.users:
            panes.append({"id": f"user:{u.user}", "title": u.user, "group": "users",
                          "row": "users",
                          "subtitle": "devices: " + ", ".join(u.devices),
                          "sees": "their own messages, in plaintext"})
    panes.append({"id": "relay", "title": "Relay operator", "group": "operator", "row": "middle",
                  "subtitle": "routes and stores every envelope",
                  "sees": "metadata and ciphertext; holds no key"})
    panes.append({"id": "tap", "title": "Blanket tap (government)", "group": "government",
                  "row": "middle",
                  "subtitle": "a mirror of everything, when the LI switch is on blanket",
                  "sees": "what its keys open: nothing, unless a back door gave it a key"})
    panes.append({"id": "court", "title": "Court & oversight", "group": "government",
                  "row": "middle",
                  "subtitle": "warrants and the audit ledger",
                  "sees": "decisions and the ledger, no traffic"})
    panes.append({"id": "agency", "title": "Agency (scoped cases)", "group": "government",
                  "row": "middle",
                  "subtitle": "HI-2 metadata and HI-3 content under a warrant",
                  "sees": "only what a warrant's targets produce"})
    for ent in cast.enterprises:
        panes.append({"id": f"enterprise:{ent.name}", "title": f"Enterprise {ent.name}",
                      "group": "enterprises", "row": "edge",
                      "subtitle": "runs a disclosed compliance archive" if ent.archive
                      else "no archive",
                      "sees": "its own archive copies" if ent.archive
                      else "its enrolment records only"})
    panes.append({"id": "attackers", "title": "Attackers", "group": "attackers", "row": "edge",
                  "subtitle": "someone who steals a key or images a phone",
                  "sees": "whatever a stolen key opens in the relay's store"})
    return panes
