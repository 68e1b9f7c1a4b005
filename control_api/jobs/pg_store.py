"""The job store on PostgreSQL, for control API instances on several machines sharing one queue.

The same operations as the SQLite store (store.JobStoreBase, every query shared), through
psycopg 3. What differs:

* Claims pick their rows with `SELECT ... FOR UPDATE SKIP LOCKED` inside the claiming
  transaction, so instances claiming at once never take the same job and never wait on each
  other's rows; every later write still names the attempt's lease, as with SQLite.
* Each store holds one connection (autocommit, explicit transactions), used by one thread at
  a time; a connection that breaks (the server restarted) is replaced on the next call, and the
  call that saw it break fails with `job_store_unavailable`.
* The schema has versions of its own (`PG_MIGRATIONS`), recorded in `avatar_jobs_schema`;
  migrating runs under a transaction-scoped advisory lock, so instances starting together
  migrate once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from .store import JobStoreBase, JobStoreError

PG_EXTRA_HINT = "pip install 'avatar-agents[postgres]'"
_MIGRATION_LOCK = 0x61766A6F  # pg_advisory_xact_lock key: "avjo"
_PLACEHOLDER = re.compile(r"\?")

_PG_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    lease TEXT,
    owner TEXT,
    lease_expires_at DOUBLE PRECISION,
    base_url TEXT,
    webhook_url TEXT,
    webhook_state TEXT,
    webhook_event_id TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_at DOUBLE PRECISION,
    webhook_error TEXT,
    webhook_owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, next_attempt_at, seq);
CREATE INDEX IF NOT EXISTS jobs_webhooks ON jobs (webhook_state, webhook_next_at);
CREATE TABLE IF NOT EXISTS job_logs (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_by_job ON job_logs (job_id, id);
"""
PG_MIGRATIONS: tuple[tuple[int, Sequence[str]], ...] = (
    (1, [statement for statement in _PG_V1.split(";") if statement.strip()]),
)
PG_SCHEMA_VERSION = PG_MIGRATIONS[-1][0]


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in ("postgres", "postgresql")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise JobStoreError(
            "job_store_unsupported",
            "AVATAR_JOBS_DATABASE_URL names PostgreSQL, but psycopg is not installed: "
            + PG_EXTRA_HINT,
        ) from None
    return psycopg


class PostgresJobStore(JobStoreBase):
    """Jobs and their log lines in the PostgreSQL database at `url` (a libpq URL,
    `postgresql://user:password@host:5432/dbname`), migrated to `PG_SCHEMA_VERSION`."""

    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, log_lines: int = 200, connect_timeout_s: float = 10.0) -> None:
        self._psycopg = _psycopg()
        self.url = url
        self.log_lines = log_lines
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._db: Any = None
        self._sql: dict[str, str] = {}
        with self._lock:
            self._connection()
        self.schema_version = self._migrate()

    def _fail(self, error: Exception) -> JobStoreError:
        reason = " ".join(str(error).split())[:300] or "no answer"
        return JobStoreError(
            "job_store_unavailable", f"the job database {redact(self.url)} failed: {reason}"
        )

    def _connection(self) -> Any:
        """The open connection, made again if it is closed or broken (hold `_lock`)."""
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        if self._db is not None:
            self._db.close()
            self._db = None
        from psycopg.rows import dict_row

        try:
            self._db = self._psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, int(self._connect_timeout_s)),
                application_name="avatar-agents-jobs",
            )
        except self._psycopg.Error as error:
            raise self._fail(error) from None
        return self._db

    def _migrate(self) -> int:
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS avatar_jobs_schema "
                "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            row = db.execute("SELECT MAX(version) AS v FROM avatar_jobs_schema").fetchone()
            version = int(row["v"] or 0)
            if version > PG_SCHEMA_VERSION:
                raise JobStoreError(
                    "job_store_too_new",
                    f"the job database {redact(self.url)} has schema version {version}, newer "
                    f"than this service's {PG_SCHEMA_VERSION}; upgrade the service",
                )
            for target, statements in PG_MIGRATIONS:
                if target <= version:
                    continue
                for statement in statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO avatar_jobs_schema (version, applied_at) VALUES (%s, %s)",
                    (target, time.time()),
                )
        return PG_SCHEMA_VERSION

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _translate(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = _PLACEHOLDER.sub("%s", sql)
        return translated

    def _x(self, db: Any, sql: str, args: tuple = ()) -> Any:
        return db.execute(self._translate(sql), args)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            db = self._connection()
            try:
                with db.transaction():
                    yield db
            except self._psycopg.OperationalError as error:
                raise self._fail(error) from None

    def _read(self, sql: str, args: tuple = ()) -> list[Any]:
        with self._lock:
            db = self._connection()
            try:
                return list(db.execute(self._translate(sql), args).fetchall())
            except self._psycopg.OperationalError as error:
                raise self._fail(error) from None
