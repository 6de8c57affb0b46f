"""Reservations: the atomic admission step, and keeping Redis in step with Postgres.

Redis holds, per tenant and per project (one hash each, sharing the ``{project}``
hash tag): the usage mirrored from Postgres with its version, the sum of open
reservations, and one field per reservation. Postgres holds the durable truth: a
pending upload row is written *before* its reservation is admitted here, so if Redis
loses its data the hashes are rebuilt from Postgres and nothing admitted is lost.
See docs/quota.md for the argument.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster

from gateway.errors import DependencyUnavailable

IDLE_TTL_SECONDS = 86_400
MARKER_TTL_MS = 30_000
MAX_REBUILDS = 20

_REDIS_DOWN = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ClusterDownError,
    OSError,
    TimeoutError,
)


def _lua(name: str) -> str:
    return files("gateway.quota").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class UsageAt:
    """Usage read from Postgres at a usage version."""

    used: int
    version: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    usage: UsageAt
    pending: Sequence[tuple[str, int]]  # (upload id, declared size)


T = TypeVar("T")
MirrorItem = tuple[str, str | None, UsageAt | None, UsageAt | None, Sequence[str]]


class ReservationSource(Protocol):
    """Where rebuilds read the durable truth (Postgres)."""

    async def tenant_snapshot(self, project_id: str, tenant_id: str) -> Snapshot: ...

    async def project_snapshot(self, project_id: str) -> Snapshot: ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """One upload to judge: its size, and the limits and usage read from Postgres."""

    project_id: str
    tenant_id: str
    upload_id: str
    size: int
    tenant_limit: int | None
    tenant_usage: UsageAt
    project_limit: int | None
    project_usage: UsageAt

    def script_args(self) -> tuple[Any, ...]:
        return (
            self.upload_id,
            self.size,
            -1 if self.tenant_limit is None else self.tenant_limit,
            self.tenant_usage.used,
            self.tenant_usage.version,
            -1 if self.project_limit is None else self.project_limit,
            self.project_usage.used,
            self.project_usage.version,
        )


@dataclass(frozen=True, slots=True)
class Admitted:
    pass


_ADMITTED = Admitted()


@dataclass(frozen=True, slots=True)
class Missing:
    """The tenant's or project's hash is gone; rebuild under these marker nonces."""

    tenant: str
    project: str


@dataclass(frozen=True, slots=True)
class Rejected:
    scope: str  # "tenant" | "project"
    used: int
    reserved: int


def tenant_key(project_id: str, tenant_id: str) -> str:
    return f"gw:{{{project_id}}}:t:{tenant_id}"


def project_key(project_id: str) -> str:
    return f"gw:{{{project_id}}}:p"


def _keys(project_id: str, tenant_id: str) -> list[str]:
    t = tenant_key(project_id, tenant_id)
    p = project_key(project_id)
    return [t, t + ":rb", p, p + ":rb"]


class QuotaStore:
    def __init__(
        self,
        redis: Any,
        source: ReservationSource,
        *,
        retry_after: int = 2,
        split_per_project: bool | None = None,
    ) -> None:
        self.redis = redis
        self.source = source
        self.retry_after = retry_after
        self._reserve = redis.register_script(_lua("reserve.lua"))
        self._init = redis.register_script(_lua("init.lua"))
        self._apply = redis.register_script(_lua("apply.lua"))
        # A script may touch keys of one hash slot only on Redis Cluster; the keys are
        # tagged by project, so there a batch is split per project (None: by the client).
        self._split = (
            isinstance(redis, RedisCluster) if split_per_project is None else split_per_project
        )
        # one snapshot in flight per hash in this process: concurrent callers that find
        # the same hash missing wait for it instead of all scanning Postgres
        self._rebuilding: dict[str, asyncio.Future[None]] = {}

    def unavailable(self, exc: BaseException) -> DependencyUnavailable:
        return DependencyUnavailable("redis", retry_after=self.retry_after, cause=repr(exc))

    async def reserve(self, r: Reservation) -> Admitted | Rejected:
        """Admits or rejects one upload, rebuilding missing hashes from Postgres."""
        for _ in range(MAX_REBUILDS):
            (verdict,) = await self.reserve_many([r])
            if not isinstance(verdict, Missing):
                return verdict
            try:
                await self._rebuild(r.project_id, r.tenant_id, verdict.tenant, verdict.project)
            except _REDIS_DOWN as exc:
                raise self.unavailable(exc) from exc
        raise DependencyUnavailable(
            "redis", retry_after=self.retry_after, cause="rebuild contention"
        )

    async def reserve_many(
        self, items: Sequence[Reservation]
    ) -> list[Admitted | Rejected | Missing]:
        """Judges many uploads in one round trip (one script call; per project on
        Redis Cluster).

        An upload whose hash is missing gets ``Missing``; ``reserve`` rebuilds and
        retries it (kept out of the batch so a rebuild holds up no one else).
        """
        nonce = secrets.token_hex(8)
        replies = await self._per_project(
            items, lambda r: r.project_id, lambda group, client: self._judge(group, nonce, client)
        )
        out: list[Admitted | Rejected | Missing] = [_ADMITTED] * len(items)
        for idx, answers in replies:
            for i, answer in zip(idx, answers, strict=True):
                out[i] = _verdict(answer)
        return out

    async def _per_project(
        self,
        items: Sequence[T],
        project_of: Callable[[T], str],
        call: Callable[[Sequence[T], Any], Awaitable[Any]],
    ) -> list[tuple[list[int], Any]]:
        """One script call for the whole batch; on Redis Cluster one per project (one
        hash slot each), pipelined. Answers (the group's item indices, its reply)."""
        groups: dict[str, list[int]] = {}
        if self._split:
            for i, item in enumerate(items):
                groups.setdefault(project_of(item), []).append(i)
        try:
            if len(groups) <= 1:
                return [(list(range(len(items))), await call(items, None))]
            pipe = self.redis.pipeline(transaction=False)
            for idx in groups.values():
                await call([items[i] for i in idx], pipe)
            return list(zip(groups.values(), await pipe.execute(), strict=True))
        except _REDIS_DOWN as exc:
            raise self.unavailable(exc) from exc

    async def _judge(self, items: Sequence[Reservation], nonce: str, client: Any) -> Any:
        keys: list[str] = []
        args: list[Any] = [nonce, MARKER_TTL_MS]
        for r in items:
            keys.extend(_keys(r.project_id, r.tenant_id))
            args.extend(r.script_args())
        return await self._reserve(keys=keys, args=args, client=client)

    async def _rebuild(
        self, project_id: str, tenant_id: str, tenant_nonce: str, project_nonce: str
    ) -> None:
        t, tm, p, pm = _keys(project_id, tenant_id)
        if tenant_nonce:
            await self._single_flight(
                t, tm, tenant_nonce, lambda: self.source.tenant_snapshot(project_id, tenant_id)
            )
        if project_nonce:
            await self._single_flight(
                p, pm, project_nonce, lambda: self.source.project_snapshot(project_id)
            )

    async def _single_flight(
        self,
        key: str,
        marker: str,
        nonce: str,
        snapshot: Callable[[], Awaitable[Snapshot]],
    ) -> None:
        running = self._rebuilding.get(key)
        if running is not None:
            await asyncio.shield(running)  # the caller then retries its reservation
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rebuilding[key] = fut
        try:
            snap = await snapshot()
            await self._init(keys=[key, marker], args=_init_args(nonce, snap))
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters see it through shield
            raise
        finally:
            del self._rebuilding[key]

    async def apply(
        self,
        *,
        project_id: str,
        tenant_id: str | None,
        tenant_usage: UsageAt | None = None,
        project_usage: UsageAt | None = None,
        released: Sequence[str] = (),
    ) -> None:
        """Mirrors a committed change: usage at a version, and reservations that ended."""
        await self.apply_many([(project_id, tenant_id, tenant_usage, project_usage, released)])

    async def apply_many(self, items: Sequence[MirrorItem]) -> None:
        """``apply`` for many tenants in one round trip (``_per_project``); the
        script gets each project's hash once, however many of its tenants are in it.

        Items are (project id, tenant id or None, tenant usage, project usage,
        released upload ids).
        """
        if not items:
            return
        await self._per_project(items, lambda item: item[0], self._mirror)

    async def _mirror(self, items: Sequence[MirrorItem], client: Any) -> Any:
        by_project: dict[str, list[MirrorItem]] = {}
        for item in items:
            by_project.setdefault(item[0], []).append(item)
        keys: list[str] = []
        args: list[Any] = [IDLE_TTL_SECONDS]
        for project_id, group in by_project.items():
            p = project_key(project_id)
            # the newest project usage the group carries (the script keeps the newest)
            p_usage = max(
                (u for *_, u, _ in group if u is not None),
                key=lambda u: u.version,
                default=None,
            )
            keys.extend((p, p + ":rb"))
            args.extend((p_usage.used if p_usage else 0, p_usage.version if p_usage else -1))
            args.append(len(group))
            for _, tenant_id, t_usage, _, released in group:
                t = tenant_key(project_id, tenant_id or "")
                keys.extend((t, t + ":rb"))
                # tenant version -2: leave the tenant hash alone; -1: usage unchanged
                tver = -2 if tenant_id is None else (t_usage.version if t_usage else -1)
                args.extend((t_usage.used if t_usage else 0, tver, len(released), *released))
        return await self._apply(keys=keys, args=args, client=client)

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except _REDIS_DOWN as exc:
            raise self.unavailable(exc) from exc


def _verdict(answer: Sequence[Any]) -> Admitted | Rejected | Missing:
    kind = _text(answer[0])
    if kind == "ok":
        return _ADMITTED
    if kind == "missing":
        return Missing(tenant=_text(answer[1]), project=_text(answer[2]))
    return Rejected(scope=kind, used=int(answer[1]), reserved=int(answer[2]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _init_args(nonce: str, snap: Snapshot) -> list[Any]:
    args: list[Any] = [nonce, snap.usage.used, snap.usage.version]
    for upload_id, size in snap.pending:
        args.extend((upload_id, size))
    return args
