"""``doormat enterprise serve``: an enterprise server as a long-running service.

It builds the enterprise's roster from the accounts file (every device account whose
user is ``*@NAME``), logs in as the enterprise account, enrols each device at the
relay's directory (again on every reconnection: ``clients.enterprise.EnterpriseServer``)
and, if it runs a compliance archive, opens the journal records its devices send. With
``--policy-dir`` it pushes its IT policy (``doormat.services.policy``) before it reports
ready. The lifecycle is the runner's (``doormat.services.runner``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doormat.cli import CommandError
from doormat.services import runner
from doormat.services.policy import write_policy
from wire.b64 import b64encode
from wire.events import EventLog

if TYPE_CHECKING:
    from clients.enterprise import Enterprise, EnterpriseServer


@dataclass
class EnterpriseService(runner.Service["EnterpriseServer"]):
    kind = "enterprise"
    enterprise: Enterprise
    password: str
    state: Path
    archive_key: bytes | None
    policy: Path | None  # the policy file it pushed, if given --policy-dir

    @property
    def actor(self) -> str:
        return self.enterprise.name

    def starting(self) -> dict[str, Any]:
        return {"devices": sorted(self.enterprise.devices), "archive": self.enterprise.archive}

    def announce(self, events: EventLog) -> None:
        if self.policy is None:
            return
        name, key = self.enterprise.name, self.archive_key
        events.emit(name, "enterprise.policy", file=str(self.policy),
                    archive_public_key=None if key is None else b64encode(key),
                    policy=f"devices journal to {name}'s archive" if key
                    else f"no archive: {name}'s devices are end-to-end only")

    def make(self, events: EventLog) -> EnterpriseServer:
        from clients.enterprise import EnterpriseServer

        # Its link reconnects by itself; the relay keeps the enrolment in its store.
        return EnterpriseServer(
            self.enterprise, self.password, self.host, self.port, events, self.state
        )


def run_enterprise(args: argparse.Namespace) -> int:
    from clients.archive import Archive, ArchiveError
    from clients.enterprise import Credentials, Enterprise, archive_store
    from wire.ids import check_enterprise, enterprise_of, is_device, user_of

    name = runner.checked_id(args.name, check_enterprise,
                             "give --name ENTERPRISE (or set DOORMAT_ENTERPRISE)")
    accounts, own = runner.login(args, name, "enterprise")
    archive = args.archive
    if archive is None:
        from doormat.cast import default_cast

        archive = any(e.archive for e in default_cast().enterprises if e.name == name)
    enterprise = Enterprise(name, archive=archive)
    for a in accounts:
        if a.role == "device" and is_device(a.username) and enterprise_of(a.username) == name:
            # The roster, as activation would have built it; the passwords are the
            # devices' broker logins (the enterprise issued them).
            enterprise.devices[a.username] = Credentials(a.username, user_of(a.username),
                                                         a.password)
    state = runner.make_folder(Path(args.state), f"--state {args.state}")
    archive_key: bytes | None = None
    if archive:
        # Opened once here: a corrupt store is a one-line error, and the key (kept in
        # the store, so the same across restarts) is known before the policy is pushed.
        try:
            opened = Archive(name, archive_store(state, name))
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        archive_key = opened.public_key
        opened.close()
    policy = None if args.policy_dir is None else write_policy(args.policy_dir, name, archive_key)
    return runner.run(EnterpriseService(args.broker, args.health_file, enterprise, own.password,
                                        state, archive_key, policy))
