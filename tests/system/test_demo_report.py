"""The demo on the plane reports the figures it reported before the plane (issue 11):
the README's table for ``doormat demo --li blanket --backdoor escrow`` (seed 1, 12
messages), and the default demo's figures as measured on main c3ecb22 (before the
plane; the device image reads 4 since issue 12's thief-like reader, docs/instructor-key.md).
Every figure is an observer's own row, combined by the aggregator, which holds no key."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from doormat.demo import DemoOptions, run_demo
from doormat.narrate import Narrator

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table() -> dict[str, tuple[int, int, int]]:
    text = README.read_text()
    section = text[text.index("`doormat demo --li blanket --backdoor escrow` (seed 1"):]
    rows = {}
    for m in re.finditer(r"^\| `([^`]+)` \| (\d+) \| (\d+) \| (\d+) \|", section, re.M):
        rows[m.group(1)] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        if len(rows) == 5:
            break
    return rows


async def demo(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    opts = DemoOptions(state=tmp_path / "state", quiet=True, color="never", **kw)
    return await run_demo(opts, Narrator(io.StringIO(), "never", quiet=True))


def figures(result: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {name: (o["captured"], o["readable"], o["metadata_records"])
            for name, o in result["observers"].items()}


async def test_blanket_escrow_seed_1_reports_the_readme_table(tmp_path: Path) -> None:
    expected = readme_table()
    assert set(expected) == {"relay", "blanket-tap", "enterprise:acme",
                             "attacker:escrow-key", "attacker:device-image"}
    result = await demo(tmp_path, li="blanket", backdoor="escrow")
    assert result["messages_sent"] == 12 and result["messages_delivered"] == 12
    assert figures(result) == expected
    keys = {name: o["keys_held"] for name, o in result["observers"].items()}
    assert keys["relay"] == []
    assert keys["blanket-tap"] == ["escrow private key"]
    assert keys["attacker:escrow-key"] == ["stolen escrow key"]
    assert result["forward_secrecy"]["readable_with_ratchet_alone"] == 0
    assert result["forward_secrecy"]["readable_with_whole_image"] == 0
    assert result["alarms"] == []
    assert result["ledger"] == {"entries": 0, "verified": True}
    assert result["first_contact"]["opened_by_image"] == 0


async def test_default_demo_reports_the_figures_of_before_the_plane(tmp_path: Path) -> None:
    # `doormat demo --report` on main c3ecb22 (before the plane), seed 1.
    result = await demo(tmp_path)
    assert result["messages_sent"] == 12 and result["messages_delivered"] == 12
    assert figures(result) == {
        "relay": (12, 0, 20),
        "enterprise:acme": (11, 11, 22),
        "attacker:device-image": (12, 4, 20),
    }
    assert result["first_contact"] == {
        "device": "carol@globex.phone", "messages": 3, "without_one_time_prekey": 0,
        "opened_by_image": 0, "opened_if_no_key_were_deleted": 3, "opened_after_rotation": 0,
    }


# -- every row of docs/instructor-key.md's table of seed-1 figures ---------------------

INSTRUCTOR_KEY = README.parent / "docs" / "instructor-key.md"
COLUMNS = ("relay", "blanket-tap", "agency", "enterprise:acme", "attacker:escrow-key",
           "attacker:device-image")


def instructor_rows() -> list[tuple[str, list[str]]]:
    rows = []
    for line in INSTRUCTOR_KEY.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and re.fullmatch(r"\d+/\d+/\d+", cells[1]):
            rows.append((cells[0], cells[1:]))
    return rows


def options_of(cell: str) -> dict[str, str]:
    quoted = re.search(r"`([^`]*)`", cell)
    words = quoted.group(1).split() if quoted else []
    opts = dict(zip(words[::2], words[1::2], strict=True))
    return {"li": opts.get("--li", "off"), "backdoor": opts.get("--backdoor", "none")}


def test_the_instructor_key_table_is_found() -> None:
    assert len(instructor_rows()) >= 7


@pytest.mark.parametrize(("options", "cells"), instructor_rows(), ids=lambda v: str(v)[:40])
async def test_each_seed_1_row_of_the_instructor_key(
    tmp_path: Path, options: str, cells: list[str]
) -> None:
    result = await demo(tmp_path, **options_of(options))
    got = {name: "/".join(map(str, f)) for name, f in figures(result).items()}
    want = {name: cell.replace("*", "") for name, cell in zip(COLUMNS, cells, strict=False)
            if cell}
    assert got == want
    fs = result["forward_secrecy"]
    ratchet, whole = (int(x.replace("*", "")) for x in cells[6].split("/"))
    assert (fs["readable_with_ratchet_alone"], fs["readable_with_whole_image"]) == (ratchet,
                                                                                   whole)
    assert len(result["alarms"]) == int(cells[7].replace("*", ""))
    entries = int(cells[8].split()[0])
    assert result["ledger"]["entries"] == entries and result["ledger"]["verified"] is True
