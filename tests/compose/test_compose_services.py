"""Every compose service, started here as a local process with the compose file's own
command and environment, answers the compose file's own health check.

No Docker: Mosquitto is the local binary, configured by `doormat broker config` (the
config service's command, plus --local paths and a free port), every named volume is a
folder, every container's /tmp its own folder, `mosquitto:1883` a loopback port. The
services start in the order their `depends_on` conditions allow, each health check
is run until it passes, the device bots must get a message across, and SIGTERM must
stop every service with exit 0.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from doormat.broker.mosquitto import MosquittoError, find_mosquitto
from tests.compose.compose_model import (
    HEALTHY,
    ONE_SHOT,
    ROOT,
    Compose,
    Local,
    Service,
    doormat_argv,
    health_argv,
    load,
)

pytestmark = pytest.mark.mosquitto

START_TIMEOUT = 45.0  # per wave of services, seconds
TRAFFIC_TIMEOUT = 30.0  # for the first message a bot sends to be read by a device
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dashboard_available() -> bool:
    res = subprocess.run([sys.executable, "-m", "doormat", "dashboard", "--help"],
                         capture_output=True, timeout=60, cwd=ROOT)
    return res.returncode == 0


@dataclass
class Running:
    service: Service
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    files: list[IO[bytes]]

    def tail(self) -> str:
        out = self.stdout.read_text(errors="replace").splitlines()[-5:]
        err = self.stderr.read_text(errors="replace").splitlines()[-15:]
        return "\n".join([f"--- {self.service.name} stdout", *out, "--- stderr", *err])


class World:
    """The compose services as local processes."""

    def __init__(self, compose: Compose, root: Path) -> None:
        self.compose = compose
        self.root = root
        self.mqtt_port = free_port()
        self.ports = {1883: self.mqtt_port, 8765: free_port()}
        self.local = Local(root, self.ports)
        self.running: dict[str, Running] = {}
        self.healthy: set[str] = set()
        self.completed: set[str] = set()
        self.t0 = time.monotonic()

    def env(self, service: Service) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOORMAT_")}
        env.update(self.local.environment(service))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, service: Service, argv: list[str]) -> Running:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        out_path, err_path = logs / f"{service.name}.out", logs / f"{service.name}.err"
        out, err = open(out_path, "wb"), open(err_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=self.env(service),
                                cwd=self.local.container_tmp(service.name))
        run = Running(service, proc, out_path, err_path, [out, err])
        self.running[service.name] = run
        return run

    # -- the one-shot config, and Mosquitto ---------------------------------------------

    def run_config(self, service: Service) -> None:
        argv = doormat_argv(service.command)
        argv = self.local.argv(service, argv)
        # As the config service, but with paths and the listener of this machine.
        argv += ["--local", "--bind", "127.0.0.1", "--port", str(self.mqtt_port)]
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env(service),
                             timeout=60)
        assert res.returncode == 0, res.stderr
        self.completed.add(service.name)

    def start_mosquitto(self, service: Service) -> None:
        cmd = service.command
        conf = Path(self.local.path(service, cmd[cmd.index("-c") + 1]))
        if os.geteuid() == 0:
            # As root Mosquitto would switch to the `mosquitto` user, which cannot read
            # our files (in the image, uid 1883 owns them; here root does).
            with conf.open("a") as f:
                f.write("user root\n")
        self.spawn(service, [find_mosquitto(), "-c", str(conf)])

    # -- health checks ------------------------------------------------------------------

    def health_command(self, service: Service) -> tuple[list[str], bool] | None:
        """(argv, via shell) of the service's own health check, or None if it cannot run
        here (mosquitto_sub missing)."""
        kind, args = health_argv(service.healthcheck["test"])
        if kind == "shell":
            script = self.local.rewrite(service, args[0])
            if shutil.which(script.split()[0]) is None:
                return None
            return ["sh", "-c", script], True
        if args[0] == "doormat":
            return self.local.argv(service, doormat_argv(args)), False
        return self.local.argv(service, args), False

    def check_health(self, names: list[str]) -> dict[str, tuple[int, str]]:
        """Run the health checks of ``names`` in parallel: name -> (exit code, output)."""
        procs = {}
        for name in names:
            service = self.compose.services[name]
            command = self.health_command(service)
            if command is None:
                procs[name] = None
                continue
            procs[name] = subprocess.Popen(command[0], stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, env=self.env(service))
        results = {}
        for name, proc in procs.items():
            if proc is None:
                results[name] = (0, "skipped: mosquitto_sub not installed; port check instead")
                if name == "mosquitto":
                    with socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=2):
                        pass
                continue
            out, _ = proc.communicate(timeout=30)
            results[name] = (proc.returncode, out.decode(errors="replace").strip())
        return results

    def looks_ready(self, name: str) -> bool:
        """A cheap in-process sign that the health check may now pass (so that the
        check itself, a Python process per run, is not run in a tight loop)."""
        service = self.compose.services[name]
        env = self.local.environment(service)
        if "DOORMAT_HEALTH_FILE" in env:
            try:
                return json.loads(Path(env["DOORMAT_HEALTH_FILE"]).read_text())["status"] == "ready"
            except (OSError, ValueError, KeyError):
                return False
        if service.is_doormat and service.command[:2] == ["doormat", "relay"]:
            return "relay.connected" in self.running[name].stdout.read_text(errors="replace")
        port = {"mosquitto": self.mqtt_port, "dashboard": self.ports[8765]}.get(name)
        if port is not None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False
        return True

    def check_health_in_process(self, name: str) -> tuple[int, str]:
        """The service's `doormat health ...` check, parsed and run in this process."""
        from unittest import mock

        from doormat.cli import CommandError, build_parser

        command, shell = self.health_command(self.compose.services[name]) or ([], True)
        if shell:
            return self.check_health([name])[name]  # mosquitto: not a doormat command
        args = command[command.index("doormat") + 1:]
        env = {k: v for k, v in self.env(self.compose.services[name]).items()}
        with mock.patch.dict(os.environ, env, clear=True):
            parsed = build_parser().parse_args(args)
        try:
            parsed.func(parsed)
        except CommandError as exc:
            return exc.exit_code, str(exc)
        return 0, "healthy"

    def wait_healthy(self, names: list[str], timeout: float = START_TIMEOUT) -> None:
        """Wait until each service's own health check passes."""
        deadline = time.monotonic() + timeout
        last: dict[str, tuple[int, str]] = {}
        pending = list(names)
        while pending:
            for name in pending:
                run = self.running[name]
                if run.proc.poll() is not None:
                    pytest.fail(f"{name} exited with {run.proc.returncode} before it was "
                                f"healthy\n{run.tail()}")
            candidates = [n for n in pending if self.looks_ready(n)]
            if candidates:
                last.update(self.check_health(candidates))
            pending = [n for n in pending if last.get(n, (1, ""))[0] != 0]
            if not pending:
                break
            if time.monotonic() > deadline:
                details = "\n".join(f"{n}: {last.get(n)}\n{self.running[n].tail()}"
                                    for n in pending)
                pytest.fail(f"not healthy after {timeout:.0f} s: {pending}\n{details}")
            time.sleep(0.1 if not candidates else 0.3)
        self.healthy.update(names)

    # -- start in dependency order ------------------------------------------------------

    def ready_to_start(self, service: Service) -> bool:
        for dep, condition in service.depends_on.items():
            if condition == ONE_SHOT and dep not in self.completed:
                return False
            if condition == HEALTHY and dep not in self.healthy:
                return False
        return True

    def start_all(self, services: list[Service]) -> list[list[str]]:
        waves = []
        todo = {s.name: s for s in services}
        while todo:
            wave = [s for s in todo.values() if self.ready_to_start(s)]
            assert wave, f"cannot start {sorted(todo)}: dependencies never satisfied"
            for s in wave:
                del todo[s.name]
                if s.one_shot:
                    self.run_config(s)
                elif s.name == "mosquitto":
                    self.start_mosquitto(s)
                else:
                    self.spawn(s, self.local.argv(s, doormat_argv(s.command)))
            long_running = [s.name for s in wave if not s.one_shot]
            if long_running:
                self.wait_healthy(long_running)
            waves.append(sorted(s.name for s in wave))
            print(f"{time.monotonic() - self.t0:5.1f} s: {waves[-1]} healthy", flush=True)
        return waves

    def stop(self, names: list[str], timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM to each, then their exit codes (None: had to be killed)."""
        for name in names:
            if self.running[name].proc.poll() is None:
                self.running[name].proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name in names:
            run = self.running[name]
            try:
                codes[name] = run.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
                codes[name] = None
            for f in run.files:
                f.close()
        return codes

    def kill_all(self) -> None:
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
            for f in run.files:
                f.close()

    def events(self, name: str) -> Iterator[dict[str, object]]:
        for line in self.running[name].stdout.read_text(errors="replace").splitlines():
            yield json.loads(line)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    try:
        find_mosquitto()
    except MosquittoError as exc:
        pytest.skip(str(exc))
    w = World(load(), tmp_path)
    try:
        yield w
    finally:
        w.kill_all()


def test_every_service_started_locally_answers_its_health_check(world: World) -> None:
    compose = world.compose
    services = list(compose.services.values())
    skipped = []
    if not dashboard_available():
        services = [s for s in services if s.name != "dashboard"]
        skipped.append("dashboard (doormat dashboard not built yet)")
    started = time.monotonic()
    waves = world.start_all(services)
    assert "config" in waves[0]
    assert ["mosquitto"] in waves

    # Healthy means working: the bots' messages cross the broker and the relay and are
    # read by a device of another process.
    bots = [s.name for s in services if s.environment.get("DOORMAT_BOT_INTERVAL")]
    devices = [s.name for s in services if s.command[:3] == ["doormat", "device", "run"]]
    deadline = time.monotonic() + TRAFFIC_TIMEOUT
    received: list[dict[str, object]] = []
    while not received:
        received = [e for d in devices for e in world.events(d) if e["kind"] == "device.received"]
        if time.monotonic() > deadline:
            tails = "\n".join(world.running[d].tail() for d in bots)
            pytest.fail(f"no device read any bot's message in {TRAFFIC_TIMEOUT:.0f} s\n{tails}")
        time.sleep(0.3)
    print(f"{time.monotonic() - world.t0:5.1f} s: a device read a bot's message", flush=True)
    assert all(re.search(r"\(\S+@\S+ #\d+\)$", str(e["text"])) for e in received), received
    for name in ("acme", "globex"):
        assert any(e["kind"] == "enterprise.enrolled" for e in world.events(name))
    relay_cmd = compose.services["relay"].command
    if relay_cmd[relay_cmd.index("--li") + 1] == "blanket":
        # The tap got the mirror of what the relay routed, and read none of it.
        deadline = time.monotonic() + 10
        while not (captured := [e for e in world.events("tap") if e["kind"] == "tap.captured"]):
            assert time.monotonic() < deadline, world.running["tap"].tail()
            time.sleep(0.3)
        assert not any(e["readable"] for e in captured), captured

    # Every service is still healthy by its own check (run in-process: the same code
    # as the `doormat health` command, without eleven more interpreters starting).
    running = [s.name for s in services if not s.one_shot]
    verdicts = {n: world.check_health_in_process(n) for n in running}
    assert all(code == 0 for code, _ in verdicts.values()), verdicts

    # SIGTERM: a clean stop, exit 0, the broker last; every stdout line is a JSON event.
    heartbeats = {s.name: s for s in services if "DOORMAT_HEALTH_FILE" in s.environment}
    stop_waves = [[n for n in wave if n in running and n != "mosquitto"]
                  for wave in reversed(waves)] + [["mosquitto"]]
    for wave in stop_waves:
        for name, code in world.stop(wave).items():
            assert code == 0, f"{name} exited {code} on SIGTERM\n{world.running[name].tail()}"
            if name in heartbeats:
                events = list(world.events(name))
                assert events[-1]["kind"] == "service.stopped", events[-1]
    # ... and a stopped service is unhealthy by the same check.
    after = {n: world.check_health_in_process(n) for n in heartbeats}
    assert all(code == 1 for code, _ in after.values()), after
    assert all("stopped" in out for _, out in after.values()), after
    elapsed = time.monotonic() - started
    print(f"started in waves {waves}; total {elapsed:.1f} s; skipped: {skipped or 'none'}")


def test_acme_devices_journal_to_acme_archive_through_the_policy_volume(world: World) -> None:
    """The scoped-CC source works in compose: acme pushes its archive key into the
    `policy` volume, its devices read it there and journal, and acme's archive opens
    what they sealed (a real decryption with the key kept in its store)."""
    from clients.archive import Archive
    from clients.enterprise import archive_store

    compose = world.compose
    wanted = {"config", "mosquitto", "relay", "acme", "globex", "alice-phone", "bob-phone"}
    world.start_all([s for s in compose.services.values() if s.name in wanted])

    acme = compose.services["acme"]
    policy_dir = Path(world.local.path(acme, acme.environment["DOORMAT_POLICY_DIR"]))
    pushed = json.loads((policy_dir / "acme.archive.pub").read_text())
    assert pushed["enterprise"] == "acme"
    assert not (policy_dir / "globex.archive.pub").exists(), "globex runs no archive"
    for name in ("alice-phone", "bob-phone"):
        device = compose.services[name]
        # The devices see the very folder acme wrote, through their read-only mount.
        assert world.local.path(device, device.environment["DOORMAT_POLICY_DIR"]) == \
            str(policy_dir)
        starting = next(e for e in world.events(name) if e["kind"] == "service.starting")
        assert starting["policy"] == "journals to acme's archive", starting
        assert starting["archive"] == "acme"

    deadline = time.monotonic() + TRAFFIC_TIMEOUT
    archived: list[dict[str, object]] = []
    while not archived:
        archived = [e for e in world.events("acme") if e["kind"] == "enterprise.archived"
                    and re.search(r"\(\S+@acme\.phone #\d+\)$", str(e["text"]))]
        if time.monotonic() > deadline:
            tails = "\n".join(world.running[n].tail() for n in ("acme", "alice-phone"))
            pytest.fail(f"acme archived no bot message in {TRAFFIC_TIMEOUT:.0f} s\n{tails}")
        time.sleep(0.3)
    print(f"{time.monotonic() - world.t0:5.1f} s: acme archived {archived[0]}", flush=True)

    running = ["alice-phone", "bob-phone", "acme", "globex", "relay", "mosquitto"]
    for name, code in world.stop(running).items():
        assert code == 0, f"{name} exited {code} on SIGTERM\n{world.running[name].tail()}"
    # acme's store, reopened as a restarted acme would: the same key it pushed, and the
    # records it opened are there.
    state = Path(world.local.path(acme, acme.environment["DOORMAT_STATE"]))
    archive = Archive("acme", archive_store(state, "acme"))
    try:
        assert base64.b64encode(archive.public_key).decode() == pushed["archive_public_key"]
        texts = {r.text for r in archive.records()}
        assert {str(e["text"]) for e in archived} <= texts
    finally:
        archive.close()


def test_health_fails_clearly_when_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from doormat.cli import main

    for var in [v for v in os.environ if v.startswith("DOORMAT_")]:
        monkeypatch.delenv(var)

    def health(*args: str) -> tuple[int, str]:
        code = main(["health", *args])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = health()
    assert code == 1 and "nothing to check" in out
    monkeypatch.setenv("DOORMAT_HEALTH_FILE", str(tmp_path / "none.json"))
    code, out = health()
    assert code == 1 and "no heartbeat" in out
    monkeypatch.delenv("DOORMAT_HEALTH_FILE")
    stale = tmp_path / "stale.json"
    record = {"service": "device x", "status": "ready", "pid": os.getpid(),
              "t": int(time.time() * 1000) - 60_000}
    stale.write_text(json.dumps(record))
    code, out = health("--file", str(stale))
    assert code == 1 and "60 s old" in out
    code, out = health("--file", str(stale), "--max-age", "120")
    assert code == 0 and "device x ready" in out
    stale.write_text(json.dumps({**record, "status": "disconnected"}))
    code, out = health("--file", str(stale), "--max-age", "120")
    assert code == 1 and "disconnected" in out
    port = free_port()
    code, out = health("--process", "relay", "--broker", f"mqtt://127.0.0.1:{port}")
    assert code == 1 and ("not connected" in out or "no `doormat relay`" in out)
    code, out = health("--url", f"http://127.0.0.1:{port}/")
    assert code == 1 and "refused" in out.lower()


def test_process_check_matches_the_command_line_forms() -> None:
    from doormat.commands.health import _argv_runs, _hex_address

    assert _argv_runs(["/usr/local/bin/python3.11", "/usr/local/bin/doormat", "relay",
                       "--db", "x"], ["relay"])
    assert _argv_runs([sys.executable, "-m", "doormat", "relay"], ["relay"])
    assert not _argv_runs([sys.executable, "-m", "doormat", "health", "--process", "relay"],
                          ["relay"])
    assert not _argv_runs(["python", "-m", "relay"], ["relay"])
    assert _argv_runs(["doormat", "tap", "run"], ["tap", "run"])
    if sys.byteorder == "little":
        assert _hex_address("0100007F:075B") == ("127.0.0.1", 1883)
        assert _hex_address("0000000000000000FFFF00000100007F:075B") == ("127.0.0.1", 1883)
