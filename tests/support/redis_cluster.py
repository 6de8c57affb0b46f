"""A real Redis Cluster for tests: 3 masters + 3 replicas of ``redis-server`` on free
loopback ports, in a directory of its own, nothing persisted.

Started once per session, and only by tests that ask for :func:`redis_cluster`
(registered as a plugin from ``tests/conftest.py``); stopped by PID at the end (and at
exit, should the session die before it). Helpers find the master that owns a
project's keys (their ``{project}`` hash tag), SIGKILL it, FLUSHALL one shard, and
bring a killed node back (it rejoins as a replica of whoever took its slots).

Failover is made quick for the tests with ``cluster-node-timeout 1000`` (a master is
marked failed after 1 s without answering; Redis defaults to 15 s), and the other
shards keep serving meanwhile (``cluster-require-full-coverage no``).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.crc import key_slot

from gateway.ids import new_id
from gateway.quota.reservations import project_key
from tests.support.services import free_port

MASTERS = 3
REPLICAS_PER_MASTER = 1
NODE_TIMEOUT_MS = 1000
START_TIMEOUT = 30.0


@dataclass
class Node:
    port: int
    bus_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def command(self, *args: str) -> Any:
        return self.client().execute_command(*args)  # type: ignore[no-untyped-call]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _address(entry: list[object]) -> str:
    host, port = entry[0], entry[1]
    return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


def _argv(node: Node) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(node.port),
        "--cluster-port",
        str(node.bus_port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(NODE_TIMEOUT_MS),
        "--dir",
        str(node.dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--logfile",
        "redis.log",
        "--maxmemory-policy",
        "noeviction",
        # replicas sync at once (not 5 s later), and one always stands in for its dead
        # master however long ago it last heard from it
        "--repl-diskless-sync-delay",
        "0",
        "--cluster-replica-validity-factor",
        "0",
        # a shard that fails over fails only its own slots (the setting the docs
        # recommend: the other projects keep their answers)
        "--cluster-require-full-coverage",
        "no",
    ]


@dataclass
class RedisClusterProcs:
    """The cluster's nodes; ``nodes[:MASTERS]`` were the masters when it was made."""

    root: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The gateway's ``GATEWAY_REDIS_URL``, every node a seed (with one seed only, a
        client that first connects while that node is down cannot find the others)."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def seeds(self) -> list[Node]:
        return [n for n in self.nodes if n.alive()]

    def client(self) -> redis_sync.RedisCluster:
        seed = self.seeds()[0]
        return redis_sync.RedisCluster(host="127.0.0.1", port=seed.port, socket_timeout=2)

    # -- topology ----------------------------------------------------------------------

    def _slots(self) -> list[tuple[int, int, str, list[str]]]:
        """(first, last, master address, replica addresses) per slot range."""
        last: Exception | None = None
        for seed in self.seeds():
            try:
                ranges = seed.command("CLUSTER SLOTS")
            except redis_sync.RedisError as exc:
                last = exc
                continue
            return [
                (int(first), int(end), _address(master), [_address(r) for r in replicas])
                for first, end, master, *replicas in ranges
            ]
        raise RuntimeError(f"no node answers CLUSTER SLOTS: {last}")

    def node_at(self, address: str) -> Node:
        return next(n for n in self.nodes if n.address == address)

    def master_for_slot(self, slot: int) -> Node:
        for first, end, master, _ in self._slots():
            if first <= slot <= end:
                return self.node_at(master)
        raise RuntimeError(f"slot {slot} is not covered")

    def master_of(self, project_id: str) -> Node:
        """The master that holds a project's quota keys now."""
        return self.master_for_slot(key_slot(project_key(project_id).encode()))

    def masters(self) -> list[Node]:
        return [self.node_at(m) for m in sorted({m for _, _, m, _ in self._slots()})]

    def replicas_of(self, master: Node) -> list[Node]:
        for _, _, m, replicas in self._slots():
            if m == master.address:
                return [self.node_at(r) for r in replicas]
        return []

    def _info_ok(self) -> bool:
        return all(n.command("CLUSTER INFO").get("cluster_state") == "ok" for n in self.seeds())

    def state_ok(self) -> bool:
        """Every live node reports cluster_state:ok, all slots are covered, no node is
        flagged failed (or suspected: ``fail?``), and every master has its replica, in
        sync."""
        try:
            if not self._info_ok():
                return False
            for n in self.seeds():
                nodes = n.command("CLUSTER NODES")
                if any("fail" in v["flags"] for v in nodes.values()):
                    return False
            slots = self._slots()
            for _, _, _, replicas in slots:
                if len(replicas) < REPLICAS_PER_MASTER:
                    return False
                for r in replicas:
                    info = self.node_at(r).client().info("replication")
                    if info.get("master_link_status") != "up":
                        return False
        except redis_sync.RedisError:
            return False
        return sum(end - first + 1 for first, end, _, _ in slots) == 16384

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.state_ok():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach cluster_state:ok in {timeout}s")
            time.sleep(0.1)

    def wait_promoted(self, dead: Node, slot: int, timeout: float = START_TIMEOUT) -> Node:
        """Waits until a replica has taken ``slot`` over from the dead master and the
        live nodes report cluster_state:ok; answers the new master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, redis_sync.RedisError):
                owner = self.master_for_slot(slot)
                if owner is not dead and self._info_ok():
                    return owner
            time.sleep(0.02)
        raise RuntimeError(f"no replica took over from {dead.address} in {timeout}s")

    # -- faults ------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """SIGKILL: the process dies at once, its data with it."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    def flushall(self, node: Node) -> None:
        """Loses one shard's data (its replica follows)."""
        node.client().flushall()

    def restart(self, node: Node) -> None:
        """Starts a killed node again: from its nodes.conf it rejoins the cluster, as a
        replica of the node that took its slots."""
        assert not node.alive()
        self._start(node)
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.state_ok() and self._is_replica(node)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.address} did not rejoin as a replica")
            time.sleep(0.1)

    def _is_replica(self, node: Node) -> bool:
        return any(node.address in replicas for _, _, _, replicas in self._slots())

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self, node: Node) -> None:
        node.proc = subprocess.Popen(
            _argv(node), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=node.dir
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if node.client().ping():
                    return
            except redis_sync.RedisError:
                pass
            if node.proc.poll() is not None or time.monotonic() > deadline:
                log = (node.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {node.port} did not start:\n{log}")
            time.sleep(0.05)

    def start(self) -> None:
        for i in range(MASTERS * (1 + REPLICAS_PER_MASTER)):
            d = self.root / f"node{i}"
            d.mkdir()
            node = Node(port=free_port(), bus_port=free_port(), dir=d)
            self.nodes.append(node)
            self._start(node)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(REPLICAS_PER_MASTER),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        self.wait_ok()

    def stop(self) -> None:
        for n in self.nodes:
            if n.alive():
                assert n.proc is not None
                n.proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    n.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def flush_all_shards(self) -> None:
        for m in self.masters():
            m.client().flushall()


def start_redis_cluster() -> RedisClusterProcs:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis-server)")
    cluster = RedisClusterProcs(Path(tempfile.mkdtemp(prefix="redis-cluster-")))
    atexit.register(cluster.stop)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def project_ids_on(cluster: RedisClusterProcs, masters: list[Node]) -> list[str]:
    """A new project id whose quota keys (``{project}`` hash tag) land on each of these
    masters, in order."""
    out: list[str] = []
    for master in masters:
        while True:
            pid = new_id("prj")
            if cluster.master_of(pid) is master:
                out.append(pid)
                break
    return out


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcs]:
    cluster = start_redis_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
