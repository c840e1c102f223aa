"""The deployed relay loads no decryption code (issue 12, point 7).

test_dependencies.py reads relay/'s own imports; this test runs the process compose
starts - ``doormat relay --broker ... --accounts ... --db ... --li blanket``, the real
console script - against a real broker, lets it route an envelope (and mirror it to the
tap) and answer directory requests, stops it, and reads every module it imported
(``PYTHONPROFILEIMPORTTIME=1``: one stderr line per module, the moment it is imported).

None may be the clients' or the interceptor's, nor a cipher, an AEAD, X25519, HPKE or a
KDF. The relay does load one asymmetric primitive, Ed25519, to *sign* its key
directory's checkpoints (a signature key decrypts nothing), and nothing of doormat/ but
the command's own path and the broker accounts file reader.

On today's main the CLI imported every command module to build its parser, and with
them clients.crypto (its AEAD, X25519, HPKE and KDF modules), clients.*, interceptor.*.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from doormat.broker import start_broker
from doormat.broker.accounts import save_accounts
from doormat.cast import default_cast, enrol
from infra.link import Link
from tests.support.events import EventsFile
from tests.support.polling import until
from tests.support.processes import broker_kind
from wire.envelope import Envelope

FORBIDDEN = (
    "clients",
    "interceptor",
    "cryptography.hazmat.primitives.ciphers",  # AES, ChaCha20 and their AEAD modes
    "cryptography.hazmat.primitives.asymmetric.x25519",
    "cryptography.hazmat.primitives.asymmetric.x448",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "cryptography.hazmat.primitives.hpke",
    "cryptography.hazmat.primitives.kdf",
    "cryptography.hazmat.primitives.serialization",  # loads the ciphers (ssh keys)
    "cryptography.fernet",
    "nacl",
    "Crypto",
)
# What of doormat/ the command needs: its parser, the relay command, and the accounts
# file reader (doormat.broker.accounts, whose package also loads the brokers' code:
# amqtt, the Mosquitto configuration writer; none of it decrypts anything).
DOORMAT_ALLOWED = {"doormat", "doormat.__main__", "doormat.cli", "doormat.commands",
                   "doormat.commands.relay"}  # fmt: skip
DOORMAT_ALLOWED_PACKAGES = ("doormat.broker",)
_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)$")


def imported(stderr: str) -> list[str]:
    return [m.group(2) for line in stderr.splitlines() if (m := _LINE.match(line))]


def relay_command() -> list[str]:
    script = Path(sys.executable).parent / "doormat"
    if script.exists():
        return [str(script)]
    found = shutil.which("doormat")
    return [found] if found else [sys.executable, "-m", "doormat"]


async def test_the_relay_process_imports_no_decryption_code(tmp_path: Path) -> None:
    enrolment = enrol(default_cast())
    accounts = save_accounts(tmp_path / "accounts.json", enrolment.accounts)
    events = tmp_path / "relay.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORMAT_", "PYTHON"))}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    async with start_broker(broker_kind(), enrolment.accounts, tmp_path / "broker") as broker:
        argv = [*relay_command(), "relay", "--broker", broker.url, "--accounts", str(accounts),
                "--db", str(tmp_path / "relay.sqlite"), "--events", str(events),
                "--li", "blanket"]  # fmt: skip
        with (tmp_path / "stderr").open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            log = EventsFile(events)
            await until(lambda: log.count("relay.connected") >= 1 or proc.poll() is not None,
                        60, "the relay to connect")  # fmt: skip
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            # Work: enrolment and a key publication (the directory, its log and
            # signatures), an envelope routed and mirrored to the tap.
            creds = enrolment.credentials
            acme = Link("acme", enrolment.account("acme").password, broker.host, broker.port)
            alice = Link("alice@acme.phone", creds["alice@acme.phone"].password,
                         broker.host, broker.port)  # fmt: skip
            async with acme, alice:
                for dev in ("alice@acme.phone", "bob@acme.phone"):
                    await acme.request("enrol", user=dev.rsplit(".", 1)[0], device=dev)
                env_ = Envelope(secrets.token_hex(16), "alice@acme.phone", "bob@acme.phone",
                                1, os.urandom(40), os.urandom(256))  # fmt: skip
                await alice.publish("msg", env_.encode())
                await until(lambda: log.count("relay.mirrored") >= 1, 30, "the mirror")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    modules = imported((tmp_path / "stderr").read_text())
    assert "relay.service" in modules and "relay.li" in modules  # the profile works
    bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == [], f"the relay process imported decryption code: {bad}"
    extra = sorted(
        m
        for m in modules
        if m.startswith("doormat")
        and m not in DOORMAT_ALLOWED
        and not any(m == p or m.startswith(p + ".") for p in DOORMAT_ALLOWED_PACKAGES)
    )
    assert extra == [], f"the relay process imported other commands' modules: {extra}"
    assert "cryptography.hazmat.primitives.asymmetric.ed25519" in modules  # it signs
    json.dumps(modules)  # (for a reader who prints them)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["relay", "--help"], "relay"), (["health", "--help"], "health"),
     (["device", "run", "--help"], "serve")],
)
def test_a_command_parses_with_its_own_module_only(argv: list[str], expected: str) -> None:
    from doormat.cli import build_parser, command_module

    module = command_module(argv)
    assert module == expected
    parser = build_parser(module)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 0


def test_help_and_unknown_words_still_list_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from doormat.cli import command_module, main

    assert command_module([]) is None and command_module(["--help"]) is None
    assert command_module(["nonsense"]) is None
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("demo", "relay", "enterprise", "device", "ledger", "court", "lab"):
        assert word in out
