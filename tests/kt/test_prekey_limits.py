"""One-time prekeys cannot be drained (issue 12, point 8), at the relay's directory.

On main, any enrolled device took all of another device's one-time prekeys with as many
``bundles`` requests (30 requests, 20 prekeys gone). Now a requester gets at most a few
of one device's one-time prekeys per window; past that its bundles come without one
(X3DH without a one-time prekey, as Signal does when they run out), and bundle requests
are rate-limited per requester. A device asks how many it has left (``prekeys``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.actions import Limits
from relay.router import Relay
from relay.store import Store
from tests.kt.kt_helpers import (
    CAROL,
    SIGNER,
    A,
    B,
    C,
    Clock,
    Harness,
    identity_of,
    publish_fields,
)

HOUR = 3_600_000


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(Store(tmp_path / "relay.sqlite"))
    harness.setup()
    harness.ok(C, "publish", **_more_prekeys(20))
    return harness


def _more_prekeys(n: int) -> dict[str, object]:
    fields = publish_fields(identity_of(C), n, first_otpk=100)
    del fields["signed_prekey"]
    return fields


def one_time_ids(h: Harness, requester: str, n: int) -> list[int | None]:
    out = []
    for _ in range(n):
        (bundle,) = h.ok(requester, "bundles", user=CAROL)["bundles"]
        otpk = bundle["one_time_prekey"]
        out.append(None if otpk is None else otpk["id"])
    return out


def test_a_requester_cannot_drain_another_devices_one_time_prekeys(h: Harness) -> None:
    got = one_time_ids(h, B, 30)  # (within the burst of bundle requests)
    taken = [i for i in got if i is not None]
    # On main: 22 taken, all carol held; the last 8 bundles came without one.
    assert len(taken) == Limits().otpks_per_requester == 3
    assert got[3:] == [None] * 27  # served, without a one-time prekey
    assert h.ok(C, "prekeys")["one_time_prekeys"] == 22 - 3
    # Another requester gets its own few; carol's pool is still there for real contacts.
    assert len([i for i in one_time_ids(h, A, 5) if i is not None]) == 3
    # After the window the requester may take a few more.
    h.clock.now += HOUR
    assert len([i for i in one_time_ids(h, B, 5) if i is not None]) == 3


def test_bundle_requests_are_rate_limited_per_requester(tmp_path: Path) -> None:
    clock = Clock()
    h = Harness(Store(tmp_path / "relay.sqlite"), clock=clock)
    h.relay = Relay(
        h.store, h.events, kt_signer=SIGNER, clock=clock,
        limits=Limits(bundle_rate=1.0, bundle_burst=5),
    )  # fmt: skip
    h.setup()
    for _ in range(5):
        h.ok(B, "bundles", user=CAROL)
    error = h.refused(B, "bundles", user=CAROL)
    assert error.startswith("rate limit: bundles")
    h.ok(A, "bundles", user=CAROL)  # per requester: others are not affected
    clock.now += 1_000
    h.ok(B, "bundles", user=CAROL)  # a token came back
    # devices lookups are not bundle requests
    h.ok(B, "devices", user=CAROL)


def test_prekeys_answers_the_requesters_own_counts(h: Harness) -> None:
    answer = h.ok(C, "prekeys")
    assert answer["one_time_prekeys"] == 22 and answer["signed_prekey_id"] == 1
    assert h.refused(C, "prekeys", user=CAROL).startswith("unknown field")


def test_the_share_survives_a_relay_restart(tmp_path: Path) -> None:
    """The takes are in the store, committed with the hand-out: a restarted relay does
    not give a requester a fresh share (the request bucket, in memory, does refill)."""
    store = Store(tmp_path / "relay.sqlite")
    clock = Clock()
    first = Harness(store, clock=clock)
    first.setup()
    first.ok(C, "publish", **_more_prekeys(20))
    assert len([i for i in one_time_ids(first, B, 4) if i is not None]) == 3
    again = Harness(store, clock=clock)  # a new router on the same store
    assert one_time_ids(again, B, 2) == [None, None]
    assert len([i for i in one_time_ids(again, A, 4) if i is not None]) == 3


def test_several_devices_in_one_request_each_count(h: Harness) -> None:
    """``devices`` naming the same device again, or all of a user's devices at once, does
    not get around the share."""
    got = []
    for _ in range(5):
        bundles = h.ok(B, "bundles", user=CAROL, devices=[C, C])["bundles"]
        got += [b["one_time_prekey"] for b in bundles]
    assert len([g for g in got if g is not None]) == 3
