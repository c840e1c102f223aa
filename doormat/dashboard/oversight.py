"""The dashboard's legal controls: draft and submit a warrant, verify the audit ledger,
and (as an insider) tamper with one of its entries or roll it back.

The warrant form is turned into a real warrant by the system's court
(``System.legal``: an executive and a judicial approver, the agency's key), signed by the
approvers the student ticked, optionally altered after signing, and handed to the
scoped interceptor with ``System.submit_warrant(bytes)``, which checks it, logs its
decision in the ledger and acts (or refuses, with a reason code).

Verifying the ledger is what oversight does: sign a checkpoint, then re-hash every entry
and check every checkpoint (``interceptor.ledger.verify``). The result is reported
as ``ledger.verified`` (and ``ledger.tamper_detected`` at the first problem's place)
unless the system offers ``verify_ledger()`` itself, which then reports.
"""

from __future__ import annotations

import inspect
import json
import time
from typing import Any

from doormat.system import System
from interceptor import insider
from wire.ids import is_device

OVERSIGHT = "oversight"
INSIDER = "insider"


class OversightError(Exception):
    pass


def _target(text: str) -> str:
    """``carol@globex`` -> ``user:carol@globex``; ``carol@globex.phone`` -> ``device:...``;
    ``FORMAT:VALUE`` as given (a wildcard stays a wildcard: the interceptor decides)."""
    text = text.strip()
    if ":" in text:
        return text
    return f"device:{text}" if is_device(text) else f"user:{text}"


def _other_user(system: System, not_these: list[str]) -> str:
    for u in system.cast.users:
        if all(u.user not in t for t in not_these):
            return u.user
    return "mallory@acme"


def warrants_available(system: System | None) -> bool:
    return system is not None and hasattr(system, "submit_warrant") and hasattr(system, "legal")


def draft_warrant(system: System, form: dict[str, Any]) -> bytes:
    """The form as a warrant's bytes: drafted by the court, signed by the approvers
    chosen, and altered after signing if asked (so the signatures no longer match)."""
    from wire.li.errors import CourtError

    legal = system.legal
    now = int(time.time())
    start = now + int(form["starts_in_s"])
    end = start + int(form["duration_s"])
    approvers = tuple(
        key for role, key in (("executive", legal.executive), ("judicial", legal.judicial))
        if role in form["approvals"]
    )
    targets = [_target(t) for t in form["targets"]]
    try:
        warrant = legal.warrant(
            case=f"OP-LAB-{now % 100000}",
            targets=targets,
            categories=list(form["categories"]),
            not_before=start,
            not_after=end,
            approvers=approvers,
        )
    except CourtError as exc:
        raise OversightError(f"the court cannot draft it: {exc}") from None
    data = warrant.encode()
    if form.get("tamper"):
        obj = json.loads(data)
        # Someone swaps the target after both approvers signed.
        obj["targets"][0]["value"] = _other_user(system, [t for t in form["targets"]])
        obj["targets"][0]["format"] = "user"
        data = json.dumps(obj).encode()
    return data


async def verify_ledger(system: System) -> dict[str, Any]:
    """Oversight verifies the whole audit ledger now (the court's ``ledger.verify``)."""
    own = getattr(system, "verify_ledger", None)
    if callable(own):
        result = own()
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, dict) else {"result": str(result)}
    ledger = getattr(system, "ledger", None)
    signer = getattr(system, "ledger_signer", None)
    if ledger is None or signer is None:
        raise OversightError("this system has no audit ledger")
    from interceptor.ledger import verify

    ledger.checkpoint()
    report = verify(ledger.path, [signer.verifier()])
    problems = [str(p) for p in report.problems]
    system.events.emit(OVERSIGHT, "ledger.verified", ok=report.ok, problems=problems,
                       entries=report.entries, checkpoints=report.checkpoints)
    if not report.ok:
        system.events.emit(OVERSIGHT, "ledger.tamper_detected",
                           location=report.problems[0].where, problems=problems)
    return {"ok": report.ok, "problems": problems, "entries": report.entries}


def tamper_ledger(system: System) -> dict[str, Any]:
    """An insider edits one logged entry in the ledger's file - a refused warrant made
    to look accepted, or any entry's content changed - and, to cover their tracks,
    recomputes its leaf hash (RFC 6962: SHA-256(0x00 || entry)). Only the signed
    checkpoints can now give them away."""
    ledger = getattr(system, "ledger", None)
    if ledger is None:
        raise OversightError("this system has no audit ledger")
    try:
        done = insider.tamper(ledger.path)
    except insider.InsiderError as exc:
        raise OversightError(str(exc)) from exc
    idx, what = done["index"], done["what"]
    system.events.emit(INSIDER, "ledger.tampered", index=idx, what=what)
    return {"index": idx, "what": what}


def rollback_ledger(system: System) -> dict[str, Any]:
    """An insider rolls the audit ledger back, as restoring an older copy of the file
    would: the newer half of the entries (at least one) and every checkpoint stored
    after them are deleted, so the file is whole, ends with a checkpoint signed by the
    ledger's own key, and verifies against that key alone. Only the court's witness,
    which cosigned the longer ledger, can give it away."""
    ledger = getattr(system, "ledger", None)
    if ledger is None:
        raise OversightError("this system has no audit ledger")
    try:
        done = insider.rollback(ledger.path)
    except insider.InsiderError as exc:
        raise OversightError(str(exc)) from exc
    keep, size = done["kept"], done["kept"] + done["removed"]
    system.events.emit(INSIDER, "ledger.rolled_back", kept=keep, removed=size - keep)
    return {"kept": keep, "removed": size - keep}

