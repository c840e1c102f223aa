"""Exercises: a YAML file of tasks, each solved by the system's own events, a score
store, and the engine that watches a running system (``doormat lab``, the dashboard's
score board)."""

from doormat.lab.engine import LabEngine, board
from doormat.lab.spec import (
    Exercise,
    ExerciseFileError,
    ExerciseSet,
    load_exercises,
    parse_exercises,
)
from doormat.lab.store import ScoreStore, default_home

__all__ = [
    "Exercise",
    "ExerciseFileError",
    "ExerciseSet",
    "LabEngine",
    "ScoreStore",
    "board",
    "default_home",
    "load_exercises",
    "parse_exercises",
]
