"""The hiredis packer the gateway's Redis connections use writes the same bytes as
redis-py's own (Python) packer, and refuses the same inputs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from gateway.config import Settings
from gateway.quota.client import (
    GatewayRedisCluster,
    HiredisConnection,
    HiredisSSLConnection,
    cluster_seeds,
    create_redis,
)

ARG = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
NAME = st.sampled_from(["EVALSHA", "HSET", "SCRIPT LOAD", b"EVAL", b"CLIENT SETNAME"])


def packed(connection: Any, *args: Any) -> bytes:
    return b"".join(connection.pack_command(*args))


@given(NAME, st.lists(ARG, max_size=40))
def test_same_bytes_as_redis_py(name: Any, args: list[Any]) -> None:
    assert packed(HiredisConnection(), name, *args) == packed(Connection(), name, *args)


def test_a_large_script_call_is_the_same() -> None:
    args = ["EVALSHA", "0" * 40, 400, *(f"{{prj_x}}:t:tenant-{i}" for i in range(400))]
    args += [i * 1_000_003 for i in range(1000)] + ["upl_é" * 10] * 50
    assert packed(HiredisConnection(), *args) == packed(Connection(), *args)


@pytest.mark.parametrize("bad", [True, None, object()])
def test_refuses_what_redis_py_refuses(bad: Any) -> None:
    with pytest.raises(DataError):
        packed(Connection(), "SET", "k", bad)
    with pytest.raises(DataError):
        packed(HiredisConnection(), "SET", "k", bad)


def test_the_client_uses_it() -> None:
    def connection_class(url: str) -> type[Any]:
        client = create_redis(Settings.from_env({"GATEWAY_REDIS_URL": url}))
        assert isinstance(client, Redis)
        cls: type[Any] = client.connection_pool.connection_class
        return cls

    assert connection_class("redis://127.0.0.1:6379/0") is HiredisConnection
    assert connection_class("rediss://127.0.0.1:6380/0") is HiredisSSLConnection


def test_the_cluster_client_uses_it() -> None:
    def connection_classes(url: str) -> set[type[Any]]:
        client = create_redis(Settings.from_env({"GATEWAY_REDIS_URL": url}))
        assert isinstance(client, GatewayRedisCluster)
        nodes = client.nodes_manager.startup_nodes.values()
        return {client.connection_kwargs["connection_class"], *(n.connection_class for n in nodes)}

    assert connection_classes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001") == {
        HiredisConnection
    }
    assert connection_classes("rediss+cluster://127.0.0.1:7000") == {HiredisSSLConnection}


def test_cluster_seeds() -> None:
    """Every node of redis+cluster://h1:p1,h2:p2 is a seed; the first stays in the URL
    with its credentials and options."""
    first, rest = cluster_seeds("rediss://user:pw@a:7000,b:7001,c/0?ssl_cert_reqs=none")
    assert first == "rediss://user:pw@a:7000/0?ssl_cert_reqs=none"
    assert rest == [("b", 7001), ("c", 6379)]
    client = create_redis(Settings.from_env({"GATEWAY_REDIS_URL": "redis+cluster://a:1,b:2"}))
    assert isinstance(client, GatewayRedisCluster)
    assert set(client.nodes_manager.startup_nodes) == {"a:1", "b:2"}
