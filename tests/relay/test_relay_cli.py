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

from doormat.cli import main as doormat_main
from relay.main import ConfigError, check_subscription, parse_broker_url
from tests.relay.relay_harness import MqttEnv


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
        (
            ["--password-file", "{pw}", "--subscription", "$share/relay/doormat/out/+/+"],
            "the share group 'relay' is guessable",
        ),
        (["--password-file", "{pw}", "--subscription", "$share/" + "a" * 32], "GROUP/FILTER"),
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


def test_a_random_share_group_and_the_plain_filter_are_accepted() -> None:
    for ok in ("doormat/out/+/+", "$share/5f0c2e61a9d84b7e9c3a0d1f2b4e6a8c/doormat/out/+/+"):
        assert check_subscription(ok) == ok


def test_parse_broker_url() -> None:
    assert parse_broker_url("mqtt://example.org") == ("example.org", 1883)
    assert parse_broker_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    for bad in ("127.0.0.1:1883", "mqtts://h:1", "mqtt://u:p@h:1", "mqtt://h:1/x", "mqtt://"):
        with pytest.raises(ConfigError):
            parse_broker_url(bad)


# What a running relay must not have loaded: code that can decrypt. Whole packages
# (clients, the interceptor, the umbrella, other crypto libraries) and, of cryptography,
# the modules that opening an envelope or a back door needs: AEAD (AES-GCM,
# ChaCha20-Poly1305), X25519/X448 key agreement, HPKE, Fernet, the KDFs and key wrap.
# cryptography's Ed25519 *is* loaded: the relay signs the key directory's checkpoints
# (wire.note). So is its generic `ciphers` module, because wire.note imports
# `serialization`, which imports it for encrypted private-key formats; there is no key
# in the relay for it to use, and the modules above are what the clients decrypt with.
_NO_DECRYPTION_CHECK = (
    "import sys\n"
    "{extra}"
    "import relay.service, relay.main, relay.router, relay.store, relay.kt\n"
    "packages = ('clients', 'interceptor', 'doormat', 'nacl', 'Crypto')\n"
    "modules = ('cryptography.hazmat.primitives.ciphers.aead',\n"
    "           'cryptography.hazmat.primitives.asymmetric.x25519',\n"
    "           'cryptography.hazmat.primitives.asymmetric.x448',\n"
    "           'cryptography.hazmat.primitives.hpke',\n"
    "           'cryptography.fernet',\n"
    "           'cryptography.hazmat.primitives.kdf',\n"
    "           'cryptography.hazmat.primitives.keywrap')\n"
    "bad = sorted(m for m in sys.modules if m.split('.')[0] in packages\n"
    "             or any(m == p or m.startswith(p + '.') for p in modules))\n"
    "signs = 'cryptography.hazmat.primitives.asymmetric.ed25519' in sys.modules\n"
    "print(bad, signs)\n"
)


def _loaded_decryption_code(extra: str = "") -> str:
    code = _NO_DECRYPTION_CHECK.format(extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_relay_process_loads_no_key_code() -> None:
    """Beyond the import rule on the source: a running relay process has no client,
    interceptor or umbrella module loaded, and no cryptography module that decrypts; it
    has Ed25519, with which it signs the directory's checkpoints."""
    assert _loaded_decryption_code() == "[] True"
    # The check can fail: a relay that pulled in the clients' crypto would be caught.
    found = _loaded_decryption_code("import clients.crypto\n")
    for module in (
        "clients.crypto",
        "cryptography.hazmat.primitives.ciphers.aead",
        "cryptography.hazmat.primitives.asymmetric.x25519",
        "cryptography.hazmat.primitives.kdf.hkdf",
    ):
        assert repr(module) in found, found


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


# -- issue 12, point 9: the share group name is checked for what MQTT, Mosquitto and the
# relay's own rule (unguessable) need, not only for its length ---------------------------


@pytest.mark.parametrize(
    ("group", "why"),
    [
        ("", "empty"),
        ("+", "which MQTT forbids"),
        ("a#" + "b" * 40, "which MQTT forbids"),
        ("5f0c2e61 a9d84b7e9c3a0d1f2b4e6a8c", "A-Z a-z 0-9 _ -"),
        ("5f0c2e61\x00a9d84b7e9c3a0d1f2b4e6a8c", "A-Z a-z 0-9 _ -"),
        ("5f0c2e61a9d84b7e9c3a0d1f2b4e6a8cé", "A-Z a-z 0-9 _ -"),
        ("a" * 129, "A-Z a-z 0-9 _ -"),
        ("a" * 40, "different characters"),  # long, but one character
        ("abababababababababababababababab", "different characters"),
        ("0123456789abcdef", "under 128"),  # 16 hex digits: 64 bits
        ("5f0c2e61a9d84b7e9c3a0d1f2b4e6a8", "under 128"),  # 31 hex digits
        ("Qw3rTy-Zx9_Lm2PvB8nKc", "under 128"),  # 21 base64url characters
        ("our-relay-workers-2024-production", "the word 'relay'"),
        ("SharedGroupForDoormatWorkers01", "the word"),
    ],
)
def test_a_share_group_that_is_not_a_random_secret_is_refused(group: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_subscription(f"$share/{group}/doormat/out/+/+")
    assert why in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "filt", ["doormat/out/x+/+", "doormat/#/msg", "doormat/out/+/#x", "", "doormat/\x00"]
)
def test_a_malformed_filter_is_refused(filt: str) -> None:
    group = "5f0c2e61a9d84b7e9c3a0d1f2b4e6a8c"
    for sub in (filt, f"$share/{group}/{filt}"):
        with pytest.raises(ConfigError):
            check_subscription(sub)


def test_random_groups_of_both_alphabets_are_accepted() -> None:
    import secrets

    for _ in range(200):
        for group in (secrets.token_hex(16), secrets.token_urlsafe(16)[:22]):
            sub = f"$share/{group}/doormat/out/+/+"
            try:
                assert check_subscription(sub) == sub
            except ConfigError as exc:  # a random name that happens to hold a word
                assert "the word" in str(exc), exc
