"""Helpers shared by the system tests (``tests.system.system_helpers``)."""

from __future__ import annotations

from doormat.system import System

Script = list[tuple[str, str, str]]  # (sending device, recipient user, text)


async def converse(system: System, script: Script) -> dict[tuple[str, str], str]:
    """Send each line and wait for delivery; return (sender device, message id) ->
    plaintext: the ground truth an observer's reads are checked against."""
    truth = {}
    for device, to_user, text in script:
        d = await system.send(device, to_user, text)
        assert await system.wait_delivered(d)
        truth[(device, d.sent.id)] = text
    return truth
