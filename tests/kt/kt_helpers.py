"""Helpers for the key-transparency tests: a relay on a temp store driven without a
broker, and the requests devices, enterprises and the tap send (imported as
``tests.kt.kt_helpers``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from relay.router import Action, Event, Publish, Relay
from relay.store import Store
from tests.support.encoding import b64
from wire.events import EventLog
from wire.kt import KT_ORIGIN
from wire.note import Signer

A, A2, B, C = "alice@acme.phone", "alice@acme.laptop", "bob@acme.phone", "carol@globex.phone"
ALICE, BOB, CAROL = "alice@acme", "bob@acme", "carol@globex"
CAST = {A: ALICE, A2: ALICE, B: BOB, C: CAROL}
SIGNER = Signer.generate(KT_ORIGIN)  # one directory key for the whole module run


def identity_of(device: str) -> str:
    """A fixed, distinct fake identity key per device (the relay does not parse it)."""
    return b64(device.encode().ljust(32, b"."))


class Clock:
    def __init__(self, start: int = 1_764_400_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


class Harness:
    """A relay without a broker: send a request as some account, get its answer."""

    def __init__(
        self,
        store: Store,
        *,
        signer: Signer = SIGNER,
        ghost: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.events = EventLog()
        self.clock = clock or Clock()
        self.relay = Relay(store, self.events, kt_signer=signer, ghost=ghost, clock=self.clock)

    def send(self, owner: str, kind: str, payload: bytes) -> list[Action]:
        return self.relay.handle(f"doormat/out/{owner}/{kind}", payload)

    def request(self, owner: str, op: str, **fields: Any) -> dict[str, Any]:
        acts = self.send(owner, "dir", json.dumps({"req": "r", "op": op, **fields}).encode())
        answers = [
            json.loads(p.payload)
            for p in acts
            if isinstance(p, Publish) and p.topic == f"doormat/in/{owner}/dir"
        ]
        assert len(answers) == 1, acts
        answer: dict[str, Any] = answers[0]
        return answer

    def ok(self, owner: str, op: str, **fields: Any) -> dict[str, Any]:
        answer = self.request(owner, op, **fields)
        assert answer["ok"] is True, answer
        return answer

    def refused(self, owner: str, op: str, **fields: Any) -> str:
        answer = self.request(owner, op, **fields)
        assert answer["ok"] is False, answer
        return str(answer["error"])

    def enrol(self, device: str, user: str | None = None) -> None:
        user = user or CAST.get(device) or device.rsplit(".", 1)[0]
        self.ok(user.split("@")[1], "enrol", user=user, device=device)

    def publish(self, device: str, identity: str | None = None, n_otpks: int = 2) -> None:
        self.ok(device, "publish", **publish_fields(identity or identity_of(device), n_otpks))

    def setup(self, devices: tuple[str, ...] = (A, A2, B, C)) -> None:
        for d in devices:
            self.enrol(d)
            self.publish(d)

    def ghost(self, user: str, identity: str | None = None) -> str:
        """The tap enrols and publishes ``<user>.gov`` (ghost mode must be on)."""
        device = f"{user}.gov"
        self.ok("tap", "enrol", user=user, device=device)
        self.ok(
            "tap",
            "publish",
            device=device,
            **publish_fields(identity or identity_of(device), 3),
        )
        return device

    def kinds(self, acts: list[Action]) -> list[str]:
        return [a.kind for a in acts if isinstance(a, Event)]


def publish_fields(identity: str, n_otpks: int = 2, first_otpk: int = 1) -> dict[str, Any]:
    return {
        "identity": identity,
        "signed_prekey": {"id": 1, "key": b64(os.urandom(32)), "sig": b64(os.urandom(64))},
        "one_time_prekeys": [
            {"id": first_otpk + i, "key": b64(os.urandom(32))} for i in range(n_otpks)
        ],
    }


Mutator = Callable[[dict[str, Any]], None]
