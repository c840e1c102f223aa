"""``doormat tap run``: the government's blanket tap as a long-running service.

It runs ``interceptor.tap.Tap`` with no readers (no back door: the government holds no
key), storing every envelope the relay's LI switch mirrors to it: ``tap.captured`` events
with ``readable: false``. The lifecycle is the runner's (``doormat.services.runner``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doormat.cli import CommandError
from doormat.services import runner
from wire.events import EventLog
from wire.ids import TAP_ID

if TYPE_CHECKING:
    from interceptor.tap import Tap


@dataclass
class TapService(runner.Service["Tap"]):
    kind = "tap"
    password: str
    db: Path  # its store of captures

    @property
    def actor(self) -> str:
        return TAP_ID

    @property
    def label(self) -> str:
        return "tap"

    def starting(self) -> dict[str, Any]:
        return {"keys": 0}

    def make(self, events: EventLog) -> Tap:
        from interceptor.tap import Tap

        # No readers: without a back door the government holds no key.
        return Tap(self.host, self.port, self.password, self.db, events, readers=())


def run_tap(args: argparse.Namespace) -> int:
    if not args.db:
        raise CommandError("give --db PATH (or set DOORMAT_DB)")
    db = Path(args.db)
    if db.is_dir():
        raise CommandError(f"--db {db} is a directory")
    runner.make_folder(db.parent, str(db.parent))
    _, own = runner.login(args, TAP_ID, "tap")
    return runner.run(TapService(args.broker, args.health_file, own.password, db))
