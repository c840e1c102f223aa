"""The control contract: every op a party may ask another to carry out, who may give it,
its arguments and their checks, and the answer format. Pure: no I/O.

A control travels party to party, never through the relay (``wire.topics``):

    request  doormat/to/<target>/<sender>/ctl   {"req": "<hex>", "op": "<op>", "args": {...}}
    answer   doormat/to/<sender>/<target>/ans   {"req": ..., "ok": true, ...result}
                                             or {"req": ..., "ok": false, "error": "<why>"}

The broker lets only ``<sender>`` write under its name, so the target takes the sender
from the topic and its role from the account id (``wire.ids.role_of``), and checks the
request here, before its owner's code sees it: ``check_request(target, sender, body)``
returns a ``Request`` or raises ``ControlRefused`` with one line saying why, e.g.
``li.set may only be given by the operator; you are alice@acme.phone (device)``. The
owning service then acts, and may still refuse with its own reason (a back door it does
not know, a device not running); either way it answers and reports the control as an
event (``control.accepted`` / ``control.refused``) unless the op is ``quiet`` (a data
path, such as the handover of HI-2/HI-3 records, evented by its own kinds).

An answer larger than ``MAX_PART_BYTES`` is sent in parts: ``{"req", "part": i,
"parts": n, "data": "<a slice of the answer's JSON text>"}``, i = 0 .. n-1, which the
client joins (``join_parts``); so are the larger things a control returns (a copy of the
relay's store for an attacker, a device image, an exposure row).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from wire import ids

#: The largest control request a service reads (bytes of JSON).
MAX_REQUEST_BYTES = 256 * 1024
#: Answers above this are split into parts (each part's JSON stays below the brokers'
#: packet limit).
MAX_PART_BYTES = 256 * 1024
#: At most this many parts make one answer (bounds what a client joins).
MAX_PARTS = 256
_REQ_RE = re.compile(r"^[0-9a-f]{8,64}$")

#: The lawful-intercept switch's positions, and the back doors a government can mandate.
LI_MODES = ("off", "scoped", "blanket")
BACKDOORS = ("none", "escrow", "ghost", "global-key")
ROLES = (
    "relay", "tap", "vendor", "interceptor", "court", "agency", "attacker",
    "enterprise", "device", "operator", "lab", "observer",
)
#: Which services measure themselves (answer ``measure``): every observer of traffic.
MEASURING = ("relay", "tap", "agency", "enterprise", "attacker")
#: Every service answers ``events.replay``; the consoles (operator, lab, observer) are no
#: services: they publish no events.
SERVICES = ("relay", "tap", "vendor", "interceptor", "court", "agency", "attacker",
            "enterprise", "device")


class ControlRefused(Exception):
    """A control that is not carried out; the message is one line saying why."""


# -- arguments -------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument: its type, whether it is required, and its check.

    Types: ``str`` (at most ``max_len`` characters), ``int`` (not a bool, within
    ``lo``..``hi``), ``bool``, ``enum`` (one of ``choices``), ``user`` / ``device`` (an
    id of that shape), ``strs`` (a list of at most ``max_items`` strings of at most
    ``max_len``), ``b64`` (a string of base64 text, at most ``max_len``), ``obj`` (a JSON
    object)."""

    type: str
    required: bool = True
    choices: tuple[str, ...] = ()
    max_len: int = 1000
    max_items: int = 64
    lo: int = -(2**53)
    hi: int = 2**53
    doc: str = ""

    def check(self, op: str, name: str, value: Any) -> Any:
        where = f"{op}: argument {name!r}"
        t = self.type
        if t in ("str", "b64", "user", "device", "enum"):
            if not isinstance(value, str):
                raise ControlRefused(f"{where} must be a string")
            if len(value) > self.max_len:
                raise ControlRefused(f"{where} is longer than {self.max_len} characters")
            if t == "enum" and value not in self.choices:
                raise ControlRefused(f"{where} must be one of {', '.join(self.choices)}")
            if t == "user" and not ids.USER_RE.fullmatch(value):
                raise ControlRefused(f"{where} is not a user id (e.g. alice@acme)")
            if t == "device" and not ids.is_device(value):
                raise ControlRefused(f"{where} is not a device id (e.g. alice@acme.phone)")
            if t == "b64" and not re.fullmatch(r"[A-Za-z0-9+/=_-]*", value):
                raise ControlRefused(f"{where} is not base64 text")
            return value
        if t == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ControlRefused(f"{where} must be an integer")
            if not self.lo <= value <= self.hi:
                raise ControlRefused(f"{where} must be between {self.lo} and {self.hi}")
            return value
        if t == "bool":
            if not isinstance(value, bool):
                raise ControlRefused(f"{where} must be true or false")
            return value
        if t == "strs":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ControlRefused(f"{where} must be a list of strings")
            if len(value) > self.max_items:
                raise ControlRefused(f"{where} has more than {self.max_items} items")
            if any(len(v) > self.max_len for v in value):
                raise ControlRefused(f"{where} has an item over {self.max_len} characters")
            if self.choices and any(v not in self.choices for v in value):
                raise ControlRefused(f"{where} items must be among {', '.join(self.choices)}")
            return list(value)
        if t == "obj":
            if not isinstance(value, dict):
                raise ControlRefused(f"{where} must be an object")
            return value
        raise AssertionError(f"unknown argument type {t!r}")


@dataclass(frozen=True)
class Op:
    """One control: which roles serve it, which may give it, its arguments."""

    name: str
    serves: tuple[str, ...]  # roles of the services that carry it out
    givers: tuple[str, ...]  # roles that may give it
    args: Mapping[str, Arg] = field(default_factory=dict)
    doc: str = ""
    #: A data path (HI-2/HI-3 handover, CC export, a witness request, a replay): no
    #: control.accepted event when taken (refusals are always reported).
    quiet: bool = False


def _op(
    op_name: str,
    serves: tuple[str, ...] | str,
    givers: tuple[str, ...] | str,
    doc: str,
    /,
    *,
    quiet: bool = False,
    **args: Arg,
) -> Op:
    s = (serves,) if isinstance(serves, str) else serves
    g = (givers,) if isinstance(givers, str) else givers
    return Op(op_name, s, g, MappingProxyType(dict(args)), doc, quiet)


_B64 = 4 * 1024 * 1024 // 3  # base64 of at most about 1 MiB (a request is bounded anyway)

OPS: Mapping[str, Op] = MappingProxyType({o.name: o for o in (
    # -- the relay (the operator's) -------------------------------------------------------
    _op("li.set", "relay", "operator", "flip the lawful-intercept switch (persisted)",
        mode=Arg("enum", choices=LI_MODES)),
    _op("ghost.set", "relay", "tap",
        "the government's ghost mandate, served on the operator: the directory lists (or "
        "stops listing) the government's ghost devices", on=Arg("bool")),
    _op("split.set", "relay", "operator",
        "a dishonest operator shows these users a log without the ghost entries",
        hidden_from=Arg("strs", max_len=70)),
    _op("breach.store", "relay", "attacker",
        "a breach of the operator: a copy of every envelope its store retains"),
    # -- the government (account tap) -----------------------------------------------------
    _op("mandate.set", "tap", "lab",
        "the government mandates a back door: makes its keys and has the vendor ship a "
        "build (ghost: enrols its ghost devices at the relay's directory)",
        backdoor=Arg("enum", choices=BACKDOORS)),
    _op("breach.escrow-key", "tap", "attacker",
        "a breach of the government's vault: a copy of the escrow private key, if any"),
    # -- the vendor -----------------------------------------------------------------------
    _op("build.make", "vendor", "tap",
        "the vendor signs a client build (the next version) and ships it to every device",
        name=Arg("str", max_len=40),
        escrow_public_key=Arg("b64", required=False, max_len=64),
        global_key=Arg("b64", required=False, max_len=64)),
    # -- a device -------------------------------------------------------------------------
    _op("build.install", "device", "vendor",
        "install a build: refused unless signed by the pinned vendor key and newer",
        build=Arg("obj"), signature=Arg("b64", max_len=200)),
    _op("send", "device", "lab", "the device sends a message as its user (marked lab)",
        to_user=Arg("user", max_len=70), text=Arg("str", max_len=32 * 1024)),
    _op("breach.image", "device", "attacker",
        "a forensic image of the device's storage (a copy of its store)"),
    _op("kt.monitor", "device", "lab",
        "audit the user's own entries in the key directory (key transparency)"),
    _op("kt.checkpoint", "device", "lab", "the directory checkpoint the device holds"),
    _op("kt.compare", "device", "lab",
        "gossip: compare a checkpoint another device holds with ours",
        note=Arg("str", max_len=4096)),
    _op("directory.refresh", "device", "lab",
        "fetch the device lists afresh on the next send (as a client does from time to "
        "time)"),
    # -- the court ------------------------------------------------------------------------
    _op("warrant.apply", "court", "lab",
        "the police apply: the court drafts the warrant, the approvers ticked sign it, "
        "the court hands it to the interceptor (HI-1) and answers with its decision",
        case=Arg("str", max_len=64), targets=Arg("strs", max_items=10, max_len=80),
        categories=Arg("strs", choices=("IRI", "CC"), max_items=2),
        not_before=Arg("int", lo=0), not_after=Arg("int", lo=0),
        approvals=Arg("strs", required=False, choices=("executive", "judicial"),
                      max_items=2),
        tamper=Arg("bool", required=False,
                   doc="someone changes the first target after the approvers signed")),
    _op("warrant.replay", "court", "lab",
        "the court's last warrant handed to the interceptor once more (a replay)"),
    _op("warrant.cancel", "court", "lab",
        "the court cancels a warrant it issued (both approvers sign the cancellation)",
        authorisation_id=Arg("str", max_len=100)),
    _op("witness.add", "court", "interceptor",
        "the interceptor asks the court's witness to cosign the ledger's checkpoint",
        quiet=True, request=Arg("b64", max_len=_B64)),
    _op("ledger.verify", "court", "lab",
        "oversight verifies the audit ledger with its pinned keys and the witness"),
    # -- the interceptor ------------------------------------------------------------------
    _op("warrant.submit", "interceptor", "court",
        "HI-1: a warrant (its bytes, base64), checked, logged and acted on",
        warrant=Arg("b64", max_len=_B64)),
    _op("cc.export", "interceptor", "enterprise",
        "an enterprise's CC export under a warrant, already sealed to the agency",
        quiet=True, authorisation_id=Arg("str", max_len=100),
        records=Arg("strs", max_items=1000, max_len=_B64)),
    _op("ledger.checkpoint", "interceptor", "court",
        "checkpoint the ledger and have the court's witness cosign it"),
    _op("ledger.copy", "interceptor", "court", "a copy of the audit ledger, for oversight"),
    _op("ledger.tamper", "interceptor", "lab",
        "an insider edits one entry of the ledger's file (and its leaf hash)"),
    _op("ledger.rollback", "interceptor", "lab",
        "an insider rolls the ledger back to its older half"),
    # -- an enterprise --------------------------------------------------------------------
    _op("warrant.serve", "enterprise", "interceptor",
        "a warrant served on the enterprise, which checks it itself and exports CC",
        warrant=Arg("b64", max_len=_B64)),
    # -- the agency -----------------------------------------------------------------------
    _op("handover", "agency", "interceptor", "an HI-2/HI-3 record sealed to the agency",
        quiet=True, record=Arg("b64", max_len=_B64)),
    # -- an attacker ----------------------------------------------------------------------
    _op("attack.steal-escrow-key", "attacker", "lab",
        "steal the escrow key from the government and try it on the relay's store"),
    _op("attack.image-device", "attacker", "lab",
        "image one device and try everything in it on the relay's store",
        device=Arg("device", max_len=100)),
    _op("attack.breach-relay", "attacker", "lab", "copy the relay's store (again)"),
    # -- every observer; every service -----------------------------------------------------
    _op("measure", MEASURING, ("observer",),
        "compute the exposure row(s) now, from the service's own store with its own keys"),
    _op("events.replay", SERVICES, ("observer",),
        "the service's events after seq ``since`` (from its last 5000), as batches",
        quiet=True, since=Arg("int", lo=0)),
)})


@dataclass(frozen=True)
class Request:
    """A checked control request."""

    req: str
    op: str
    args: dict[str, Any]
    sender: str
    role: str
    target: str

    @property
    def spec(self) -> Op:
        return OPS[self.op]


def describe(account: str) -> str:
    """``alice@acme.phone (device)``: an account and its role, for refusals."""
    role = ids.role_of(account)
    return f"{account} ({role})" if role else f"{account} (no role)"


def _givers(op: Op) -> str:
    names = {"tap": "the government (tap)", "enterprise": "an enterprise", "device": "a device"}
    words = [names.get(g, f"the {g}") for g in op.givers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def may_give(op: str, sender: str) -> str | None:
    """None if ``sender`` may give ``op``; otherwise the refusal, one line."""
    spec = OPS.get(op)
    if spec is None:
        return f"unknown op {op!r}"
    if ids.role_of(sender) in spec.givers:
        return None
    return f"{op} may only be given by {_givers(spec)}; you are {describe(sender)}"


def serves(op: str, target: str) -> bool:
    """Whether the service ``target`` carries out ``op``."""
    spec = OPS.get(op)
    return spec is not None and ids.role_of(target) in spec.serves


def check_args(op: str, args: Any) -> dict[str, Any]:
    spec = OPS[op]
    if not isinstance(args, dict):
        raise ControlRefused(f"{op}: 'args' must be an object")
    unknown = sorted(set(args) - set(spec.args))
    if unknown:
        raise ControlRefused(f"{op}: unknown argument {unknown[0]!r}")
    out: dict[str, Any] = {}
    for name, arg in spec.args.items():
        if name not in args:
            if arg.required:
                raise ControlRefused(f"{op}: missing argument {name!r}")
            continue
        out[name] = arg.check(op, name, args[name])
    return out


def check_request(target: str, sender: str, body: bytes) -> Request:
    """A request as ``target`` received it from ``sender`` (the topic's ``<from>``):
    parsed, the op known and served here, the sender allowed, the arguments checked.
    ControlRefused (one line) otherwise; ``req_of(body)`` says whom to answer."""
    if len(body) > MAX_REQUEST_BYTES:
        raise ControlRefused(f"request too large: {len(body)} bytes, limit {MAX_REQUEST_BYTES}")
    obj = _object(body)
    if set(obj) - {"req", "op", "args"}:
        extra = sorted(set(obj) - {"req", "op", "args"})[0]
        raise ControlRefused(f"unknown request field {extra!r}")
    req = obj.get("req")
    if not isinstance(req, str) or not _REQ_RE.fullmatch(req):
        raise ControlRefused("'req' must be 8 to 64 lower-case hex digits")
    op = obj.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ControlRefused(f"unknown op {op!r}" if isinstance(op, str) else "'op' is missing")
    if not serves(op, target):
        raise ControlRefused(f"{op} is not something {describe(target)} does")
    refusal = may_give(op, sender)
    if refusal is not None:
        raise ControlRefused(refusal)
    args = check_args(op, obj.get("args", {}))
    role = ids.role_of(sender)
    assert role is not None  # may_give checked it
    return Request(req, op, args, sender, role, target)


def req_of(body: bytes) -> str | None:
    """The request id of a body that may not pass the checks (to address a refusal)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    req = obj.get("req") if isinstance(obj, dict) else None
    return req if isinstance(req, str) and _REQ_RE.fullmatch(req) else None


def _object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise ControlRefused("not JSON") from None
    if not isinstance(obj, dict):
        raise ControlRefused("not a JSON object")
    return obj


# -- requests and answers as bytes ----------------------------------------------------------


def request(req: str, op: str, args: Mapping[str, Any]) -> bytes:
    return json.dumps({"req": req, "op": op, "args": dict(args)}, separators=(",", ":")).encode()


#: Fields of the answer itself, which a result may not use.
ANSWER_FIELDS = frozenset({"req", "ok", "error", "part", "parts", "data"})


def answer(req: str, result: Mapping[str, Any]) -> bytes:
    clash = ANSWER_FIELDS & set(result)
    if clash:
        raise ValueError(f"a result may not use the answer's own field {sorted(clash)[0]!r}")
    return json.dumps({"req": req, "ok": True, **result}, separators=(",", ":")).encode()


def refusal(req: str | None, error: str) -> bytes:
    return json.dumps({"req": req, "ok": False, "error": error}, separators=(",", ":")).encode()


def split_answer(req: str, body: bytes, limit: int = MAX_PART_BYTES) -> list[bytes]:
    """An answer's bytes as one message, or as parts (see the module doc), each carrying
    a slice of the answer's bytes in base64, at most ``limit`` characters of it."""
    if len(body) <= limit:
        return [body]
    step = limit // 4 * 3
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    if len(chunks) > MAX_PARTS:
        return [refusal(req, f"answer too large: {len(body)} bytes")]
    return [
        json.dumps({"req": req, "part": i, "parts": len(chunks),
                    "data": base64.b64encode(c).decode()}, separators=(",", ":")).encode()
        for i, c in enumerate(chunks)
    ]


@dataclass
class Parts:
    """Collects the parts of one answer (``add`` returns the whole once complete)."""

    parts: dict[int, str] = field(default_factory=dict)
    total: int = 0

    def add(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        part, total, data = obj.get("part"), obj.get("parts"), obj.get("data")
        if not (isinstance(part, int) and isinstance(total, int) and isinstance(data, str)):
            raise ControlRefused("malformed answer part")
        if not 0 < total <= MAX_PARTS or not 0 <= part < total:
            raise ControlRefused("answer part out of range")
        if self.total and total != self.total:
            raise ControlRefused("answer parts disagree on their number")
        self.total = total
        self.parts[part] = data
        if len(self.parts) < total:
            return None
        return join_parts([self.parts[i] for i in range(total)])


def join_parts(chunks: list[str]) -> dict[str, Any]:
    try:
        obj = json.loads(b"".join(base64.b64decode(c, validate=True) for c in chunks))
    except (ValueError, RecursionError):
        raise ControlRefused("the joined answer is not JSON") from None
    if not isinstance(obj, dict):
        raise ControlRefused("the joined answer is not an object")
    return obj


def ops_served_by(role: str) -> list[str]:
    return [name for name, op in OPS.items() if role in op.serves]


def ops_given_by(role: str) -> list[str]:
    return [name for name, op in OPS.items() if role in op.givers]


Check = Callable[[str, str, bytes], Request]

__all__ = [
    "BACKDOORS",
    "LI_MODES",
    "MAX_PART_BYTES",
    "MAX_REQUEST_BYTES",
    "MEASURING",
    "OPS",
    "ROLES",
    "SERVICES",
    "Arg",
    "ControlRefused",
    "Op",
    "Parts",
    "Request",
    "answer",
    "check_args",
    "check_request",
    "describe",
    "join_parts",
    "may_give",
    "ops_given_by",
    "ops_served_by",
    "refusal",
    "req_of",
    "request",
    "serves",
    "split_answer",
]
