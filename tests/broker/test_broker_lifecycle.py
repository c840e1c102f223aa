"""Starting, restarting and choosing brokers; Mosquitto's files; the embedded broker's
side effects (none)."""

from __future__ import annotations

import asyncio
import re
import socket
import stat
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from doormat.broker import (
    EmbeddedBroker,
    ExternalBroker,
    MosquittoBroker,
    MosquittoError,
    parse_broker_url,
    start_broker,
)
from doormat.broker.accounts import Account
from doormat.broker.mosquitto import (
    PBKDF2_ITERATIONS,
    find_mosquitto,
    hash_password,
    mosquitto_conf,
    password_file,
    verify_password,
    write_config,
)

ALICE = "alice@acme.phone"
TIMEOUT = 5.0


# -- choosing a broker -----------------------------------------------------------------


def test_start_broker_kinds(tmp_path: Path) -> None:
    assert isinstance(start_broker("embedded", []), EmbeddedBroker)
    assert isinstance(start_broker("mosquitto", [], tmp_path), MosquittoBroker)
    ext = start_broker("mqtt://broker.example:1884", [])
    assert isinstance(ext, ExternalBroker)
    assert (ext.host, ext.port, ext.url) == ("broker.example", 1884, "mqtt://broker.example:1884")
    with pytest.raises(ValueError, match="unknown broker 'rabbit'"):
        start_broker("rabbit", [])
    with pytest.raises(ValueError, match="needs a working directory"):
        start_broker("mosquitto", [])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("mqtt://localhost", ("localhost", 1883)),
        ("mqtt://[::1]:1999", ("::1", 1999)),
        ("mqtt://mosquitto:1883/", ("mosquitto", 1883)),
    ],
)
def test_parse_broker_url(url: str, expected: tuple[str, int]) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("localhost:1883", "not a broker URL"),
        ("mqtts://h:8883", "unsupported scheme 'mqtts'"),
        ("ws://h:80", "unsupported scheme 'ws'"),
        ("mqtt://h:99999", "bad broker URL"),
        ("mqtt://h:abc", "bad broker URL"),
        ("mqtt://u:p@h:1883", "no credentials"),
        ("mqtt://h:1883/topic", "unexpected path"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:0", "port 0"),
    ],
)
def test_parse_broker_url_errors_are_one_line(url: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_broker_url(url)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


async def test_external_broker_starts_nothing() -> None:
    async with start_broker("mqtt://127.0.0.1:1", []) as b:
        assert b.port == 1
        with pytest.raises(RuntimeError, match="cannot add account"):
            b.add_account(Account(ALICE, "pw", "device"))


# -- the embedded broker ---------------------------------------------------------------


async def test_embedded_broker_writes_nothing_and_picks_free_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accounts: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    alice = accounts(ALICE)
    async with EmbeddedBroker([alice]) as a, EmbeddedBroker([alice]) as b:
        assert a.host == "127.0.0.1" and a.port != b.port and a.port > 0
        assert a.url == f"mqtt://127.0.0.1:{a.port}"
        async with aiomqtt.Client(a.host, a.port, username=ALICE, password=alice.password,
                                  identifier=ALICE, clean_session=False) as c:
            await c.subscribe(f"doormat/in/{ALICE}/#", qos=1)
            await c.publish(f"doormat/out/{ALICE}/msg", b"x", qos=1)
    assert list(tmp_path.iterdir()) == []


async def test_embedded_add_account_is_live_without_waiting(accounts: Any) -> None:
    async with EmbeddedBroker([]) as b:
        dave = accounts("dave@globex.phone")
        b.add_account(dave)  # no await: the next CONNECT sees it
        async with aiomqtt.Client(b.host, b.port, username=dave.username,
                                  password=dave.password, identifier=dave.username):
            pass
        b.remove_account(dave)
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(TIMEOUT), aiomqtt.Client(
                b.host, b.port, username=dave.username, password=dave.password
            ):
                pass


async def test_embedded_refuses_shared_subscriptions(accounts: Any) -> None:
    """amqtt has no $share: a refused SUBACK beats a silent subscription to nothing."""
    relay = accounts("relay")
    async with EmbeddedBroker([relay]) as b, aiomqtt.Client(
        b.host, b.port, username="relay", password=relay.password, identifier="relay"
    ) as c:
        [code] = await c.subscribe("$share/relays/doormat/out/+/+", qos=1)
        assert int(getattr(code, "value", code)) == 0x80


# -- Mosquitto's files -----------------------------------------------------------------


def test_password_hash_format() -> None:
    h = hash_password("correct horse", salt=b"\x01" * 12)
    assert re.fullmatch(rf"\$7\${PBKDF2_ITERATIONS}\$[A-Za-z0-9+/=]{{16}}\$[A-Za-z0-9+/=]{{88}}", h)
    assert verify_password("correct horse", h)
    assert not verify_password("wrong", h)
    assert hash_password("x") != hash_password("x")  # fresh salt each time


def test_password_file_reuses_cached_hashes() -> None:
    a = Account(ALICE, "pw1", "device")
    cache: dict[str, tuple[str, str]] = {}
    first = password_file([a], cache)
    assert password_file([a], cache) == first
    changed = password_file([Account(ALICE, "pw2", "device")], cache)
    assert changed != first
    assert verify_password("pw2", changed.strip().split(":", 1)[1])


def test_conf_for_compose_uses_the_mount_points() -> None:
    text = mosquitto_conf(port=1883, bind="0.0.0.0", config_dir="/mosquitto/config",
                          data_dir="/mosquitto/data")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    for expected in (
        "allow_anonymous false",
        "password_file /mosquitto/config/mosquitto_passwd",
        "acl_file /mosquitto/config/acl",
        "persistence true",
        "persistence_location /mosquitto/data/",
        "listener 1883 0.0.0.0",
        "max_qos 1",
        "use_username_as_clientid true",
        "retain_available false",
        # Limits against a hostile client (issue 12, point 6; doormat/broker/limits.py).
        "max_packet_size 1048576",
        "max_queued_messages 100000",
        "max_queued_bytes 268435456",
        "memory_limit 1073741824",
        "max_connections 5000",
    ):
        assert expected in lines
    assert "user root" not in lines
    # Listener options must come after the listener line, or Mosquitto opens 1883 too.
    listener = lines.index("listener 1883 0.0.0.0")
    for opt in ("max_qos 1", "use_username_as_clientid true", "protocol mqtt",
                "max_connections 5000"):
        assert lines.index(opt) > listener


def test_paths_with_blanks_are_refused() -> None:
    with pytest.raises(ValueError, match="without blanks"):
        mosquitto_conf(config_dir="/my config", data_dir="/data")


def test_write_config_local_paths_and_modes(tmp_path: Path) -> None:
    accs = [Account("relay", "r", "relay"), Account(ALICE, "a", "device")]
    files = write_config(tmp_path / "cfg", accs, port=1999, bind="127.0.0.1")
    conf = files.conf.read_text()
    assert f"password_file {tmp_path}/cfg/mosquitto_passwd" in conf
    assert f"persistence_location {tmp_path}/cfg/data/" in conf
    assert (tmp_path / "cfg" / "data").is_dir()
    assert stat.S_IMODE(files.passwd.stat().st_mode) == 0o600
    users = dict(line.split(":", 1) for line in files.passwd.read_text().splitlines())
    assert set(users) == {"relay", ALICE}
    assert verify_password("a", users[ALICE])
    relay_rules = "user relay\ntopic read doormat/out/+/+\ntopic write doormat/in/+/+"
    assert relay_rules in files.acl.read_text()


# -- Mosquitto, the process ------------------------------------------------------------


@pytest.mark.mosquitto
async def test_mosquitto_restart_keeps_queued_messages(
    mosquitto_broker: MosquittoBroker, accounts: Any, mqtt: Any
) -> None:
    alice = accounts(ALICE)
    async with mqtt(alice, clean_session=False) as c:
        await c.subscribe(f"doormat/in/{ALICE}/#", qos=1)
    async with mqtt(accounts("relay")) as relay:
        for i in range(20):
            await relay.publish(f"doormat/in/{ALICE}/msg", f"q{i}".encode(), qos=1)
    port = mosquitto_broker.port
    old_pid = mosquitto_broker.pid
    await mosquitto_broker.restart()
    assert mosquitto_broker.port == port and mosquitto_broker.pid != old_pid
    async with mqtt(alice, clean_session=False) as c:
        got: list[bytes] = []
        async with asyncio.timeout(TIMEOUT):
            async for m in c.messages:
                got.append(bytes(m.payload))  # type: ignore[arg-type]
                if len(got) == 20:
                    break
    assert got == [f"q{i}".encode() for i in range(20)]  # Mosquitto also keeps the order


@pytest.mark.mosquitto
async def test_mosquitto_add_account_bursts_coalesce(
    mosquitto_broker: MosquittoBroker, accounts: Any, mqtt: Any
) -> None:
    new = [accounts(f"u{i}@globex.phone") for i in range(30)]
    for acc in new:
        mosquitto_broker.add_account(acc)
    await mosquitto_broker.wait_accounts_applied()
    for acc in (new[0], new[-1]):
        async with mqtt(acc):
            pass
    assert mosquitto_broker.log_text().count("Reloading config") <= 5


@pytest.mark.mosquitto
async def test_mosquitto_start_failure_surfaces_its_log(tmp_path: Path, accounts: Any) -> None:
    try:
        find_mosquitto()
    except MosquittoError as exc:
        pytest.skip(str(exc))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        b = MosquittoBroker([accounts(ALICE)], tmp_path / "m", port=port)
        with pytest.raises(MosquittoError, match="Address already in use") as info:
            await b.start()
        await b.stop()
    assert "\n" not in str(info.value)
    assert not b.running


async def test_missing_mosquitto_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import doormat.broker.mosquitto as mq

    monkeypatch.setattr(mq.shutil, "which", lambda name: None)
    monkeypatch.setattr(mq.os, "access", lambda path, mode: False)
    with pytest.raises(MosquittoError, match="mosquitto is not installed"):
        await MosquittoBroker([], tmp_path).start()
