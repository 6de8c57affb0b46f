"""The Redis client: standalone or cluster, with bounded timeouts."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster

from gateway.config import Settings

RedisClient = Any  # Redis | RedisCluster; both expose the commands we use


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
    return Redis.from_url(url, retry_on_timeout=False, health_check_interval=30, **common)
