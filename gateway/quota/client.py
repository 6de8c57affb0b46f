"""The Redis client: standalone or cluster, with bounded timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from gateway.config import Settings

RedisClient = Any  # Redis | RedisCluster; both expose the commands we use
# calls a batch sends again one by one at once (the client refuses more than 100
# connections a node)
_ALONE_AT_ONCE = 16


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


class GatewayRedisCluster(RedisCluster):
    """redis-py's asyncio Redis Cluster client, retrying as the gateway needs.

    A command that meets a connection error, CLUSTERDOWN or a slot no node serves
    re-reads the topology and is tried again (up to ``retries`` times: how a failover
    is followed); MOVED/ASK/TRYAGAIN are followed inside each try, up to redis-py's 16
    redirections. A timeout is not retried (redis-py's default retries it too): a node
    that hangs answers 503 after one bounded wait, as on standalone Redis; the next
    command re-reads the topology all the same.
    """

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands_parser = _CommandTable(self)
        # commands packed by hiredis, as on standalone Redis (the nodes' connections
        # are made on first use: only the startup nodes exist yet, and the kwargs the
        # others will be made with)
        packing = _HIREDIS_CLASSES.get(self.connection_kwargs["connection_class"])
        if HIREDIS_AVAILABLE and packing is not None:
            self.connection_kwargs["connection_class"] = packing
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_class = packing

    async def script_calls(
        self, script: Any, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """Many calls of one script (``AsyncScript``), each ``(keys, args)`` on a slot
        of its own: the calls for each master written at once on one of its
        connections, one round trip a node instead of one a call. Answers in order, a
        failure as its exception. A call that failed on that round trip (redirected,
        NOSCRIPT, the connection lost, a slot no node serves) is sent again on its own
        the usual way: topology re-read, redirections followed, the script loaded,
        retried. Every script of the gateway is safe to run twice."""
        if self._initialize:
            await self.initialize()
        out: list[Any] = [None] * len(calls)
        by_node: dict[str, tuple[Any, list[PipelineCommand]]] = {}
        alone: list[int] = []
        for i, (keys, args) in enumerate(calls):
            try:
                node = self.nodes_manager.get_node_from_slot(self.keyslot(keys[0]))
            except SlotNotCoveredError:
                alone.append(i)
                continue
            cmd = PipelineCommand(i, "EVALSHA", script.sha, len(keys), *keys, *args)
            by_node.setdefault(node.name, (node, []))[1].append(cmd)

        async def send(node: Any, cmds: list[PipelineCommand]) -> None:
            try:
                await node.execute_pipeline(cmds)
            except Exception as exc:
                for cmd in cmds:
                    cmd.result = exc

        await asyncio.gather(*(send(node, cmds) for node, cmds in by_node.values()))
        for _, cmds in by_node.values():
            for cmd in cmds:
                if isinstance(cmd.result, Exception):
                    alone.append(cmd.position)
                else:
                    out[cmd.position] = cmd.result
        limit = asyncio.Semaphore(_ALONE_AT_ONCE)

        async def again(i: int) -> None:
            keys, args = calls[i]
            async with limit:
                try:
                    out[i] = await script(keys=keys, args=args)
                except Exception as exc:
                    out[i] = exc

        await asyncio.gather(*(again(i) for i in alone))
        return out

    async def _determine_slot(self, command: str, *args: Any) -> int:
        # A script call's keys all share one project's hash tag: it is routed by its
        # first key. redis-py computes the slot of every key to check that they agree
        # (hundreds for a batch: two thirds of the client's CPU for the call), and
        # Redis refuses a call whose keys span slots (CROSSSLOT) all the same.
        if command in ("EVALSHA", "EVAL") and len(args) > 2 and int(args[1]) > 0:
            return self.keyslot(args[2])
        slot: int = await super()._determine_slot(command, *args)
        return slot


class _CommandTable(AsyncCommandsParser):
    """The server's command table (COMMAND, for finding a command's keys), read once
    and from any node that answers.

    redis-py reads it again on every re-read of the topology, from the "default node"
    (the master of slot 0), and a failure fails the re-read: while that one master is
    down (a failover's first seconds), every command on every shard would fail. The
    table does not change with the topology."""

    __slots__ = ("_client",)

    def __init__(self, client: RedisCluster) -> None:
        super().__init__()
        self._client = client

    async def initialize(self, node: Any = None) -> None:
        if node is not None:
            self.node = node
        if self.commands:
            return
        nodes = [node] if node is not None else []
        nodes += [n for n in self._client.nodes_manager.nodes_cache.values() if n is not node]
        error: BaseException = RedisConnectionError("no node to read COMMAND from")
        for n in nodes:
            try:
                table = await n.execute_command("COMMAND")
            except (RedisConnectionError, RedisTimeoutError) as exc:
                error = exc
                continue
            self.commands = {name.lower(): command for name, command in table.items()}
            return
        raise error


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis://[user:pass@]h1:p1,h2:p2,.../`` → (the URL with its first host only,
    the other hosts). The client learns the whole topology from any one seed, but a
    gateway that starts (or re-reads the topology) while its only seed is down cannot
    connect: name several nodes, or a DNS name that resolves to live ones (such as
    ElastiCache's configuration endpoint)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    first, *rest = hosts.split(",")
    seeds: list[tuple[str, int]] = []
    for h in rest:
        host, colon, port = h.rpartition(":")
        seeds.append((host, int(port)) if colon else (h, 6379))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{first}")), seeds


def create_redis(settings: Settings) -> Redis | RedisCluster:
    url = settings.redis_url
    common: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "decode_responses": False,
    }
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        first, seeds = cluster_seeds(url.replace("+cluster", "", 1))
        # A slot no live node serves (a shard failing over) fails only the commands
        # for that slot: with redis-py's default (True) the client refuses its whole
        # topology, and every project's requests, while any slot is uncovered.
        return GatewayRedisCluster.from_url(
            first,
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            require_full_coverage=False,
            **common,
        )
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
