"""Schema migrations (Alembic, one history for SQLite and PostgreSQL): the history agrees
with ``schema.REVISIONS`` and the tables; a database from the release before migrations
is upgraded with nothing lost; older/newer databases are refused with one clear line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from safelight.errors import SchemaMismatch
from safelight.store import migrate
from safelight.store.schema import HEAD, REVISIONS, metadata
from safelight.store.sql import SqlStore
from safelight.types import EventType, JobStatus
from tests.pgdb import PG, temp_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'safelight.db'}"
        return
    with temp_database("safelight_mig") as name:
        yield f"{PG}/{name}"


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safelight", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_revisions_match_the_alembic_history() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [HEAD]
    history = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert tuple(history) == REVISIONS


def test_the_migrated_schema_is_the_tables_in_schema_py(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    SqlStore(db_url).close()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    # alembic_version is Alembic's own table, not ours.
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert diff == []


def make_legacy_database(url: str) -> None:
    """What Safelight 0.1.0 left: revision 1's tables (and no alembic_version), with data."""
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate.upgrade_to(conn, "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "INSERT INTO jobs (id, status, attempt, max_attempts, settings, "
                "manage_token_hash, cancel_requested, last_seq, images, enqueued_ms, "
                "created_ms, updated_ms, progress) VALUES ('job1', 'completed', 2, 3, "
                '\'{"prompt": "p"}\', \'h\', false, 3, \'[{"url": "/i/0"}]\', 1, 1, 5, '
                "'{\"step\": 10}')"
            )
        )
        for seq, kind in ((1, "queued"), (2, "running"), (3, "completed")):
            conn.execute(
                text(
                    "INSERT INTO job_events (job_id, seq, type, attempt, ts_ms, data) "
                    "VALUES ('job1', :seq, :kind, 2, :seq, '{}')"
                ),
                {"seq": seq, "kind": kind},
            )
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (key, body_hash, state, status_code, response, "
                "created_ms) VALUES ('k1', 'b', 'done', 201, '{}', 1)"
            )
        )
    engine.dispose()


def test_a_database_from_the_previous_release_is_upgraded_with_nothing_lost(
    db_url: str,
) -> None:
    make_legacy_database(db_url)
    r = run_cli("db", "upgrade", "--database-url", db_url)
    assert r.returncode == 0, r.stderr
    assert HEAD in r.stdout
    store = SqlStore(db_url, migrate.SchemaPolicy.INIT)  # now current: no refusal
    try:
        job = store.get_job("job1")
        assert job is not None and job.status is JobStatus.COMPLETED and job.attempt == 2
        assert job.images == [{"url": "/i/0"}] and job.progress == {"step": 10}
        events = store.read_events("job1", 0)
        assert [e.type for e in events] == [
            EventType.QUEUED,
            EventType.RUNNING,
            EventType.COMPLETED,
        ]
        assert store.idem_begin("k1", "b", 10**14) == (201, "{}")
    finally:
        store.close()
    r = run_cli("db", "current", "--database-url", db_url)
    assert r.returncode == 0 and f"database: {HEAD}" in r.stdout


def make_future_database(url: str) -> None:
    """A database a later Safelight (revision 9999) has written."""
    SqlStore(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()


def test_a_newer_database_is_refused_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'safelight.db'}"
    make_future_database(url)
    with pytest.raises(SchemaMismatch, match="newer"):
        SqlStore(url)
    r = run_cli("serve", "--data-dir", str(tmp_path), "--port", "0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "9999" in lines[0] and "newer" in lines[0], r.stderr


def test_scale_out_nodes_refuse_an_older_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scale-out nodes create the schema in an EMPTY database but never upgrade one."""
    url = f"sqlite:///{tmp_path / 'safelight.db'}"
    SqlStore(url).close()
    monkeypatch.setattr(migrate, "REVISIONS", (*REVISIONS, "future"))
    monkeypatch.setattr(migrate, "HEAD", "future")
    with pytest.raises(SchemaMismatch, match="safelight db upgrade"):
        SqlStore(url, migrate.SchemaPolicy.INIT)


def test_start_up_on_a_current_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'safelight.db'}"
    SqlStore(url).close()
    code = (
        "import sys; from safelight.store.sql import SqlStore; "
        f"SqlStore({url!r}).close(); print('alembic' in sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert r.stdout.strip() == "False"


@pytest.mark.postgres
def test_a_worker_refuses_a_newer_postgres_database_with_one_line(tmp_path: Path) -> None:
    with temp_database("safelight_mig") as name:
        url = f"{PG}/{name}"
        make_future_database(url)
        r = run_cli("worker", "--database-url", url, "--data-dir", str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "9999" in lines[0] and "newer" in lines[0], r.stderr
