"""docker-compose.yml as the tests see it: parsed, interpolated from .env, and translated
to this machine (no Docker here).

``load()`` returns a ``Compose``: its services with ``${VAR:-default}`` replaced by the
values in .env (as ``docker compose`` does), and helpers the tests share. ``Local`` maps
a service's container paths, host names and ports onto a temp folder and free loopback
ports, so that the same commands and environment can run as local processes.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_FILE = ROOT / ".env"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"

# The names the compose file uses for the broker inside the compose network.
BROKER_HOST = "mosquitto"
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
ONE_SHOT = "service_completed_successfully"
HEALTHY = "service_healthy"


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def variables_in(text: str) -> set[str]:
    return {m.group(1) for m in VAR_RE.finditer(text)}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string, as compose does with .env."""
    if isinstance(value, str):
        return VAR_RE.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@dataclass
class Mount:
    volume: str  # a named volume (a path here would be a bind mount)
    target: str  # where the container sees it
    read_only: bool


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def command(self) -> list[str]:
        cmd = self.spec.get("command")
        if cmd is None:
            return []
        return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]

    @property
    def environment(self) -> dict[str, str]:
        env = self.spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {str(k): str(v) for k, v in env.items()}

    @property
    def mounts(self) -> list[Mount]:
        out = []
        for item in self.spec.get("volumes") or []:
            assert isinstance(item, str), f"{self.name}: use the short volume syntax"
            parts = item.split(":")
            out.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2]))
        return out

    @property
    def depends_on(self) -> dict[str, str]:
        deps = self.spec.get("depends_on") or {}
        if isinstance(deps, list):
            return {d: "service_started" for d in deps}
        return {k: str((v or {}).get("condition", "service_started")) for k, v in deps.items()}

    @property
    def healthcheck(self) -> dict[str, Any] | None:
        return self.spec.get("healthcheck")

    @property
    def is_doormat(self) -> bool:
        return "build" in self.spec

    @property
    def one_shot(self) -> bool:
        return str(self.spec.get("restart", "no")) == "no"


@dataclass
class Compose:
    raw_text: str
    data: dict[str, Any]
    dotenv: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)

    def one_shots(self) -> list[Service]:
        return [s for s in self.services.values() if s.one_shot]

    def long_running(self) -> list[Service]:
        return [s for s in self.services.values() if not s.one_shot]


def load() -> Compose:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    dotenv = read_env_file()
    data = interpolate(raw, dotenv)
    compose = Compose(text, data, dotenv)
    for name, spec in (data.get("services") or {}).items():
        compose.services[name] = Service(name, spec)
    return compose


def doormat_argv(command: list[str]) -> list[str]:
    """A compose ``doormat ...`` command as this interpreter runs it."""
    assert command and command[0] == "doormat", command
    return [sys.executable, "-m", "doormat", *command[1:]]


def health_argv(test: list[str] | str) -> tuple[str, list[str]]:
    """A compose healthcheck ``test`` -> ("exec", argv) or ("shell", [script])."""
    if isinstance(test, str):
        return "shell", [test]
    kind, *rest = test
    if kind == "CMD":
        return "exec", list(rest)
    if kind == "CMD-SHELL":
        return "shell", [" ".join(rest)]
    raise AssertionError(f"unsupported healthcheck test {test!r}")


class Local:
    """The compose world on this machine: every named volume a folder under ``root``,
    each container's /tmp its own folder, the broker and published container ports on
    free loopback ports."""

    def __init__(self, root: Path, ports: dict[int, int]) -> None:
        self.root = root
        self.ports = ports  # container port -> local port
        (root / "volumes").mkdir(parents=True, exist_ok=True)

    def volume(self, name: str) -> Path:
        path = self.root / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def container_tmp(self, service: str) -> Path:
        path = self.root / "containers" / service / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, service: Service, value: str) -> str:
        targets = [(m.target, self.volume(m.volume)) for m in service.mounts]
        targets.append(("/tmp", self.container_tmp(service.name)))
        for target, local in sorted(targets, key=lambda t: -len(t[0])):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(local) + value[len(target.rstrip("/")):]
        return value

    def rewrite(self, service: Service, value: str) -> str:
        """One argument or environment value, as it must read on this machine."""
        for container_port, local_port in self.ports.items():
            value = value.replace(f"{BROKER_HOST}:{container_port}", f"127.0.0.1:{local_port}")
            value = value.replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{local_port}/")
            value = value.replace(f"-p {container_port} ", f"-p {local_port} ")
        if value.startswith("/"):
            value = self.path(service, value)
        return value

    def argv(self, service: Service, args: list[str]) -> list[str]:
        out = []
        previous = ""
        for arg in args:
            if arg == sys.executable:
                # This machine's Python, not a path inside a container (it may well
                # live under /tmp, which the containers' /tmp would otherwise claim).
                pass
            elif previous == "--port" and arg.isdigit() and int(arg) in self.ports:
                arg = str(self.ports[int(arg)])
            elif previous == "--host" and arg == "0.0.0.0":
                arg = "127.0.0.1"
            else:
                arg = self.rewrite(service, arg)
            out.append(arg)
            previous = arg
        return out

    def environment(self, service: Service) -> dict[str, str]:
        return {k: self.rewrite(service, v) for k, v in service.environment.items()}
