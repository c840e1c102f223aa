"""The crypto core does no I/O: checked on the source of every module in the package.

Parses each module's AST and refuses imports of networking, MQTT, asyncio, databases,
files and processes, and calls of the ``open``/``exec``/``eval``/``__import__`` builtins
(a dynamic import would get around the import check).
"""

from __future__ import annotations

import ast
from pathlib import Path

import clients.crypto

PACKAGE = Path(clients.crypto.__file__).parent
FORBIDDEN_MODULES = (
    "asyncio",
    "aiomqtt",
    "amqtt",
    "paho",
    "socket",
    "ssl",
    "selectors",
    "http",
    "urllib",
    "sqlite3",
    "io",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "subprocess",
    "threading",
    "multiprocessing",
    "importlib",
    "pickle",
)
FORBIDDEN_CALLS = ("open", "exec", "eval", "compile", "__import__", "input", "print")


def violations(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        line = getattr(node, "lineno", 0)
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{line} imports {name}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{filename}:{line} calls {node.func.id}()")
    return found


def test_package_has_the_expected_modules() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert {"x3dh.py", "ratchet.py", "device.py", "padding.py", "safety.py"} <= modules


def test_no_io_in_the_crypto_core() -> None:
    found = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        found += violations(path.read_text(), str(path.relative_to(PACKAGE)))
    assert found == []


def test_the_check_catches_violations() -> None:
    planted = (
        "import asyncio\n"
        "from aiomqtt import Client\n"
        "import amqtt.broker\n"
        "from paho.mqtt import client\n"
        "import socket, sqlite3\n"
        "from os import path\n"
        "x = open('f')\n"
        "m = __import__('socket')\n"
        "from . import state\n"  # relative imports of the package are fine
        "import hashlib\n"
    )
    found = violations(planted, "planted.py")
    assert len(found) == 9, found
