"""``doormat court``: make court keys, draft, approve and check warrants.

    doormat court keys --out keys/
    doormat court issue --case OP-7 --target device:alice@acme.phone --target user:bob@acme \\
        --categories IRI,CC --hours 24 --agency-key keys/agency.pub --jurisdiction XX \\
        --csp doormat --out warrant.json
    doormat court approve warrant.json --key keys/executive.key
    doormat court approve warrant.json --key keys/judicial.key
    doormat court check warrant.json --trust keys/trust.json --jurisdiction XX \\
        --agency-key keys/agency.pub
    doormat court update warrant.json --hours 48 --out warrant-g2.json   # then approve x2
    doormat court cancel warrant.json --out cancel.json                   # then approve x2

``check`` prints ``accepted: ...`` (exit 0) or ``refused (REASON): ...`` (exit 1);
docs/warrants.md lists the reason codes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from doormat.cli import CommandError
from doormat.commands.args import positive
from doormat.commands.court_args import categories, hours, target, when, when_noted
from infra.files import write_atomic
from interceptor.court import (
    DEFAULT_AGENCY_ID,
    DEFAULT_NAMES,
    AgencyKeyPair,
    ApproverKey,
    amend,
    approve,
    cancel,
    issue,
    trust_store_of,
)
from wire.ids import is_device
from wire.li.checks import Policy, WarrantState, check_warrant_bytes
from wire.li.errors import InterceptError
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.li.warrant import MAX_WARRANT_BYTES, Warrant, is_wildcard, iso, parse_warrant

MAX_KEY_FILE_BYTES = 64 * 1024

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Sub) -> None:
    parser = sub.add_parser(
        "court",
        help="make court keys; draft, approve and check warrants",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    court = parser.add_subparsers(dest="court_command", metavar="SUBCOMMAND", required=True)
    for register_subcommand in (
        _register_keys,
        _register_issue,
        _register_approve,
        _register_check,
        _register_update,
        _register_cancel,
    ):
        register_subcommand(court)


# --------------------------------------------------------------------------- helpers


def _read(path: str, what: str, limit: int = MAX_KEY_FILE_BYTES) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return data


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (``infra.files``); private files are mode 0600 from the start."""
    try:
        write_atomic(path, data, private=private)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _load_warrant(path: str) -> Warrant:
    try:
        return parse_warrant(_read(path, "warrant", MAX_WARRANT_BYTES))
    except InterceptError as exc:
        raise CommandError(f"{path} is not a valid warrant: {exc}") from None


def _load_agency(path: str) -> AgencyPublicKey:
    try:
        return AgencyPublicKey.parse(_read(path, "agency key"))
    except InterceptError as exc:
        raise CommandError(f"{path}: {exc}") from None


def _save_warrant(warrant: Warrant, out: str | None) -> None:
    data = json.dumps(warrant.to_json(), indent=2).encode("utf-8") + b"\n"
    if out is None or out == "-":
        sys.stdout.write(data.decode("utf-8"))
    else:
        _write(Path(out), data)


def _note_wildcards(targets: list[str]) -> None:
    for t in targets:
        value = t.partition(":")[2]
        if is_wildcard(value):
            print(
                f"note: target {t!r} is not one exact identity; an interceptor will refuse "
                "this warrant (wildcard-target)",
                file=sys.stderr,
            )


def _summary(w: Warrant) -> str:
    roles = ", ".join(f"{a.type} ({a.approver})" for a in w.approvals) or "none"
    return (
        f"case {w.case_reference}, authorisation {w.authorisation_id} generation "
        f"{w.generation} ({w.status}), {'+'.join(w.categories)} for "
        f"{', '.join(str(t) for t in w.targets)}, {iso(w.not_before)} to "
        f"{iso(w.not_after)}; approvals: {roles}"
    )


# ------------------------------------------------------------------------------ keys


def _register_keys(sub: Sub) -> None:
    p = sub.add_parser(
        "keys",
        help="make the court's executive and judicial key pairs, trust.json, and the "
        "agency key pair",
        description=(
            "Write DIR/executive.key and DIR/judicial.key (Ed25519, mode 0600), "
            "DIR/trust.json (their public keys with names and roles: the interceptor's "
            "trust store) and, if DIR has none yet, the agency's X25519 delivery key pair "
            "DIR/agency.key (0600) and DIR/agency.pub, printing its fingerprint."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--executive-name", default=DEFAULT_NAMES["executive"])
    p.add_argument("--judicial-name", default=DEFAULT_NAMES["judicial"])
    p.add_argument("--agency-id", default=DEFAULT_AGENCY_ID)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace existing court keys (the agency key is never replaced)",
    )
    p.set_defaults(func=_cmd_keys)


def _cmd_keys(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {out}: {exc.strerror or exc}") from None
    paths = {role: out / f"{role}.key" for role in ("executive", "judicial")}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.force:
        raise CommandError(f"{', '.join(existing)} already exist(s); use --force to replace")
    try:
        keys = [
            ApproverKey.generate(args.executive_name, "executive"),
            ApproverKey.generate(args.judicial_name, "judicial"),
        ]
        trust = trust_store_of(keys)
    except InterceptError as exc:
        raise CommandError(str(exc)) from None
    for key in keys:
        _write(paths[key.role], key.encode(), private=True)
        print(f"{key.role} key: {paths[key.role]} ({key.name}; mode 0600)")
    _write(out / "trust.json", trust.encode())
    print(f"trust store: {out / 'trust.json'}")

    agency_key, agency_pub = out / "agency.key", out / "agency.pub"
    if agency_key.exists():
        try:
            agency = AgencyKeyPair.parse(_read(str(agency_key), "agency key")).public
        except InterceptError as exc:
            raise CommandError(f"{agency_key}: {exc}") from None
        print(f"agency key: kept the existing {agency_key}")
        if not agency_pub.exists():
            _write(agency_pub, agency.encode())
    else:
        try:
            pair = AgencyKeyPair.generate(args.agency_id)
        except InterceptError as exc:
            raise CommandError(str(exc)) from None
        _write(agency_key, pair.encode(), private=True)
        _write(agency_pub, pair.public.encode())
        agency = pair.public
        print(f"agency key: {agency_key} (mode 0600), public {agency_pub}")
    print(f"agency key fingerprint: {agency.fingerprint}")
    return 0


# ----------------------------------------------------------------------------- issue


def _register_issue(sub: Sub) -> None:
    p = sub.add_parser(
        "issue",
        help="draft an unsigned warrant",
        description=(
            "Draft an unsigned warrant (approve it twice to sign it). Times are absolute: "
            "an ISO time needs a UTC offset (Z or +HH:MM); the summary prints them in UTC."
        ),
    )
    p.add_argument("--case", required=True, help="case reference, e.g. OP-ANCHOR-7")
    p.add_argument(
        "--target",
        required=True,
        action="append",
        type=target,
        help="device:ID or user:ID; repeat for several",
    )
    p.add_argument(
        "--categories",
        type=categories,
        default=["IRI"],
        help="IRI (metadata), CC (content) or IRI,CC (default IRI)",
    )
    p.add_argument("--hours", type=hours, required=True, help="length of the window")
    p.add_argument(
        "--not-before",
        type=when,
        default="now",
        metavar="ISO|now|SECONDS",
        help="start of the window (default now): 'now', seconds since the epoch, or ISO "
        "8601 with an explicit offset (2025-11-29T08:00Z, 2025-11-29T09:00+01:00); a time "
        "without an offset is refused. A window for CC may not start before the warrant is "
        "served (docs/warrants.md: retrospective windows)",
    )
    p.add_argument(
        "--agency-key",
        required=True,
        metavar="FILE",
        help="the agency's public key file (agency.pub)",
    )
    p.add_argument(
        "--jurisdiction", required=True, metavar="CC", help="two-letter country code, e.g. XX"
    )
    p.add_argument("--csp", default="doormat", help="the service provider (default doormat)")
    p.add_argument("--legal-type", default="lawful-interception")
    p.add_argument("--liid", help="the LIID (default: derived from the authorisation id)")
    p.add_argument("--id", dest="authorisation_id", help="authorisation id (default: new UUID)")
    p.add_argument("--out", metavar="FILE", help="where to write it (default stdout)")
    p.set_defaults(func=_cmd_issue)


def _note_retrospective(not_before: int, categories: list[str]) -> None:
    back = int(time.time()) - not_before
    bound = Policy.max_retrospective_cc_seconds if "CC" in categories else (
        Policy.max_retrospective_iri_seconds
    )
    if back > bound:
        print(
            f"note: the window starts {back} s before now; an interceptor with the default "
            f"policy refuses a window for {'+'.join(categories)} that reaches back more than "
            f"{bound} s (retrospective-window)",
            file=sys.stderr,
        )


def _cmd_issue(args: argparse.Namespace) -> int:
    agency = _load_agency(args.agency_key)
    not_before = args.not_before
    _note_wildcards(args.target)
    _note_retrospective(not_before, args.categories)
    try:
        warrant = issue(
            case_reference=args.case,
            targets=args.target,
            categories=args.categories,
            not_before=not_before,
            not_after=not_before + round(args.hours * 3600),
            jurisdiction=args.jurisdiction,
            csp_id=args.csp,
            agency=agency,
            legal_type=args.legal_type,
            authorisation_id=args.authorisation_id,
            liid=args.liid,
        )
    except InterceptError as exc:
        raise CommandError(str(exc)) from None
    _save_warrant(warrant, args.out)
    if args.out and args.out != "-":
        print(f"drafted {args.out}: {_summary(warrant)} (times in UTC)")
    return 0


# --------------------------------------------------------------------------- approve


def _register_approve(sub: Sub) -> None:
    p = sub.add_parser(
        "approve",
        help="add one approver's signed approval to a warrant",
        description="Sign WARRANT with one approver's key and add the approval.",
    )
    p.add_argument("warrant", metavar="WARRANT")
    p.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="the approver's key file, e.g. keys/judicial.key",
    )
    p.add_argument(
        "--at",
        type=when,
        default=None,
        metavar="ISO|now|SECONDS",
        help="the approval's timestamp (default now; an ISO time needs an offset). An "
        "interceptor refuses approvals dated ahead of its clock or older than its policy",
    )
    p.add_argument("--out", metavar="FILE", help="where to write it (default: in place)")
    p.set_defaults(func=_cmd_approve)


def _cmd_approve(args: argparse.Namespace) -> int:
    warrant = _load_warrant(args.warrant)
    try:
        key = ApproverKey.parse(_read(args.key, "approver key"))
        signed = approve(warrant, key, timestamp=args.at)
    except InterceptError as exc:
        raise CommandError(f"{args.key}: {exc}") from None
    if any(a.type == key.role for a in warrant.approvals):
        print(
            f"note: the warrant already had a {key.role} approval; an interceptor will "
            "refuse it (same-role-twice)",
            file=sys.stderr,
        )
    out = args.out or args.warrant
    _save_warrant(signed, out)
    if out != "-":
        print(
            f"approved by {key.name} ({key.role}): {out}; approvals now: "
            f"{', '.join(a.type for a in signed.approvals)}"
        )
    return 0


# ----------------------------------------------------------------------------- check


def _register_check(sub: Sub) -> None:
    p = sub.add_parser(
        "check",
        help="check a warrant as the interceptor would (exit 0 accepted, 1 refused)",
        description=(
            "Run every check of the interceptor on WARRANT and print 'accepted: ...' "
            "(exit 0) or 'refused (REASON): ...' (exit 1). The policy comes from --policy "
            "FILE and/or the flags (flags win)."
        ),
    )
    p.add_argument("warrant", metavar="WARRANT")
    p.add_argument("--trust", required=True, metavar="FILE", help="trust.json")
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="policy JSON: jurisdiction, csp_id, agency_key_fingerprint, "
        "max_window_seconds, max_targets, and optionally clock_skew_seconds, "
        "max_approval_age_seconds, max_retrospective_cc_seconds, "
        "max_retrospective_iri_seconds",
    )
    p.add_argument("--jurisdiction", metavar="CC")
    p.add_argument("--csp", help="this service provider's id (default doormat)")
    p.add_argument("--agency-key", metavar="FILE", help="the pinned agency key (agency.pub)")
    p.add_argument("--max-hours", type=hours, help="longest window accepted (default 720)")
    p.add_argument("--max-targets", type=positive, help="most targets accepted (default 10)")
    p.add_argument(
        "--directory",
        metavar="FILE",
        help="JSON list of the user and device ids that exist (default: the demo's cast)",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="remember accepted warrants here (replay and generation checks)",
    )
    p.add_argument(
        "--now",
        type=when_noted,
        default="now",
        metavar="ISO|now|SECONDS",
        help="check as of this time (default now; an ISO time without an offset is read "
        "as UTC, and a note says so)",
    )
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(func=_cmd_check)


def _policy(args: argparse.Namespace) -> Policy:
    base: dict[str, object] = {
        "csp_id": "doormat",
        "max_window_seconds": 720 * 3600,
        "max_targets": 10,
    }
    if args.policy:
        try:
            base.update(Policy.parse(_read(args.policy, "policy")).to_json())
        except InterceptError as exc:
            raise CommandError(f"{args.policy}: {exc}") from None
    if args.jurisdiction:
        base["jurisdiction"] = args.jurisdiction
    if args.csp:
        base["csp_id"] = args.csp
    if args.agency_key:
        base["agency_key_fingerprint"] = _load_agency(args.agency_key).fingerprint
    if args.max_hours:
        base["max_window_seconds"] = round(args.max_hours * 3600)
    if args.max_targets:
        base["max_targets"] = args.max_targets
    for name, flag in (
        ("jurisdiction", "--jurisdiction"),
        ("agency_key_fingerprint", "--agency-key"),
    ):
        if name not in base:
            raise CommandError(f"the policy needs {flag} (or --policy FILE)")
    try:
        return Policy.from_json(base)
    except InterceptError as exc:
        raise CommandError(str(exc)) from None


def _directory(path: str | None) -> Callable[[str, str], bool]:
    if path is None:
        from doormat.cast import default_cast

        cast = default_cast()
        ids = {u.user for u in cast.users} | set(cast.devices)
    else:
        try:
            listed = json.loads(_read(path, "directory", 16 * 1024 * 1024))
        except ValueError as exc:
            raise CommandError(f"{path} is not JSON: {exc}") from None
        if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
            raise CommandError(f"{path} must be a JSON list of user and device ids")
        ids = set(listed)

    def exists(fmt: str, value: str) -> bool:
        return value in ids and (fmt == "device") == is_device(value)

    return exists


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        trust = TrustStore.parse(_read(args.trust, "trust store"))
    except InterceptError as exc:
        raise CommandError(f"{args.trust}: {exc}") from None
    policy = _policy(args)
    directory = _directory(args.directory)
    state = WarrantState()
    state_path = Path(args.state) if args.state else None
    if state_path is not None and state_path.exists():
        try:
            state = WarrantState.parse(_read(str(state_path), "state", 64 * 1024 * 1024))
        except InterceptError as exc:
            raise CommandError(f"{state_path}: {exc}") from None
    data = _read(args.warrant, "warrant", MAX_WARRANT_BYTES)
    decision = check_warrant_bytes(
        data, trust=trust, policy=policy, state=state, now=args.now, directory=directory
    )
    if decision.accepted and state_path is not None:
        state.apply(decision)
        _write(state_path, state.encode() + b"\n")
    if args.json:
        print(json.dumps(decision.to_json(), indent=2, sort_keys=True))
    else:
        print(str(decision))
    return 0 if decision.accepted else 1


# -------------------------------------------------------------------- update / cancel


def _register_update(sub: Sub) -> None:
    p = sub.add_parser(
        "update",
        help="draft the next generation of a warrant (new targets, window or categories)",
        description=(
            "Draft generation N+1 of WARRANT with the changes given, without approvals; "
            "approve it twice. Accepted, it replaces the earlier generation."
        ),
    )
    p.add_argument("warrant", metavar="WARRANT")
    p.add_argument(
        "--target", action="append", type=target, help="replace the targets (repeat for several)"
    )
    p.add_argument("--categories", type=categories)
    p.add_argument("--hours", type=hours, help="new window length from --not-before")
    p.add_argument(
        "--not-before",
        type=when,
        metavar="ISO|now|SECONDS",
        help="start of the new generation's window (default: now, or the old start if "
        "later: an amendment authorises from when it is made, not retrospectively; an "
        "ISO time needs an offset)",
    )
    p.add_argument("--out", metavar="FILE", required=True)
    p.set_defaults(func=_cmd_update)


def _cmd_update(args: argparse.Namespace) -> int:
    warrant = _load_warrant(args.warrant)
    changes: dict[str, object] = {}
    if args.target:
        _note_wildcards(args.target)
        changes["targets"] = args.target
    if args.categories:
        changes["categories"] = args.categories
    if args.not_before is None:
        # The amendment authorises from now on: keeping an old start would make it reach
        # back to before it was made (an interceptor refuses that for CC).
        not_before = max(warrant.not_before, int(time.time()))
    else:
        not_before = args.not_before
    if args.hours is not None:
        changes["not_before"] = not_before
        changes["not_after"] = not_before + round(args.hours * 3600)
    elif not_before != warrant.not_before:
        if not_before >= warrant.not_after:
            raise CommandError(
                f"the window ended at {iso(warrant.not_after)}; give --hours for the new one"
            )
        changes["not_before"] = not_before
    try:
        draft = amend(warrant, **changes)
    except InterceptError as exc:
        raise CommandError(str(exc)) from None
    _save_warrant(draft, args.out)
    print(f"drafted {args.out}: {_summary(draft)}")
    return 0


def _register_cancel(sub: Sub) -> None:
    p = sub.add_parser(
        "cancel",
        help="draft the cancellation of a warrant",
        description=(
            "Draft generation N+1 of WARRANT with status 'cancelled', without approvals; "
            "approve it twice. Accepted, it stops the case at once."
        ),
    )
    p.add_argument("warrant", metavar="WARRANT")
    p.add_argument("--out", metavar="FILE", required=True)
    p.set_defaults(func=_cmd_cancel)


def _cmd_cancel(args: argparse.Namespace) -> int:
    warrant = _load_warrant(args.warrant)
    try:
        draft = cancel(warrant)
    except InterceptError as exc:
        raise CommandError(str(exc)) from None
    _save_warrant(draft, args.out)
    print(f"drafted {args.out}: {_summary(draft)}")
    return 0
