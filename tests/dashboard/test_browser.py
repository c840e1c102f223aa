"""The dashboard in a real headless Chromium (Playwright driving /usr/bin/chromium).

Sends a message as a user through the page, switches the relay to blanket with the
keyboard and mandates the escrow back door with the page's controls, sends another,
and checks what the page shows: the tap's pane reads the second plaintext (not the
first), the relay's pane never shows plaintext, the exposure matrix changes. Saves
screenshots to tmp_path (or $DOORMAT_SCREENSHOTS).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update"]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs /usr/bin/chromium (apt-get install -y chromium; .ci/run does)",
    ),
]

FIRST = "Quarterly numbers: alpha-7 before blanket"
SECOND = "Merger term sheet: bravo-9 after escrow"


def _shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("DOORMAT_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


async def test_dashboard_in_chromium(served: Any, tmp_path: Path) -> None:
    async_api = pytest.importorskip("playwright.async_api")
    expect = async_api.expect
    expect.set_options(timeout=15_000)
    shots = _shots(tmp_path)
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(served.url)
            await expect(page.locator("#st-conn-text")).to_have_text("live")
            await expect(page.locator("#st-li")).to_have_text("off")
            await expect(page.locator('[data-pane="user:alice@acme"]')).to_be_visible()

            # 1. Send as alice's phone to bob, through the page's form.
            await page.select_option("#send-device", "alice@acme.phone")
            await page.select_option("#send-to", "bob@acme")
            await page.fill("#send-text", FIRST)
            await page.get_by_role("button", name="Send", exact=True).click()
            await expect(page.locator("#send-result")).to_contain_text("Sent to")
            bob = page.locator('[data-pane="user:bob@acme"] .lines')
            await expect(bob).to_contain_text(FIRST)
            # alice's laptop shows her own message too: one line, both devices noted
            alice = page.locator('[data-pane="user:alice@acme"] .lines')
            await expect(alice).to_contain_text("shown on laptop")
            relay = page.locator('[data-pane="relay"] .lines')
            await expect(relay).to_contain_text("ciphertext")
            await expect(relay.locator(".badge").first).to_have_text("SEALED")
            # the sequence diagram drew the envelopes
            await expect(page.locator("#seq-summary")).to_contain_text("read by their recipients")

            # the exposure matrix before blanket: no tap row
            await page.get_by_role("button", name="Recompute now").click()
            matrix = page.locator("#exposure table.matrix")
            await expect(matrix.locator('tr[data-observer="relay"]')).to_contain_text(
                "READS NOTHING")
            await expect(matrix.locator('tr[data-observer="blanket-tap"]')).to_have_count(0)
            before = await matrix.inner_text()
            await page.screenshot(path=str(shots / "1-first-message.png"), full_page=True)

            # 2. Blanket, with the keyboard: focus the LI radio group and arrow right twice.
            await page.focus("#li-off")
            await page.keyboard.press("ArrowRight")
            await expect(page.locator("#st-li")).to_have_text("scoped")
            await page.keyboard.press("ArrowRight")
            await expect(page.locator("#st-li")).to_have_text("blanket")
            await expect(relay).to_contain_text("LI switch: scoped → blanket")
            # 3. The escrow back door, by the page's control.
            await page.get_by_text("escrow", exact=True).click()
            await expect(page.locator("#st-backdoor")).to_have_text("escrow")
            await expect(page.locator('[data-pane="tap"] .lines')).to_contain_text(
                "back door = escrow")

            # 4. Another message, carol -> dave.
            await page.select_option("#send-device", "carol@globex.phone")
            await page.select_option("#send-to", "dave@globex")
            await page.fill("#send-text", SECOND)
            await page.keyboard.press("Enter")  # submits the form
            await expect(page.locator('[data-pane="user:dave@globex"] .lines')).to_contain_text(
                SECOND)
            tap = page.locator('[data-pane="tap"] .lines')
            await expect(tap).to_contain_text(SECOND)
            await expect(tap.locator(".line.exposed .badge").first).to_have_text(
                "READS PLAINTEXT")
            assert FIRST not in await tap.inner_text()  # mirrored only after the switch
            relay_text = await relay.inner_text()
            assert FIRST not in relay_text and SECOND not in relay_text
            # the diagram shows the tap reading it, in text
            await expect(page.locator("#seq-summary")).to_contain_text("tap: 1 read")
            await expect(page.locator("#seq")).to_contain_text("READ: Merger term sheet")

            # 5. The exposure matrix changed: the tap and a stolen escrow key now read.
            # (Attackers' rows are what the attacker service really stole: steal the key.)
            await page.get_by_role("button", name="Steal the escrow key").click()
            await expect(matrix.locator('tr[data-observer="blanket-tap"]')).to_contain_text(
                re.compile(r"READS 1\b"))
            await expect(matrix.locator('tr[data-observer="attacker:escrow-key"]')).to_contain_text(
                "READS 1")
            await expect(matrix.locator('tr[data-observer="relay"]')).to_contain_text(
                "READS NOTHING")
            assert await matrix.inner_text() != before
            await page.screenshot(path=str(shots / "2-blanket-escrow.png"), full_page=True)
            await page.screenshot(path=str(shots / "3-viewport.png"))

            # 6. The score board page shows the solves the page's actions caused.
            await page.goto(served.url + "lab")
            await expect(page.locator("#score")).to_contain_text("solved")
            first = page.locator("li.ex", has_text="Send your first end-to-end")
            await expect(first.locator(".state")).to_have_text("SOLVED")
            escrow = page.locator("li.ex", has_text="Back door 1: key escrow")
            await expect(escrow.locator(".state")).to_have_text("SOLVED")
            open_one = page.locator("li.ex", has_text="Refused: an expired warrant")
            await expect(open_one.locator(".state")).to_have_text("OPEN")
            await open_one.get_by_role("button", name=re.compile("Show hint 1")).click()
            await expect(open_one.locator(".hints li")).to_have_count(1)
            await page.screenshot(path=str(shots / "4-score-board.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()


async def test_active_relay_in_chromium(served: Any, tmp_path: Path) -> None:
    """The active relay from the page (issue 12, point 1): with the identity check on,
    the forged message is refused and alice's pane shows the alarm naming bob's phone;
    the matrix gets the operator's row, reading nothing. Switched off, the forged text
    (to carol, "from" dave) shows as dave's and the row reads carol's reply."""
    async_api = pytest.importorskip("playwright.async_api")
    expect = async_api.expect
    expect.set_options(timeout=20_000)
    shots = _shots(tmp_path)
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(served.url)
            await expect(page.locator("#st-conn-text")).to_have_text("live")
            check = page.locator("#identity-check")
            await expect(check).to_be_checked()

            # 1. Check on: refused, the alarm names bob and his phone.
            await page.get_by_role("button", name="Active relay: forge a message").click()
            result = page.locator("#active-relay-result")
            await expect(result).to_contain_text("REFUSED")
            await expect(result).to_contain_text("IDENTITY ALARM naming bob@acme / bob@acme.phone")
            alice = page.locator('[data-pane="user:alice@acme"] .lines')
            await expect(alice).to_contain_text("IDENTITY ALARM on")
            await expect(alice).to_contain_text("bob.phone")
            row = page.locator('#exposure table.matrix tr[data-observer="attacker:active-relay"]')
            await expect(row).to_contain_text("READS NOTHING")
            await expect(row).to_contain_text("forged identity of bob@acme.phone")
            await row.scroll_into_view_if_needed()
            await page.screenshot(path=str(shots / "5-active-relay-check-on.png"), full_page=True)

            # 2. Check off: the forged text shows as bob's, the operator reads the reply.
            await check.uncheck()
            await expect(page.locator("#announcer")).to_contain_text("Identity check OFF")
            await page.get_by_role("button", name="Active relay: forge a message").click()
            await expect(result).to_contain_text("Identity check OFF")
            await expect(result).to_contain_text("READ by the relay operator")
            carol = page.locator('[data-pane="user:carol@globex"] .lines')
            await expect(carol).to_contain_text("It's dave, new phone")
            await expect(row).to_contain_text("READS 1")
            attackers = page.locator('[data-pane="attackers"] .lines')
            await expect(attackers).to_contain_text(
                "a forged first message from dave@globex.phone was SHOWN on carol@globex.phone")
            await expect(attackers).to_contain_text(
                "the forged first message from bob@acme.phone was REFUSED on alice@acme.phone")
            await expect(page.locator('[data-pane="relay"] .lines')).to_contain_text(
                "the operator forged an identity key for bob@acme.phone")
            await page.screenshot(path=str(shots / "6-active-relay-check-off.png"), full_page=True)
            await page.locator('[data-pane="attackers"]').screenshot(
                path=str(shots / "7-active-relay-pane.png"))
            assert errors == []
        finally:
            await browser.close()
