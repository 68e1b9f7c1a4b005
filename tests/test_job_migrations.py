"""Schema versions of the SQLite job store: a database written before versions were kept (the
layout below, exactly as the store created it until schema version 2) opens, is migrated and
keeps its jobs; a newer one is refused with a coded error, and the control API says so in one
line at startup. Bad shared-store settings stop a real control API process just as clearly."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from control_api.jobs.store import (
    COMPLETED,
    PENDING,
    SCHEMA_VERSION,
    JobStore,
    JobStoreError,
)
from tests.livekit_server import free_port

REPO = Path(__file__).resolve().parent.parent

# The store's layout before schema versions (PRAGMA user_version 0), kept verbatim.
UNVERSIONED_LAYOUT = """
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


def _unversioned_database(path: Path) -> None:
    """A database as the store left it before versions: one finished job with a webhook still
    to send, one pending job, their log lines, WAL mode."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(UNVERSIONED_LAYOUT)
    db.execute(
        "INSERT INTO jobs (id, kind, status, input, output, attempts, max_attempts, "
        "next_attempt_at, progress, created_at, started_at, finished_at, base_url, webhook_url, "
        "webhook_state, webhook_event_id, webhook_next_at) VALUES ('done1', 'render', "
        "'completed', ?, ?, 1, 4, 10, 1, 10, 11, 12, 'http://old', 'http://hook', 'pending', "
        "'ev1', 12)",
        (json.dumps({"audio_url": "a"}), json.dumps({"duration": 1.5})),
    )
    db.execute(
        "INSERT INTO jobs (id, kind, status, input, max_attempts, next_attempt_at, created_at) "
        "VALUES ('wait1', 'prepare', 'pending', ?, 4, 20, 20)",
        (json.dumps({"video_url": "v"}),),
    )
    db.execute("INSERT INTO job_logs (job_id, at, message) VALUES ('done1', 10, 'queued')")
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def _columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute("PRAGMA table_info(jobs)")}


def test_an_unversioned_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    _unversioned_database(path)
    assert "webhook_owner" not in _columns(path)
    store = JobStore(path)
    assert store.schema_version == SCHEMA_VERSION == 2
    assert "webhook_owner" in _columns(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    done = store.get("done1")
    assert done is not None and done.status == COMPLETED and done.output == {"duration": 1.5}
    assert [line.message for line in store.logs("done1")] == ["queued"]
    # The old rows work with what the new column is for: the webhook is claimed and sent.
    claimed = store.claim_webhooks("me", 10, hold_s=30, now=50)
    assert [job.id for job in claimed] == ["done1"] and claimed[0].webhook_event_id == "ev1"
    assert store.webhook_attempted("done1", "ev1", delivered=True, error=None, retry_at=None)
    assert store.get("wait1").status == PENDING
    assert [job.id for job in store.claim("me", 5, lease_s=30, now=50)] == ["wait1"]
    new = store.create("render", {"n": 1}, max_attempts=1)
    store.close()
    again = JobStore(path)  # opening a current database changes nothing
    assert again.get(new.id) is not None and again.schema_version == SCHEMA_VERSION
    again.close()


def test_processes_opening_an_old_database_together_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    _unversioned_database(path)
    errors: list[BaseException] = []
    stores: list[JobStore] = []

    def open_one() -> None:
        try:
            stores.append(JobStore(path))
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 4
    for store in stores:
        assert store.get("wait1") is not None
        store.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JobStoreError) as raised:
        JobStore(path)
    assert raised.value.code == "job_store_too_new"
    assert "upgrade the service" in raised.value.message


def test_a_file_that_is_not_a_database_is_a_coded_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(JobStoreError) as raised:
        JobStore(path)
    assert raised.value.code == "job_store_unavailable"


def _start(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m control_api` with `env`; it must stop by itself (bad configuration)."""
    full = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AVATAR_CACHE": str(tmp_path / "cache"),
        "AVATAR_API_KEYS": "k" * 24,
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LIVEKIT_API_KEY": "unused",
        "LIVEKIT_API_SECRET": "unused-secret-0123456789-0123456789",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "control_api", "--port", str(free_port())],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"AVATAR_JOBS_DATABASE_URL": "mysql://x@y/z"}, "must be a PostgreSQL URL"),
        ({"AVATAR_JOBS_S3_BUCKET": "Not_A_Bucket"}, "not a valid S3 bucket name"),
        ("too new", "job_store_too_new"),
        ("unreachable", "job_store_unavailable"),
    ],
)
def test_bad_store_settings_stop_the_service_with_one_clear_line(
    tmp_path: Path, setting: dict[str, str] | str, expected: str
) -> None:
    if setting == "too new":
        path = tmp_path / "jobs.sqlite3"
        JobStore(path).close()
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
        env = {"AVATAR_JOBS_DB": str(path)}
    elif setting == "unreachable":
        url = f"postgresql://jobs:pw-not-shown@127.0.0.1:{free_port()}/jobs"
        env = {"AVATAR_JOBS_DATABASE_URL": url}
    else:
        assert isinstance(setting, dict)
        env = setting
    result = _start(env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert expected in output
    assert "Traceback" not in output and "pw-not-shown" not in output
