"""The dashboard's HTTP API and stream against a running System (no browser)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from doormat.cast import default_cast
from doormat.dashboard.panes import ROUTES, STATUSES, panes_of, route


async def post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    return await client.post(path, json=body)


async def test_pages_assets_and_state(served: Any) -> None:
    async with httpx.AsyncClient(base_url=served.url) as c:
        page = await c.get("/")
        assert page.status_code == 200 and "doormat" in page.text
        assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")  # no CDN
        for asset in ("/static/app.js", "/static/app.css", "/static/lab.js", "/lab"):
            r = await c.get(asset)
            assert r.status_code == 200, asset
            assert "cdn" not in r.text.lower()
        assert (await c.get("/healthz")).json()["ok"] is True
        state = (await c.get("/api/state")).json()
        assert state["li"] == "off" and state["backdoor"] == "none"
        assert [p["id"] for p in state["panes"]][:4] == [
            "user:alice@acme", "user:bob@acme", "user:carol@globex", "user:dave@globex"]
        assert {"relay", "tap", "agency", "court", "attackers", "enterprise:acme",
                "enterprise:globex"} <= {p["id"] for p in state["panes"]}
        assert state["warrant"]["enabled"] is True
        assert state["lab"]["total"] >= 12


async def test_controls_validate_input(served: Any) -> None:
    async with httpx.AsyncClient(base_url=served.url) as c:
        r = await c.post("/api/li", content=b'{"mode": "blanket"}')  # no JSON content type
        assert r.status_code == 415
        r = await c.post("/api/li", content=b"[1]", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON object" in r.json()["error"]
        assert (await post(c, "/api/li", {"mode": "everything"})).status_code == 400
        assert (await post(c, "/api/backdoor", {"backdoor": "nsa"})).status_code == 400
        r = await post(c, "/api/send", {"device": "eve@acme.phone", "to_user": "bob@acme",
                                        "text": "x"})
        assert r.status_code == 400 and "no running device" in r.json()["error"]
        r = await post(c, "/api/send", {"device": "alice@acme.phone", "to_user": "bob@acme",
                                        "text": ""})
        assert r.status_code == 400
        r = await post(c, "/api/attack", {"attack": "rubber-hose"})
        assert r.status_code == 400
        r = await post(c, "/api/warrant", {"targets": [], "categories": ["IRI"]})
        assert r.status_code == 400 and "targets" in r.json()["error"]
        r = await c.post("/api/li", content=b"x" * 20000,
                         headers={"content-type": "application/json"})
        assert r.status_code == 413
        # a foreign Host (DNS rebinding) is refused on a loopback address
        r = await c.get("/api/state", headers={"host": "evil.example"})
        assert r.status_code == 400
        assert (await post(c, "/api/li", {"mode": "blanket"})).json()["li"] == "blanket"


async def test_a_text_over_the_sender_limit_is_refused_with_the_limit(served: Any) -> None:
    """Issue 12, point 2: the sender refuses what would not fit, and the page says why.
    Under the global-key mandate (a second copy of the padded text in the envelope's
    4 KiB ext) 2,000 characters of two bytes each no longer fit."""
    from clients.limits import max_text_bytes

    async with httpx.AsyncClient(base_url=served.url) as c:
        assert (await post(c, "/api/backdoor", {"backdoor": "global-key"})).status_code == 200
        limit = max_text_bytes(served.system.build)
        r = await post(c, "/api/send", {"device": "alice@acme.phone", "to_user": "bob@acme",
                                        "text": "\u00e9" * 2000})
        assert r.status_code == 413
        assert f"the largest a user can send is {limit} bytes" in r.json()["error"]
        r = await post(c, "/api/send", {"device": "alice@acme.phone", "to_user": "bob@acme",
                                        "text": "e" * min(limit, 2000)})
        assert r.status_code == 200, r.text


async def read_stream(url: str, until: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Messages from /api/events until ``until(messages)`` is true."""
    got: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=timeout) as c, c.stream("GET", url + "api/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(timeout):
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if until(got):
                        return got
    return got


async def test_stream_send_search_attack_warrant_reset(served: Any) -> None:
    async def act() -> None:
        async with httpx.AsyncClient(base_url=served.url, timeout=15) as c:
            await asyncio.sleep(0.3)
            r = await post(c, "/api/send", {"device": "carol@globex.phone",
                                            "to_user": "dave@globex", "text": "sierra-6 memo"})
            assert r.status_code == 200 and r.json()["devices"] == ["dave@globex.phone"]

    def done(msgs: list[dict[str, Any]]) -> bool:
        return any(m["type"] == "event" and m["event"]["kind"] == "device.received"
                   and m["event"].get("text") == "sierra-6 memo" for m in msgs)

    task = asyncio.create_task(act())
    msgs = await read_stream(served.url, done)
    await task
    assert msgs[0]["type"] == "snapshot"
    received = next(m for m in msgs if m["type"] == "event"
                    and m["event"]["kind"] == "device.received")
    assert received["items"] == [{"pane": "user:dave@globex", "text": "carol.phone → "
                                  "dave@globex: sierra-6 memo", "status": "plain",
                                  "key": received["event"]["from"] + "/" +
                                  received["event"]["id"], "note": "shown on phone"}]
    relay_lines = [i for m in msgs if m["type"] == "event" for i in m["items"]
                   if i["pane"] == "relay"]
    assert relay_lines and all("sierra" not in i["text"] for i in relay_lines)

    async with httpx.AsyncClient(base_url=served.url, timeout=15) as c:
        r = (await post(c, "/api/relay/search", {"query": "sierra-6"})).json()["result"]
        assert r["found"] == 0 and r["query_was_sent"] is True and r["envelopes"] >= 1
        r = (await post(c, "/api/attack", {"attack": "escrow-key"})).json()["result"]
        assert r["readable"] == 0 and "no escrow key" in r["keys"]
        r = (await post(c, "/api/attack", {"attack": "device-image",
                                           "device": "dave@globex.phone"})).json()["result"]
        assert r["others_read"] == 0
        exp = (await post(c, "/api/exposure", {})).json()["exposure"]
        relay = next(o for o in exp["observers"] if o["name"] == "relay")
        assert relay["captured"] >= 1 and relay["readable"] == 0
        d = (await post(c, "/api/warrant", {"targets": "user:*", "categories": ["IRI"],
                                            "approvals": ["executive", "judicial"]})).json()
        assert d["decision"]["accepted"] is False
        assert d["decision"]["reason"] == "wildcard-target"
        d = (await post(c, "/api/warrant", {"targets": "carol@globex", "categories": ["IRI"],
                                            "approvals": ["judicial"]})).json()
        assert d["decision"]["reason"] == "missing-approval"
        lab = (await c.get("/api/lab")).json()["board"]
        solved = {r["key"] for r in lab["exercises"] if r["solved"]}
        assert {"first-message", "relay-sees-no-plaintext", "warrant-wildcard"} <= solved
        hint = (await post(c, "/api/lab/hint", {"key": "ghost-detected"})).json()
        assert len(hint["hints"]) == 1
        assert (await post(c, "/api/lab/hint", {"key": "nope"})).status_code == 404
        old = served.hub.system
        gen = (await c.get("/healthz")).json()["generation"]
        r = await post(c, "/api/reset", {})
        assert r.status_code == 200 and r.json()["generation"] > gen
        assert served.hub.system is not old
        state = (await c.get("/api/state")).json()
        assert state["li"] == "off"
        assert not [e for e in state["events"] if e["event"]["kind"] == "device.sent"]
        # the score survives a reset of the system
        lab = (await c.get("/api/lab")).json()["board"]
        assert lab["solved"] >= 3


def test_route_table() -> None:
    kinds = {r.kind for r in ROUTES}
    for kind in ("device.sent", "device.received", "relay.accepted", "tap.captured",
                 "agency.received", "interceptor.warrant_refused", "device.kt_alarm",
                 "ledger.verified", "ledger.tamper_detected", "attacker.read"):
        assert kind in kinds
    assert all(r.status in STATUSES for r in ROUTES)
    # tap lines depend on what it read
    sealed = route({"t": 0, "actor": "tap", "kind": "tap.captured", "readable": False,
                    "channel": "mirror", "from": "a@acme.phone", "to": "b@acme.phone"})
    assert [(i["pane"], i["status"]) for i in sealed] == [("tap", "sealed")]
    read = route({"t": 0, "actor": "tap", "kind": "tap.captured", "readable": True,
                  "channel": "mirror", "from": "a@acme.phone", "to": "b@acme.phone",
                  "text": "hi"})
    assert read[0]["status"] == "plain" and read[0]["text"].endswith(": hi")
    # no plaintext field in the relay's line even if one were present
    relay = route({"t": 0, "actor": "relay", "kind": "relay.accepted", "from": "a@acme.phone",
                   "to": "b@acme.phone", "bucket": 256, "excerpt": "00ff" * 8, "text": "SECRET"})
    assert relay and "SECRET" not in relay[0]["text"]
    # unknown kinds make no pane line; prefix rows catch new enterprise events
    assert route({"t": 0, "actor": "x", "kind": "something.new"}) == []
    assert route({"t": 0, "actor": "acme", "kind": "enterprise.new_thing"})[0]["pane"] == \
        "enterprise:acme"
    # every pane a route names for the default cast exists
    ids = {p["id"] for p in panes_of(default_cast())}
    fixed = {r.pane for r in ROUTES if "{" not in r.pane}
    assert fixed <= ids


@pytest.mark.parametrize("port", ["70000", "x"])
def test_dashboard_command_bad_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    from doormat.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--port", port])
    assert exit_info.value.code == 2
    assert "port" in capsys.readouterr().err


def test_docs_list_every_routed_kind() -> None:
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "dashboard.md").read_text()
    missing = sorted({r.kind for r in ROUTES if f"`{r.kind}`" not in docs})
    assert missing == [], f"docs/dashboard.md does not list: {missing}"
