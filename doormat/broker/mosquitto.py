"""Mosquitto 2: the files that configure it for doormat, and a local broker process.

``write_config`` writes three files into a directory:

* ``mosquitto.conf``: one listener, no anonymous access, the password file and ACL,
  persistence, QoS 1 at most, client id = username, no retained messages;
* ``mosquitto_passwd``: ``username:$7$101$SALT$HASH`` lines, PBKDF2-HMAC-SHA512 with
  101 iterations and a 12-byte salt, the format ``mosquitto_passwd`` 2.0 writes. We hash
  in Python so nothing shells out to ``mosquitto_passwd`` at run time;
* ``acl``: the rules from ``doormat.broker.acl``.

Paths inside ``mosquitto.conf`` are where Mosquitto will *find* the files, which need
not be where we write them: a local run uses the absolute output directory, docker
compose passes the mount points (``/mosquitto/config``, ``/mosquitto/data``).

``MosquittoBroker`` runs ``mosquitto -c`` on a free loopback port for tests and
``doormat demo --broker mosquitto``, with ``restart()`` (persistence survives it) and
``add_account()`` (rewrite the files, SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from infra.files import write_atomic
from wire.b64 import b64decode, b64encode

from . import acl
from .accounts import Account, check_unique
from .limits import DEFAULT, BrokerLimits

CONF_NAME = "mosquitto.conf"
PASSWD_NAME = "mosquitto_passwd"
ACL_NAME = "acl"
LOG_NAME = "mosquitto.log"

# mosquitto_passwd 2.0 defaults (src/password_mosq.c: PW_DEFAULT_ITERATIONS, SALT_LEN).
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

# Queue and flight limits (per client). The relay acknowledges only after a durable
# write (manual acks), so many messages must be allowed in flight to it at once; the
# default of 20 would cap its throughput at 20 per commit. Offline devices and a
# restarting relay need deep queues: the default of 1000 would silently drop message
# 1001 for a relay that is down during a burst.
MAX_INFLIGHT_MESSAGES = 1000
MAX_QUEUED_MESSAGES = DEFAULT.max_queued_messages
# Seconds between saves of the in-memory database. A clean stop (SIGTERM, restart())
# always saves; only a Mosquitto killed with SIGKILL can lose up to this much.
AUTOSAVE_INTERVAL = 30


class MosquittoError(RuntimeError):
    """Mosquitto is missing, failed to start, or died; the message names the cause."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2 ``$7$`` password hash (PBKDF2-HMAC-SHA512)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${b64encode(salt)}${b64encode(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """Check a password against a ``$7$`` line (used by tests and for cache reuse)."""
    try:
        _, seven, iterations, salt_b64, digest_b64 = hashed.split("$")
        if seven != "7":
            return False
        salt = b64decode(salt_b64, "password hash salt")
        want = b64decode(digest_b64, "password hash")
        got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(iterations))
    except ValueError:
        return False
    return secrets.compare_digest(got, want)


HashCache = dict[str, tuple[str, str]]  # username -> (password, its $7$ hash)


def password_file(accounts: Iterable[Account], cache: HashCache | None = None) -> str:
    """The password file body.

    ``cache`` keeps a broker that enrols devices one at a time from rehashing every
    account (with a fresh salt) on every reload.
    """
    lines = []
    for acc in sorted(accounts, key=lambda a: a.username):
        if ":" in acc.username:  # ids never contain ':', but this file would break
            raise ValueError(f"username {acc.username!r} contains ':'")
        cached = cache.get(acc.username) if cache is not None else None
        if cached is not None and secrets.compare_digest(cached[0], acc.password):
            hashed = cached[1]
        else:
            hashed = hash_password(acc.password)
            if cache is not None:
                cache[acc.username] = (acc.password, hashed)
        lines.append(f"{acc.username}:{hashed}")
    return "\n".join(lines) + "\n"


def mosquitto_conf(
    *,
    port: int = 1883,
    bind: str = "0.0.0.0",
    config_dir: str,
    data_dir: str,
    run_as_user: str | None = None,
    limits: BrokerLimits = DEFAULT,
) -> str:
    """The ``mosquitto.conf`` text. ``config_dir``/``data_dir`` are paths as Mosquitto sees
    them; ``limits`` (doormat/broker/limits.py) other than the default are for tests."""
    for name, path in (("config_dir", config_dir), ("data_dir", data_dir)):
        # mosquitto.conf has no quoting: a value ends at the first blank.
        if not path or any(c.isspace() for c in path):
            raise ValueError(f"{name} must be a path without blanks for mosquitto.conf: {path!r}")
    config_dir = config_dir.rstrip("/") or "/"
    data_dir = data_dir.rstrip("/") or "/"
    lines = [
        "# Written by `doormat broker config`; regenerate it rather than edit it.",
        "# See docs/brokers.md. Mosquitto 2.0.",
        "",
        "# -- who may connect (global) -------------------------------------------------------",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {config_dir}/{PASSWD_NAME}",
        f"acl_file {config_dir}/{ACL_NAME}",
        "",
        "# -- delivery (global) --------------------------------------------------------------",
        "# Retained messages are not part of the protocol; a retained PUBLISH disconnects.",
        "retain_available false",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {limits.max_queued_messages}",
        "set_tcp_nodelay true",
        "",
        "# -- limits against a hostile client (docs/brokers.md, \"Limits\") ------------------",
        "# The largest packet (a larger one: disconnected, even before authentication).",
        f"max_packet_size {limits.max_packet_bytes}",
        "# Bytes queued per client beyond those in flight (then further ones are dropped).",
        f"max_queued_bytes {limits.max_queued_bytes}",
        "# All of the broker's heap (then the client whose message does not fit is",
        "# disconnected without a PUBACK).",
        f"memory_limit {limits.memory_limit}",
        "",
        "# -- persistence: sessions, subscriptions and queued QoS 1 messages --------------",
        "persistence true",
        f"persistence_location {data_dir}/",
        f"autosave_interval {AUTOSAVE_INTERVAL}",
        "",
        "# -- logging (stderr is unbuffered, so the log is current when read) -------------",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "",
        "# -- the listener: options below apply to it and must follow this line ----------",
        "# (placed before it they would create a second, default listener on 1883)",
        f"listener {port} {bind}",
        "protocol mqtt",
        "# doormat uses QoS 1 only. A client that publishes at QoS 2 is disconnected;",
        "# a QoS 2 subscription is granted at QoS 1.",
        "max_qos 1",
        "# The client id is replaced by the username, so an account can neither resume",
        "# nor kick off another account's session by choosing its client id.",
        "use_username_as_clientid true",
        "# Connections on this listener (more are closed at once). Mosquitto 2.0 has no",
        "# CONNECT timeout: a connection that sends nothing is closed after about 95 s.",
        f"max_connections {limits.max_connections}",
    ]
    if run_as_user:
        lines += [
            "",
            "# Started as root by a local test run: keep root, or Mosquitto would switch to",
            "# the 'mosquitto' user and be unable to read these files.",
            f"user {run_as_user}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MosquittoFiles:
    directory: Path
    conf: Path
    passwd: Path
    acl: Path


def write_config(
    out_dir: str | os.PathLike[str],
    accounts: Iterable[Account],
    *,
    port: int = 1883,
    bind: str = "0.0.0.0",
    config_dir: str | None = None,
    data_dir: str | None = None,
    run_as_user: str | None = None,
    hash_cache: HashCache | None = None,
    limits: BrokerLimits = DEFAULT,
) -> MosquittoFiles:
    """Write mosquitto.conf, mosquitto_passwd and acl into ``out_dir``.

    ``config_dir``/``data_dir`` default to ``out_dir`` and ``out_dir/data`` (absolute),
    right for a local run; compose passes its mount points instead. The data directory
    is created only when it is local (``data_dir`` not given).
    """
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    accs = check_unique(accounts)
    if data_dir is None:
        (out / "data").mkdir(exist_ok=True)
        data_dir = str(out / "data")
    conf_text = mosquitto_conf(
        port=port,
        bind=bind,
        config_dir=config_dir if config_dir is not None else str(out),
        data_dir=data_dir,
        run_as_user=run_as_user,
        limits=limits,
    )
    files = MosquittoFiles(out, out / CONF_NAME, out / PASSWD_NAME, out / ACL_NAME)
    # Password hashes are not secrets in the way passwords are, but there is no reason
    # for anyone else to read them; the conf and ACL are plain configuration.
    write_atomic(files.passwd, password_file(accs, hash_cache), private=True, make_parents=True)
    write_atomic(files.acl, acl.mosquitto_acl(accs), make_parents=True)
    write_atomic(files.conf, conf_text, make_parents=True)
    return files


def find_mosquitto() -> str:
    """The mosquitto binary, or MosquittoError saying how to install it."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise MosquittoError(
        "mosquitto is not installed (apt-get install -y mosquitto, or brew install mosquitto)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Mosquitto cannot be told to pick one itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the test process dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class MosquittoBroker:
    """``async with MosquittoBroker(accounts, workdir) as b:`` a real Mosquitto on loopback.

    The files live in ``workdir`` (``workdir/data`` holds persistence, ``workdir/
    mosquitto.log`` its log across restarts). The port is chosen once and kept across
    ``restart()`` so clients can reconnect to the same address.
    """

    kind = "mosquitto"

    def __init__(
        self,
        accounts: Iterable[Account],
        workdir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        limits: BrokerLimits = DEFAULT,
    ) -> None:
        self.host = host
        self.limits = limits
        self.port = port or 0
        self._fixed_port = port is not None
        self.workdir = Path(workdir).absolute()
        self._accounts: dict[str, Account] = {a.username: a for a in check_unique(accounts)}
        self._binary = binary
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._hashes: HashCache = {}
        self._dirty = False
        self._reload_task: asyncio.Task[None] | None = None

    # -- addresses and files -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def accounts(self) -> list[Account]:
        return list(self._accounts.values())

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 15) -> str:
        tail = self.log_text().strip().splitlines()[-lines:]
        return " | ".join(tail) if tail else "(empty log)"

    def _write_files(self) -> MosquittoFiles:
        return write_config(
            self.workdir,
            self._accounts.values(),
            port=self.port,
            bind=self.host,
            run_as_user="root" if hasattr(os, "geteuid") and os.geteuid() == 0 else None,
            hash_cache=self._hashes,
            limits=self.limits,
        )

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise MosquittoError("mosquitto already running")
        # A reload queued while the broker was down (add_account) is moot: start writes
        # the files with every account. Left running, it could SIGHUP the new process
        # before Mosquitto installed its handler, which kills it.
        await self._cancel_reload()
        self._dirty = False
        binary = self._binary or find_mosquitto()
        attempts = 1 if (self._fixed_port or self.port) else 3
        for attempt in range(attempts):
            if not self._fixed_port and not self.port:
                self.port = free_port(self.host)
            files = self._write_files()
            try:
                await self._spawn(binary, files.conf)
                return
            except MosquittoError:
                # Another process may have taken the port between free_port() and bind.
                if attempt + 1 < attempts and "Address already in use" in self.log_text():
                    self.port = 0
                    continue
                raise

    async def _spawn(self, binary: str, conf: Path) -> None:
        log_offset = self._log_size()
        with self.log_path.open("ab") as logf:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise MosquittoError(
                    f"mosquitto exited with status {code} on start: {self._log_tail()}"
                )
            if self._log_since(log_offset).find(" running") >= 0 and await self._accepts():
                return
            if time.monotonic() > deadline:
                await self._terminate()
                raise MosquittoError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} within "
                    f"{self._start_timeout:.0f} s: {self._log_tail()}"
                )
            await asyncio.sleep(0.02)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def _accepts(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout=1.0
            )
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _terminate(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGTERM makes Mosquitto save its database before exiting; SIGKILL does not.
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            await asyncio.sleep(0.02)

    async def _cancel_reload(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MosquittoError):
                await self._reload_task
            self._reload_task = None

    async def stop(self) -> None:
        """Stop Mosquitto cleanly (it saves its persistence database on the way out)."""
        await self._cancel_reload()
        await self._terminate()

    async def kill(self) -> None:
        """SIGKILL, as a crash: whatever was not yet autosaved is lost."""
        await self._terminate(kill=True)

    async def restart(self) -> None:
        """Stop and start again on the same port, keeping persistence."""
        await self.stop()
        await self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- accounts at run time ------------------------------------------------------------

    def add_account(self, account: Account) -> None:
        """Add (or replace) an account: rewrite the files and SIGHUP Mosquitto.

        The reload is asynchronous; ``await wait_accounts_applied()`` returns once
        Mosquitto has reread the files. Outside a running event loop the files are
        written and the signal sent at once, without waiting.
        """
        self._accounts[account.username] = account
        self._dirty = True
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._reload_now_nowait()
            return
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.get_running_loop().create_task(self._reload_loop())

    def _reload_now_nowait(self) -> None:
        self._dirty = False
        self._write_files()
        if self.running and self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    async def _reload_loop(self) -> None:
        # Coalesces bursts of add_account (enrolment) into few reloads, and never sends
        # a SIGHUP while Mosquitto is still processing the previous one (a signal
        # arriving mid-reload could be swallowed with the files half-read).
        while self._dirty:
            self._dirty = False
            self._write_files()
            if not self.running or self._proc is None:
                return  # the files are in place; the next start() reads them
            offset = self._log_size()
            self._proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10.0
            # Mosquitto logs this, then rereads the files before it serves anything
            # else (it is single-threaded), so a CONNECT after the line sees them.
            while "Reloading config" not in self._log_since(offset):
                if not self.running:
                    raise MosquittoError(f"mosquitto died while reloading: {self._log_tail()}")
                if time.monotonic() > deadline:
                    raise MosquittoError(f"mosquitto did not reload: {self._log_tail()}")
                await asyncio.sleep(0.01)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    async def wait_accounts_applied(self, timeout: float = 10.0) -> None:
        """Return once every add_account so far is live in Mosquitto."""
        task = self._reload_task
        if task is None:
            return
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)

    async def __aenter__(self) -> MosquittoBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
