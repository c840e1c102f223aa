"""``doormat broker config`` and ``doormat broker run``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from doormat.broker.accounts import Account, generate_password, load_accounts, save_accounts
from doormat.broker.mosquitto import MosquittoError, find_mosquitto, free_port
from doormat.cli import main
from doormat.commands import broker as broker_cmd

ALICE = "alice@acme.phone"


@pytest.fixture
def accounts_file(tmp_path: Path, accounts: Any) -> Path:
    return save_accounts(tmp_path / "in" / "accounts.json", accounts.standard())


def test_config_writes_the_three_files_for_compose(
    tmp_path: Path, accounts_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["broker", "config", "--out", str(out), "--accounts", str(accounts_file)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["acl", "mosquitto.conf", "mosquitto_passwd"]
    conf = (out / "mosquitto.conf").read_text()
    assert "password_file /mosquitto/config/mosquitto_passwd" in conf
    assert "persistence_location /mosquitto/data/" in conf
    assert "listener 1883 0.0.0.0" in conf
    names = {ln.split(":")[0] for ln in (out / "mosquitto_passwd").read_text().splitlines()}
    assert names == {a.username for a in load_accounts(accounts_file)}
    assert "wrote" in capsys.readouterr().out


def test_config_options(tmp_path: Path, accounts_file: Path) -> None:
    out = tmp_path / "out"
    args = ["broker", "config", "--out", str(out), "--accounts", str(accounts_file),
            "--port", "1999", "--bind", "127.0.0.1",
            "--config-dir", "/etc/doormat", "--data-dir", "/var/lib/doormat"]
    assert main(args) == 0
    conf = (out / "mosquitto.conf").read_text()
    assert "listener 1999 127.0.0.1" in conf
    assert "acl_file /etc/doormat/acl" in conf
    assert "persistence_location /var/lib/doormat/" in conf


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--config-dir", "relative/dir"], "--config-dir must be an absolute path"),
        (["--local", "--data-dir", "/x"], "--local sets --config-dir and --data-dir"),
    ],
)
def test_config_rejects_bad_options(
    tmp_path: Path, accounts_file: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], needle: str,
) -> None:
    code = main(["broker", "config", "--out", str(tmp_path / "o"),
                 "--accounts", str(accounts_file), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and err.count("\n") == 1


def test_config_with_a_broken_accounts_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "accounts.json"
    bad.write_text('{"accounts": [{"username": "x", "password": "p", "role": "boss"}]}')
    code = main(["broker", "config", "--out", str(tmp_path / "o"), "--accounts", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("doormat broker: error: ") and err.count("\n") == 1
    assert "unknown role 'boss'" in err


def test_config_without_accounts_uses_the_default_cast_and_keeps_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_default_accounts() -> list[Account]:
        return [Account("relay", generate_password(), "relay"),
                Account(ALICE, generate_password(), "device")]

    monkeypatch.setattr(broker_cmd, "_default_accounts_factory", lambda: fake_default_accounts)
    out = tmp_path / "out"
    assert main(["broker", "config", "--out", str(out)]) == 0
    generated = out / "accounts.json"
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    first = load_accounts(generated)
    assert [a.username for a in first] == ["relay", ALICE]
    assert main(["broker", "config", "--out", str(out)]) == 0
    assert load_accounts(generated) == first  # services that read it still log in


def test_config_without_accounts_or_cast_asks_for_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(broker_cmd, "_default_accounts_factory", lambda: None)
    assert main(["broker", "config", "--out", str(tmp_path / "o")]) == 2
    assert "--accounts FILE is required" in capsys.readouterr().err


@pytest.mark.mosquitto
async def test_local_config_runs_in_a_real_mosquitto(
    tmp_path: Path, accounts_file: Path, accounts: Any
) -> None:
    """What `broker config --local` writes is what Mosquitto 2 accepts, by hand."""
    try:
        binary = find_mosquitto()
    except MosquittoError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "out"
    port = free_port()
    assert main(["broker", "config", "--out", str(out), "--accounts", str(accounts_file),
                 "--local", "--port", str(port), "--bind", "127.0.0.1"]) == 0
    conf = out / "mosquitto.conf"
    if os.geteuid() == 0:  # as root Mosquitto would switch to user 'mosquitto'
        conf.write_text(conf.read_text() + "user root\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        alice = accounts(ALICE)
        for _ in range(100):
            try:
                async with aiomqtt.Client("127.0.0.1", port, username=ALICE,
                                          password=alice.password, identifier=ALICE):
                    break
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("could not log in to the Mosquitto started from broker config")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(5), aiomqtt.Client(
                "127.0.0.1", port, username=ALICE, password="wrong"
            ):
                pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert (out / "data" / "mosquitto.db").exists()  # persistence went where we said


async def test_broker_run_serves_until_interrupted(tmp_path: Path, accounts_file: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "doormat", "broker", "run", "--accounts", str(accounts_file),
        "--port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert "embedded broker on mqtt://127.0.0.1:" in line, line
        port = int(line.split("mqtt://127.0.0.1:")[1].split()[0])
        relay = next(a for a in load_accounts(accounts_file) if a.username == "relay")
        async with aiomqtt.Client("127.0.0.1", port, username="relay", password=relay.password,
                                  identifier="relay") as c:
            await c.subscribe("doormat/out/+/+", qos=1)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            code = await proc.wait()
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing left in cwd


def test_broker_run_port_in_use_is_one_line(tmp_path: Path, accounts_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "doormat", "broker", "run", "--accounts", str(accounts_file),
             "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert res.returncode == 1
    assert res.stderr.startswith("doormat broker: error: cannot listen on 127.0.0.1:")
    assert res.stderr.count("\n") == 1, res.stderr
