"""Forward-only migrations from ``migrations/NNNN_name.sql``, under an advisory lock."""

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


async def ensure_database(database_url: str, connect_timeout: float = 10.0) -> bool:
    """Creates the database named in the URL if it is missing. True if created."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name:
        return False
    try:
        conn = await asyncpg.connect(database_url, timeout=connect_timeout)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_url, timeout=connect_timeout)
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


async def migrate(
    database_url: str, directory: Path | None = None, connect_timeout: float = 10.0
) -> list[int]:
    """Applies pending migrations; safe to run from many replicas at once."""
    await ensure_database(database_url, connect_timeout=connect_timeout)
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(database_url, timeout=connect_timeout)
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for m in migrations:
                if m.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        m.version,
                        m.name,
                    )
                applied_now.append(m.version)
                log.info("migration applied", version=m.version, name=m.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
    finally:
        await conn.close()
    return applied_now
