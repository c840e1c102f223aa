"""MQTT brokers for doormat: the embedded amqtt one, a local Mosquitto, or an external one.

    async with start_broker("embedded", accounts, workdir) as broker:
        broker.host, broker.port, broker.url
        broker.add_account(account)           # enrolment while running
        await broker.wait_accounts_applied()  # Mosquitto reloads asynchronously

``kind`` is ``"embedded"`` (amqtt, in this process), ``"mosquitto"`` (``mosquitto -c``
on a free loopback port, files in ``workdir``) or ``"mqtt://HOST:PORT"`` (a broker that
is already running; nothing is started, and accounts are its operator's business).
The ACL both local brokers enforce is ``doormat.broker.acl``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol
from urllib.parse import urlsplit

from .accounts import Account
from .embedded import EmbeddedBroker
from .mosquitto import MosquittoBroker, MosquittoError

__all__ = [
    "Account",
    "BrokerHandle",
    "EmbeddedBroker",
    "ExternalBroker",
    "MosquittoBroker",
    "MosquittoError",
    "parse_broker_url",
    "start_broker",
]

KINDS = ("embedded", "mosquitto")
DEFAULT_MQTT_PORT = 1883


class BrokerHandle(Protocol):
    """What every broker kind offers once entered."""

    kind: str
    host: str
    port: int

    @property
    def url(self) -> str: ...

    def add_account(self, account: Account) -> None: ...

    async def wait_accounts_applied(self, timeout: float = 10.0) -> None: ...

    async def __aenter__(self) -> BrokerHandle: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass
class ExternalBroker:
    """A broker someone else runs: just an address."""

    host: str
    port: int
    kind: str = "external"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def add_account(self, account: Account) -> None:
        raise RuntimeError(
            f"cannot add account {account.username!r} to the external broker {self.url}: "
            "regenerate its files with `doormat broker config` and reload it"
        )

    async def wait_accounts_applied(self, timeout: float = 10.0) -> None:
        return None

    async def __aenter__(self) -> ExternalBroker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` -> (host, port); ValueError with a one-line message otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"not a broker URL: {url!r} (expected mqtt://HOST:PORT)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad broker URL {url!r}: {exc}") from None
    if parts.scheme != "mqtt":
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} in {url!r} (only mqtt://, no TLS or websockets)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"put no credentials in the broker URL {url!r}; accounts carry them")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"unexpected path or query in broker URL {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in broker URL {url!r}")
    if port == 0:
        raise ValueError(f"port 0 in broker URL {url!r}")
    return parts.hostname, port if port is not None else DEFAULT_MQTT_PORT


def start_broker(
    kind: str,
    accounts: Iterable[Account] = (),
    workdir: str | os.PathLike[str] | None = None,
) -> EmbeddedBroker | MosquittoBroker | ExternalBroker:
    """A broker, not yet started: use it as ``async with start_broker(...) as b``.

    ``workdir`` is where Mosquitto's files, persistence and log go (required for
    ``"mosquitto"``; unused otherwise, amqtt keeps everything in memory).
    """
    if kind == "embedded":
        return EmbeddedBroker(accounts)
    if kind == "mosquitto":
        if workdir is None:
            raise ValueError("the mosquitto broker needs a working directory for its files")
        return MosquittoBroker(accounts, workdir)
    if isinstance(kind, str) and "://" in kind:
        host, port = parse_broker_url(kind)
        return ExternalBroker(host, port)
    raise ValueError(f"unknown broker {kind!r}: use 'embedded', 'mosquitto' or mqtt://HOST:PORT")
