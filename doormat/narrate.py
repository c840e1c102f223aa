"""Terminal narration: what each party sees, in colour when the terminal allows it.

Colour is never the only signal: every line also names the party and says in words
whether it could read what it holds. ``NO_COLOR`` (https://no-color.org) is honoured.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


class Narrator:
    def __init__(self, out: TextIO | None = None, color: str = "auto", quiet: bool = False):
        self.out = out if out is not None else sys.stdout
        self.quiet = quiet
        if color == "always":
            self.color = True
        elif color == "never":
            self.color = False
        else:
            self.color = self.out.isatty() and not os.environ.get("NO_COLOR")

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        self.say()
        self.say(self.paint(f"== {text} ==", "bold"))

    def party(self, who: str, text: str, style: str) -> None:
        self.say(f"  {self.paint(f'{who:>14}', style, 'bold')}  {text}")
