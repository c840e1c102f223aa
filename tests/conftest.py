"""Shared fixtures: broker accounts and brokers (embedded amqtt and a real Mosquitto).

    async def test_x(broker, accounts, mqtt):        # runs once per broker kind
        alice = accounts("alice@acme.phone")         # in the broker's table already
        async with mqtt(alice) as client: ...

* ``accounts``: a factory. ``accounts(username)`` returns that account (role inferred
  from the id: ``relay``, ``tap``, a device id, an enterprise id), creating it with a
  fresh random password the first time; ``accounts.standard()`` is the cast every broker
  fixture starts with (relay, tap, acme, globex, alice's phone and laptop, bob's and
  carol's phones). Accounts made after the broker started are *not* in its table:
  ``broker.add_account(acc)`` then ``await broker.wait_accounts_applied()``.
* ``embedded_broker``, ``mosquitto_broker``: started on a free loopback port, stopped
  after the test. The Mosquitto one skips when the binary is absent (.ci/run installs
  it) and is marked ``mosquitto``.
* ``broker``: parametrised over both kinds.
* ``make_broker(kind, accounts)``: start another broker with chosen accounts.
* ``mqtt(account, **kw)``: an aiomqtt client for that account on the current broker
  (client id = username, as the brokers require), not yet connected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from doormat.broker import EmbeddedBroker, MosquittoBroker
from doormat.broker.accounts import Account, generate_password
from doormat.broker.mosquitto import MosquittoError, find_mosquitto
from wire import ids

STANDARD_USERNAMES = (
    "relay",
    "tap",
    "acme",
    "globex",
    "alice@acme.phone",
    "alice@acme.laptop",
    "bob@acme.phone",
    "carol@globex.phone",
)


def role_for(username: str) -> str:
    if username == ids.RELAY_ID or username.startswith("relay-"):
        return "relay"
    if username in ids.SERVICE_ROLES:
        return ids.SERVICE_ROLES[username]
    if ids.is_device(username):
        return "device"
    return "enterprise"


class AccountFactory:
    """Accounts by username, each with its own random password, memoised per test."""

    def __init__(self) -> None:
        self._made: dict[str, Account] = {}

    def __call__(self, username: str, role: str | None = None) -> Account:
        acc = self._made.get(username)
        if acc is None:
            acc = Account(username, generate_password(), role or role_for(username))
            self._made[username] = acc
        return acc

    def standard(self) -> list[Account]:
        return [self(u) for u in STANDARD_USERNAMES]

    @property
    def all(self) -> list[Account]:
        return list(self._made.values())


@pytest.fixture
def accounts() -> AccountFactory:
    return AccountFactory()


def _mosquitto_or_skip() -> str:
    try:
        return find_mosquitto()
    except MosquittoError as exc:
        pytest.skip(str(exc))


AnyBroker = EmbeddedBroker | MosquittoBroker
MakeBroker = Callable[[str, Iterable[Account]], Awaitable[AnyBroker]]


@pytest.fixture
async def make_broker(tmp_path: Path) -> AsyncIterator[MakeBroker]:
    started: list[AnyBroker] = []
    count = 0

    async def make(kind: str, accs: Iterable[Account]) -> AnyBroker:
        nonlocal count
        count += 1
        b: AnyBroker
        if kind == "embedded":
            b = EmbeddedBroker(accs)
        elif kind == "mosquitto":
            _mosquitto_or_skip()
            b = MosquittoBroker(accs, tmp_path / f"mosquitto-{count}")
        else:
            raise ValueError(f"unknown broker kind {kind!r}")
        await b.start()
        started.append(b)
        return b

    try:
        yield make
    finally:
        # Mosquitto's log stays in tmp_path (pytest keeps the last runs) for post-mortems.
        for b in reversed(started):
            await b.stop()


@pytest.fixture
async def embedded_broker(make_broker: MakeBroker, accounts: AccountFactory) -> AnyBroker:
    return await make_broker("embedded", accounts.standard())


@pytest.fixture
async def mosquitto_broker(make_broker: MakeBroker, accounts: AccountFactory) -> AnyBroker:
    return await make_broker("mosquitto", accounts.standard())


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
async def broker(
    request: pytest.FixtureRequest, make_broker: MakeBroker, accounts: AccountFactory
) -> AnyBroker:
    return await make_broker(str(request.param), accounts.standard())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything using the Mosquitto fixture gets the marker, so `-m "not mosquitto"`
    # deselects it without every test having to remember the decorator.
    for item in items:
        if "mosquitto_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mosquitto)


MqttFactory = Callable[..., aiomqtt.Client]


@pytest.fixture
def mqtt(request: pytest.FixtureRequest) -> MqttFactory:
    """mqtt(account, broker=None, **aiomqtt kwargs) -> an unconnected aiomqtt.Client."""

    def make(account: Account, broker: Any = None, **kw: Any) -> aiomqtt.Client:
        if broker is None:
            for name in ("broker", "embedded_broker", "mosquitto_broker"):
                if name in request.fixturenames:
                    broker = request.getfixturevalue(name)
                    break
        if broker is None:
            raise RuntimeError("mqtt(): no broker fixture in this test; pass broker=")
        kw.setdefault("identifier", account.username)
        kw.setdefault("username", account.username)
        kw.setdefault("password", account.password)
        kw.setdefault("timeout", 5)
        return aiomqtt.Client(broker.host, broker.port, **kw)

    return make
