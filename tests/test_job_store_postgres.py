"""The job store on a real PostgreSQL server (tests/postgres_server.py): every behaviour of the
SQLite store's tests, run again on PostgresJobStore, plus what only matters with several
instances on one database: concurrent claims from separate connections, webhooks claimed once,
migrations run once, a dropped connection, an unreachable server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from control_api.jobs.pg_store import PG_SCHEMA_VERSION, PostgresJobStore
from control_api.jobs.store import PENDING, JobStoreError
from tests.postgres_server import PostgresServer, running_postgres

# The SQLite store's behaviour tests, collected again here, where `store` is PostgreSQL's.
from tests.test_job_store import (  # noqa: F401
    test_a_superseded_attempt_cannot_complete_the_job,
    test_cancel_pending_and_processing_but_not_finished,
    test_claim_is_ordered_capped_and_counts_the_attempt,
    test_counts_by_kind_and_status,
    test_failing_the_last_attempt_fails_the_job,
    test_logs_are_capped_per_job_and_ignore_stale_attempts,
    test_queue_position_follows_claim_order,
    test_reclaim_requeues_lost_attempts_and_fails_exhausted_ones,
    test_release_gives_the_attempt_back_uncounted,
    test_retry_only_from_failed_or_cancelled,
    test_retry_waits_for_its_backoff,
    test_webhook_is_scheduled_with_the_final_status_and_retried,
)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """A fresh, empty database of its own; its URL."""
    return postgres.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture
def store(database: str) -> Iterator[PostgresJobStore]:
    s = PostgresJobStore(database, log_lines=20)
    yield s
    s.close()


def test_concurrent_claims_from_separate_connections_never_share_a_job(database: str) -> None:
    seed = PostgresJobStore(database)
    for n in range(120):
        seed.create("render", {"n": n}, max_attempts=1)
    seed.close()
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        own = PostgresJobStore(database)  # a connection each, as separate instances have
        while batch := own.claim(name, 3, lease_s=30):
            with lock:
                taken.extend(job.id for job in batch)
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"o{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 120 and len(set(taken)) == 120


def test_a_webhook_is_claimed_by_one_instance_until_its_attempt_is_recorded(
    database: str,
) -> None:
    a, b = PostgresJobStore(database), PostgresJobStore(database)
    job = a.create("render", {}, max_attempts=1, webhook_url="http://hook", now=0)
    attempt = a.claim("a", 1, lease_s=30, now=0)[0]
    a.complete(job.id, attempt.lease, {}, now=1)
    first = a.claim_webhooks("a", 10, hold_s=20, now=2)
    assert [j.id for j in first] == [job.id]
    assert b.claim_webhooks("b", 10, hold_s=20, now=3) == []  # held by a
    assert b.get(job.id).webhook_owner == "a"
    # a dies without recording its attempt: after the hold, b sends it, same event id.
    again = b.claim_webhooks("b", 10, hold_s=20, now=23)
    assert [j.webhook_event_id for j in again] == [first[0].webhook_event_id]
    assert b.webhook_attempted(
        job.id, again[0].webhook_event_id, delivered=True, error=None, retry_at=None, now=24
    )
    assert a.claim_webhooks("a", 10, hold_s=20, now=100) == []
    final = a.get(job.id)
    assert (final.webhook_state, final.webhook_attempts, final.webhook_owner) == (
        "delivered",
        1,
        None,
    )
    a.close()
    b.close()


def test_the_schema_is_versioned_and_migrated_once_by_instances_starting_together(
    database: str,
) -> None:
    stores: list[PostgresJobStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresJobStore(database))
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 4
    with psycopg.connect(database) as db:
        versions = db.execute("SELECT version FROM avatar_jobs_schema ORDER BY version").fetchall()
    assert [v for (v,) in versions] == list(range(1, PG_SCHEMA_VERSION + 1))
    for store in stores:
        assert store.schema_version == PG_SCHEMA_VERSION
        store.close()


def test_a_database_from_a_newer_version_is_refused(database: str) -> None:
    PostgresJobStore(database).close()
    with psycopg.connect(database, autocommit=True) as db:
        db.execute("INSERT INTO avatar_jobs_schema VALUES (%s, 0)", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(JobStoreError) as raised:
        PostgresJobStore(database)
    assert raised.value.code == "job_store_too_new"
    assert f"schema version {PG_SCHEMA_VERSION + 1}" in raised.value.message


def test_a_dropped_connection_fails_one_call_and_the_next_reconnects(
    database: str, store: PostgresJobStore
) -> None:
    job = store.create("prepare", {}, max_attempts=1)
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'avatar-agents-jobs' AND datname = current_database()"
        )
    with pytest.raises(JobStoreError) as raised:
        store.get(job.id)
    assert raised.value.code == "job_store_unavailable"
    assert store.get(job.id).status == PENDING


def test_an_unreachable_server_is_a_coded_error_without_the_password(
    postgres: PostgresServer,
) -> None:
    from tests.livekit_server import free_port

    url = f"postgresql://jobs:s3cret-pw@127.0.0.1:{free_port()}/jobs"
    with pytest.raises(JobStoreError) as raised:
        PostgresJobStore(url, connect_timeout_s=2)
    assert raised.value.code == "job_store_unavailable"
    assert "s3cret-pw" not in raised.value.message and "***" in raised.value.message
