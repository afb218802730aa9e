"""Every Redis connection OpenPik opens is made here, from the settings: one Redis, or Sentinel.

With OPENPIK_REDIS_SENTINELS empty (the default), OPENPIK_REDIS_URL is the Redis. With
Sentinels (``host:port,host:port``), clients ask them for the master named OPENPIK_REDIS_MASTER
and follow a failover on their own: redis-py's ``Sentinel.master_for`` for the task records,
the key store and the rate limits, kombu's ``sentinel://`` transport for the Celery queues.
OPENPIK_REDIS_URL then only gives the database number (its path) and the password; its host
is not used. The Sentinels themselves are reached without a password.

Replication (OPENPIK_REDIS_WAIT_REPLICAS): Redis replicates asynchronously, so a master that
dies can take its last writes with it. ``WAIT n timeout`` blocks until n replicas have every
write *its own connection* made, so each write that must survive a failover is followed by a
WAIT on the connection that made it (``require_replicas`` checks its answer); the gateway
answers a TaskUID only after that (openpik.task_records.TaskIntake).

Retries: during a failover (a few seconds) the master does not answer. The gateway retries
for about a second and then answers 150, so its clients retry; a worker retries long enough
to outlast a failover, so a task that finishes meanwhile still gets its record written.
With a single Redis nothing can take over, so nothing is retried (the existing behaviour).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from openpik.settings import Settings

SENTINEL_TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
"""For the queries to the Sentinels themselves: a dead Sentinel must not hold a client up."""


class Role(enum.Enum):
    GATEWAY = "gateway"
    WORKER = "worker"
    TOOL = "tool"


@dataclass(frozen=True)
class Patience:
    socket_timeout_s: float | None
    connect_timeout_s: float | None
    retries: int
    """Retries of a failed command (and, inside each, of the connect) with Sentinels."""
    backoff_cap_s: float


PATIENCE = {
    Role.GATEWAY: Patience(5, 2, retries=3, backoff_cap_s=0.2),  # about a second, then 150
    Role.WORKER: Patience(10, 2, retries=6, backoff_cap_s=1.0),  # ~25 s at worst: outlasts a failover
    Role.TOOL: Patience(None, None, retries=3, backoff_cap_s=0.2),
}


class NotReplicated(redis.ConnectionError):
    """Fewer replicas than OPENPIK_REDIS_WAIT_REPLICAS acknowledged a write in time."""


def redis_client(settings: Settings, role: Role, **options: Any) -> redis.Redis:
    """A client of the master: OPENPIK_REDIS_URL's Redis, or the one the Sentinels name.

    ``options`` go to redis-py (e.g. ``decode_responses=True``).
    """
    patience = PATIENCE[role]
    timeouts = {"socket_timeout": patience.socket_timeout_s, "socket_connect_timeout": patience.connect_timeout_s}
    if not settings.redis_sentinels:
        return redis.Redis.from_url(
            settings.redis_url, **{k: v for k, v in timeouts.items() if v is not None}, **options
        )
    retry = Retry(ExponentialBackoff(cap=patience.backoff_cap_s, base=0.05), patience.retries)
    # redis-py leaves Sentinel untyped; master_for returns a redis.Redis
    sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=SENTINEL_TIMEOUTS, **timeouts, retry=retry)  # type: ignore[no-untyped-call]
    return cast(redis.Redis, sentinel.master_for(settings.redis_master, **_database(settings), **options))  # type: ignore[no-untyped-call]


class _PackedInC:
    """Commands packed by hiredis, in C, as redis-py's blocking connections already do when it is
    installed; its asyncio connections pack in Python (tens of microseconds for a submission)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)  # type: ignore[no-any-return]


class _Connection(_PackedInC, redis.asyncio.Connection):
    pass


class _SentinelManagedConnection(_PackedInC, redis.asyncio.sentinel.SentinelManagedConnection):
    pass


def async_redis_client(settings: Settings, role: Role, **options: Any) -> redis.asyncio.Redis:
    """redis_client's twin on asyncio: for what waits on the gateway's event loop (submissions, rate
    limits, event streams), so a waiting client holds no thread. Same Redis, timeouts and retries."""
    patience = PATIENCE[role]
    if not settings.redis_sentinels:
        if parse_url(settings.redis_url).get("connection_class") is None:  # type: ignore[no-untyped-call]
            options["connection_class"] = _Connection  # TLS and unix socket URLs keep their own
        return redis.asyncio.Redis.from_url(
            settings.redis_url,
            socket_timeout=patience.socket_timeout_s,
            socket_connect_timeout=patience.connect_timeout_s,
            **options,
        )
    retry = redis.asyncio.retry.Retry(ExponentialBackoff(cap=patience.backoff_cap_s, base=0.05), patience.retries)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings),
        sentinel_kwargs=SENTINEL_TIMEOUTS,
        socket_timeout=patience.socket_timeout_s,
        socket_connect_timeout=patience.connect_timeout_s,
        retry=retry,
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        settings.redis_master, connection_class=_SentinelManagedConnection, **_database(settings), **options
    )
    return client


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    def address(text: str) -> tuple[str, int]:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"OPENPIK_REDIS_SENTINELS: {text!r} is not host:port")
        return host, int(port)

    return [address(text) for text in settings.redis_sentinels]


def broker(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The Celery broker URL, and the transport options it needs on top of the caller's.

    Sentinels: ``sentinel://host:port/db;sentinel://...`` with ``master_name`` (kombu's
    transport asks them for the master at every connect, so a worker whose connection
    drops reconnects to the new master); socket timeouts so a vanished master is noticed.
    """
    if not settings.redis_sentinels:
        return settings.redis_url, {}
    database = _database(settings)
    password = f":{database['password']}@" if database.get("password") else ""
    url = ";".join(
        f"sentinel://{password}{host}:{port}/{database['db']}" for host, port in sentinel_addresses(settings)
    )
    return url, {
        "master_name": settings.redis_master,
        "sentinel_kwargs": SENTINEL_TIMEOUTS,
        "socket_timeout": PATIENCE[Role.GATEWAY].socket_timeout_s,
        "socket_connect_timeout": PATIENCE[Role.GATEWAY].connect_timeout_s,
    }


def require_replicas(acknowledged: object, replicas: int, timeout_ms: int) -> None:
    """``acknowledged``: what WAIT answered."""
    if int(str(acknowledged)) < replicas:
        raise NotReplicated(f"{acknowledged} of {replicas} replicas acknowledged within {timeout_ms} ms")


def _database(settings: Settings) -> dict[str, Any]:
    """The database number (and credentials) of OPENPIK_REDIS_URL, for the Sentinels' master."""
    parsed = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]  # redis-py's own URL rules
    return {"db": int(parsed.get("db", 0))} | {k: parsed[k] for k in ("username", "password") if parsed.get(k)}
