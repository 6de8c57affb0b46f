"""PostgresReservationSource: the durable truth that Redis's quota hashes are rebuilt
from (gateway.quota's ``ReservationSource``; docs/quota.md, "When Redis loses data")."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.db.pool import Database
from gateway.db.queries import Q
from gateway.quota import Pending, Snapshot, UsageAt
from gateway.quota.reservations import HashId


class PostgresReservationSource:
    """Usage at its version and the pending uploads with their deadlines: one
    statement (one consistent snapshot) for any number of hashes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def snapshots(self, hashes: Sequence[HashId]) -> list[Snapshot]:
        rows = await self.db.fetch(
            Q.quota_snapshots, [p for p, _ in hashes], [t for _, t in hashes]
        )
        usage: list[UsageAt] = [UsageAt(0, 0)] * len(hashes)
        pending: list[list[Pending]] = [[] for _ in hashes]
        for r in rows:
            i = r["ord"] - 1
            if r["kind"] == "u":
                usage[i] = UsageAt(r["used"] or 0, r["version"] or 0)
            else:
                pending[i].append(Pending(r["id"], r["tenant_id"], r["used"], r["deadline_ms"]))
        return [Snapshot(u, p) for u, p in zip(usage, pending, strict=True)]


__all__ = ["PostgresReservationSource"]
