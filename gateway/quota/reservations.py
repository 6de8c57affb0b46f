"""Reservations: the atomic admission step, and keeping Redis in step with Postgres.

Redis holds, per tenant and per project (one hash each, sharing the ``{project}``
hash tag): the usage mirrored from Postgres with its version, the sum of open
reservations, and one field per reservation; and with each hash a sorted set of its
reservations' deadlines, so that a reservation stops counting the moment its deadline
passes, in the admission script itself. Every key a script touches is one it declares
(on Redis Cluster a call holds one project's keys: one slot). Postgres holds the
durable truth: a pending upload row is written *before* its reservation is admitted
here, so if Redis loses its data the hashes are rebuilt from Postgres and nothing
admitted is lost. See docs/quota.md for the argument.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import Any, NamedTuple, Protocol, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster

from gateway.errors import DependencyUnavailable

IDLE_TTL_SECONDS = 86_400
MARKER_TTL_MS = 30_000
MAX_REBUILDS = 20
# script calls a batch split per project has in flight at once where the client sends
# them one by one (on Redis Cluster it sends each node's together: script_calls)
MAX_CONCURRENT_CALLS = 16
# v2 layout (reservations carry deadlines); keys of the older gw: layout are not read
PREFIX = "gwq"

# Every Redis error that is not a verdict means "Redis cannot answer now": down,
# timing out, loading, busy; on Redis Cluster also a cluster that is down or failing
# over (CLUSTERDOWN, a master that refuses connections until its replica takes over),
# redirections that do not settle (MOVED/ASK/TRYAGAIN past the client's limit), a
# topology the client cannot read (RedisClusterException), a replica that became
# read-only. A 503 with Retry-After, never a 500.
_REDIS_DOWN: tuple[type[BaseException], ...] = (
    # ConnectionError, TimeoutError, ClusterError, and ResponseError: ClusterDownError,
    # MovedError, AskError, TryAgainError, ReadOnlyError, BusyLoadingError, ...
    redis_errors.RedisError,
    redis_errors.RedisClusterException,
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


class Pending(NamedTuple):
    """A reservation as Postgres holds it (a pending upload row); a project's snapshot
    holds tens of thousands, hence a tuple."""

    upload_id: str
    tenant_id: str
    size: int
    deadline_ms: int  # expires_at + grace, in ms since the epoch


@dataclass(frozen=True, slots=True)
class Snapshot:
    usage: UsageAt
    pending: Sequence[Pending]
    # when a snapshot read without a rebuild marker was read (ms since the epoch), and
    # the project's generation known before it was read: it is installed only under
    # that generation and while the hash's journal covers the time since
    read_ms: int = 0
    generation: str = ""


T = TypeVar("T")
# (project id, tenant id, tenant usage, project usage, released upload ids)
MirrorItem = tuple[str, str, UsageAt | None, UsageAt | None, Sequence[str]]
# a hash to rebuild: (project id, tenant id), tenant None for the project's own
HashId = tuple[str, str | None]


class ReservationSource(Protocol):
    """Where rebuilds read the durable truth (Postgres)."""

    async def snapshots(self, hashes: Sequence[HashId]) -> list[Snapshot]:
        """One consistent snapshot of each hash, in order."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """One upload to judge: its size, deadline, and the limits and usage read from
    Postgres."""

    project_id: str
    tenant_id: str
    upload_id: str
    size: int
    tenant_limit: int | None
    tenant_usage: UsageAt
    project_limit: int | None
    project_usage: UsageAt
    deadline_ms: int
    # the tenant's durable state, read with its usage, where its hash may be missing:
    # installed (if it is) by the call that judges this upload
    snapshot: Snapshot | None = None

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
            self.deadline_ms,
        )


@dataclass(frozen=True, slots=True)
class Admitted:
    pass


_ADMITTED = Admitted()


@dataclass(frozen=True, slots=True)
class Missing:
    """The tenant's or project's hash is gone (or not trusted: built under another
    generation); rebuild under these marker nonces, in this generation."""

    tenant: str
    project: str
    generation: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    scope: str  # "tenant" | "project"
    used: int
    reserved: int


Verdict = Admitted | Rejected | Missing


def tenant_key(project_id: str, tenant_id: str) -> str:
    return f"{PREFIX}:{{{project_id}}}:t:{tenant_id}"


def project_key(project_id: str) -> str:
    return f"{PREFIX}:{{{project_id}}}:p"


def deadlines_key(project_id: str) -> str:
    """The project hash's deadlines (members ``upload|tenant``; the audit walks them)."""
    return f"{PREFIX}:{{{project_id}}}:x"


def tenant_deadlines_key(project_id: str, tenant_id: str) -> str:
    """A tenant hash's deadlines (members: upload ids)."""
    return f"{PREFIX}:{{{project_id}}}:x:{tenant_id}"


def generation_key(project_id: str) -> str:
    return f"{PREFIX}:{{{project_id}}}:g"


def marker_key(hash_key: str) -> str:
    return hash_key + ":rb"


def journal_key(hash_key: str) -> str:
    return hash_key + ":j"


# a hash's index among an upload's keys in reserve.lua (7 per upload)
_TENANT_AT, _PROJECT_AT, _PER_UPLOAD = 0, 3, 7


def _keys(project_id: str, tenant_id: str) -> list[str]:
    t = tenant_key(project_id, tenant_id)
    p = project_key(project_id)
    return [
        t,
        marker_key(t),
        tenant_deadlines_key(project_id, tenant_id),
        p,
        marker_key(p),
        deadlines_key(project_id),
        generation_key(project_id),
    ]


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
        self._apply = redis.register_script(_lua("apply.lua"))
        self._holds = redis.register_script(_lua("holds.lua"))
        # A script may touch keys of one hash slot only on Redis Cluster; the keys are
        # tagged by project, so there a batch is split per project (None: by the client).
        # each project's Redis generation as last answered, and when it was first seen
        # (time.monotonic()): a snapshot may be installed without a marker only under a
        # generation known before it was read
        self._generations: dict[str, tuple[str, float]] = {}
        self._split = (
            isinstance(redis, RedisCluster) if split_per_project is None else split_per_project
        )

    def unavailable(self, exc: BaseException) -> DependencyUnavailable:
        # (redis-py's repr of its errors leaves out the message)
        cause = f"{type(exc).__name__}: {exc}"
        return DependencyUnavailable("redis", retry_after=self.retry_after, cause=cause)

    async def reserve(self, r: Reservation) -> Admitted | Rejected:
        """Admits or rejects one upload, rebuilding missing hashes from Postgres."""
        (verdict,) = await self.reserve_many([r])
        if not isinstance(verdict, Missing):
            return verdict
        (final,) = await self.rebuild_and_reserve([(r, verdict)])
        return final

    async def reserve_many(self, items: Sequence[Reservation]) -> list[Verdict]:
        """Judges many uploads in one round trip (one script call; per project on
        Redis Cluster).

        An upload whose hash is missing gets ``Missing``: ``rebuild_and_reserve``
        rebuilds and judges those in batches of their own, so a rebuild holds up no
        one else. Raises ``DependencyUnavailable`` if any of them could not be judged.
        """
        return _all_or_raise(await self.reserve_each(items))

    async def reserve_each(
        self, items: Sequence[Reservation]
    ) -> list[Verdict | DependencyUnavailable]:
        """``reserve_many``, where each upload gets its own answer: on Redis Cluster a
        shard that cannot answer fails only the uploads of the projects it holds."""
        return await self._judge(items, {})

    async def rebuild_and_reserve(
        self, items: Sequence[tuple[Reservation, Missing]]
    ) -> list[Admitted | Rejected]:
        """Rebuilds the missing hashes of many uploads from one Postgres snapshot
        statement and installs them in the script call that judges the uploads, so a
        batch of cold tenants costs one statement and one script call more than a
        batch of warm ones. A snapshot refused (the state changed while it was read)
        is taken again."""
        return _all_or_raise(await self.rebuild_and_reserve_each(items))

    async def rebuild_and_reserve_each(
        self, items: Sequence[tuple[Reservation, Missing]]
    ) -> list[Admitted | Rejected | DependencyUnavailable]:
        """``rebuild_and_reserve``, where each upload gets its own answer (as in
        ``reserve_each``)."""
        todo = {i: m for i, (_, m) in enumerate(items)}
        out: list[Admitted | Rejected | DependencyUnavailable] = [_ADMITTED] * len(items)
        for _ in range(MAX_REBUILDS):
            hashes: dict[HashId, tuple[str, str]] = {}  # (marker nonce, generation)
            for i, m in todo.items():
                r = items[i][0]
                if m.tenant:
                    hashes[(r.project_id, r.tenant_id)] = (m.tenant, m.generation)
                if m.project:
                    hashes[(r.project_id, None)] = (m.project, m.generation)
            # A project's snapshot holds all its pending uploads: skip it where a batch
            # before this one has built the hash already (every upload judged while it
            # was missing arrives here asking for it).
            projects = [h for h in hashes if h[1] is None]
            for h, built in zip(projects, await self._built(projects), strict=True):
                if built:
                    del hashes[h]
            snaps = await self.source.snapshots(list(hashes)) if hashes else []
            # installed only in the generation its marker was set in
            installs = {
                h: (nonce, replace(snap, generation=gen))
                for (h, (nonce, gen)), snap in zip(hashes.items(), snaps, strict=True)
            }
            idx = list(todo)
            verdicts = await self._judge([items[i][0] for i in idx], installs)
            todo = {}
            for i, v in zip(idx, verdicts, strict=True):
                if isinstance(v, Missing):
                    todo[i] = v
                else:
                    out[i] = v
            if not todo:
                return out
        for i in todo:
            out[i] = DependencyUnavailable(
                "redis", retry_after=self.retry_after, cause="rebuild contention"
            )
        return out

    async def _built(self, projects: Sequence[HashId]) -> list[bool]:
        """Whether each project's hash exists now (where Redis cannot say: False, and
        the snapshot is read; the judging call then answers for it)."""

        async def exists(h: HashId) -> bool:
            try:
                return bool(await self.redis.exists(project_key(h[0])))
            except _REDIS_DOWN:
                return False

        return list(await asyncio.gather(*(exists(h) for h in projects)))

    async def _judge(
        self, items: Sequence[Reservation], installs: dict[HashId, tuple[str, Snapshot]]
    ) -> list[Verdict | DependencyUnavailable]:
        nonce = secrets.token_hex(8)
        replies = await self._per_project(
            items,
            lambda r: r.project_id,
            self._reserve,
            lambda group: self._judge_call(group, nonce, installs),
        )
        out: list[Verdict | DependencyUnavailable] = [_ADMITTED] * len(items)
        now = time.monotonic()
        for idx, answers in replies:
            if isinstance(answers, DependencyUnavailable):
                for i in idx:
                    out[i] = answers
                continue
            for i, answer in zip(idx, answers, strict=True):
                out[i] = _verdict(answer)
                project, gen = items[i].project_id, _text(answer[-1])
                known = self._generations.get(project)
                if known is None or known[0] != gen:
                    self._generations[project] = (gen, now)
        return out

    def generation_before(self, project_id: str, started: float) -> str:
        """The project's generation, if this process saw it before ``started`` (a
        ``time.monotonic()``); else '' (a snapshot read then is not installed)."""
        known = self._generations.get(project_id)
        return known[0] if known is not None and known[1] < started else ""

    def _judge_call(
        self,
        items: Sequence[Reservation],
        nonce: str,
        installs: dict[HashId, tuple[str, Snapshot]],
    ) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [nonce, MARKER_TTL_MS, IDLE_TTL_SECONDS, len(items)]
        where: dict[HashId, int] = {}  # each hash's 1-based index among KEYS
        for j, r in enumerate(items):
            keys.extend(_keys(r.project_id, r.tenant_id))
            args.extend(r.script_args())
            where.setdefault((r.project_id, r.tenant_id), j * _PER_UPLOAD + _TENANT_AT + 1)
            where.setdefault((r.project_id, None), j * _PER_UPLOAD + _PROJECT_AT + 1)
        mine = {h: (where[h], nonce_snap) for h, nonce_snap in installs.items() if h in where}
        for r in items:  # snapshots read along with the request (no marker)
            h = (r.project_id, r.tenant_id)
            if r.snapshot is not None and h not in mine:
                mine[h] = (where[h], ("", r.snapshot))
        args.append(len(mine))
        for k, (snap_nonce, snap) in mine.values():
            keys.append(journal_key(keys[k - 1]))  # declared after the uploads' keys
            args.extend(
                (
                    k,
                    len(keys),
                    snap_nonce,
                    snap.read_ms,
                    snap.generation,
                    snap.usage.used,
                    snap.usage.version,
                    len(snap.pending),
                )
            )
            for p in snap.pending:
                args.extend(p)
        return keys, args

    async def _per_project(
        self,
        items: Sequence[T],
        project_of: Callable[[T], str],
        script: Any,
        build: Callable[[Sequence[T]], tuple[list[str], list[Any]]],
    ) -> list[tuple[list[int], Any]]:
        """One script call for the whole batch (``build`` makes its keys and args); on
        Redis Cluster one per project (one hash slot each), the calls for each node
        sent together (``GatewayRedisCluster.script_calls``). Answers, per call: (its
        item indices, its reply, or the DependencyUnavailable it failed with). Every
        call has ended when this returns, so nothing a failed batch sent is still on
        its way to Redis when its caller cleans up."""
        groups: dict[str, list[int]] = {}
        if self._split:
            for i, item in enumerate(items):
                groups.setdefault(project_of(item), []).append(i)
        if len(groups) <= 1:
            keys, args = build(items)
            return [(list(range(len(items))), await self._one_call(script, keys, args))]
        calls = [build([items[i] for i in idx]) for idx in groups.values()]
        script_calls = getattr(self.redis, "script_calls", None)
        if script_calls is not None:
            replies = [self._reply(r) for r in await script_calls(script, calls)]
        else:  # calls one by one, concurrently (tests split on standalone Redis)
            limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

            async def one(keys: list[str], args: list[Any]) -> Any:
                async with limit:
                    return await self._one_call(script, keys, args)

            replies = await asyncio.gather(*(one(*c) for c in calls), return_exceptions=True)
            for reply in replies:  # a bug, not Redis: raised once every call has ended
                if isinstance(reply, BaseException) and not isinstance(
                    reply, DependencyUnavailable
                ):
                    raise reply
        return list(zip(groups.values(), replies, strict=True))

    async def _one_call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except _REDIS_DOWN as exc:
            return self.unavailable(exc)

    def _reply(self, reply: Any) -> Any:
        """A reply of ``script_calls``: a failure is a DependencyUnavailable (Redis) or
        raised (a bug)."""
        if isinstance(reply, _REDIS_DOWN):
            return self.unavailable(reply)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def apply(
        self,
        *,
        project_id: str,
        tenant_id: str,
        tenant_usage: UsageAt | None = None,
        project_usage: UsageAt | None = None,
        released: Sequence[str] = (),
    ) -> None:
        """Mirrors a committed change: usage at a version, and reservations that ended."""
        await self.apply_many([(project_id, tenant_id, tenant_usage, project_usage, released)])

    async def apply_many(self, items: Sequence[MirrorItem]) -> None:
        """``apply`` for many tenants in one round trip (``_per_project``); the
        script gets each project's hash once, however many of its tenants are in it.
        """
        if not items:
            return
        _all_or_raise(
            [
                reply
                for _, reply in await self._per_project(
                    items, lambda i: i[0], self._apply, self._mirror
                )
            ]
        )

    def _mirror(self, items: Sequence[MirrorItem]) -> tuple[list[str], list[Any]]:
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
            keys.extend(
                (
                    p,
                    marker_key(p),
                    journal_key(p),
                    deadlines_key(project_id),
                    generation_key(project_id),
                )
            )
            args.extend((p_usage.used if p_usage else 0, p_usage.version if p_usage else -1))
            args.append(len(group))
            for _, tenant_id, t_usage, _, released in group:
                t = tenant_key(project_id, tenant_id)
                keys.extend(
                    (t, marker_key(t), journal_key(t), tenant_deadlines_key(project_id, tenant_id))
                )
                tver = t_usage.version if t_usage else -1  # -1: usage unchanged
                args.extend((t_usage.used if t_usage else 0, tver, len(released), *released))
        return keys, args

    async def release(self, uploads: Sequence[tuple[str, str, str]]) -> None:
        """Ends the reservations of these (project, tenant, upload) ids, if they hold
        one (usage unchanged)."""
        by_pair: dict[tuple[str, str], list[str]] = {}
        for project_id, tenant_id, upload_id in uploads:
            by_pair.setdefault((project_id, tenant_id), []).append(upload_id)
        await self.apply_many([(p, t, None, None, ids) for (p, t), ids in by_pair.items()])

    async def holds(self, uploads: Sequence[tuple[str, str, str]]) -> list[bool | None]:
        """Whether each (project, tenant, upload) holds a reservation; None where the
        tenant's hash is missing (it would be rebuilt from Postgres)."""
        if not uploads:
            return []

        def call(group: Sequence[tuple[str, str, str]]) -> tuple[list[str], list[Any]]:
            keys = [k for p, t, _ in group for k in (tenant_key(p, t), generation_key(p))]
            return keys, [u for _, _, u in group]

        out: list[bool | None] = [None] * len(uploads)
        replies = await self._per_project(uploads, lambda u: u[0], self._holds, call)
        _all_or_raise([answers for _, answers in replies])
        for idx, answers in replies:
            for i, a in zip(idx, answers, strict=True):
                out[i] = None if int(a) < 0 else bool(int(a))
        return out

    async def reservations(
        self, project_id: str, cursor: int, count: int
    ) -> tuple[int, list[tuple[str, str]]]:
        """One step of a walk over a project's reservations (its deadline set):
        (next cursor, 0 at the end; [(upload id, tenant id)])."""
        try:
            nxt, members = await self.redis.zscan(deadlines_key(project_id), cursor, count=count)
        except _REDIS_DOWN as exc:
            raise self.unavailable(exc) from exc
        out: list[tuple[str, str]] = []
        for member, _ in members:
            upload_id, _, tenant_id = _text(member).partition("|")
            out.append((upload_id, tenant_id))
        return int(nxt), out

    async def _exists(self, key: str) -> bool:
        try:
            return bool(await self.redis.exists(key))
        except _REDIS_DOWN as exc:
            raise self.unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except _REDIS_DOWN as exc:
            raise self.unavailable(exc) from exc


def _all_or_raise(results: Sequence[T | DependencyUnavailable]) -> list[T]:
    """The results, if none is a failure; else the first failure, raised."""
    for r in results:
        if isinstance(r, DependencyUnavailable):
            raise r
    return results  # type: ignore[return-value]


def _verdict(answer: Sequence[Any]) -> Verdict:
    kind = _text(answer[0])
    if kind == "ok":
        return _ADMITTED
    if kind == "missing":
        return Missing(
            tenant=_text(answer[1]), project=_text(answer[2]), generation=_text(answer[3])
        )
    return Rejected(scope=kind, used=int(answer[1]), reserved=int(answer[2]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
