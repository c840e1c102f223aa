"""docker-compose.yml, Dockerfile and .env checked against the code, without Docker.

What `docker compose up` would do with these files cannot run here; what can be checked
is that every piece they name exists and fits: the commands are real `doormat`
subcommands that accept these arguments, every environment variable set is one the code
reads, the broker files mounted are the ones `doormat broker config` writes (and
mosquitto.conf points where compose mounts them), ports, volumes, health checks and
start order are as docs/compose.md promises, and the image installs the package the way
the README does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from doormat.broker.mosquitto import ACL_NAME, CONF_NAME, PASSWD_NAME
from doormat.commands.broker import ACCOUNTS_NAME
from doormat.commands.serve import ENV_VARS
from tests.compose.compose_model import (
    BROKER_HOST,
    DOCKERFILE,
    ENV_FILE,
    HEALTHY,
    ONE_SHOT,
    README,
    ROOT,
    Compose,
    Service,
    health_argv,
    load,
    read_env_file,
    variables_in,
)

SOURCE_PACKAGES = ("doormat", "relay", "clients", "interceptor", "wire")


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load()


def run_doormat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "doormat", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def doormat_services(compose: Compose) -> Iterator[Service]:
    for s in compose.services.values():
        if s.is_doormat:
            yield s


def subcommand_words(command: list[str]) -> list[str]:
    """``["doormat", "broker", "config", "--out", "/x"]`` -> ``["broker", "config"]``."""
    words = []
    for arg in command[1:]:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


_help: dict[str, subprocess.CompletedProcess] = {}


def help_of(words: list[str]) -> subprocess.CompletedProcess:
    """``doormat WORDS --help``, run once per subcommand."""
    key = " ".join(words)
    if key not in _help:
        _help[key] = run_doormat(*words, "--help")
    return _help[key]


def unavailable(words: list[str]) -> str | None:
    """Why ``doormat WORDS --help`` fails (a command not built yet), or None."""
    res = help_of(words)
    if res.returncode == 0:
        return None
    last = (res.stderr.strip().splitlines() or [""])[-1]
    return f"`doormat {' '.join(words)} --help` exits {res.returncode}: {last}"


def parse_in_process(args: list[str], monkeypatch: pytest.MonkeyPatch,
                     env: dict[str, str] | None = None) -> dict[str, object]:
    """``doormat ARGS`` parsed as the command would be (defaults read from ``env``)."""
    from doormat.cli import build_parser

    with monkeypatch.context() as m:
        for var in {v for vs in ENV_VARS.values() for v in vs}:
            m.delenv(var, raising=False)
        for k, v in (env or {}).items():
            m.setenv(k, v)
        ns = build_parser().parse_args(args)
    return {k: v for k, v in vars(ns).items() if k != "func"}


# -- the file itself ----------------------------------------------------------------------


def test_compose_parses_and_has_the_services_of_issue_6(compose: Compose) -> None:
    names = set(compose.services)
    assert {"config", "mosquitto", "relay", "acme", "globex", "tap", "dashboard"} <= names
    bots = [s for s in compose.services.values() if s.command[:3] == ["doormat", "device", "run"]]
    assert len(bots) >= 3, "several device bots"
    assert sum(1 for s in bots if "DOORMAT_BOT_INTERVAL" in s.environment) >= 3
    enterprises = {s.environment.get("DOORMAT_ENTERPRISE") for s in compose.services.values()
                   if s.command[:3] == ["doormat", "enterprise", "serve"]}
    assert enterprises == {"acme", "globex"}


def test_one_comment_per_service(compose: Compose) -> None:
    lines = compose.raw_text.splitlines()
    start = lines.index("services:")
    for i in range(start + 1, len(lines)):
        if re.match(r"[a-z]", lines[i]):
            break  # the next top-level key
        m = re.fullmatch(r"  ([a-z0-9][a-z0-9_-]*):", lines[i])
        if not m:
            continue
        j = i - 1
        while not lines[j].strip():
            j -= 1
        assert lines[j].startswith("  #"), f"service {m.group(1)} has no comment above it"


def test_every_doormat_service_runs_the_one_image_built_by_the_dockerfile(
    compose: Compose,
) -> None:
    images = set()
    for s in doormat_services(compose):
        build = s.spec["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context).resolve() == ROOT, s.name
        if isinstance(build, dict):
            assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
        images.add(s.spec["image"])
        assert s.command[0] == "doormat", f"{s.name}: {s.command}"
    assert len(images) == 1, images
    others = [s for s in compose.services.values() if not s.is_doormat]
    assert [s.name for s in others] == ["mosquitto"]


def test_mosquitto_image_is_a_pinned_2_0_release(compose: Compose) -> None:
    image = compose.services["mosquitto"].spec["image"]
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", image), image


# -- commands -----------------------------------------------------------------------------


def test_every_command_is_a_doormat_subcommand_that_accepts_its_arguments(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = []
    for s in doormat_services(compose):
        words = subcommand_words(s.command)
        why = unavailable(words)
        if why is not None and words == ["dashboard"]:
            continue  # test_dashboard_command says why, as a skip
        assert why is None, f"{s.name}: {why}"
        help_out = help_of(words).stdout
        assert help_out.startswith(f"usage: doormat {' '.join(words)}"), help_out[:200]
        # The whole command line parses (options and values), with the service's env.
        parse_in_process(s.command[1:], monkeypatch, s.environment)
        checked.append(s.name)
    assert "relay" in checked and "config" in checked


def test_dashboard_command(compose: Compose, monkeypatch: pytest.MonkeyPatch) -> None:
    s = compose.services["dashboard"]
    assert s.command[:2] == ["doormat", "dashboard"]
    why = unavailable(["dashboard"])
    if why is not None:
        pytest.skip(f"the dashboard command is not built yet ({why}); compose runs "
                    f"{shlex.join(s.command)}")
    parse_in_process(s.command[1:], monkeypatch, s.environment)
    assert "--host" in s.command and s.command[s.command.index("--host") + 1] == "0.0.0.0"


def test_healthcheck_commands_parse(compose: Compose, monkeypatch: pytest.MonkeyPatch) -> None:
    for s in doormat_services(compose):
        if s.healthcheck is None or s.healthcheck.get("disable"):
            continue
        kind, argv = health_argv(s.healthcheck["test"])
        assert kind == "exec" and argv[:2] == ["doormat", "health"], f"{s.name}: {argv}"
        parse_in_process(argv[1:], monkeypatch, s.environment)


# -- environment --------------------------------------------------------------------------


def _source_reads(var: str) -> list[Path]:
    pattern = re.compile(
        rf"""(environ\.get|getenv|environ\[|_env)\(?\s*["']{re.escape(var)}["']"""
    )
    found = []
    for pkg in SOURCE_PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if pattern.search(path.read_text(encoding="utf-8")):
                found.append(path)
    return found


SAMPLES = {
    "DOORMAT_SEED": "4242",
    "DOORMAT_BOT_INTERVAL": "3.5",
    "DOORMAT_HEALTH_MAX_AGE": "99",
    "DOORMAT_ENTERPRISE": "zeta",
    "DOORMAT_DEVICE": "zed@zeta.phone",
    "DOORMAT_BROKER": "mqtt://sample-host:4242",
}


@pytest.mark.parametrize(
    ("command", "var"),
    [(c, v) for c, vs in ENV_VARS.items() for v in vs],
    ids=[f"{c}:{v}" for c, vs in ENV_VARS.items() for v in vs],
)
def test_each_documented_variable_is_read_by_its_command(
    command: str, var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = command.split()
    without = parse_in_process(args, monkeypatch)
    with_var = parse_in_process(args, monkeypatch, {var: SAMPLES.get(var, "/sample/path")})
    assert with_var != without, f"setting {var} changes nothing in `doormat {command}`"
    assert var in (ROOT / "docs" / "compose.md").read_text(encoding="utf-8"), \
        f"{var} is not documented in docs/compose.md"


def test_every_environment_variable_compose_sets_is_read_by_the_code(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    for s in compose.services.values():
        if not s.environment:
            continue
        assert s.is_doormat, f"{s.name} sets environment for an image we do not build"
        words = " ".join(subcommand_words(s.command))
        known = {**ENV_VARS.get(words, {}), **ENV_VARS["health"]}
        for var, value in s.environment.items():
            if var in known:
                # Read for real: the parsed command (or its health check) sees the value.
                target = words.split() if var in ENV_VARS.get(words, {}) else ["health"]
                without = parse_in_process(target, monkeypatch)
                with_var = parse_in_process(target, monkeypatch, {var: value})
                assert with_var != without, f"{s.name}: {var}={value} changes nothing"
            else:
                assert _source_reads(var), (
                    f"{s.name}: {var} is set but no code reads it (not in "
                    f"doormat.commands.serve.ENV_VARS[{words!r}], no os.environ/getenv of it)"
                )


def test_every_path_a_service_uses_is_on_a_volume_it_mounts(compose: Compose) -> None:
    for s in doormat_services(compose):
        values = [*s.command, *s.environment.values()]
        if s.healthcheck and not s.healthcheck.get("disable"):
            values += health_argv(s.healthcheck["test"])[1]
        targets = [m.target for m in s.mounts] + ["/tmp"]
        for value in values:
            if not value.startswith("/"):
                continue
            assert any(value == t or value.startswith(t + "/") for t in targets), \
                f"{s.name}: {value} is on no volume it mounts ({targets})"


def test_the_broker_url_is_the_broker_service(compose: Compose) -> None:
    urls = set()
    for s in doormat_services(compose):
        for value in [*s.command, *s.environment.values(),
                      *(health_argv(s.healthcheck["test"])[1]
                        if s.healthcheck and not s.healthcheck.get("disable") else [])]:
            urls.update(re.findall(r"mqtt://[^\s\"']+", value))
    assert urls == {f"mqtt://{BROKER_HOST}:1883"}, urls


# -- the broker files ---------------------------------------------------------------------


def _container_to_volume(service: Service, path: str) -> tuple[str, str]:
    for m in sorted(service.mounts, key=lambda m: -len(m.target)):
        if path.startswith(m.target.rstrip("/") + "/"):
            return m.volume, path[len(m.target.rstrip("/")) + 1:]
    raise AssertionError(f"{service.name}: {path} is on no mounted volume")


def test_mounted_broker_files_are_those_broker_config_writes(
    compose: Compose, tmp_path: Path
) -> None:
    config = compose.services["config"]
    cmd = config.command
    assert cmd[:3] == ["doormat", "broker", "config"]
    out_dir = cmd[cmd.index("--out") + 1]
    out_volume = next(m.volume for m in config.mounts if m.target == out_dir)
    assert not any(m.read_only for m in config.mounts if m.target == out_dir)
    # Run the very command, with its output folder here.
    local_out = tmp_path / "config-volume"
    args = [str(local_out) if a == out_dir else a for a in cmd[1:]]
    res = run_doormat(*args)
    assert res.returncode == 0, res.stderr
    written = {p.name for p in local_out.iterdir() if p.is_file()}
    assert written == {CONF_NAME, PASSWD_NAME, ACL_NAME, ACCOUNTS_NAME}
    assert oct(os.stat(local_out / PASSWD_NAME).st_mode & 0o777) == "0o600"

    # Mosquitto reads mosquitto.conf from the volume the config service wrote ...
    mosq = compose.services["mosquitto"]
    conf_path = mosq.command[mosq.command.index("-c") + 1]
    assert _container_to_volume(mosq, conf_path) == (out_volume, CONF_NAME)
    assert all(m.read_only for m in mosq.mounts if m.volume == out_volume)
    # ... and every path inside it resolves to a file written there, or its data volume.
    conf = dict(
        line.split(None, 1) for line in (local_out / CONF_NAME).read_text().splitlines()
        if line.strip() and not line.startswith("#") and " " in line
    )
    assert _container_to_volume(mosq, conf["password_file"]) == (out_volume, PASSWD_NAME)
    assert _container_to_volume(mosq, conf["acl_file"]) == (out_volume, ACL_NAME)
    data_volume, _ = _container_to_volume(mosq, conf["persistence_location"].rstrip("/") + "/x")
    assert data_volume != out_volume
    assert not any(m.read_only for m in mosq.mounts if m.volume == data_volume)
    # The listener is the port the services and the published port use.
    listener_port = int(conf["listener"].split()[0])
    assert listener_port == 1883
    assert any(p.endswith(f":{listener_port}") for p in mosq.spec["ports"])

    # Every service logs in with an account that file holds, from the same volume.
    accounts = {a["username"]: a["role"] for a in
                json.loads((local_out / ACCOUNTS_NAME).read_text())["accounts"]}
    for s in doormat_services(compose):
        paths = [*s.command, *s.environment.values()]
        for value in paths:
            if value.endswith("/" + ACCOUNTS_NAME):
                assert _container_to_volume(s, value) == (out_volume, ACCOUNTS_NAME)
    needed = {"relay": "relay", "tap": "tap"}
    for s in compose.services.values():
        if "DOORMAT_ENTERPRISE" in s.environment:
            needed[s.environment["DOORMAT_ENTERPRISE"]] = "enterprise"
        if "DOORMAT_DEVICE" in s.environment:
            needed[s.environment["DOORMAT_DEVICE"]] = "device"
    for username, role in needed.items():
        assert accounts.get(username) == role, f"{username} ({role}) not in {ACCOUNTS_NAME}"


# -- ports, volumes, health checks, start order -------------------------------------------


def test_ports_are_bound_to_loopback_and_set_in_dotenv(compose: Compose) -> None:
    raw_services = yaml.safe_load(compose.raw_text)["services"]
    dotenv = read_env_file()
    seen = set()
    for name, spec in raw_services.items():
        for port in spec.get("ports") or []:
            assert isinstance(port, str), f"{name}: give ports as strings"
            m = re.fullmatch(r"127\.0\.0\.1:\$\{([A-Z_]+)(?::-\d+)?\}:(\d+)", port)
            assert m, f"{name}: port {port!r} is not 127.0.0.1:${{VAR}}:PORT"
            assert m.group(1) in dotenv, f"{name}: {m.group(1)} is not set in .env"
            assert m.group(1) not in seen
            seen.add(m.group(1))
    assert {"DASHBOARD_PORT", "MQTT_PORT"} <= seen


def test_dotenv_sets_the_project_name_and_every_variable_the_file_uses(
    compose: Compose,
) -> None:
    dotenv = read_env_file(ENV_FILE)
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", dotenv.get("COMPOSE_PROJECT_NAME", ""))
    assert variables_in(compose.raw_text) - {"COMPOSE_PROJECT_NAME"} <= set(dotenv)
    for var in set(dotenv) - {"COMPOSE_PROJECT_NAME"}:
        assert var in variables_in(compose.raw_text), f".env sets {var}, which nothing uses"
    # Published ports of one copy differ from each other.
    ports = [v for k, v in dotenv.items() if k.endswith("_PORT")]
    assert len(ports) == len(set(ports))


def test_only_named_volumes_so_down_v_is_a_full_reset(compose: Compose) -> None:
    declared = set(compose.data.get("volumes") or {})
    used = set()
    for s in compose.services.values():
        for m in s.mounts:
            assert not m.volume.startswith((".", "/", "~")), f"{s.name}: bind mount {m.volume}"
            assert m.volume in declared, f"{s.name}: volume {m.volume} not declared"
            used.add(m.volume)
    assert used == declared
    # Every service that keeps state keeps it in its own volume; the shared ones are
    # written only by their writers (config: the broker files; policy: each enterprise
    # its own key file) and mounted read-only by everyone else.
    shared = {"config": ["config"], "policy": enterprise_services(compose)}
    for s in doormat_services(compose):
        for m in s.mounts:
            owners = [o.name for o in compose.services.values()
                      if any(x.volume == m.volume and not x.read_only for x in o.mounts)]
            if m.volume in shared:
                assert owners == shared[m.volume], f"{m.volume} written by {owners}"
            elif not m.read_only:
                assert owners == [s.name], f"{m.volume} written by {owners}"


def enterprise_services(compose: Compose) -> list[str]:
    return [s.name for s in compose.services.values()
            if s.command[:3] == ["doormat", "enterprise", "serve"]]


def test_the_policy_volume_carries_each_enterprise_archive_key_to_its_devices(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enterprises write the policy volume where --policy-dir says, and every device
    reads it, read-only, at the path its own --policy-dir says (docs/compose.md)."""
    readers = [s for s in compose.services.values()
               if s.command[:3] == ["doormat", "device", "run"]]
    writers = [compose.services[n] for n in enterprise_services(compose)]
    assert readers and writers
    for s in [*writers, *readers]:
        parsed = parse_in_process(s.command[1:], monkeypatch, s.environment)
        policy_dir = str(parsed["policy_dir"])
        mount = next((m for m in s.mounts if m.target == policy_dir), None)
        assert mount is not None, f"{s.name}: --policy-dir {policy_dir} is no mount"
        assert mount.volume == "policy", f"{s.name}: {policy_dir} is {mount.volume}"
        assert mount.read_only == (s in readers), f"{s.name}: policy read_only is wrong"
    # The devices read it at start, so they wait until their enterprise has written it
    # (it does before it reports ready).
    for s in readers:
        for w in writers:
            assert s.depends_on.get(w.name) == HEALTHY, f"{s.name} does not wait for {w.name}"


def test_every_volume_a_doormat_service_writes_is_a_folder_the_image_user_owns(
    compose: Compose,
) -> None:
    """A fresh named volume takes the owner of the folder it is mounted on in the image
    (or root, if the image has none there): the non-root user can write only those the
    Dockerfile creates and chowns to it."""
    steps = " ".join(r for w, r in _dockerfile() if w == "RUN")
    mkdir = re.search(r"mkdir -p ((?:/\S+ ?)+)", steps)
    chown = re.search(r"chown doormat:doormat ((?:/\S+ ?)+)", steps)
    assert mkdir and chown, steps
    owned = set(mkdir.group(1).split()) & set(chown.group(1).split())
    for s in doormat_services(compose):
        for m in s.mounts:
            if not m.read_only:
                assert m.target in owned, f"{s.name}: {m.target} is not chowned in the image"


def test_every_service_has_a_healthcheck_and_conditions_on_its_dependencies(
    compose: Compose,
) -> None:
    for s in compose.long_running():
        hc = s.healthcheck
        assert hc and not hc.get("disable") and hc.get("test"), f"{s.name}: no healthcheck"
        for key in ("interval", "timeout", "retries"):
            assert key in hc, f"{s.name}: healthcheck without {key}"
        talks_to_broker = any("mqtt://" in v for v in [*s.command, *s.environment.values()])
        if talks_to_broker:
            assert s.depends_on, f"{s.name} uses the broker but depends on nothing"
        for dep, condition in s.depends_on.items():
            target = compose.services[dep]
            if target.one_shot:
                assert condition == ONE_SHOT, f"{s.name} -> {dep}: {condition}"
            else:
                assert condition == HEALTHY, f"{s.name} -> {dep}: {condition}"
    for s in compose.one_shots():
        assert s.spec.get("restart") == "no"
        # `docker compose up --wait` counts an exited one-shot as a failure unless a
        # running service waits for it with service_completed_successfully
        # (docker/compose#10596).
        adopters = [o.name for o in compose.long_running() if o.depends_on.get(s.name) == ONE_SHOT]
        assert adopters, f"one-shot {s.name} is adopted by no long-running service"


def test_start_order_has_no_cycle_and_follows_the_data_flow(compose: Compose) -> None:
    order: list[str] = []
    pending = dict(compose.services)
    while pending:
        ready = [n for n, s in pending.items() if set(s.depends_on) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        order += sorted(ready)
        for n in ready:
            del pending[n]

    def before(a: str, b: str) -> bool:
        return order.index(a) < order.index(b)

    assert before("config", "mosquitto") and before("mosquitto", "relay")
    for s in compose.services.values():
        if s.command[:3] == ["doormat", "enterprise", "serve"]:
            assert before("relay", s.name)
        if s.command[:3] == ["doormat", "device", "run"]:
            # a device can publish its keys only once its enterprise enrolled it
            for e in ("acme", "globex"):
                assert s.depends_on.get(e) == HEALTHY, f"{s.name} does not wait for {e}"


def test_image_healthcheck_and_service_healthchecks_use_doormat_health(compose: Compose) -> None:
    heartbeat_services = [s for s in doormat_services(compose)
                          if "DOORMAT_HEALTH_FILE" in s.environment]
    assert heartbeat_services
    for s in heartbeat_services:
        _, argv = health_argv(s.healthcheck["test"])
        assert argv == ["doormat", "health"], f"{s.name}: {argv}"
        assert s.environment["DOORMAT_HEALTH_FILE"].startswith("/tmp/")


# -- the Dockerfile -----------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pip_install_args(command: str) -> list[str]:
    """The arguments of the first ``pip install`` in a shell command line."""
    tokens = shlex.split(command.replace("&&", " && "))
    for i in range(len(tokens) - 1):
        if tokens[i].endswith("pip") and tokens[i + 1] == "install":
            args = []
            for tok in tokens[i + 2:]:
                if tok in ("&&", ";", "|"):
                    break
                args.append(tok)
            # Output and cache options change nothing about what is installed.
            return [a for a in args if a not in ("-q", "--quiet", "--no-cache-dir")]
    raise AssertionError(f"no pip install in {command!r}")


def test_dockerfile_installs_the_package_the_way_the_readme_does() -> None:
    readme = README.read_text(encoding="utf-8")
    setup = readme.split("## Set-up", 1)[1]
    first_block = re.search(r"```sh\n(.*?)```", setup, re.S)
    assert first_block, "README: no sh block under Set-up"
    readme_args = _pip_install_args(first_block.group(1))
    runs = [rest for word, rest in _dockerfile() if word == "RUN" and "pip install" in rest]
    assert len(runs) == 1, runs
    assert _pip_install_args(runs[0]) == readme_args, (runs[0], readme_args)
    # What `.` is: the whole repo, copied to the working directory before the install.
    steps = _dockerfile()
    idx = next(i for i, (w, r) in enumerate(steps) if w == "RUN" and "pip install" in r)
    workdirs = [r for w, r in steps[:idx] if w == "WORKDIR"]
    copies = [r.split() for w, r in steps[:idx] if w == "COPY"]
    assert [".", workdirs[-1]] in copies or [".", "."] in copies, copies


def test_dockerfile_base_user_and_healthcheck() -> None:
    steps = _dockerfile()
    base = next(r for w, r in steps if w == "FROM")
    m = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", base)
    assert m, base
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    minimum = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', pyproject)
    assert minimum and (int(m.group(1)), int(m.group(2))) >= (
        int(minimum.group(1)), int(minimum.group(2)))
    users = [r for w, r in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    health = [r for w, r in steps if w == "HEALTHCHECK"]
    assert len(health) == 1 and '"doormat", "health"' in health[0]
    # uid 1883 = the eclipse-mosquitto image's mosquitto user (see the Dockerfile).
    assert "--uid 1883" in DOCKERFILE.read_text(encoding="utf-8")


def test_dockerignore_keeps_secrets_and_state_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in (".git", ".venv", "accounts.json", "**/*.sqlite", ".env"):
        assert pattern in ignored, pattern
    for needed in ("pyproject.toml", "README.md", "doormat", "relay", "clients",
                   "interceptor", "wire"):
        assert needed not in ignored


# -- the IT policy file -------------------------------------------------------------------


def test_policy_file_round_trip_withdrawal_and_corrupt_files(tmp_path: Path) -> None:
    from doormat.cli import CommandError
    from doormat.services.policy import policy_file, read_policy, write_policy

    key = bytes(range(32))
    path = write_policy(tmp_path, "acme", key)
    assert path == policy_file(tmp_path, "acme") and path.name == "acme.archive.pub"
    assert read_policy(tmp_path, "acme") == key
    assert [p.name for p in tmp_path.iterdir()] == ["acme.archive.pub"]  # no temp left
    assert read_policy(tmp_path, "globex") is None  # no file: no archive
    write_policy(tmp_path, "acme", None)  # now without an archive: withdrawn
    assert read_policy(tmp_path, "acme") is None

    for body, why in [
        ("{not json", "JSONDecodeError"),
        ('{"enterprise": "acme"}', "KeyError"),
        ('{"enterprise": "acme", "archive_public_key": "!!"}', "Error"),
        ('{"enterprise": "globex", "archive_public_key": "' + "A" * 44 + '"}', "globex"),
        ('{"enterprise": "acme", "archive_public_key": "AAAA"}', "3 bytes, not 32"),
        ("[1, 2]", "TypeError"),
    ]:
        path.write_text(body)
        with pytest.raises(CommandError, match=f"corrupt policy {path}.*{why}"):
            read_policy(tmp_path, "acme")


def test_device_run_with_a_corrupt_policy_is_a_one_line_error(tmp_path: Path) -> None:
    res = run_doormat("broker", "config", "--out", str(tmp_path / "cfg"), "--local")
    assert res.returncode == 0, res.stderr
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "acme.archive.pub").write_text('{"enterprise": "acme", "archive_public_key": 1}')
    res = run_doormat("device", "run", "alice@acme.phone", "--state", str(tmp_path / "s"),
                      env={"DOORMAT_ACCOUNTS": str(tmp_path / "cfg" / ACCOUNTS_NAME),
                           "DOORMAT_POLICY_DIR": str(policy)})
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt policy" in lines[0] and "acme.archive.pub" in lines[0], \
        res.stderr
    assert not res.stdout  # it never started
