import pytest

from wire.ids import IdError, check_device, device_id, enterprise_of, is_device, user_of


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
