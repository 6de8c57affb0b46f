"""Postgres access: the pool, named queries and driver-error mapping."""

from gateway.db.pool import Database, create_database, is_unavailable
from gateway.db.queries import Q

__all__ = ["Database", "Q", "create_database", "is_unavailable"]
