"""``doormat lab``: the exercises' score board, reset, and the teacher's selection.

    doormat lab status                 # the score board
    doormat lab list                   # every exercise in the file, and whether it appears
    doormat lab hint KEY               # show the next hint of an exercise
    doormat lab select KEY [KEY ...]   # only these exercises appear
    doormat lab select --all           # back to the file's `enabled:` flags
    doormat lab reset                  # forget every solve and hint (keeps the selection)
    doormat lab check FILE             # validate an exercises file

Exercises are solved only by the running system's events (``doormat dashboard``);
nothing here can mark one solved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from doormat.cli import CommandError
from doormat.lab import ExerciseFileError, ExerciseSet, ScoreStore, board, load_exercises


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="the exercises: score board, hints, reset, the teacher's selection",
        description=(
            "Exercises are solved by the system's own events while the dashboard runs "
            "(doormat dashboard); this command shows the score board and manages the "
            "score store."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, default=None, metavar="DIR",
                        help="the lab's score store (default $DOORMAT_HOME or ~/.doormat)")
    common.add_argument("--exercises", type=Path, default=None, metavar="FILE",
                        help="an exercises file of your own (default: the shipped one)")
    lab = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    s = lab.add_parser("status", parents=[common], help="print the score board")
    s.add_argument("--json", action="store_true", help="the board as JSON")
    s.set_defaults(func=status)

    ls = lab.add_parser("list", parents=[common], help="every exercise in the file")
    ls.set_defaults(func=list_exercises)

    h = lab.add_parser("hint", parents=[common], help="show the next hint of an exercise")
    h.add_argument("key")
    h.set_defaults(func=hint)

    sel = lab.add_parser("select", parents=[common],
                         help="choose which exercises appear (teacher)")
    sel.add_argument("keys", nargs="*", metavar="KEY")
    sel.add_argument("--all", action="store_true",
                     help="forget the selection: the file's `enabled:` flags decide again")
    sel.set_defaults(func=select)

    r = lab.add_parser("reset", parents=[common],
                       help="forget every solve and shown hint (start clean)")
    r.add_argument("--selection", action="store_true", help="also forget the selection")
    r.set_defaults(func=reset)

    c = lab.add_parser("check", help="validate an exercises file")
    c.add_argument("file", type=Path)
    c.set_defaults(func=check)


def _load(args: argparse.Namespace) -> ExerciseSet:
    try:
        return load_exercises(args.exercises)
    except ExerciseFileError as exc:
        raise CommandError(str(exc)) from exc


def _store(args: argparse.Namespace) -> ScoreStore:
    try:
        return ScoreStore(args.home)
    except OSError as exc:
        raise CommandError(f"score store: {exc}", 1) from exc


def _stars(n: int) -> str:
    return "*" * n + " " * (3 - n)


def status(args: argparse.Namespace) -> int:
    exercises = _load(args)
    with _store(args) as store:
        b = board(exercises, store)
    if args.json:
        print(json.dumps(b, indent=2))
        return 0
    print(f"doormat lab: {b['solved']} of {b['total']} solved, score {b['score']} of "
          f"{b['max_score']}")
    width = max((len(r["key"]) for r in b["exercises"]), default=10)
    for r in b["exercises"]:
        mark = "[x] solved" if r["solved"] else "[ ] open  "
        when = (time.strftime(" %H:%M", time.localtime(r["solved_ms"] / 1000))
                if r["solved_ms"] else "")
        hints = f"  hints {len(r['hints'])}/{r['hints_total']}" if r["hints"] else ""
        print(f"  {mark}  {_stars(r['difficulty'])}  {r['key']:<{width}}  {r['title']}"
              f"{when}{hints}")
    if b["selection"] is not None:
        print(f"(the teacher selected {len(b['selection'])} exercise(s); "
              "`doormat lab select --all` shows the file's default set)")
    return 0


def list_exercises(args: argparse.Namespace) -> int:
    exercises = _load(args)
    with _store(args) as store:
        selection = store.selection()
    for e in exercises.exercises:
        shown = e.enabled if selection is None else e.key in selection
        print(f"  {'appears' if shown else 'hidden '}  {_stars(e.difficulty)}  {e.key:<28} "
              f"{e.title}")
    return 0


def hint(args: argparse.Namespace) -> int:
    exercises = _load(args)
    try:
        ex = exercises.get(args.key)
    except KeyError:
        raise CommandError(f"no exercise {args.key!r}; `doormat lab list` shows them") from None
    if not ex.hints:
        print(f"{ex.key}: this exercise has no hints")
        return 0
    with _store(args) as store:
        shown = store.show_hint(ex.key, len(ex.hints))
    for i, h in enumerate(ex.hints[:shown], 1):
        print(f"hint {i}/{len(ex.hints)}: {h}")
    return 0


def select(args: argparse.Namespace) -> int:
    exercises = _load(args)
    if args.all and args.keys:
        raise CommandError("give KEYs or --all, not both")
    if not args.all and not args.keys:
        raise CommandError("give the KEYs of the exercises that should appear, or --all")
    unknown = [k for k in args.keys if k not in exercises]
    if unknown:
        raise CommandError(f"no exercise {', '.join(map(repr, unknown))}; "
                           "`doormat lab list` shows them")
    with _store(args) as store:
        store.select(None if args.all else args.keys)
    if args.all:
        print("selection cleared: the exercises file's `enabled:` flags decide")
    else:
        print(f"{len(set(args.keys))} exercise(s) selected: {', '.join(args.keys)}")
    return 0


def reset(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.reset(selection=args.selection)
        where = store.path
    print(f"lab reset: no exercise solved, no hint shown ({where})")
    return 0


def check(args: argparse.Namespace) -> int:
    try:
        exercises = load_exercises(args.file)
    except ExerciseFileError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{args.file}: {len(exercises.exercises)} exercise(s), valid")
    return 0
