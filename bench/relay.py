"""End-to-end throughput and latency through Mosquitto and the relay, against a null relay.

    python -m bench.relay [--quick] [--json FILE] [--profile DIR]

What is measured, all in one run on one Mosquitto 2 broker (loopback):

* **throughput**: E2EE messages per second from sending devices through the broker and
  the relay (``python -m relay``, its own process, as deployed: SQLite store, JSON-lines
  event log) to receiving devices, which decrypt them (QoS 1, 512-byte plaintexts, many
  concurrent conversations, a closed loop of a few messages in flight per conversation).
  The same clients then run through the *null relay* (``bench/nullrelay.py``), and the
  two alternate, several times; the figure is the median of each and the ratio the
  median of the paired ratios. Two kinds of client (``bench/clients.py``): ``device``
  (the product's ``clients.device.Device``) and ``core`` (the E2EE core driven
  directly, no client store: loads the relay harder than the real client stack can).
* **scaling**: the relay as 1, 2 and 3 workers sharing the load with an MQTT shared
  subscription (``$share/GROUP/doormat/out/+/+`` with a random GROUP, one broker account
  with role relay each, one SQLite file).
* **latency**: p50/p90/p99 from send to decrypted plaintext at a fixed offered load
  (open loop, 500 messages/s by default), through the relay and through the null relay.

Counts and times are bounded (a few seconds per run, a drain timeout after each); every
run also checks that every message sent arrived (``lost``) and counts duplicates seen by
the application (must be 0: devices de-duplicate). CPU seconds used by each process
(broker, relay or null relay, client workers) during each run are recorded, which is
what tells where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psutil

from bench.clients import WorkerConfig, worker_main
from bench.common import ROOT, machine, median, percentile, rounded, write_json
from infra.transport import Transport
from wire import strictjson

PY = sys.executable


@dataclass
class Plan:
    conversations: int
    window: int
    duration: float
    warmup: float
    repeats: int
    workers: tuple[int, ...]
    scaling_repeats: int
    latency_rates: tuple[float, ...]  # the first is the target's load
    latency_duration: float
    client_procs: int
    modes: tuple[str, ...]


FULL = Plan(
    conversations=64,
    window=4,
    duration=6.0,
    warmup=1.5,
    repeats=3,
    workers=(1, 2, 3),
    scaling_repeats=2,
    latency_rates=(500.0, 200.0),
    latency_duration=6.0,
    client_procs=2,
    modes=("core", "device"),
)
QUICK = Plan(
    conversations=8,
    window=2,
    duration=1.5,
    warmup=0.4,
    repeats=1,
    workers=(1, 2),
    scaling_repeats=1,
    latency_rates=(200.0,),
    latency_duration=1.5,
    client_procs=1,
    modes=("core", "device"),
)


# -- a directory client for enrolment and probes ------------------------------------------


class DirClient:
    def __init__(self, owner: str, password: str, host: str, port: int) -> None:
        self.owner = owner
        self.transport = Transport(
            host,
            port,
            username=owner,
            password=password,
            identifier=owner,
            subscriptions=[f"doormat/in/{owner}/dir"],
            clean_session=True,
            max_in_flight=100_000,
        )
        self.answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DirClient:
        self.reader = asyncio.create_task(self._read())
        await self.transport.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        await self.transport.stop()

    async def _read(self) -> None:
        async for m in self.transport.messages():
            m.ack()
            with contextlib.suppress(ValueError):  # strictjson's errors are ValueErrors
                answer = strictjson.loads_object(m.payload, "answer", max_bytes=1 << 20)
                fut = self.answers.pop(str(answer.get("req")), None)
                if fut is not None and not fut.done():
                    fut.set_result(answer)

    async def request(self, op: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        req = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[req] = fut
        await self.transport.publish(
            f"doormat/out/{self.owner}/dir",
            json.dumps({"req": req, "op": op, **fields}).encode(),
        )
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self.answers.pop(req, None)


# -- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


class Procs:
    """Relay workers or null relays: started together, stopped together."""

    def __init__(self, kind: str, popens: list[subprocess.Popen[bytes]], events: list[Path]):
        self.kind = kind
        self.popens = popens
        self.events = events

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.popens]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    async def stop(self, timeout: float = 20.0) -> list[int | None]:
        for p in self.popens:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.popens) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for p in self.popens:
            if p.poll() is None:
                p.kill()
                p.wait()
        return [p.returncode for p in self.popens]


class Env:
    """One Mosquitto, the accounts, and the relay's database template."""

    RELAY_ACCOUNTS = ("relay", "relay-2", "relay-3", "relay-4")

    def __init__(self, workdir: Path, plan: Plan) -> None:
        self.dir = workdir
        self.plan = plan
        self.broker: Any = None
        self.accounts: dict[str, Any] = {}
        self.pairs: dict[str, list[tuple[int, str, str, str, str]]] = {}
        # a client worker process and this end of its pipe
        self.workers: dict[str, list[tuple[BaseProcess, Connection[Any, Any]]]] = {}
        self.template = workdir / "template"

    async def start(self) -> None:
        from doormat.broker import MosquittoBroker
        from doormat.broker.accounts import new_account

        accs = [new_account(r, "relay") for r in self.RELAY_ACCOUNTS]
        accs += [new_account("acme", "enterprise"), new_account("globex", "enterprise")]
        for mode in self.plan.modes:
            m = {"core": "c", "device": "d"}[mode]
            pairs = []
            for i in range(self.plan.conversations):
                s = new_account(f"{m}s{i:04d}@acme.phone", "device")
                r = new_account(f"{m}r{i:04d}@globex.phone", "device")
                accs += [s, r]
                pairs.append((i, s.username, s.password, r.username, r.password))
            self.pairs[mode] = pairs
        self.accounts = {a.username: a for a in accs}
        for name in self.RELAY_ACCOUNTS:
            (self.dir / f"{name}.pw").write_text(self.accounts[name].password + "\n")
        self.broker = MosquittoBroker(accs, self.dir / "mosquitto")
        await self.broker.start()

    async def stop(self) -> None:
        for ws in self.workers.values():
            for _proc, conn in ws:
                with contextlib.suppress(Exception):
                    conn.send(("stop", {}))
            for proc, _ in ws:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
        if self.broker is not None:
            await self.broker.stop()

    # -- relays ------------------------------------------------------------------------

    def _db_dir(self, tag: str) -> Path:
        d = self.dir / "db" / tag
        d.mkdir(parents=True, exist_ok=True)
        return d

    async def wipe_sessions(self) -> None:
        """Log in once with a clean session as every relay account: whatever an earlier
        run's session had queued at the broker is gone."""
        for name in self.RELAY_ACCOUNTS:
            async with Transport(
                self.broker.host,
                self.broker.port,
                username=name,
                password=self.accounts[name].password,
                identifier=name,
                clean_session=True,
            ):
                pass

    async def start_relays(
        self, k: int, db_dir: Path, *, template: bool = True, profile: Path | None = None
    ) -> Procs:
        if template and self.template.exists():
            for f in self.template.iterdir():
                shutil.copy2(f, db_dir / f.name)
        await self.wipe_sessions()
        # Workers share a secret group: the relay refuses a guessable one (relay/main.py).
        sub = "doormat/out/+/+" if k == 1 else f"$share/{secrets.token_hex(16)}/doormat/out/+/+"
        popens, events = [], []
        for i in range(k):
            name = self.RELAY_ACCOUNTS[i]
            ev = db_dir / f"{name}.events.jsonl"
            events.append(ev)
            with open(db_dir / f"{name}.stderr", "wb") as stderr:
                popens.append(
                    subprocess.Popen(
                        [
                            PY,
                            "-m",
                            "relay",
                            "--broker",
                            self.broker.url,
                            "--password-file",
                            str(self.dir / f"{name}.pw"),
                            "--db",
                            str(db_dir / "relay.sqlite"),
                            "--events",
                            str(ev),
                            "--username",
                            name,
                            "--subscription",
                            sub,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                )
        procs = Procs("relay", popens, events)
        deadline = time.monotonic() + 30
        for ev in events:
            while not (ev.exists() and b'"relay.connected"' in ev.read_bytes()):
                if time.monotonic() > deadline or any(p.poll() is not None for p in popens):
                    await procs.stop()
                    raise RuntimeError(f"relay did not start: {(db_dir / 'relay.stderr')}")
                await asyncio.sleep(0.05)
        await self._probe()
        return procs

    async def start_null(self, k: int) -> Procs:
        await self.wipe_sessions()
        sub = "doormat/out/+/+" if k == 1 else "$share/null/doormat/out/+/+"
        popens = []
        for i in range(k):
            name = self.RELAY_ACCOUNTS[i]
            popens.append(
                subprocess.Popen(
                    [
                        PY,
                        "-m",
                        "bench.nullrelay",
                        "--broker",
                        self.broker.url,
                        "--password-file",
                        str(self.dir / f"{name}.pw"),
                        "--username",
                        name,
                        "--subscription",
                        sub,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    cwd=ROOT,
                )
            )
        procs = Procs("null", popens, [])
        loop = asyncio.get_running_loop()
        for p in popens:
            assert p.stdout is not None
            line = await asyncio.wait_for(loop.run_in_executor(None, p.stdout.readline), 30)
            if line.strip() != b"ready":
                await procs.stop()
                raise RuntimeError(f"null relay did not start: {line!r}")
        await asyncio.sleep(0.2)
        return procs

    async def _probe(self) -> None:
        """A directory request answered: the relay reads its subscription."""
        async with DirClient(
            "globex", self.accounts["globex"].password, self.broker.host, self.broker.port
        ) as d:
            for _ in range(50):
                with contextlib.suppress(TimeoutError):
                    await d.request("sync", timeout=1.0)  # refused (not a device): an answer
                    break
        await asyncio.sleep(0.2)

    # -- clients -----------------------------------------------------------------------

    async def enrol_all(self) -> None:
        for ent in ("acme", "globex"):
            async with DirClient(
                ent, self.accounts[ent].password, self.broker.host, self.broker.port
            ) as d:
                devices = [n for n in self.accounts if n.endswith(f"@{ent}.phone")]
                answers = await asyncio.gather(
                    *(d.request("enrol", user=dev.rsplit(".", 1)[0], device=dev) for dev in devices)
                )
                bad = [a for a in answers if not a.get("ok")]
                if bad:
                    raise RuntimeError(f"enrolment refused: {bad[0]}")

    async def start_workers(self, mode: str) -> dict[str, Any]:
        ctx = mp.get_context("spawn")
        pairs = self.pairs[mode]
        n = min(self.plan.client_procs, len(pairs))
        ws: list[tuple[BaseProcess, Connection[Any, Any]]] = []
        for w in range(n):
            wd = self.dir / f"clients-{mode}-{w}"
            wd.mkdir(exist_ok=True)
            cfg = WorkerConfig(
                mode="core" if mode == "core" else "device",
                host=self.broker.host,
                port=self.broker.port,
                pairs=pairs[w::n],
                workdir=str(wd),
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, cfg), daemon=True)
            proc.start()
            ws.append((proc, parent))
        self.workers[mode] = ws
        results = await self.call(mode, "setup")
        return {"workers": n, "setup": results}

    async def call(self, mode: str, cmd: str, timeout: float = 300, **args: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        ws = self.workers[mode]
        for _, conn in ws:
            conn.send((cmd, args))
        out = []
        for proc, conn in ws:
            ready = await loop.run_in_executor(None, conn.poll, timeout)
            if not ready:
                raise RuntimeError(f"client worker {proc.pid} did not answer {cmd!r}")
            status, result = conn.recv()
            if status != "ok":
                raise RuntimeError(f"client worker {proc.pid} failed {cmd!r}:\n{result}")
            out.append(result)
        return out

    def worker_pids(self, mode: str) -> list[int]:
        return [p.pid for p, _ in self.workers[mode] if p.pid is not None]


def pending_count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(
            con.execute("SELECT count(*) FROM envelopes WHERE acked_ms IS NULL").fetchone()[0]
        )
    finally:
        con.close()


# -- one measured run ---------------------------------------------------------------------


async def measured_run(
    env: Env,
    *,
    mode: str,
    kind: str,
    k: int,
    tag: str,
    rate: float | None,
    duration: float,
    warmup: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    plan = env.plan
    db_dir = env._db_dir(tag)
    procs = await (env.start_relays(k, db_dir) if kind == "relay" else env.start_null(k))
    spy = None
    try:
        pids = {"broker": [env.broker.pid], kind: procs.pids, "clients": env.worker_pids(mode)}
        cpu0 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        start_at = time.monotonic() + 0.3
        pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PY).parent))
        if profile is not None and pyspy:
            profile.mkdir(parents=True, exist_ok=True)
            spy = [
                subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "-p",
                        str(pid),
                        "-r",
                        "250",
                        "-d",
                        str(int(duration)),
                        "-f",
                        "speedscope",
                        "-o",
                        str(profile / f"{tag}.{what}.speedscope.json"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for what, pid in ((kind, procs.pids[0]), ("client", env.worker_pids(mode)[0]))
            ]
        t0 = time.monotonic()
        results = await env.call(
            mode,
            "run",
            tag=tag,
            start_at=start_at,
            duration=duration,
            window=plan.window,
            # The offered rate is the total: each client process takes its share.
            rate=rate / len(env.workers[mode]) if rate else None,
            drain=30.0,
        )
        wall = time.monotonic() - t0
        cpu1 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
    finally:
        for sp in spy or ():
            with contextlib.suppress(subprocess.TimeoutExpired):
                sp.wait(duration + 10)
        codes = await procs.stop()
    recv = [r for res in results for r in res["recv"]]
    lo_ns = int((start_at + warmup) * 1e9)
    hi_ns = int((start_at + duration) * 1e9)
    window_s = duration - warmup
    in_window = [lat for t, lat in recv if lo_ns <= t < hi_ns]
    # Latency of what was *sent* in the steady part of the run.
    lat_steady = [lat for t, lat in recv if t - lat * 1e6 >= lo_ns and t - lat * 1e6 < hi_ns]
    sent = sum(r["sent"] for r in results)
    out = {
        "tag": tag,
        "mode": mode,
        "relay": kind,
        "workers": k,
        "offered_rate": rate,
        "conversations": plan.conversations,
        "window": plan.window if rate is None else None,
        "duration_s": duration,
        "measured_s": window_s,
        "sent": sent,
        "received": sum(r["received"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "duplicates_at_app": sum(r["duplicates"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:5],
        "msgs_per_s": round(len(in_window) / window_s, 1),
        "latency_ms": {
            "p50": rounded(percentile(lat_steady, 50), 2),
            "p90": rounded(percentile(lat_steady, 90), 2),
            "p99": rounded(percentile(lat_steady, 99), 2),
            "max": rounded(max(lat_steady), 2) if lat_steady else None,
            "n": len(lat_steady),
        },
        "cpu_s": {name: round(cpu1[name] - cpu0[name], 2) for name in cpu0},
        "wall_s": round(wall, 2),
        "exit_codes": codes,
    }
    # CPU per message, the diagnostic: which process pays what.
    total = out["received"] or 1
    out["cpu_us_per_msg"] = {name: round(v / total * 1e6, 1) for name, v in out["cpu_s"].items()}
    return out


def _say(msg: str) -> None:
    print(msg, flush=True)


def _brief(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = " ".join(f"{k}={v:.0f}" for k, v in r["cpu_us_per_msg"].items())
    return (
        f"  {r['mode']:6} {r['relay']:5} x{r['workers']} "
        f"{'rate ' + str(int(r['offered_rate'])) if r['offered_rate'] else 'closed':>9}: "
        f"{r['msgs_per_s']:8.1f} msg/s  p50 {lat['p50']} p99 {lat['p99']} ms  "
        f"lost {r['lost']} dup {r['duplicates_at_app']}  cpu us/msg {cpu}"
    )


async def run(plan: Plan, profile: Path | None = None, keep: Path | None = None) -> dict[str, Any]:
    started = time.monotonic()
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="doormat-bench-", dir=keep))
    env = Env(tmp, plan)
    runs: list[dict[str, Any]] = []
    setup: dict[str, Any] = {}
    try:
        await env.start()
        # Set-up through a real relay: enrolment, keys, sessions, warm-up.
        setup_db = env._db_dir("setup")
        procs = await env.start_relays(1, setup_db, template=False)
        try:
            await env.enrol_all()
            for mode in plan.modes:
                setup[mode] = await env.start_workers(mode)
            deadline = time.monotonic() + 30
            while pending_count(setup_db / "relay.sqlite") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await procs.stop()
        env.template.mkdir()
        for f in setup_db.iterdir():
            if f.name.startswith("relay.sqlite") and not f.name.endswith("-shm"):
                shutil.copy2(f, env.template / f.name)

        n = 0

        async def one(
            mode: str,
            kind: str,
            k: int,
            rate: float | None,
            duration: float,
            warmup: float,
            prof: bool = False,
        ) -> dict[str, Any]:
            nonlocal n
            n += 1
            tag = f"r{n:03d}"
            r = await measured_run(
                env,
                mode=mode,
                kind=kind,
                k=k,
                tag=tag,
                rate=rate,
                duration=duration,
                warmup=warmup,
                profile=(profile / f"{mode}-{kind}-x{k}") if prof and profile else None,
            )
            runs.append(r)
            _say(_brief(r))
            return r

        # Throughput, 1 worker, relay and null alternating (ABAB...), each mode.
        for mode in plan.modes:
            for rep in range(plan.repeats):
                order = ("relay", "null") if rep % 2 == 0 else ("null", "relay")
                for kind in order:
                    await one(mode, kind, 1, None, plan.duration, plan.warmup, prof=(rep == 0))
        # Scaling with shared subscriptions (core clients: the heaviest load).
        scale_mode = "core" if "core" in plan.modes else plan.modes[0]
        for rep in range(plan.scaling_repeats):
            for k in plan.workers:
                if k == 1:
                    continue
                for kind in ("relay", "null") if rep % 2 == 0 else ("null", "relay"):
                    await one(scale_mode, kind, k, None, plan.duration, plan.warmup)
        # Latency at a fixed offered load.
        for mode in plan.modes:
            for kind in ("relay", "null"):
                for rate in plan.latency_rates:
                    await one(mode, kind, 1, rate, plan.latency_duration, plan.warmup)
    finally:
        await env.stop()
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "relay",
        "machine": info,
        "load_average_end": os.getloadavg(),
        "plan": plan.__dict__,
        "setup": setup,
        "runs": runs,
        "summary": summarise(runs, plan),
        "seconds": round(time.monotonic() - started, 1),
    }


def summarise(runs: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in plan.modes:
        thr = [r for r in runs if r["mode"] == mode and r["offered_rate"] is None]
        by_k: dict[int, dict[str, Any]] = {}
        for k in sorted({r["workers"] for r in thr}):
            rel = [r["msgs_per_s"] for r in thr if r["workers"] == k and r["relay"] == "relay"]
            nul = [r["msgs_per_s"] for r in thr if r["workers"] == k and r["relay"] == "null"]
            pairs = [a / b for a, b in zip(rel, nul, strict=False) if b]
            rel_median, nul_median = median(rel), median(nul)
            by_k[k] = {
                "relay_msgs_per_s": rounded(rel_median),
                "null_msgs_per_s": rounded(nul_median),
                "relay_runs": rel,
                "null_runs": nul,
                "ratio": rounded(median(pairs), 3) if pairs else None,
                "ratio_of_medians": rounded(rel_median / nul_median, 3)
                if rel_median is not None and nul_median
                else None,
            }
        lat = [r for r in runs if r["mode"] == mode and r["offered_rate"]]
        cpu = {}
        for kind in ("relay", "null"):
            rs = [r for r in thr if r["workers"] == 1 and r["relay"] == kind]
            if rs:
                cpu[kind] = {
                    name: rounded(median([r["cpu_us_per_msg"][name] for r in rs]))
                    for name in rs[0]["cpu_us_per_msg"]
                }
        out[mode] = {
            "throughput": by_k,
            "cpu_us_per_msg": cpu,
            "latency": [
                {
                    "via": r["relay"],
                    **r["latency_ms"],
                    "offered_rate": r["offered_rate"],
                    "achieved": r["msgs_per_s"],
                    "lost": r["lost"],
                }
                for r in lat
            ],
            "lost": sum(r["lost"] for r in runs if r["mode"] == mode),
            "duplicates_at_app": sum(r["duplicates_at_app"] for r in runs if r["mode"] == mode),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, short runs")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the relay (and null relay) of the first runs into DIR",
    )
    p.add_argument("--modes", default=None, help="comma-separated: core,device")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--conversations", type=int, default=None)
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--workers", default=None, help="comma-separated relay worker counts")
    p.add_argument("--client-procs", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep the work files under DIR")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    over: dict[str, Any] = {}
    if args.modes:
        over["modes"] = tuple(args.modes.split(","))
    if args.duration:
        over["duration"] = args.duration
        over["latency_duration"] = args.duration
    if args.repeats:
        over["repeats"] = args.repeats
    if args.conversations:
        over["conversations"] = args.conversations
    if args.window:
        over["window"] = args.window
    if args.workers:
        over["workers"] = tuple(int(x) for x in args.workers.split(","))
    if args.client_procs:
        over["client_procs"] = args.client_procs
    plan = Plan(**{**plan.__dict__, **over})
    _say(f"relay benchmark: {os.cpu_count()} cores, plan {plan}")
    result = asyncio.run(run(plan, args.profile, args.keep))
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
