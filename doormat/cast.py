"""The cast: which enterprises, users and devices a scenario has.

The default cast is small enough to narrate and covers every case the lessons need:
two enterprises, four users, one user with two devices (so multi-device fan-out shows),
and one enterprise that runs a disclosed compliance archive while the other does not.
``generated_cast(n)`` makes larger casts for scale runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clients.enterprise import Credentials, Enterprise
from doormat.broker.accounts import Account, generate_password
from wire.ids import SERVICE_ROLES, check_enterprise, device_id


@dataclass(frozen=True)
class UserSpec:
    user: str  # "alice@acme"
    devices: tuple[str, ...]  # device names: ("phone", "laptop")

    @property
    def device_ids(self) -> list[str]:
        return [device_id(self.user, name) for name in self.devices]


@dataclass(frozen=True)
class EnterpriseSpec:
    name: str
    archive: bool = False  # runs a disclosed compliance archive (the scoped-intercept lesson)
    users: tuple[UserSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_enterprise(self.name)


@dataclass(frozen=True)
class Cast:
    enterprises: tuple[EnterpriseSpec, ...]

    @property
    def users(self) -> list[UserSpec]:
        return [u for e in self.enterprises for u in e.users]

    @property
    def devices(self) -> list[str]:
        return [d for u in self.users for d in u.device_ids]

    def user(self, user: str) -> UserSpec:
        for u in self.users:
            if u.user == user:
                return u
        known = ", ".join(u.user for u in self.users)
        raise KeyError(f"no user {user!r} in the cast (known: {known})")

    def describe(self) -> dict[str, object]:
        return {
            e.name: {
                "archive": e.archive,
                "users": {u.user: list(u.devices) for u in e.users},
            }
            for e in self.enterprises
        }


def default_cast() -> Cast:
    return Cast(
        enterprises=(
            EnterpriseSpec(
                "acme",
                archive=True,
                users=(
                    UserSpec("alice@acme", ("phone", "laptop")),
                    UserSpec("bob@acme", ("phone",)),
                ),
            ),
            EnterpriseSpec(
                "globex",
                archive=False,
                users=(
                    UserSpec("carol@globex", ("phone",)),
                    UserSpec("dave@globex", ("phone",)),
                ),
            ),
        )
    )


def generated_cast(n_users: int) -> Cast:
    """``n_users`` users with one phone each, split over two enterprises."""
    if n_users < 2:
        raise ValueError("a cast needs at least 2 users")
    halves = {"acme": [], "globex": []}  # type: dict[str, list[UserSpec]]
    for i in range(n_users):
        ent = "acme" if i % 2 == 0 else "globex"
        halves[ent].append(UserSpec(f"u{i:05d}@{ent}", ("phone",)))
    return Cast(
        enterprises=(
            EnterpriseSpec("acme", archive=True, users=tuple(halves["acme"])),
            EnterpriseSpec("globex", archive=False, users=tuple(halves["globex"])),
        )
    )


@dataclass
class Enrolment:
    """A cast after enrolment: each enterprise's server, every device's credentials, and
    the broker accounts of everyone (every service, the enterprise servers, devices)."""

    enterprises: dict[str, Enterprise]
    credentials: dict[str, Credentials]
    accounts: list[Account]

    def account(self, username: str) -> Account:
        for a in self.accounts:
            if a.username == username:
                return a
        raise KeyError(f"no broker account {username!r}")


def enrol(cast: Cast) -> Enrolment:
    """Each enterprise issues an activation code per device and the device redeems it."""
    enterprises = {e.name: Enterprise(e.name, archive=e.archive) for e in cast.enterprises}
    credentials: dict[str, Credentials] = {}
    for spec in cast.enterprises:
        ent = enterprises[spec.name]
        for user in spec.users:
            for name in user.devices:
                creds = ent.activate(ent.issue_activation(user.user, name))
                credentials[creds.device] = creds
    # Every party of the lab, each its own account (wire.ids.SERVICE_ROLES: the relay,
    # the government's tap, the interceptor, the vendor, the court, the agency, the
    # attacker, and the consoles: operator, lab, observer).
    accounts = [Account(name, generate_password(), role) for name, role in SERVICE_ROLES.items()]
    accounts += [Account(name, generate_password(), "enterprise") for name in enterprises]
    accounts += [Account(c.device, c.password, "device") for c in credentials.values()]
    return Enrolment(enterprises, credentials, accounts)


def default_accounts() -> list[Account]:
    """Broker accounts for the default cast (``doormat broker config`` without --accounts)."""
    return enrol(default_cast()).accounts
