"""The lesson material in docs/ stays true to the code.

* Every exercise in doormat/lab/exercises.yaml has a section in the worksheet (in the
  file's order) and in the instructor key.
* Every relative link in docs/*.md and README.md points to a file that exists; links
  from the pages written for teaching and for the overview also point to headings that
  exist (GitHub's anchor rules).
* docs/README.md lists every page in docs/.
* Every Mermaid block in docs/architecture.md is non-empty and starts with a known
  diagram type.
* Every ``doormat ...`` command quoted in the lesson plan and the worksheet names a real
  subcommand (``python -m doormat <subcommand> --help`` exits 0); those in code blocks
  also parse with the real argument parser when they have no placeholders.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from doormat.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXERCISES = ROOT / "doormat" / "lab" / "exercises.yaml"

# Pages whose links are also checked down to the heading (#anchor).
ANCHOR_CHECKED = (
    "README.md",
    "architecture.md",
    "instructor-key.md",
    "lesson-plan.md",
    "sources.md",
    "threat-model.md",
    "worksheet.md",
)
# Pages whose quoted `doormat ...` commands must be real.
COMMAND_CHECKED = ("lesson-plan.md", "worksheet.md")

MERMAID_TYPES = (
    "flowchart",
    "graph",
    "sequenceDiagram",
    "classDiagram",
    "stateDiagram",
    "stateDiagram-v2",
    "erDiagram",
    "journey",
    "gantt",
    "pie",
    "gitGraph",
    "mindmap",
    "timeline",
    "quadrantChart",
    "requirementDiagram",
    "C4Context",
    "C4Container",
    "C4Component",
    "C4Dynamic",
    "sankey-beta",
    "xychart-beta",
    "block-beta",
)

FENCE = re.compile(r"^(```+|~~~+)([^\n]*)\n(.*?)^\1[ \t]*$", re.M | re.S)
LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def exercise_keys() -> list[str]:
    data = yaml.safe_load(EXERCISES.read_text(encoding="utf-8"))
    return [e["key"] for e in data["exercises"]]


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def without_code(text: str) -> str:
    """The Markdown without fenced code blocks (links and headings there are not real)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def headings(text: str) -> list[str]:
    return [m.group(2).strip() for m in HEADING.finditer(without_code(text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, spaces to hyphens,
    punctuation other than hyphens and underscores removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in headings(text):
        base = slug(h)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def section_headings(name: str) -> list[str]:
    return [h for h in headings(read(name)) if re.search(r"`[a-z0-9-]+`", h)]


# -- exercises have their pages ------------------------------------------------------------


def keyed_sections(name: str) -> list[str]:
    """Exercise keys named in backticks in the page's level-2 headings, in page order."""
    keys = []
    for m in HEADING.finditer(without_code(read(name))):
        if len(m.group(1)) != 2:
            continue
        keys += re.findall(r"`([a-z0-9][a-z0-9-]*)`", m.group(2))
    return keys


def test_exercises_file_has_exercises() -> None:
    keys = exercise_keys()
    assert len(keys) >= 12
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("page", ["worksheet.md", "instructor-key.md"])
def test_every_exercise_has_a_section(page: str) -> None:
    keys = exercise_keys()
    sections = keyed_sections(page)
    missing = [k for k in keys if k not in sections]
    assert not missing, f"{page} has no section for: {', '.join(missing)}"
    unknown = [k for k in sections if k not in keys]
    assert not unknown, f"{page} has sections for exercises that do not exist: {unknown}"
    twice = sorted({k for k in sections if sections.count(k) > 1})
    assert not twice, f"{page} has more than one section for: {twice}"


def test_worksheet_follows_the_exercises_file() -> None:
    assert keyed_sections("worksheet.md") == exercise_keys()


def test_worksheet_sections_have_questions() -> None:
    """Each exercise's section asks 2 to 4 numbered questions."""
    text = without_code(read("worksheet.md"))
    parts = re.split(r"^## ", text, flags=re.M)
    counted = 0
    for part in parts:
        keys = re.findall(r"^[^\n]*?`([a-z0-9-]+)`", part)
        if not keys or keys[0] not in exercise_keys():
            continue
        questions = part.split("**Questions**", 1)
        assert len(questions) == 2, f"{keys[0]}: no **Questions** block"
        numbered = re.findall(r"^\d+\. ", questions[1], flags=re.M)
        assert 2 <= len(numbered) <= 4, f"{keys[0]}: {len(numbered)} questions"
        assert "**What to do.**" in part, f"{keys[0]}: no **What to do.**"
        counted += 1
    assert counted == len(exercise_keys())


# -- links ---------------------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def links(path: Path) -> Iterator[str]:
    for m in LINK.finditer(without_code(path.read_text(encoding="utf-8"))):
        yield m.group(1)


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I))


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path: Path) -> None:
    broken = []
    for target in links(path):
        if is_external(target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        if not (path.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files: {broken}"


@pytest.mark.parametrize("name", ANCHOR_CHECKED)
def test_links_point_to_headings(name: str) -> None:
    path = DOCS / name
    broken = []
    for target in links(path):
        if is_external(target) or "#" not in target:
            continue
        file_part, anchor = target.split("#", 1)
        dest = (path.parent / file_part) if file_part else path
        if dest.suffix != ".md" or not dest.exists():
            continue  # a missing file is the other test's failure
        if anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{name}: links to headings that do not exist: {broken}"


def test_index_lists_every_page() -> None:
    listed = {t.split("#", 1)[0] for t in links(DOCS / "README.md") if not is_external(t)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    missing = sorted(pages - listed)
    assert not missing, f"docs/README.md does not list: {missing}"


# -- Mermaid -------------------------------------------------------------------------------


def mermaid_blocks(name: str) -> list[str]:
    return [m.group(3) for m in FENCE.finditer(read(name)) if m.group(2).strip() == "mermaid"]


def test_architecture_has_the_diagrams() -> None:
    blocks = mermaid_blocks("architecture.md")
    kinds = [first_statement(b).split()[0] for b in blocks if first_statement(b)]
    assert len(blocks) >= 4
    assert kinds.count("sequenceDiagram") >= 2  # one message; key transparency
    assert any(k in ("flowchart", "graph") for k in kinds)  # components


def first_statement(block: str) -> str:
    for line in block.splitlines():
        line = line.strip()
        if line and not line.startswith("%%"):
            return line
    return ""


@pytest.mark.parametrize("index", range(len(mermaid_blocks("architecture.md"))))
def test_mermaid_block_is_a_diagram(index: int) -> None:
    block = mermaid_blocks("architecture.md")[index]
    first = first_statement(block)
    assert first, f"Mermaid block {index} is empty"
    kind = first.split()[0]
    assert kind in MERMAID_TYPES, f"Mermaid block {index} starts with {kind!r}"
    body = [ln for ln in block.splitlines()[1:] if ln.strip() and not ln.strip().startswith("%%")]
    assert body, f"Mermaid block {index} declares {kind} and nothing else"
    if kind == "sequenceDiagram":
        # Mermaid 11 reads ';' as the end of a statement, even inside a message or a
        # note, and then fails to parse the rest of the line.
        bad = [ln.strip() for ln in body if ";" in ln]
        assert not bad, f"Mermaid block {index}: ';' breaks sequence diagrams: {bad}"


# -- commands ------------------------------------------------------------------------------

COMMAND = re.compile(r"(?<![\w./@-])doormat[ \t]+([^\n`]*)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|\.\.\.|[<>\[\]|]")


def code_text(text: str) -> Iterator[tuple[str, bool]]:
    """Where commands are quoted: lines of fenced blocks (not Mermaid), which are meant to
    be run as they are (True), and inline code spans, which may only mention a command
    (False)."""
    for m in FENCE.finditer(text):
        if m.group(2).strip() != "mermaid":
            for line in m.group(3).splitlines():
                yield line, True
    for m in re.finditer(r"(`+)(.+?)\1", without_code(text)):
        yield m.group(2), False


def quoted_commands(name: str, *, fenced_only: bool = False) -> list[list[str]]:
    commands = []
    for line, fenced in code_text(read(name)):
        if fenced_only and not fenced:
            continue
        for m in COMMAND.finditer(line):
            rest = re.split(r"\s(?:&&|\|\||\||;|#)\s?|\s+#", " " + m.group(1))[0]
            rest = rest.strip().lstrip("$ ").strip()
            argv = shlex.split(rest) if rest else []
            if argv and re.match(r"^[a-z][a-z0-9-]*$", argv[0]):
                commands.append(argv)
    return commands


def subparsers_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def subcommand_path(argv: list[str]) -> tuple[list[str], str | None]:
    """The subcommand names at the start of argv, and a problem if there is one."""
    parser = build_parser()
    path: list[str] = []
    for token in argv:
        sub = subparsers_of(parser)
        if sub is None:
            break
        if token not in sub.choices:
            where = " ".join(["doormat", *path])
            return path, f"{token!r} is not a subcommand of `{where}`"
        path.append(token)
        parser = sub.choices[token]
    sub = subparsers_of(parser)
    if sub is not None and sub.required and not {"-h", "--help"} & set(argv):
        return path, f"`doormat {' '.join(path)}` needs one of: {', '.join(sub.choices)}"
    return path, None


def all_commands() -> list[tuple[str, list[str]]]:
    return [(name, argv) for name in COMMAND_CHECKED for argv in quoted_commands(name)]


def test_pages_quote_commands() -> None:
    for name in COMMAND_CHECKED:
        assert quoted_commands(name), f"{name}: no `doormat ...` command found"


@pytest.mark.parametrize(
    ("name", "argv"), all_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_quoted_command_names_a_subcommand(name: str, argv: list[str]) -> None:
    path, problem = subcommand_path(argv)
    assert problem is None, f"{name}: `doormat {' '.join(argv)}`: {problem}"
    assert path, f"{name}: `doormat {' '.join(argv)}` names no subcommand"


def fenced_commands() -> list[tuple[str, list[str]]]:
    return [
        (name, argv) for name in COMMAND_CHECKED for argv in quoted_commands(name, fenced_only=True)
    ]


@pytest.mark.parametrize(
    ("name", "argv"), fenced_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_quoted_command_parses(name: str, argv: list[str]) -> None:
    """Commands in code blocks, written out in full (no FILE, KEY, ... placeholders), parse
    as given: they are meant to be typed as they are."""
    if any(PLACEHOLDER.search(t) for t in argv) or {"-h", "--help"} & set(argv):
        pytest.skip("has placeholders")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(
                f"{name}: `doormat {' '.join(argv)}` does not parse: {err.getvalue()}"
                f" (exit {exc.code})"
            )


def test_every_quoted_subcommand_answers_help() -> None:
    """`python -m doormat <path> --help` exits 0 for each distinct subcommand path."""
    paths = sorted({tuple(subcommand_path(argv)[0]) for _, argv in all_commands()} - {()})
    assert paths

    def run(path: tuple[str, ...]) -> tuple[tuple[str, ...], int, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "doormat", *path, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        return path, proc.returncode, proc.stderr[-500:]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, paths))
    failed = [(" ".join(p), rc, err) for p, rc, err in results if rc != 0]
    assert not failed, f"--help failed: {failed}"
