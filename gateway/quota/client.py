"""The Redis client: standalone or cluster, with bounded timeouts."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import HIREDIS_AVAILABLE

from gateway.config import Settings

RedisClient = Any  # Redis | RedisCluster; both expose the commands we use


class _HiredisPacking:
    """Commands packed by hiredis, as redis-py's own synchronous connections do when
    hiredis is installed (its asyncio ones pack in Python, which took most of the CPU
    of a ledger batch's script call: hundreds of arguments). The bytes are the same
    (tests/unit/test_quota_client.py)."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_HIREDIS_CLASSES: dict[type[Any], type[Any]] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


def create_redis(settings: Settings) -> Redis | RedisCluster:
    url = settings.redis_url
    common: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "decode_responses": False,
    }
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        plain = url.replace("+cluster", "", 1)
        return RedisCluster.from_url(plain, **common)
    # One immediate retry on a connection error: after a Redis restart the first
    # command on each pooled connection fails ("Connection closed by server") and the
    # retry goes out on a fresh one. No retry on a timeout, and no back-off: a Redis
    # that hangs or refuses answers 503 after one bounded wait (redis-py's default is
    # ten retries with back-off, on timeouts too: seconds before a 503). Every script
    # the gateway runs is safe to run twice (docs/quota.md).
    client = Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
        **common,
    )
    pool = client.connection_pool
    if HIREDIS_AVAILABLE:  # connections are made on first use: none exists yet
        pool.connection_class = _HIREDIS_CLASSES.get(pool.connection_class, pool.connection_class)
    return client
