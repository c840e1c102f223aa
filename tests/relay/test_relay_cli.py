"""``doormat relay`` / ``python -m relay``: one-line errors, a clean run, no key code loaded."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from relay_harness import MqttEnv

from doormat.cli import main as doormat_main
from relay.main import ConfigError, parse_broker_url


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = doormat_main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give exactly one of --password-file FILE and --accounts FILE"),
        (["--password-file", "{pw}", "--accounts", "{acc}"], "give exactly one of"),
        (["--password-file", "{tmp}/missing"], "password file not found"),
        (["--password-file", "{empty}"], "password file is empty"),
        (["--password-file", "{pw}", "--broker", "http://x:1"], "bad --broker URL"),
        (["--password-file", "{pw}", "--broker", "mqtt://x:99999"], "bad --broker URL"),
        (["--accounts", "{tmp}/missing.json"], "accounts file not found"),
        (["--accounts", "{badacc}"], "invalid JSON"),
        (["--accounts", "{norelay}"], "no account named 'relay'"),
        (["--password-file", "{pw}", "--db", "{tmp}/no/such/dir/r.db"], "does not exist"),
        (["--password-file", "{pw}", "--db", "{tmp}"], "is a directory"),
        (["--password-file", "{pw}", "--events", "{tmp}/no/dir/e.jsonl"], "cannot open --events"),
    ],
)
def test_bad_arguments_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "acc.json").write_text(
        json.dumps({"accounts": [{"username": "relay", "password": "p", "role": "relay"}]})
    )
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "norelay.json").write_text(
        json.dumps({"accounts": [{"username": "acme", "password": "p", "role": "enterprise"}]})
    )
    subs = {
        "{pw}": str(tmp_path / "pw"),
        "{acc}": str(tmp_path / "acc.json"),
        "{empty}": str(tmp_path / "empty"),
        "{badacc}": str(tmp_path / "bad.json"),
        "{norelay}": str(tmp_path / "norelay.json"),
        "{tmp}": str(tmp_path),
    }
    args = []
    for a in extra:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    if "--db" not in args:
        args += ["--db", str(tmp_path / "r.db")]
    code, err = run_cli(["relay", "--broker", "mqtt://127.0.0.1:1", *args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("doormat relay: error: ") and message in err


def test_parse_broker_url() -> None:
    assert parse_broker_url("mqtt://example.org") == ("example.org", 1883)
    assert parse_broker_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    for bad in ("127.0.0.1:1883", "mqtts://h:1", "mqtt://u:p@h:1", "mqtt://h:1/x", "mqtt://"):
        with pytest.raises(ConfigError):
            parse_broker_url(bad)


def test_relay_process_loads_no_key_code() -> None:
    """Beyond the import rule on the source: a running relay process has no client,
    interceptor or crypto-library module loaded at all."""
    code = (
        "import sys, relay.service, relay.main, relay.router, relay.store\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('clients', 'interceptor', 'cryptography', 'nacl', 'Crypto', 'doormat'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mqtt_env", ["embedded"], indirect=True)  # one broker is enough
async def test_wrong_password_and_clean_stop(mqtt_env: MqttEnv, tmp_path: Path) -> None:
    """A refused login is a one-line error, exit 2; a SIGTERM is a clean stop, exit 0,
    with events as JSON lines on stdout."""
    wrong, right = tmp_path / "wrong.pw", tmp_path / "right.pw"
    wrong.write_text("not-the-password\n")
    right.write_text(mqtt_env.passwords["relay"] + "\n")
    base = [
        sys.executable,
        "-m",
        "doormat",
        "relay",
        "--broker",
        mqtt_env.url,
        "--db",
        str(tmp_path / "r.db"),
    ]

    proc = await asyncio.create_subprocess_exec(
        *base,
        "--password-file",
        str(wrong),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "refused the login of 'relay'" in lines[0], lines

    proc = await asyncio.create_subprocess_exec(
        *base,
        "--password-file",
        str(right),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    deadline = time.monotonic() + 30
    seen = [first["kind"]]
    while "relay.connected" not in seen and time.monotonic() < deadline:
        seen.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["kind"])
    assert "relay.connected" in seen
    proc.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    kinds = [json.loads(line)["kind"] for line in rest.decode().splitlines()]
    assert kinds[-1] == "relay.stopped"
