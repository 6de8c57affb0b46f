"""Forward-only migrations from ``migrations/NNNN_name.sql``, under an advisory lock
(one held per transaction, so that it also holds through PgBouncer)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Any constant shared by all replicas; "gwmigrat" as a 64-bit integer.
ADVISORY_LOCK_ID = 0x67776D6967726174 - (1 << 63)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    here = Path(str(files("gateway"))) / "migrations"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must be 1..N without gaps, got {versions}")
    return found


async def _connect(url: str, connect_timeout: float) -> asyncpg.Connection:
    # No named prepared statements (statement_cache_size=0): they would serve no
    # purpose here, and through PgBouncer in transaction pooling mode they break.
    return await asyncpg.connect(url, timeout=connect_timeout, statement_cache_size=0)


def _missing_database(exc: Exception) -> bool:
    """Postgres says 3D000; PgBouncer, in front of it, a protocol violation (08P01)
    naming the missing database."""
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return True
    return isinstance(exc, asyncpg.ProtocolViolationError) and "does not exist" in str(exc)


async def ensure_database(database_url: str, connect_timeout: float = 10.0) -> bool:
    """Creates the database named in the URL if it is missing. True if created."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name:
        return False
    try:
        conn = await _connect(database_url, connect_timeout)
    except (asyncpg.InvalidCatalogNameError, asyncpg.ProtocolViolationError) as exc:
        if not _missing_database(exc):
            raise
    else:
        await conn.close()
        return False
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await _connect(admin_url, connect_timeout)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another replica created it at the same moment
    finally:
        await conn.close()
    log.info("database created", database=name)
    return True


_CREATE_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


async def migrate(
    database_url: str, directory: Path | None = None, connect_timeout: float = 10.0
) -> list[int]:
    """Applies pending migrations; safe to run from many replicas at once.

    One transaction applies them all (or none, should one fail), after taking a
    transaction-level advisory lock (``pg_advisory_xact_lock``): replicas starting
    together wait for it, then find nothing to do. The lock ends with the
    transaction, on the server connection that ran it, so it also holds through
    PgBouncer's transaction pooling, where a session lock would not: statements
    outside a transaction may each run on another server connection (the unlock on
    one that never took the lock).
    """
    await ensure_database(database_url, connect_timeout=connect_timeout)
    migrations = load_migrations(directory)
    conn = await _connect(database_url, connect_timeout)
    applied_now: list[int] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_ID)
            await conn.execute(_CREATE_TABLE)
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for m in migrations:
                if m.version in done:
                    continue
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    m.version,
                    m.name,
                )
                applied_now.append(m.version)
    finally:
        await conn.close()
    for version in applied_now:  # committed
        log.info("migration applied", version=version, name=migrations[version - 1].name)
    return applied_now
