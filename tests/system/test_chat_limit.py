"""``doormat chat`` says why it did not send a text over the sender's limit (issue 12,
point 2), and goes on: the next line is sent."""

from __future__ import annotations

import subprocess
import sys

from clients.limits import max_text_bytes


def test_chat_refuses_a_text_over_the_limit_with_the_limit_and_goes_on() -> None:
    limit = max_text_bytes()
    lines = f"bob: {'x' * (limit + 1)}\nbob: the next line\n/quit\n"
    res = subprocess.run(
        [sys.executable, "-m", "doormat", "chat", "alice", "--color", "never"],
        input=lines, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert (
        f"not sent: the message is {limit + 1} bytes; the largest a user can send is "
        f"{limit} bytes" in res.stdout
    )
    assert "bob@acme.phone  read from alice@acme: 'the next line'" in res.stdout
