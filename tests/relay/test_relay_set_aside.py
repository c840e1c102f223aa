"""The relay's service loop sets aside what it cannot process (issue 12, point 2).

``Relay.handle`` refuses bad input itself; what else fails in the loop because of some
message - here a listener of the event log that raises on one envelope's events, as a
buggy dashboard pane would - must not end the relay (on today's main the exception left
the loop and the relay stopped) nor come back forever: the message is set aside (kept
beside the relay's store, one service.set_aside event), acknowledged, and the next one
is handled. A transient failure (the disk) is not set aside.
"""

from __future__ import annotations

from collections.abc import Callable

from infra.setaside import SetAside, store_path
from tests.relay.relay_harness import ALICE, BOB, RelayEnv
from tests.support.polling import until
from wire.envelope import Envelope
from wire.events import Event

Make = Callable[..., Envelope]


async def test_a_message_that_breaks_the_loop_is_set_aside_and_the_relay_goes_on(
    relay_env: RelayEnv, make_envelope: Make
) -> None:
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    poison = make_envelope(ALICE, BOB)

    def buggy_listener(event: Event) -> None:
        if event.get("id") == poison.id and event["kind"] == "relay.accepted":
            raise ValueError("a pane cannot draw this envelope")

    relay_env.events.subscribe(buggy_listener)
    await alice.send(poison)
    good = [make_envelope(ALICE, BOB) for _ in range(5)]
    for env in good:
        await alice.send(env)
    await bob.wait(lambda: {e.id for e in good} <= set(bob.ids()), timeout=20)
    assert relay_env.service.connected and relay_env.service._task is not None
    assert not relay_env.service._task.done()
    await until(lambda: relay_env.events.events("service.set_aside"))
    (aside,) = relay_env.events.events("service.set_aside")
    assert aside["actor"] == aside["account"] == "relay"
    assert aside["topic"] == f"doormat/out/{ALICE}/msg"
    assert aside["size"] == len(poison.encode())
    assert aside["reason"] == "ValueError: a pane cannot draw this envelope"
    # Acknowledged: a reconnection of the relay brings nothing back.
    await relay_env.restart_relay()
    await alice.send(make_envelope(ALICE, BOB))
    await until(lambda: len(relay_env.events.events("relay.accepted")) >= 7)
    assert len(relay_env.events.events("service.set_aside")) == 1
    await relay_env.service.stop()
    kept = SetAside(store_path(relay_env.db))
    try:
        (entry,) = kept.kept()
        assert entry.payload == poison.encode()
    finally:
        kept.close()
