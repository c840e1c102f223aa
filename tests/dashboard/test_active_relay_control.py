"""The dashboard's active-relay control end to end (issue 12, point 1): the HTTP route,
the hub, a real System, and the exposure matrix's ``attacker:active-relay`` row.

The row must be what the operator really decrypted: the test opens, with the keys the
hub kept of the forged identities, every envelope the relay stored, and compares what
opened (and its plaintext) with the row. Identity check on (as built): the forged
first message is refused with an alarm naming bob and his phone, and alice's reply is
readable by bob's real phone only. Off (the behaviour before issue 12): the forged text
is shown as bob's and the reply is readable by the operator.
"""

from __future__ import annotations

from typing import Any

import httpx

from doormat.active_relay import NAME
from tests.support.polling import until

ALICE, BOB = "alice@acme.phone", "bob@acme.phone"
CAROL, DAVE = "carol@globex.phone", "dave@globex.phone"
REPLY = "Here are the figures: 4.2M"  # run_active_relay's reply


def _really_opened(served: Any) -> dict[tuple[str, str], bytes]:
    """Every stored envelope tried with every forged identity the hub holds."""
    from wire import envelope as wire_envelope

    opened: dict[tuple[str, str], bytes] = {}
    for raw in served.system.relay.captured():
        env = wire_envelope.parse(raw)
        for attacker in served.hub._active:
            text = attacker.try_open(env)
            if text is not None:
                opened[(env.sender, env.id)] = text
    return opened


async def _row(c: httpx.AsyncClient) -> dict[str, Any]:
    exposure = (await c.post("/api/exposure", json={})).json()["exposure"]
    rows = {o["name"]: o for o in exposure["observers"]}
    assert NAME in rows, sorted(rows)
    return dict(rows[NAME])


async def test_active_relay_control_check_on_then_off(served: Any) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as c:
        state = (await c.get("/api/state")).json()
        assert state["identity_check"] is True
        # A conversation first, so that the operator has something else to try.
        r = await c.post("/api/send", json={"device": ALICE, "to_user": "bob@acme",
                                            "text": "lunch at noon?"})
        assert r.status_code == 200
        # No forgery yet: no row.
        exposure = (await c.post("/api/exposure", json={})).json()["exposure"]
        assert NAME not in {o["name"] for o in exposure["observers"]}

        # 1. Check on (as built): refused, alarm naming bob and his phone, nothing read.
        r = await c.post("/api/attack/active-relay", json={})
        assert r.status_code == 200, r.text
        on = r.json()["result"]
        assert on["identity_check"] is True and on["forged_shown"] is False
        assert on["alarms"] >= 1 and on["alarm_user"] == "bob@acme"
        assert on["alarm_device"] == BOB
        assert on["reply_read_by_attacker"] is False and on["reply_read_by_peer"] is True
        assert on["readable"] == 0
        alarms = served.system.events.events(kind="device.identity_alarm", actor=ALICE)
        assert any(a["user"] == "bob@acme" and a["device"] == BOB for a in alarms)
        row = await _row(c)
        assert _really_opened(served) == {}
        assert row["readable"] == 0 and row["captured"] >= 2  # the chat and the reply
        assert row["keys_held"] == [f"forged identity of {BOB}"]

        # 2. Check off (before issue 12): the default pair is carol's phone "from" dave's
        # (as in `doormat demo --active-relay`); shown as dave's, the reply read by the
        # operator and not by dave's real phone.
        r = await c.post("/api/identity-check", json={"on": False})
        assert r.json()["identity_check"] is False
        assert not any(d.check_identities for d in served.system.devices.values())
        r = await c.post("/api/attack/active-relay", json={})
        off = r.json()["result"]
        assert (off["target"], off["impersonated"]) == (CAROL, DAVE)
        assert off["identity_check"] is False and off["forged_shown"] is True
        assert off["alarms"] == 0
        assert off["reply_read_by_attacker"] is True and off["reply_read_by_peer"] is False
        assert off["readable"] == 1
        opened = _really_opened(served)
        assert list(opened.values()) == [REPLY.encode()]
        assert next(iter(opened))[0] == CAROL  # carol's reply
        row = await _row(c)
        assert row["readable"] == len(opened) == 1
        assert row["previous"]["readable"] == 0
        assert sorted(row["keys_held"]) == [f"forged identity of {BOB}",
                                            f"forged identity of {DAVE}"]
        shown = [e for e in served.system.events.events(kind="device.received", actor=CAROL)
                 if e.get("from") == DAVE]
        assert shown, "the forged text is shown on carol's phone as dave's"

        # 3. A device that took a forged key keeps the forger's session: the check, on
        # again, refuses a new forgery to carol, but her reply still goes to the first
        # forger (the row grows by one, the new forger reads nothing): what the check
        # guards is what comes after it.
        await c.post("/api/identity-check", json={"on": True})
        r = await c.post("/api/attack/active-relay", json={"target": CAROL, "impersonate": DAVE})
        again = r.json()["result"]
        assert again["forged_shown"] is False and again["alarm_device"] == DAVE
        assert again["readable"] == 0 and again["reply_read_by_peer"] is False
        opened = _really_opened(served)
        assert len(opened) == 2 and set(opened.values()) == {REPLY.encode()}
        assert (await _row(c))["readable"] == 2

        # The reports, for the panes and the exercises.
        reads = [e for e in served.system.events.events(kind="attacker.read")
                 if e.get("attack") == "active-relay"]
        assert [(e["identity_check"], e["readable"]) for e in reads] == [
            (True, 0), (False, 1), (True, 0)]
        assert reads[1]["sample"] == REPLY

        # Switched back on, the state says so; a reset brings a fresh system, check on
        # and no forged identity (no row).
        assert all(d.check_identities for d in served.system.devices.values())
        assert (await c.get("/api/state")).json()["identity_check"] is True
        await c.post("/api/reset", json={})
        assert (await c.get("/api/state")).json()["identity_check"] is True
        assert served.hub._active == []


async def test_active_relay_control_validates_input(served: Any) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as c:
        r = await c.post("/api/identity-check", json={"on": "no"})
        assert r.status_code == 400
        r = await c.post("/api/attack/active-relay", json={"target": "eve@acme.phone"})
        assert r.status_code == 400 and "no running device" in r.json()["error"]
        r = await c.post("/api/attack/active-relay",
                         json={"target": ALICE, "impersonate": "alice@acme.laptop"})
        assert r.status_code == 400 and "two users" in r.json()["error"]
        # Another pair: carol's phone, "from" dave's.
        r = await c.post("/api/attack/active-relay",
                         json={"target": "carol@globex.phone", "impersonate": "dave@globex.phone"})
        assert r.status_code == 200
        assert r.json()["result"]["alarm_device"] == "dave@globex.phone"
        r = await c.post("/api/attack", json={"attack": "active-relay"})
        assert r.status_code == 200 and r.json()["result"]["target"] == ALICE
        await until(lambda: served.hub.exposure is not None
                    and NAME in {o["name"] for o in served.hub.exposure["observers"]},
                    15, "the matrix recomputed after attacker.read")
