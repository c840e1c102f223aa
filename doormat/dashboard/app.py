"""The dashboard's ASGI app (Starlette): the page, its assets, a JSON API and a stream.

    GET  /                    the live dashboard (static/index.html)
    GET  /lab                 the exercises' score board (static/lab.html)
    GET  /static/...          CSS, JS (shipped in the package: no CDN, works offline)
    GET  /healthz             {"ok": true, ...} once the system runs (compose healthcheck)
    GET  /api/state           the snapshot a page starts from
    GET  /api/events          server-sent events: a snapshot, then every update
    POST /api/send            {"device", "to_user", "text"}: send as that user's device
    POST /api/li              {"mode": "off" | "scoped" | "blanket"}
    POST /api/backdoor        {"backdoor": "none" | "escrow" | "ghost" | "global-key"}
    GET  /api/exposure        the last exposure matrix (or null)
    POST /api/exposure        recompute it now
    POST /api/attack          {"attack": "escrow-key"} | {"attack": "device-image", "device"}
                              | {"attack": "active-relay"} (the default pair)
    POST /api/attack/active-relay  {"target"?, "impersonate"?}: the relay operator forges
                              a first message (doormat.active_relay) and reads the reply
    POST /api/identity-check  {"on": true | false}: the devices' identity-key check
    POST /api/relay/search    {"query"}: the operator searches its store
    POST /api/warrant         {"targets", "categories", "starts_in_s", "duration_s",
                               "approvals", "tamper"}: drafted by the system's court,
                               then System.submit_warrant; answers the decision
    POST /api/ledger/verify   oversight verifies the audit ledger
    POST /api/ledger/tamper   an insider edits one ledger entry (for the exercise)
    POST /api/ledger/rollback an insider rolls the ledger back to an older state
    POST /api/reset           a fresh system
    GET  /api/lab             the score board
    POST /api/lab/hint        {"key"}: reveal the next hint

POSTs take JSON only (``Content-Type: application/json``), which a page on another
origin cannot send without a CORS preflight this app never answers; on a loopback
address, requests must also name a loopback host (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from doormat.dashboard.hub import ActionError, Hub

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024
KEEPALIVE_S = 15.0
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


async def _body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ActionError("send JSON (Content-Type: application/json)", 415)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ActionError(f"request body over {MAX_BODY} bytes", 413)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ActionError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ActionError("the body must be a JSON object")
    return body


def _error(exc: ActionError) -> JSONResponse:
    return JSONResponse({"ok": False, "error": str(exc)}, status_code=exc.status)


def _sse(msg: dict[str, Any]) -> bytes:
    data = json.dumps(msg, separators=(",", ":"), default=str)
    return f"event: {msg.get('type', 'message')}\ndata: {data}\n\n".encode()


def create_app(hub: Hub, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """The app for ``hub``. ``allowed_hosts``: Host headers accepted (None: any)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def lab_page(request: Request) -> Response:
        return FileResponse(STATIC / "lab.html", headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        running = hub._system is not None
        return JSONResponse({"ok": running, "generation": hub.generation},
                            status_code=200 if running else 503)

    async def state(request: Request) -> Response:
        return JSONResponse(hub.snapshot())

    async def events(request: Request) -> Response:
        queue = hub.subscribe()

        async def stream() -> Any:
            try:
                yield b"retry: 1000\n\n"
                while True:
                    try:
                        msg = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if msg is None:
                        return
                    yield _sse(msg)
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    def action(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                body = await _body(request) if request.method == "POST" else {}
                result = await fn(body)
            except ActionError as exc:
                return _error(exc)
            return JSONResponse({"ok": True, **(result or {})})

        return endpoint

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        return await hub.send(body.get("device"), body.get("to_user"), body.get("text"))

    async def li(body: dict[str, Any]) -> dict[str, Any]:
        return await hub.set_li(body.get("mode"))

    async def backdoor(body: dict[str, Any]) -> dict[str, Any]:
        return await hub.set_backdoor(body.get("backdoor"))

    async def exposure_get(body: dict[str, Any]) -> dict[str, Any]:
        return {"exposure": hub.exposure}

    async def exposure_post(body: dict[str, Any]) -> dict[str, Any]:
        return {"exposure": await hub.exposure_now()}

    async def attack(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": await hub.attack(body.get("attack"), body.get("device"))}

    async def active_relay(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": await hub.active_relay(body.get("target"), body.get("impersonate"))}

    async def identity_check(body: dict[str, Any]) -> dict[str, Any]:
        return await hub.set_identity_check(body.get("on"))

    async def search(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": await hub.search(body.get("query"))}

    async def warrant(body: dict[str, Any]) -> dict[str, Any]:
        return {"decision": await hub.submit_warrant(body)}

    async def ledger_verify(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": await hub.verify_ledger()}

    async def ledger_tamper(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": await hub.tamper_ledger()}

    async def ledger_rollback(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": await hub.rollback_ledger()}

    async def reset(body: dict[str, Any]) -> dict[str, Any]:
        return await hub.reset()

    async def lab(body: dict[str, Any]) -> dict[str, Any]:
        if hub.lab is None:
            raise ActionError("the lab is off (started with --no-lab)", 404)
        return {"board": hub.lab.board()}

    async def hint(body: dict[str, Any]) -> dict[str, Any]:
        if hub.lab is None:
            raise ActionError("the lab is off (started with --no-lab)", 404)
        key = body.get("key")
        try:
            hints = hub.lab.reveal_hint(str(key))
        except KeyError:
            raise ActionError(f"no exercise {key!r} is active", 404) from None
        return {"key": key, "hints": hints}

    routes = [
        Route("/", index),
        Route("/lab", lab_page),
        Route("/healthz", healthz),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/api/send", action(send), methods=["POST"]),
        Route("/api/li", action(li), methods=["POST"]),
        Route("/api/backdoor", action(backdoor), methods=["POST"]),
        Route("/api/exposure", action(exposure_get), methods=["GET"]),
        Route("/api/exposure", action(exposure_post), methods=["POST"]),
        Route("/api/attack", action(attack), methods=["POST"]),
        Route("/api/attack/active-relay", action(active_relay), methods=["POST"]),
        Route("/api/identity-check", action(identity_check), methods=["POST"]),
        Route("/api/relay/search", action(search), methods=["POST"]),
        Route("/api/warrant", action(warrant), methods=["POST"]),
        Route("/api/ledger/verify", action(ledger_verify), methods=["POST"]),
        Route("/api/ledger/tamper", action(ledger_tamper), methods=["POST"]),
        Route("/api/ledger/rollback", action(ledger_rollback), methods=["POST"]),
        Route("/api/reset", action(reset), methods=["POST"]),
        Route("/api/lab", action(lab), methods=["GET"]),
        Route("/api/lab/hint", action(hint), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(routes=routes, middleware=middleware)
