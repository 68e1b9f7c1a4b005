"""The durable job store: one SQLite file (WAL), every state change in one transaction.

A job moves `pending -> processing -> completed | failed`, or to `cancelled`. Each attempt holds
a lease: a random token plus an expiry that its supervisor keeps renewing. Every write an
attempt makes names its token, so the result of an attempt that was superseded (cancelled,
reclaimed after a crash, retried) changes nothing. Webhook deliveries are rows' state too, so
their retries survive a restart as well.

The store is synchronous and thread-safe; the async side calls it through `asyncio.to_thread`.

Two back ends share every query here (`JobStoreBase`): `JobStore`, one SQLite file, the default
for one machine; and `PostgresJobStore` (pg_store.py), for several control API instances on one
database. Each keeps a schema version and migrates an older database when it opens it
(`SQLITE_MIGRATIONS` here, PostgreSQL's in pg_store.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderers.errors import CodedError

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
KINDS = ("prepare", "render")

WEBHOOK_PENDING = "pending"
WEBHOOK_DELIVERED = "delivered"
WEBHOOK_FAILED = "failed"

# Version 1 is the layout every database had before versions were kept (PRAGMA user_version 0
# with a `jobs` table): it is never changed, only added to by later versions.
_SQLITE_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lease TEXT,
    owner TEXT,
    lease_expires_at REAL,
    base_url TEXT,
    webhook_url TEXT,
    webhook_state TEXT,
    webhook_event_id TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_at REAL,
    webhook_error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, next_attempt_at, seq);
CREATE INDEX IF NOT EXISTS jobs_webhooks ON jobs (webhook_state, webhook_next_at);
CREATE TABLE IF NOT EXISTS job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_by_job ON job_logs (job_id, id);
"""
SQLITE_MIGRATIONS: tuple[tuple[int, Sequence[str]], ...] = (
    (1, [statement for statement in _SQLITE_V1.split(";") if statement.strip()]),
    # 2: the instance delivering a job's webhook holds it (claim_webhooks), so that control
    # API instances sharing a store send each webhook once.
    (2, ["ALTER TABLE jobs ADD COLUMN webhook_owner TEXT"]),
)
SCHEMA_VERSION = SQLITE_MIGRATIONS[-1][0]
_MAX_LOG_CHARS = 2000


class JobStoreError(CodedError):
    """The store cannot be opened or used: `job_store_unavailable` (the database cannot be
    reached or read), `job_store_too_new` (written by a newer version of this service),
    `job_store_unsupported` (a back end whose library is not installed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=503)


class JobStateError(CodedError):
    """The job is not in a state that allows the operation (e.g. retrying a running job):
    409 with `code` (`job_not_retryable` for a retry)."""

    status: int

    def __init__(self, job: Job, message: str, code: str = "invalid_job_state") -> None:
        super().__init__(code, message, status=409)
        self.job = job


@dataclass(frozen=True)
class LogLine:
    at: float
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: float
    progress: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    lease: str | None
    owner: str | None
    lease_expires_at: float | None
    base_url: str | None
    webhook_url: str | None
    webhook_state: str | None
    webhook_event_id: str | None
    webhook_attempts: int
    webhook_next_at: float | None
    webhook_error: str | None
    webhook_owner: str | None = None
    """The instance sending the webhook now (schema version 2)."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def _from_row(cls, row: Mapping[str, Any]) -> Job:
        values = dict(row)
        values.pop("seq", None)
        values["input"] = json.loads(values["input"])
        values["output"] = json.loads(values["output"]) if values["output"] else None
        return cls(**values)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStoreBase:
    """Every operation on jobs, in SQL both back ends run: `?` placeholders (PostgresJobStore
    turns them into its own) and `_skip_locked` after the SELECTs that pick rows to change
    (empty for SQLite, whose write transactions take the whole database)."""

    log_lines: int
    _skip_locked = ""

    def close(self) -> None:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        """A connection inside one write transaction, committed at the end of the block."""
        raise NotImplementedError

    def _read(self, sql: str, args: tuple = ()) -> list[Any]:
        raise NotImplementedError

    def _x(self, db: Any, sql: str, args: tuple = ()) -> Any:
        """Run `sql` on `db` (inside `_transaction`); its cursor."""
        return db.execute(sql, args)

    def _log(self, db: Any, job_id: str, message: str, at: float) -> None:
        self._x(
            db,
            "INSERT INTO job_logs (job_id, at, message) VALUES (?, ?, ?)",
            (job_id, at, message[:_MAX_LOG_CHARS]),
        )

    def _trim_logs(self, db: Any, job_id: str) -> None:
        self._x(
            db,
            "DELETE FROM job_logs WHERE job_id = ? AND id <= (SELECT id FROM job_logs "
            "WHERE job_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (job_id, job_id, self.log_lines),
        )

    def _job(self, db: Any, job_id: str) -> Job | None:
        row = self._x(db, "SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job._from_row(row) if row else None

    # --- creating and reading ---------------------------------------------------------------

    def create(
        self,
        kind: str,
        job_input: Mapping[str, Any],
        *,
        max_attempts: int,
        base_url: str | None = None,
        webhook_url: str | None = None,
        job_id: str | None = None,
        now: float | None = None,
    ) -> Job:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        now = time.time() if now is None else now
        job_id = job_id or new_job_id()
        with self._transaction() as db:
            self._x(
                db,
                "INSERT INTO jobs (id, kind, status, input, max_attempts, next_attempt_at, "
                "created_at, base_url, webhook_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    kind,
                    PENDING,
                    json.dumps(dict(job_input)),
                    max(1, max_attempts),
                    now,
                    now,
                    base_url,
                    webhook_url,
                ),
            )
            self._log(db, job_id, f"{kind} job queued", now)
            job = self._job(db, job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job._from_row(rows[0]) if rows else None

    def logs(self, job_id: str) -> list[LogLine]:
        rows = self._read(
            "SELECT at, message FROM job_logs WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [LogLine(row["at"], row["message"]) for row in rows]

    def add_log(self, job_id: str, message: str, *, now: float | None = None) -> None:
        with self._transaction() as db:
            self._log(db, job_id, message, time.time() if now is None else now)
            self._trim_logs(db, job_id)

    def counts(self) -> dict[str, dict[str, int]]:
        """{kind: {status: count}} with every kind and status present."""
        result = {kind: dict.fromkeys(STATUSES, 0) for kind in KINDS}
        rows = self._read("SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status")
        for row in rows:
            result.setdefault(row["kind"], dict.fromkeys(STATUSES, 0))[row["status"]] = row["n"]
        return result

    def queue_position(self, job: Job) -> int | None:
        """How many pending jobs will be claimed before `job` (0: it is next); None unless
        pending. The claim order is (next_attempt_at, creation order)."""
        if job.status != PENDING:
            return None
        rows = self._read(
            "SELECT COUNT(*) AS n FROM jobs AS other, jobs AS this WHERE this.id = ? "
            "AND other.status = 'pending' AND (other.next_attempt_at < this.next_attempt_at "
            "OR (other.next_attempt_at = this.next_attempt_at AND other.seq < this.seq))",
            (job.id,),
        )
        return int(rows[0]["n"])

    def processing(self) -> list[Job]:
        rows = self._read("SELECT * FROM jobs WHERE status = 'processing' ORDER BY seq")
        return [Job._from_row(row) for row in rows]

    def next_due_at(self) -> float | None:
        """When the earliest pending job becomes due, or None when none is pending."""
        rows = self._read("SELECT MIN(next_attempt_at) AS t FROM jobs WHERE status = 'pending'")
        return rows[0]["t"]

    # --- attempts -----------------------------------------------------------------------------

    def claim(
        self, owner: str, limit: int, *, lease_s: float, now: float | None = None
    ) -> list[Job]:
        """Atomically move up to `limit` due pending jobs to processing under fresh leases held
        by `owner`; the attempt is counted here, when it starts."""
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        claimed = []
        with self._transaction() as db:
            ids = [
                row["id"]
                for row in self._x(
                    db,
                    "SELECT id FROM jobs WHERE status = 'pending' AND next_attempt_at <= ? "
                    "ORDER BY next_attempt_at, seq LIMIT ?" + self._skip_locked,
                    (now, limit),
                ).fetchall()
            ]
            for job_id in ids:
                lease = uuid.uuid4().hex
                cursor = self._x(
                    db,
                    "UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease = ?, "
                    "owner = ?, lease_expires_at = ?, progress = 0, "
                    "started_at = COALESCE(started_at, ?) WHERE id = ? AND status = 'pending'",
                    (lease, owner, now + lease_s, now, job_id),
                )
                if cursor.rowcount != 1:
                    continue  # taken meanwhile: never hand out a job this claim did not move
                job = self._job(db, job_id)
                assert job is not None
                self._log(db, job_id, f"attempt {job.attempts} of {job.max_attempts} started", now)
                claimed.append(job)
        return claimed

    def renew(self, job_id: str, lease: str, *, until: float) -> bool:
        """Extend a lease; False when the attempt no longer holds the job (cancelled, taken
        back), which tells the supervisor to stop its worker."""
        with self._transaction() as db:
            cursor = self._x(
                db,
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease = ? "
                "AND status = 'processing'",
                (until, job_id, lease),
            )
            return cursor.rowcount == 1

    def set_progress(self, job_id: str, lease: str, progress: float) -> bool:
        with self._transaction() as db:
            cursor = self._x(
                db,
                "UPDATE jobs SET progress = ? WHERE id = ? AND lease = ? AND status = 'processing'",
                (min(1.0, max(0.0, progress)), job_id, lease),
            )
            return cursor.rowcount == 1

    def attempt_log(
        self, job_id: str, lease: str, message: str, *, now: float | None = None
    ) -> bool:
        """A log line from an attempt, kept only while that attempt holds the job."""
        with self._transaction() as db:
            held = self._x(
                db,
                "SELECT 1 FROM jobs WHERE id = ? AND lease = ? AND status = 'processing'",
                (job_id, lease),
            ).fetchone()
            if held:
                self._log(db, job_id, message, time.time() if now is None else now)
                self._trim_logs(db, job_id)
            return bool(held)

    def complete(
        self, job_id: str, lease: str, output: Mapping[str, Any], *, now: float | None = None
    ) -> bool:
        """Record the attempt's result; False (and nothing changes) when the attempt was
        superseded, so a job completes exactly once."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            cursor = self._x(
                db,
                "UPDATE jobs SET status = 'completed', output = ?, error = NULL, progress = 1, "
                "finished_at = ?, lease = NULL, lease_expires_at = NULL "
                "WHERE id = ? AND lease = ? AND status = 'processing'",
                (json.dumps(dict(output)), now, job_id, lease),
            )
            if cursor.rowcount != 1:
                return False
            self._log(db, job_id, "completed", now)
            self._schedule_webhook(db, job_id, now)
            return True

    def fail_attempt(
        self,
        job_id: str,
        lease: str,
        error: str,
        *,
        retry_at: float | None,
        now: float | None = None,
    ) -> str | None:
        """End the attempt with `error`: back to pending until `retry_at`, or failed for good
        when `retry_at` is None. The new status, or None when the attempt was superseded."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            if retry_at is not None:
                cursor = self._x(
                    db,
                    "UPDATE jobs SET status = 'pending', error = ?, next_attempt_at = ?, "
                    "lease = NULL, owner = NULL, lease_expires_at = NULL "
                    "WHERE id = ? AND lease = ? AND status = 'processing'",
                    (error, retry_at, job_id, lease),
                )
                status = PENDING
                message = f"attempt failed: {error}; retry in {retry_at - now:.1f} s"
            else:
                cursor = self._x(
                    db,
                    "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                    "lease = NULL, lease_expires_at = NULL "
                    "WHERE id = ? AND lease = ? AND status = 'processing'",
                    (error, now, job_id, lease),
                )
                status = FAILED
                message = f"failed: {error}"
            if cursor.rowcount != 1:
                return None
            self._log(db, job_id, message, now)
            if status == FAILED:
                self._schedule_webhook(db, job_id, now)
            self._trim_logs(db, job_id)
            return status

    def release(self, job_id: str, lease: str, reason: str, *, now: float | None = None) -> bool:
        """Give an attempt back without counting it (the service is shutting down cleanly)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            cursor = self._x(
                db,
                "UPDATE jobs SET status = 'pending', "
                "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                "next_attempt_at = ?, lease = NULL, owner = NULL, lease_expires_at = NULL "
                "WHERE id = ? AND lease = ? AND status = 'processing'",
                (now, job_id, lease),
            )
            if cursor.rowcount == 1:
                self._log(db, job_id, f"attempt given back: {reason}", now)
            return cursor.rowcount == 1

    def reclaim(
        self, is_stale: Callable[[Job], bool], error: str, *, now: float | None = None
    ) -> list[Job]:
        """Take back processing jobs whose supervisor is gone (`is_stale`): pending again while
        attempts remain (the lost attempt counts), else failed with `error`."""
        now = time.time() if now is None else now
        reclaimed = []
        with self._transaction() as db:
            rows = self._x(
                db, "SELECT * FROM jobs WHERE status = 'processing'" + self._skip_locked
            ).fetchall()
            for job in (Job._from_row(row) for row in rows):
                if not is_stale(job):
                    continue
                if job.attempts < job.max_attempts:
                    self._x(
                        db,
                        "UPDATE jobs SET status = 'pending', error = ?, next_attempt_at = ?, "
                        "lease = NULL, owner = NULL, lease_expires_at = NULL WHERE id = ?",
                        (error, now, job.id),
                    )
                    self._log(
                        db, job.id, f"attempt {job.attempts} lost ({error}); queued again", now
                    )
                else:
                    self._x(
                        db,
                        "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                        "lease = NULL, lease_expires_at = NULL WHERE id = ?",
                        (error, now, job.id),
                    )
                    self._log(db, job.id, f"failed: {error}", now)
                    self._schedule_webhook(db, job.id, now)
                reclaimed.append(self._job(db, job.id))
        return [job for job in reclaimed if job is not None]

    # --- operator actions ---------------------------------------------------------------------

    def cancel(self, job_id: str, *, now: float | None = None) -> tuple[Job, str] | None:
        """Cancel a pending or processing job. (job after, status before); None if unknown.
        A job that already ended is left as it is."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            job = self._job(db, job_id)
            if job is None:
                return None
            if job.status in (PENDING, PROCESSING):
                self._x(
                    db,
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, lease = NULL, "
                    "lease_expires_at = NULL WHERE id = ?",
                    (now, job_id),
                )
                self._log(db, job_id, f"cancelled while {job.status}", now)
            after = self._job(db, job_id)
        assert after is not None
        return after, job.status

    def retry(self, job_id: str, *, extra_attempts: int, now: float | None = None) -> Job | None:
        """Queue a failed or cancelled job again with `extra_attempts` more attempts. None if
        unknown; JobStateError for any other state."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            job = self._job(db, job_id)
            if job is None:
                return None
            if job.status not in (FAILED, CANCELLED):
                raise JobStateError(
                    job,
                    f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried",
                    "job_not_retryable",
                )
            self._x(
                db,
                "UPDATE jobs SET status = 'pending', error = NULL, output = NULL, progress = 0, "
                "max_attempts = attempts + ?, next_attempt_at = ?, finished_at = NULL, "
                "owner = NULL, webhook_state = NULL, webhook_event_id = NULL, "
                "webhook_owner = NULL, "
                "webhook_attempts = 0, webhook_next_at = NULL, webhook_error = NULL WHERE id = ?",
                (max(1, extra_attempts), now, job_id),
            )
            self._log(db, job_id, f"retry requested after {job.status}", now)
            after = self._job(db, job_id)
        return after

    # --- webhooks -----------------------------------------------------------------------------

    def _schedule_webhook(self, db: Any, job_id: str, now: float) -> None:
        self._x(
            db,
            "UPDATE jobs SET webhook_state = 'pending', webhook_event_id = ?, "
            "webhook_attempts = 0, webhook_next_at = ?, webhook_error = NULL "
            "WHERE id = ? AND webhook_url IS NOT NULL",
            (uuid.uuid4().hex, now, job_id),
        )

    def claim_webhooks(
        self, owner: str, limit: int, *, hold_s: float, now: float | None = None
    ) -> list[Job]:
        """Take up to `limit` due webhook deliveries for `owner`: each is held (not due to
        anyone else) for `hold_s` seconds, by when its attempt is recorded
        (`webhook_attempted`), so instances sharing the store send each one once. An instance
        that dies while sending leaves it due again after `hold_s`: at least once, with the
        same event id for the receiver to drop a duplicate by."""
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = self._x(
                db,
                "SELECT * FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= ? "
                "ORDER BY webhook_next_at LIMIT ?" + self._skip_locked,
                (now, limit),
            ).fetchall()
            claimed = []
            for job in (Job._from_row(row) for row in rows):
                self._x(
                    db,
                    "UPDATE jobs SET webhook_next_at = ?, webhook_owner = ? WHERE id = ?",
                    (now + hold_s, owner, job.id),
                )
                claimed.append(job)
        return claimed

    def due_webhooks(self, limit: int, *, now: float | None = None) -> list[Job]:
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT * FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= ? "
            "ORDER BY webhook_next_at LIMIT ?",
            (now, limit),
        )
        return [Job._from_row(row) for row in rows]

    def next_webhook_at(self) -> float | None:
        rows = self._read(
            "SELECT MIN(webhook_next_at) AS t FROM jobs WHERE webhook_state = 'pending'"
        )
        return rows[0]["t"]

    def webhook_attempted(
        self,
        job_id: str,
        event_id: str,
        *,
        delivered: bool,
        error: str | None,
        retry_at: float | None,
        now: float | None = None,
    ) -> bool:
        """Record one delivery attempt of event `event_id` (ignored if the job has moved on to
        another event, e.g. it was retried): delivered, retried at `retry_at`, or given up."""
        now = time.time() if now is None else now
        state = WEBHOOK_DELIVERED if delivered else WEBHOOK_PENDING if retry_at else WEBHOOK_FAILED
        with self._transaction() as db:
            cursor = self._x(
                db,
                "UPDATE jobs SET webhook_state = ?, webhook_attempts = webhook_attempts + 1, "
                "webhook_next_at = ?, webhook_error = ?, webhook_owner = NULL "
                "WHERE id = ? AND webhook_event_id = ? AND webhook_state = 'pending'",
                (state, retry_at, error, job_id, event_id),
            )
            if cursor.rowcount != 1:
                return False
            if delivered:
                message = "webhook delivered"
            elif retry_at:
                message = f"webhook failed ({error}); retry in {retry_at - now:.1f} s"
            else:
                message = f"webhook failed ({error}); giving up"
            self._log(db, job_id, message, now)
            self._trim_logs(db, job_id)
            return True


class JobStore(JobStoreBase):
    """Jobs and their log lines in the SQLite database at `path` (created if missing, migrated
    to `SCHEMA_VERSION` if older; PRAGMA user_version holds its version)."""

    def __init__(self, path: Path, *, log_lines: int = 200) -> None:
        self.path = Path(path)
        self.log_lines = log_lines
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _transaction).
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash; only a power cut can lose the
            # last commits, and a lost commit only means a job runs again.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self.schema_version = self._migrate()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise JobStoreError(
                "job_store_unavailable",
                f"cannot open the job store {self.path}: {error}",
            ) from None
        except BaseException:
            self._db.close()
            raise

    def _version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if (
            version == 0
            and self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
            ).fetchone()
        ):
            return 1  # written before versions were kept: version 1's layout
        return version

    def _migrate(self) -> int:
        """Bring the database to SCHEMA_VERSION, one version per transaction (BEGIN IMMEDIATE
        also keeps two processes opening it at once from both migrating)."""
        with self._transaction() as db:
            version = self._version()
        if version > SCHEMA_VERSION:
            raise JobStoreError(
                "job_store_too_new",
                f"the job store {self.path} has schema version {version}, newer than this "
                f"service's {SCHEMA_VERSION}; upgrade the service or use another AVATAR_JOBS_DB",
            )
        for target, statements in SQLITE_MIGRATIONS:
            with self._transaction() as db:
                version = self._version()
                if version >= target:
                    continue
                for statement in statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(target)}")
        return SCHEMA_VERSION

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()
