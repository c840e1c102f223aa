"""``doormat dashboard``: the live dashboard of a whole system in one process.

    doormat dashboard                          # http://127.0.0.1:8765/
    doormat dashboard --port 0                 # a free port (printed)
    doormat dashboard --li blanket --backdoor escrow --home ~/.doormat
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from doormat.cli import CommandError
from doormat.commands.args import broker, port, whole_number


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve the live dashboard (panes per party, controls, exposure, exercises)",
        description=(
            "Start the whole system in one process and serve a web page that shows, "
            "live, what every party sees: the users, the relay operator, the blanket tap, "
            "the agency, the enterprises and the attackers; with controls for the LI "
            "switch, the back door, sending messages and warrants, a sequence diagram, "
            "the exposure matrix, and the exercises' score board. Everything is served "
            "from the package: it works offline."
        ),
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=port, default=8765,
                   help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument("--broker", type=broker, default="embedded",
                   help="embedded (default), mosquitto, or mqtt://HOST:PORT")
    p.add_argument("--li", choices=("off", "scoped", "blanket"), default="off",
                   help="the relay's LI switch at start (default off)")
    p.add_argument("--backdoor", choices=("none", "escrow", "ghost", "global-key"),
                   default="none", help="the mandated back door at start (default none)")
    p.add_argument("--users", type=whole_number(2, 200), default=None, metavar="N",
                   help="a generated cast of N users instead of the default cast")
    p.add_argument("--state", type=Path, default=None, metavar="DIR",
                   help="keep each run's stores in DIR/run-N (default: temp dirs)")
    p.add_argument("--home", type=Path, default=None, metavar="DIR",
                   help="the lab's score store (default $DOORMAT_HOME or ~/.doormat)")
    p.add_argument("--exercises", type=Path, default=None, metavar="FILE",
                   help="an exercises file of your own (default: the shipped one)")
    p.add_argument("--no-lab", action="store_true", help="no exercises or score board")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from doormat.dashboard.server import DashboardOptions, run_dashboard
    from doormat.lab import ExerciseFileError

    opts = DashboardOptions(
        host=args.host, port=args.port, broker=args.broker, li=args.li,
        backdoor=args.backdoor, state=args.state, users=args.users, home=args.home,
        exercises=args.exercises, lab=not args.no_lab,
    )
    try:
        return asyncio.run(run_dashboard(opts))
    except ExerciseFileError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"{exc.strerror or exc} ({args.host}:{args.port})", 1) from exc
