import pytest

from wire.ids import (
    INTERCEPTOR_ID,
    RELAY_ID,
    RESERVED,
    TAP_ID,
    IdError,
    check_device,
    check_enterprise,
    device_id,
    enterprise_of,
    is_device,
    user_of,
)


def test_device_ids() -> None:
    assert device_id("alice@acme", "phone") == "alice@acme.phone"
    assert user_of("alice@acme.phone") == "alice@acme"
    assert enterprise_of("alice@acme.phone") == "acme"
    assert enterprise_of("alice@acme") == "acme"


@pytest.mark.parametrize(
    "bad", ["", "alice", "alice@acme", "Alice@acme.phone", "a@b.c/d", "a@b.+", "a@b.#",
            "a:b@c.d", "a@b.c.d", "alice@acme.phone\n", "x" * 40 + "@acme.phone"]
)
def test_unsafe_device_ids_refused(bad: str) -> None:
    assert not is_device(bad)
    with pytest.raises(IdError):
        check_device(bad)


def test_service_names_are_reserved() -> None:
    """No enterprise may take a service account's name: one called "tap" would enrol
    ghost devices at the relay, one called "relay" would share the relay's inbox."""
    assert {RELAY_ID, TAP_ID, INTERCEPTOR_ID} <= set(RESERVED)
    assert set(RESERVED) == {
        "relay", "tap", "interceptor", "vendor", "court", "agency", "attacker", "operator",
        "lab", "observer",
    }
    assert check_enterprise("acme") == "acme"
    for name in RESERVED:
        with pytest.raises(IdError, match=f"'{name}' is reserved for a service account"):
            check_enterprise(name)
