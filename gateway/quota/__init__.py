"""Quota reservations in Redis (atomic Lua), mirrored from Postgres."""

from gateway.quota.client import create_redis
from gateway.quota.reservations import (
    Admitted,
    Missing,
    Pending,
    QuotaStore,
    Rejected,
    Reservation,
    ReservationSource,
    Snapshot,
    UsageAt,
)

__all__ = [
    "Admitted",
    "Missing",
    "Pending",
    "QuotaStore",
    "Rejected",
    "Reservation",
    "ReservationSource",
    "Snapshot",
    "UsageAt",
    "create_redis",
]
