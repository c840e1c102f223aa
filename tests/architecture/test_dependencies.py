"""The dependency rules of DESIGN.md, checked on the source.

* The relay holds no keys: nothing under relay/ imports decryption code (clients,
  interceptor) or a crypto library that could open an envelope.
* The shared building blocks (wire/) import no actor.
* The crypto core is sans-I/O: no asyncio, no MQTT, no sockets, no files.
* One MQTT transport: infra/transport.py is the only module (of the product packages
  and bench/) that imports aiomqtt or paho at all (tests/ may use aiomqtt directly).
* The relay imports only wire, infra and itself (plus the standard library and
  third-party packages that are neither crypto nor MQTT libraries).
* No actor imports another actor: clients, interceptor and relay import only wire,
  infra and themselves; the interceptor also the E2EE library's public layer
  (``clients.crypto``'s own names). doormat/ and bench/ may import anything.
* The E2EE library's inner layer is its own: nothing outside clients/crypto imports a
  clients.crypto submodule (its tests aside, and the floor benchmark bench/crypto.py).
* wire imports no actor and not infra, and holds no decryption code.
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


# -- one MQTT transport -------------------------------------------------------------------

PRODUCT_AND_BENCH = ("wire", "infra", "relay", "clients", "interceptor", "doormat", "bench")
MQTT_LIBRARIES = ("aiomqtt", "paho")
TRANSPORT = "infra/transport"


def mqtt_importers(packages: tuple[str, ...] = PRODUCT_AND_BENCH) -> list[str]:
    """Every import of an MQTT library outside infra/transport.py."""
    bad: list[str] = []
    for package in packages:
        if (ROOT / package).is_dir():
            bad += [
                line
                for line in offenders(package, MQTT_LIBRARIES)
                if not line.startswith(f"{TRANSPORT} imports ")
            ]
    return bad


def test_only_the_transport_imports_the_mqtt_library() -> None:
    assert offenders("infra", MQTT_LIBRARIES), "the checker no longer sees the transport"
    assert mqtt_importers() == []


def test_mqtt_checker_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for package, source in (
        ("bench", "import aiomqtt\n"),
        ("clients", "def f():\n    from paho.mqtt import client\n"),
        ("infra", "import aiomqtt\n"),
    ):
        (tmp_path / package).mkdir()
        name = "transport.py" if package == "infra" else "sneaky.py"
        (tmp_path / package / name).write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert mqtt_importers(("bench", "clients", "infra")) == [
        "bench/sneaky imports aiomqtt",
        "clients/sneaky imports paho.mqtt",
        "clients/sneaky imports paho.mqtt.client",
    ]


# -- the relay's imports --------------------------------------------------------------------

RELAY_MAY_IMPORT = ("wire", "infra", "relay")
CRYPTO_LIBRARIES = ("cryptography", "nacl", "Crypto", "Cryptodome", "OpenSSL")


def project_packages() -> set[str]:
    """The repository's own top-level packages (a folder of Python files)."""
    return {p.name for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))}


def relay_foreign_imports() -> list[str]:
    """Imports under relay/ of another of our packages, a crypto or an MQTT library."""
    ours = project_packages() - set(RELAY_MAY_IMPORT)
    forbidden = ours | set(CRYPTO_LIBRARIES) | set(MQTT_LIBRARIES)
    return [
        f"{module} imports {name}"
        for module, names in imports_of("relay").items()
        for name in sorted(names)
        if name.split(".")[0] in forbidden
    ]


def test_relay_imports_only_wire_infra_and_itself() -> None:
    assert {"wire", "infra", "clients", "interceptor", "doormat"} <= project_packages()
    assert relay_foreign_imports() == []


def test_relay_checker_catches_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for package in ("wire", "infra", "clients", "bench"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "relay").mkdir()
    (tmp_path / "relay" / "sneaky.py").write_text(
        "import json\n"
        "import yaml\n"
        "from infra.transport import Transport\n"
        "from wire import topics\n"
        "from . import store\n"
        "from bench.common import median\n"
        "import cryptography.hazmat.primitives.hashes\n"
        "import paho.mqtt.client\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert relay_foreign_imports() == [
        "relay/sneaky imports bench.common",
        "relay/sneaky imports bench.common.median",
        "relay/sneaky imports cryptography.hazmat.primitives.hashes",
        "relay/sneaky imports paho.mqtt.client",
    ]


# -- no actor imports another actor -------------------------------------------------------

PROJECT = ("wire", "infra", "relay", "clients", "interceptor", "doormat", "bench")
ACTORS_MAY_IMPORT = {
    "relay": ("wire", "infra", "relay"),
    "clients": ("wire", "infra", "clients"),
    # clients.crypto's public names only: the next rule refuses its submodules.
    "interceptor": ("wire", "infra", "interceptor", "clients.crypto"),
}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def actor_imports(actors: dict[str, tuple[str, ...]] = ACTORS_MAY_IMPORT) -> list[str]:
    """Imports of another project package that an actor may not import."""
    bad: list[str] = []
    for actor, allowed in actors.items():
        for module, names in imports_of(actor).items():
            for name in sorted(names):
                if name.split(".")[0] not in PROJECT or any(_matches(name, a) for a in allowed):
                    continue
                bad.append(f"{module} imports {name}")
    return sorted(bad)


def test_no_actor_imports_another_actor() -> None:
    assert actor_imports() == []


def test_actor_checker_catches_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for actor, source in (
        ("clients", "from interceptor.court import Court\nfrom wire import topics\n"),
        ("interceptor", "from clients.crypto import seal_to\nimport clients.device\n"),
        ("relay", "def f():\n    from doormat.cast import enrol\nimport json\n"),
    ):
        (tmp_path / actor).mkdir()
        (tmp_path / actor / "sneaky.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert actor_imports() == [
        "clients/sneaky imports interceptor.court",
        "clients/sneaky imports interceptor.court.Court",
        "interceptor/sneaky imports clients.device",
        "relay/sneaky imports doormat.cast",
        "relay/sneaky imports doormat.cast.enrol",
    ]


# -- the E2EE library's inner layer is its own --------------------------------------------

LIBRARY = "clients/crypto"
# Modules outside the library that may use its inner layer: its own tests, and the
# benchmark that measures the ratchet against a floor of the same primitives (it needs
# the library's KDF labels to call them exactly as the library does).
WHITE_BOX = ("tests/crypto", "bench/crypto")
SCANNED = ("wire", "infra", "relay", "clients", "interceptor", "doormat", "bench", "tests")


def inner_layer_importers(packages: tuple[str, ...] = SCANNED) -> list[str]:
    """Imports of a clients.crypto submodule from outside the library."""
    inner = {p.stem for p in (ROOT / LIBRARY).glob("*.py") if p.stem != "__init__"}
    inner |= {p.name for p in (ROOT / LIBRARY).iterdir() if (p / "__init__.py").is_file()}
    bad = []
    for package in packages:
        if not (ROOT / package).is_dir():
            continue
        for module, names in imports_of(package).items():
            if any(module == f or module.startswith(f + "/") for f in (LIBRARY, *WHITE_BOX)):
                continue
            for name in sorted(names):
                parts = name.split(".")
                if parts[:2] == ["clients", "crypto"] and len(parts) > 2 and parts[2] in inner:
                    bad.append(f"{module} imports {name}")
    return bad


def test_only_the_library_imports_its_inner_layer() -> None:
    assert (ROOT / LIBRARY / "aead.py").is_file(), "the checker no longer sees the library"
    assert inner_layer_importers() == []


def test_inner_layer_checker_catches_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / LIBRARY).mkdir(parents=True)
    for name in ("__init__", "aead", "kdf", "errors"):
        (tmp_path / LIBRARY / f"{name}.py").write_text("")
    (tmp_path / LIBRARY / "inner.py").write_text("from .aead import seal\n")
    (tmp_path / "interceptor").mkdir()
    (tmp_path / "interceptor" / "sneaky.py").write_text(
        "from clients.crypto import DeviceCrypto, errors\nimport clients.crypto.kdf\n"
    )
    (tmp_path / "tests" / "crypto").mkdir(parents=True)
    (tmp_path / "tests" / "crypto" / "test_kat.py").write_text("from clients.crypto import kdf\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert inner_layer_importers(("clients", "interceptor", "tests")) == [
        "interceptor/sneaky imports clients.crypto.errors",
        "interceptor/sneaky imports clients.crypto.kdf",
    ]


# -- wire: no actor, not infra, no decryption code ----------------------------------------

WIRE_MAY_NOT_IMPORT = (
    "relay",
    "clients",
    "interceptor",
    "doormat",
    "bench",
    "infra",
    # The relay imports wire: nothing here may open what it routes.
    "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.hpke",
    "cryptography.hazmat.primitives.asymmetric.x25519",
    "cryptography.fernet",
    "nacl",
    "Crypto",
)


def test_wire_imports_no_actor_nor_infra_and_no_decryption_code() -> None:
    assert offenders("wire", ("cryptography",)), "the checker no longer sees wire/note.py"
    assert offenders("wire", WIRE_MAY_NOT_IMPORT) == []


def test_wire_checker_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wire" / "li").mkdir(parents=True)
    (tmp_path / "wire" / "li" / "sneaky.py").write_text(
        "from cryptography.hazmat.primitives import hpke\n"
        "from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey\n"
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey\n"
        "from infra import transport\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert offenders("wire", WIRE_MAY_NOT_IMPORT) == [
        "wire/li/sneaky imports cryptography.hazmat.primitives.asymmetric.x25519",
        "wire/li/sneaky imports cryptography.hazmat.primitives.asymmetric.x25519.X25519PrivateKey",
        "wire/li/sneaky imports cryptography.hazmat.primitives.hpke",
        "wire/li/sneaky imports infra",
        "wire/li/sneaky imports infra.transport",
    ]
