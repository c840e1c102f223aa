"""Every control op, given to its live owner in a running System by an account that may
not give it, is refused with the design's one-line reason, reported by the owner as
``control.refused``, and changes nothing (issue 11, PLANE.md section 4)."""

from __future__ import annotations

import asyncio

import pytest

from doormat.system import System
from infra.plane import ControlError, Party
from wire.control import OPS

# A live account of every role that serves controls, in the default cast.
OWNER = {
    "relay": "relay", "tap": "tap", "vendor": "vendor", "device": "alice@acme.phone",
    "court": "court", "interceptor": "interceptor", "enterprise": "acme",
    "agency": "agency", "attacker": "attacker",
}


def target_of(serves: tuple[str, ...]) -> str:
    return next(OWNER[role] for role in serves if role in OWNER)


async def test_every_op_from_a_wrong_account_is_refused_with_its_reason(
    system: System,
) -> None:
    assert system.operator is not None and system.lab is not None
    li_before = system.li
    refusals: list[tuple[str, str, str]] = []
    for name, op in sorted(OPS.items()):
        wrong: Party = system.operator if "operator" not in op.givers else system.lab
        target = target_of(op.serves)
        with pytest.raises(ControlError) as refused:
            await wrong.call(target, name, timeout=10.0)
        role = who = "operator" if wrong is system.operator else "lab"
        assert refused.value.reason.startswith(f"{name} may only be given by "), (
            name, refused.value.reason)
        assert refused.value.reason.endswith(f"; you are {who} ({role})"), (
            name, refused.value.reason)
        refusals.append((target, name, who))
    # Each owner reported each refusal as its own event.
    async with asyncio.timeout(5):
        while True:
            seen = {(e["actor"], e["op"], e["sender"])
                    for e in system.events.events(kind="control.refused")}
            if set(refusals) <= seen:
                break
            await asyncio.sleep(0.02)
    # Nothing was done: the switch, the mandate and the deliveries are as they were.
    assert system.li == li_before
    assert system.backdoor == "none"
    assert system.messages_sent == 0
