"""Schema revisions: one Alembic history (``migrations/versions``) for SQLite and PostgreSQL.

Start-up only reads ``alembic_version`` with SQLAlchemy and compares it with
``schema.REVISIONS``; Alembic itself is imported only when there is something to do
(an empty database, an upgrade, ``safelight db upgrade``).  Everything runs in ONE
transaction that first takes the migration lock - a PostgreSQL advisory lock, or SQLite's
``BEGIN IMMEDIATE`` - so two nodes started at once on an empty database cannot race: the
second waits, then finds the schema current.

Policies (docs/operations.md, "Schema migrations"):
- ``UPGRADE``: apply whatever is missing (embedded mode; ``safelight db upgrade``).
- ``INIT``: create the schema in an EMPTY database, refuse an older one (scale-out nodes:
  upgrading a shared database under running older nodes is the operator's deliberate step).
Every policy refuses a database newer than this release.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text

from safelight.errors import SchemaMismatch
from safelight.store.schema import HEAD, REVISIONS

__all__ = ["HEAD", "REVISIONS", "SchemaPolicy", "prepare"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key: any constant bigint unique to this application ("SAFELITE").
PG_LOCK_KEY = 0x5AFE_11E7
# The release before migrations recorded its schema as safelight_meta.schema_version = 1.
LEGACY_REVISION = "0001"


class SchemaPolicy(enum.StrEnum):
    UPGRADE = "upgrade"
    INIT = "init"


def lock(conn: Connection) -> None:
    """Serialise schema work across processes (call first in the transaction)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
    # SQLite: the writer engine's transactions are BEGIN IMMEDIATE - already exclusive.


def current_revision(conn: Connection) -> str | None:
    """The database's revision; ``None`` for an empty database.  A database made by the
    release before migrations (tables, no alembic_version) counts as ``LEGACY_REVISION``."""
    names = set(inspect(conn).get_table_names())
    if "alembic_version" in names:
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        if row is not None:
            return str(row[0])
    if "jobs" not in names:
        return None
    version = None
    if "safelight_meta" in names:
        version = conn.execute(
            text("SELECT value FROM safelight_meta WHERE key = 'schema_version'")
        ).scalar()
    if version != "1":
        raise SchemaMismatch(
            f"the database has Safelight tables but an unknown schema (version {version!r})"
        )
    return LEGACY_REVISION


def prepare(conn: Connection, policy: SchemaPolicy) -> str | None:
    """Check (and per ``policy`` migrate) the schema inside the caller's transaction.
    Returns the revision it started from (``None``: empty database)."""
    lock(conn)
    found = current_revision(conn)
    if found == HEAD and _stamped(conn):
        return found
    if found is not None and found not in REVISIONS:
        raise SchemaMismatch(
            f"the database is at schema revision {found}, newer than this Safelight "
            f"(which knows up to {HEAD}); upgrade Safelight on this node"
        )
    if found is not None and found != HEAD and policy is not SchemaPolicy.UPGRADE:
        raise SchemaMismatch(
            f"the database is at schema revision {found}, older than this Safelight "
            f"({HEAD}); run `safelight db upgrade --database-url ...` first"
        )
    upgrade(conn, stamp=found)
    return found


def upgrade(conn: Connection, *, stamp: str | None) -> None:
    """Apply every revision after ``stamp`` (recording ``stamp`` first for a database
    from the release before migrations)."""
    upgrade_to(conn, "head", stamp=stamp)


def upgrade_to(conn: Connection, target: str, *, stamp: str | None = None) -> None:
    from alembic import command  # only when there is schema work to do
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    if stamp is not None and not _stamped(conn):
        command.stamp(config, stamp)
    command.upgrade(config, target)


def _stamped(conn: Connection) -> bool:
    return bool(inspect(conn).has_table("alembic_version"))


def describe(conn: Connection) -> dict[str, Any]:
    """For ``safelight db current``: what the database is at and what this release knows."""
    return {"database": current_revision(conn), "head": HEAD}
