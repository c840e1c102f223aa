"""The rules a device applies to a peer device's identity key (clients/identities.py,
issue 12 point 1): every combination of what is held, what is presented, whether key
transparency is on, and what the directory's log proves."""

from __future__ import annotations

import pytest

from clients.identities import (
    NOT_LOGGED,
    UNVERIFIABLE,
    VERIFIED_CHANGED,
    Known,
    after_lookup,
    first_look,
    unverifiable,
)

X, Y = "X-identity", "Y-identity"


@pytest.mark.parametrize("kt", [True, False])
@pytest.mark.parametrize("verified", [True, False])
def test_the_identity_held_is_accepted_without_asking(kt: bool, verified: bool) -> None:
    d = first_look(Known(X, verified), X, kt=kt)
    assert (d.verdict, d.how, d.changed) == ("accept", "same", False)


@pytest.mark.parametrize("kt", [True, False])
def test_a_verified_peer_cannot_change_whatever_the_directory_says(kt: bool) -> None:
    d = first_look(Known(X, verified=True), Y, kt=kt)
    assert (d.verdict, d.alarm_kind) == ("refuse", VERIFIED_CHANGED)
    # ... even when the log proves the new key (a relay that logged its forgery).
    d = after_lookup(Known(X, verified=True), Y, logged=Y, why="")
    assert (d.verdict, d.alarm_kind) == ("refuse", VERIFIED_CHANGED)


def test_with_key_transparency_new_and_changed_identities_are_checked() -> None:
    assert first_look(None, X, kt=True).verdict == "check"
    assert first_look(Known(X), Y, kt=True).verdict == "check"
    # The log proves the presented key: accepted (a change is flagged).
    first = after_lookup(None, X, logged=X, why="")
    assert (first.verdict, first.changed, first.how) == ("accept", False, "key-transparency")
    change = after_lookup(Known(X), Y, logged=Y, why="")
    assert (change.verdict, change.changed) == ("accept", True)
    # The log binds another key, or does not prove the device: refused.
    for known in (None, Known(X)):
        assert after_lookup(known, Y, logged=X, why="").alarm_kind == NOT_LOGGED
        refused = after_lookup(known, Y, logged=None, why="no log entry")
        assert refused.verdict == "refuse" and "no log entry" in refused.reason
    # An answer that proves a split view: nothing is accepted.
    assert unverifiable("split view").alarm_kind == UNVERIFIABLE


def test_without_key_transparency_trust_on_first_use() -> None:
    first = first_look(None, X, kt=False)
    assert (first.verdict, first.how, first.changed) == ("accept", "first-use", False)
    change = first_look(Known(X), Y, kt=False)
    assert (change.verdict, change.changed) == ("accept", True)
