"""The dependency rules of DESIGN.md, checked on the source.

* The relay holds no keys: nothing under relay/ imports decryption code (clients,
  interceptor) or a crypto library that could open an envelope.
* The shared building blocks (wire/) import no actor.
* The crypto core is sans-I/O: no asyncio, no MQTT, no sockets, no files.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(package: str) -> dict[str, set[str]]:
    """module path -> every module it imports (absolute names, relative ones resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        rel = path.relative_to(ROOT).with_suffix("")
        pkg_parts = list(rel.parts[:-1])
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg_parts[: len(pkg_parts) - node.level + 1]
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                names.add(mod)
                names.update(f"{mod}.{alias.name}" for alias in node.names)
        found[str(rel)] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for module, names in imports_of(package).items():
        for name in sorted(names):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{module} imports {name}")
    return bad


def test_relay_imports_no_decryption_code() -> None:
    assert (ROOT / "relay").is_dir()
    forbidden = (
        "clients",
        "interceptor",
        "doormat",
        # No cipher at all: the relay has nothing to decrypt with, and cannot grow it.
        "cryptography.hazmat.primitives.ciphers",
        "cryptography.hazmat.primitives.asymmetric",
        "cryptography.hazmat.primitives.hpke",
        "cryptography.fernet",
        "nacl",
        "Crypto",
    )
    assert offenders("relay", forbidden) == []


def test_wire_imports_no_actor() -> None:
    assert offenders("wire", ("relay", "clients", "interceptor", "doormat")) == []


def test_actors_do_not_import_the_umbrella() -> None:
    """Dependencies point one way: the umbrella (doormat/) imports the actors."""
    for actor in ("clients", "interceptor", "relay"):
        assert offenders(actor, ("doormat",)) == [], actor


def test_crypto_core_is_sans_io() -> None:
    forbidden = ("asyncio", "aiomqtt", "amqtt", "paho", "socket", "sqlite3", "subprocess")
    assert offenders("clients/crypto", forbidden) == []


def test_checker_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule above can fail: a planted import is found."""
    pkg = tmp_path / "relay"
    pkg.mkdir()
    (pkg / "sneaky.py").write_text("from clients.crypto import open_body\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert offenders("relay", ("clients",)) == ["relay/sneaky imports clients.crypto",
                                                "relay/sneaky imports clients.crypto.open_body"]
