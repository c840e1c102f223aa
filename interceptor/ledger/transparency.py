"""The audit ledger's transparency report, sans I/O: counts for oversight from the entries
in log order, with every task and record checked against the accepted warrant that
allowed it (:func:`transparency_report`; equal logs give equal reports), and the same
report as text for people (:func:`render_report`).

The report reads the log; it does not check it (``interceptor.ledger.verifier`` does).
``interceptor.ledger.store.report`` reads a ledger file's rows and calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from interceptor.ledger.entries import (
    OVERSIGHT,
    RECORD_DELIVERED,
    TASK_START,
    TASK_STOP,
    WARRANT_DECISION,
    Entry,
)
from wire.b64 import b64decode, b64encode
from wire.checkpoint import Checkpoint
from wire.li.warrant import CATEGORIES

REPORT_FORMAT = "doormat-transparency-report/1"


def _target_text(t: Mapping[str, Any]) -> str:
    return f"{t['format']}:{t['value']}"


def _warrant_counts() -> dict[str, Any]:
    return {"decisions": 0, "accepted": 0, "refused": 0, "by_reason": {}, "by_action": {}}


def _category_counts() -> dict[str, Any]:
    return {c: {"accepted": 0, "refused": 0} for c in (*CATEGORIES, "unknown")}


def _record_counts() -> dict[str, int]:
    return {"IRI": 0, "CC": 0, "cc_with_plaintext": 0, "cc_ciphertext_only": 0}


def _new_case() -> dict[str, Any]:
    return {
        "authorisations": set(),
        "liids": set(),
        "warrants": _warrant_counts(),
        "categories": _category_counts(),
        "targets": set(),
        "targets_refused": set(),
        "tasks": {"started": 0, "stopped": 0, "running_at_end": 0},
        "records": _record_counts(),
    }


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


@dataclass
class _Authorisation:
    generation: int
    liid: str
    case: str
    cancelled: bool
    categories: list[str] | None
    targets: set[str] | None


@dataclass
class _Task:
    authorisation_id: str
    liid: str
    case: str
    categories: list[str]


class _Scope:
    """Replays the log's decisions and tasks to check each act against what allowed it:
    the "log before act" rule, seen from the log itself."""

    def __init__(self) -> None:
        self.authorisations: dict[str, _Authorisation] = {}
        self.tasks: dict[str, _Task] = {}
        self.anomalies: list[str] = []

    def flag(self, entry: Entry, message: str) -> None:
        self.anomalies.append(f"entry {entry.index}: {message}")

    def decision(self, entry: Entry) -> None:
        p = entry.payload
        if not p["accepted"]:
            return
        aid = p["authorisation_id"]
        known = self.authorisations.get(aid)
        categories = p.get("categories")
        targets = p.get("targets")
        if p["action"] == "cancel":
            if known is not None:
                known.cancelled = True
                known.generation = p["generation"]
            else:
                self.authorisations[aid] = _Authorisation(
                    p["generation"],
                    p["liid"],
                    p["case_reference"],
                    True,
                    categories,
                    None if targets is None else {_target_text(t) for t in targets},
                )
            return
        self.authorisations[aid] = _Authorisation(
            p["generation"],
            p["liid"],
            p["case_reference"],
            False,
            categories,
            None if targets is None else {_target_text(t) for t in targets},
        )

    def task_start(self, entry: Entry) -> None:
        p = entry.payload
        auth = self.authorisations.get(p["authorisation_id"])
        task = p["task_id"]
        if auth is None:
            self.flag(entry, f"task {task} started with no accepted warrant logged before it")
        elif auth.cancelled:
            self.flag(entry, f"task {task} started for a cancelled authorisation")
        elif auth.generation != p["generation"]:
            self.flag(
                entry,
                f"task {task} started for generation {p['generation']}, but the accepted "
                f"generation is {auth.generation}",
            )
        else:
            if auth.targets is not None:
                extra = sorted({_target_text(t) for t in p["targets"]} - auth.targets)
                if extra:
                    self.flag(
                        entry,
                        f"task {task} covers targets the warrant does not name: "
                        + ", ".join(extra),
                    )
            if auth.categories is not None:
                extra = sorted(set(p["categories"]) - set(auth.categories))
                if extra:
                    self.flag(
                        entry,
                        f"task {task} collects categories the warrant does not allow: "
                        + ", ".join(extra),
                    )
        if task in self.tasks:
            self.flag(entry, f"task {task} started again while running")
        self.tasks[task] = _Task(
            p["authorisation_id"], p["liid"], p["case_reference"], list(p["categories"])
        )

    def task_stop(self, entry: Entry) -> None:
        task = entry.payload["task_id"]
        if self.tasks.pop(task, None) is None:
            self.flag(entry, f"task {task} stopped but it was not running")

    def record(self, entry: Entry) -> None:
        p = entry.payload
        liid, category, task_id = p["liid"], p["category"], p["task_id"]
        what = f"{category} record {p['sequence']} for LIID {liid}"
        if task_id is not None:
            task = self.tasks.get(task_id)
            if task is None:
                self.flag(entry, f"{what} delivered under task {task_id}, which is not running")
                return
            if task.liid != liid:
                self.flag(entry, f"{what} delivered under task {task_id} of LIID {task.liid}")
            if category not in task.categories:
                self.flag(
                    entry,
                    f"{what} delivered, but task {task_id} collects only "
                    + "+".join(task.categories),
                )
            if task.case != p["case_reference"]:
                self.flag(
                    entry,
                    f"{what} is attributed to case {p['case_reference']}, "
                    f"its task to case {task.case}",
                )
            return
        # Without a task (CC exported by an enterprise archive): a live authorisation
        # with this LIID must allow the category.
        live = [a for a in self.authorisations.values() if a.liid == liid and not a.cancelled]
        if not live:
            self.flag(entry, f"{what} delivered with no accepted, uncancelled warrant for it")
            return
        if all(a.categories is not None and category not in a.categories for a in live):
            self.flag(entry, f"{what} delivered, but the warrant does not allow {category}")
        if all(a.case != p["case_reference"] for a in live):
            self.flag(
                entry,
                f"{what} is attributed to case {p['case_reference']}, "
                f"the warrant to case {live[0].case}",
            )

    def finish(self) -> None:
        for task_id, task in sorted(self.tasks.items()):
            auth = self.authorisations.get(task.authorisation_id)
            if auth is not None and auth.cancelled:
                self.anomalies.append(
                    f"task {task_id}: still running at the end of the log although its "
                    "authorisation was cancelled"
                )


def transparency_report(
    entries: Iterable[Entry],
    *,
    origin: str | None = None,
    unreadable: Sequence[int] = (),
    checkpoints: int = 0,
    latest_checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Counts for oversight, from the entries in log order. Deterministic: equal logs give
    equal reports (sorted keys and lists; no clock, no floats).

    It reads the log; it does not check it (``verify`` does). ``unreadable`` lists the
    indices of entries whose content could not be read; they are not counted.
    """
    totals_warrants = _warrant_counts()
    totals_categories = _category_counts()
    tasks: dict[str, Any] = {"started": 0, "stopped": 0, "running_at_end": 0, "stop_reasons": {}}
    records = _record_counts()
    oversight: dict[str, Any] = {"events": 0, "by_event": {}}
    cases: dict[str, dict[str, Any]] = {}
    unidentified = _warrant_counts()
    scope = _Scope()
    running: dict[str, str] = {}  # task id -> case
    count = 0
    first: int | None = None
    last: int | None = None

    def case_of(name: str) -> dict[str, Any]:
        return cases.setdefault(name, _new_case())

    def count_warrant(counts: dict[str, Any], p: Mapping[str, Any]) -> None:
        counts["decisions"] += 1
        if p["accepted"]:
            counts["accepted"] += 1
            _bump(counts["by_action"], p["action"])
        else:
            counts["refused"] += 1
            _bump(counts["by_reason"], p["reason"])

    for entry in entries:
        count += 1
        first = entry.time_ms if first is None else min(first, entry.time_ms)
        last = entry.time_ms if last is None else max(last, entry.time_ms)
        p = entry.payload
        if entry.type == WARRANT_DECISION:
            verdict = "accepted" if p["accepted"] else "refused"
            count_warrant(totals_warrants, p)
            cats = p.get("categories") or ["unknown"]
            for c in cats:
                totals_categories[c][verdict] += 1
            if p["case_reference"] is None:
                count_warrant(unidentified, p)
            else:
                case = case_of(p["case_reference"])
                count_warrant(case["warrants"], p)
                for c in cats:
                    case["categories"][c][verdict] += 1
                if p["authorisation_id"] is not None:
                    case["authorisations"].add(p["authorisation_id"])
                if p["liid"] is not None:
                    case["liids"].add(p["liid"])
                if p.get("targets") is not None and p["action"] != "cancel":
                    # Targets a refused warrant named (a wildcard, an unknown user) are
                    # listed apart: oversight should see what was asked for, too.
                    key = "targets" if p["accepted"] else "targets_refused"
                    case[key].update(_target_text(t) for t in p["targets"])
            scope.decision(entry)
        elif entry.type == TASK_START:
            tasks["started"] += 1
            case = case_of(p["case_reference"])
            case["tasks"]["started"] += 1
            case["liids"].add(p["liid"])
            case["authorisations"].add(p["authorisation_id"])
            case["targets"].update(_target_text(t) for t in p["targets"])
            running[p["task_id"]] = p["case_reference"]
            scope.task_start(entry)
        elif entry.type == TASK_STOP:
            tasks["stopped"] += 1
            _bump(tasks["stop_reasons"], p["reason"])
            case_of(p["case_reference"])["tasks"]["stopped"] += 1
            running.pop(p["task_id"], None)
            scope.task_stop(entry)
        elif entry.type == RECORD_DELIVERED:
            rec = case_of(p["case_reference"])["records"]
            for counts in (records, rec):
                counts[p["category"]] += 1
                if p["category"] == "CC":
                    counts["cc_with_plaintext" if p["plaintext"] else "cc_ciphertext_only"] += 1
            case_of(p["case_reference"])["liids"].add(p["liid"])
            scope.record(entry)
        elif entry.type == OVERSIGHT:
            oversight["events"] += 1
            _bump(oversight["by_event"], p["event"])
    scope.finish()

    tasks["running_at_end"] = len(running)
    for case_name in running.values():
        cases[case_name]["tasks"]["running_at_end"] += 1

    def finish_case(case: dict[str, Any]) -> dict[str, Any]:
        return {
            **case,
            "authorisations": sorted(case["authorisations"]),
            "liids": sorted(case["liids"]),
            "targets": sorted(case["targets"]),
            "targets_refused": sorted(case["targets_refused"] - case["targets"]),
        }

    return {
        "format": REPORT_FORMAT,
        "ledger": {
            "origin": origin,
            "entries": count + len(unreadable),
            "unreadable_entries": sorted(unreadable),
            "first_time_ms": first,
            "last_time_ms": last,
            "checkpoints": checkpoints,
            "latest_checkpoint": None
            if latest_checkpoint is None
            else {"size": latest_checkpoint.size, "root": b64encode(latest_checkpoint.root)},
        },
        "warrants": {
            **totals_warrants,
            "categories": totals_categories,
            "unidentified": unidentified,
        },
        "tasks": tasks,
        "records": records,
        "oversight": oversight,
        "cases": {name: finish_case(case) for name, case in sorted(cases.items())},
        "anomalies": scope.anomalies,
    }


# -- text rendering ----------------------------------------------------------------------


def _safe(value: object) -> str:
    # Case references and reasons are validated tokens, but a message or detail could
    # carry anything; never let a log entry draw on the reader's terminal.
    text = str(value)
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_safe(k)} {v}" for k, v in sorted(counts.items())) or "none"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _encryption_line(rec: Mapping[str, int]) -> str:
    cc = rec["CC"]
    if not cc:
        return "no CC records delivered"
    unreadable = rec["cc_ciphertext_only"]
    share = (unreadable * 100 + cc // 2) // cc  # integer rounding: no floats in reports
    return (
        f"of {_plural(cc, 'CC record')}, {rec['cc_with_plaintext']} carried readable content "
        f"and {unreadable} were ciphertext nobody in the chain could read "
        f"(encryption prevented plaintext in {share}%)"
    )


def _category_line(cats: Mapping[str, Mapping[str, int]]) -> str:
    parts = []
    for name in (*CATEGORIES, "unknown"):
        c = cats[name]
        if c["accepted"] or c["refused"] or name != "unknown":
            parts.append(f"{name} {c['accepted']} accepted / {c['refused']} refused")
    return "; ".join(parts)


def render_report(report: Mapping[str, Any]) -> str:
    """The report as text for people; every number comes from ``report``."""
    led, w, tasks, rec = report["ledger"], report["warrants"], report["tasks"], report["records"]
    lines = [f"Transparency report: {_safe(led['origin'] or 'audit ledger')}"]
    span = f"{_iso(led['first_time_ms'])} .. {_iso(led['last_time_ms'])}"
    lines.append(f"  ledger: {_plural(led['entries'], 'entry', 'entries')} ({span})")
    cp = led["latest_checkpoint"]
    if cp is None:
        lines.append("  checkpoints: none")
    else:
        lines.append(
            f"  checkpoints: {led['checkpoints']}, latest at size {cp['size']} "
            f"(root {b64decode(cp['root'], 'checkpoint root')[:6].hex()}…)"
        )
    if led["unreadable_entries"]:
        lines.append(
            "  UNREADABLE entries (not counted): "
            + ", ".join(str(i) for i in led["unreadable_entries"])
        )
    lines.append("  This report reads the ledger; `doormat ledger verify` checks it.")
    lines.append("")
    lines.append(
        f"Warrants: {_plural(w['decisions'], 'decision')}, {w['accepted']} accepted "
        f"({_tally(w['by_action'])}), {w['refused']} refused"
    )
    if w["refused"]:
        lines.append(f"  refused because: {_tally(w['by_reason'])}")
    lines.append(f"  by category: {_category_line(w['categories'])}")
    if w["unidentified"]["decisions"]:
        lines.append(
            f"  unreadable warrants (no case): {w['unidentified']['refused']} refused "
            f"({_tally(w['unidentified']['by_reason'])})"
        )
    lines.append(
        f"Tasks: {tasks['started']} started, {tasks['stopped']} stopped "
        f"({_tally(tasks['stop_reasons'])}), {tasks['running_at_end']} running at the end"
    )
    lines.append(f"Records delivered: IRI {rec['IRI']}, CC {rec['CC']}")
    lines.append(f"Encryption: {_encryption_line(rec)}")
    ov = report["oversight"]
    lines.append(f"Oversight events: {ov['events']} ({_tally(ov['by_event'])})")
    for name, case in report["cases"].items():
        cw = case["warrants"]
        lines.append("")
        lines.append(f"Case {_safe(name)}  (LIID {', '.join(map(_safe, case['liids'])) or '-'})")
        lines.append(
            f"  warrants: {cw['accepted']} accepted ({_tally(cw['by_action'])}), "
            f"{cw['refused']} refused" + (f" ({_tally(cw['by_reason'])})" if cw["refused"] else "")
        )
        lines.append(f"  categories: {_category_line(case['categories'])}")
        lines.append(f"  targets: {', '.join(map(_safe, case['targets'])) or '-'}")
        if case["targets_refused"]:
            lines.append(
                "  named only in refused warrants: "
                + ", ".join(map(_safe, case["targets_refused"]))
            )
        t = case["tasks"]
        lines.append(
            f"  tasks: {t['started']} started, {t['stopped']} stopped, "
            f"{t['running_at_end']} running at the end"
        )
        r = case["records"]
        lines.append(f"  records: IRI {r['IRI']}, CC {r['CC']}; {_encryption_line(r)}")
    lines.append("")
    if report["anomalies"]:
        lines.append(f"Anomalies ({len(report['anomalies'])}):")
        lines.extend(f"  {_safe(a)}" for a in report["anomalies"])
    else:
        lines.append("Anomalies: none (every task and record follows a logged, accepted warrant)")
    return "\n".join(lines) + "\n"


__all__ = ["REPORT_FORMAT", "render_report", "transparency_report"]
