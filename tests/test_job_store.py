"""The durable job store on a real SQLite file: claims, leases, retries, cancel, restart
recovery, logs, queue positions and webhook bookkeeping."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from control_api.jobs.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    JobStateError,
    JobStore,
)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.sqlite3", log_lines=20)
    yield s
    s.close()


def test_database_is_wal_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = JobStore(path)
    job = first.create("prepare", {"video_url": "http://x/v.mp4"}, max_attempts=4)
    first.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again = JobStore(path)
    found = again.get(job.id)
    again.close()
    assert found is not None and found.input == {"video_url": "http://x/v.mp4"}
    assert found.status == PENDING and found.max_attempts == 4


def test_claim_is_ordered_capped_and_counts_the_attempt(store: JobStore) -> None:
    jobs = [store.create("render", {"n": n}, max_attempts=2, now=100 + n) for n in range(3)]
    claimed = store.claim("owner-a", 2, lease_s=30, now=200)
    assert [j.id for j in claimed] == [jobs[0].id, jobs[1].id]
    assert all(j.status == PROCESSING and j.attempts == 1 and j.lease for j in claimed)
    assert claimed[0].lease != claimed[1].lease
    assert store.claim("owner-b", 5, lease_s=30, now=200)[0].id == jobs[2].id
    assert store.claim("owner-b", 5, lease_s=30, now=200) == []


def test_concurrent_claims_never_hand_out_a_job_twice(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    seed = JobStore(path)
    for n in range(40):
        seed.create("prepare", {"n": n}, max_attempts=1)
    seed.close()
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        own = JobStore(path)  # a connection per thread, as separate processes would have
        while batch := own.claim(name, 3, lease_s=30):
            with lock:
                taken.extend(job.id for job in batch)
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"o{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 40 and len(set(taken)) == 40


def test_a_superseded_attempt_cannot_complete_the_job(store: JobStore) -> None:
    job = store.create("prepare", {}, max_attempts=3)
    first = store.claim("a", 1, lease_s=30)[0]
    assert store.fail_attempt(job.id, first.lease, "boom", retry_at=0.0) == PENDING
    second = store.claim("a", 1, lease_s=30)[0]
    assert second.attempts == 2
    assert store.complete(job.id, first.lease, {"late": True}) is False
    assert store.complete(job.id, second.lease, {"ok": True}) is True
    assert store.complete(job.id, second.lease, {"twice": True}) is False
    final = store.get(job.id)
    assert final.status == COMPLETED and final.output == {"ok": True} and final.progress == 1
    assert [line.message for line in store.logs(job.id)].count("completed") == 1


def test_failing_the_last_attempt_fails_the_job(store: JobStore) -> None:
    job = store.create("render", {}, max_attempts=1)
    attempt = store.claim("a", 1, lease_s=30)[0]
    assert (
        store.fail_attempt(
            job.id, attempt.lease, "Processing timed out after 1 seconds", retry_at=None
        )
        == FAILED
    )
    final = store.get(job.id)
    assert final.status == FAILED and final.error == "Processing timed out after 1 seconds"
    assert final.finished_at is not None and final.lease is None


def test_retry_waits_for_its_backoff(store: JobStore) -> None:
    job = store.create("prepare", {}, max_attempts=3, now=1000)
    attempt = store.claim("a", 1, lease_s=30, now=1000)[0]
    store.fail_attempt(job.id, attempt.lease, "503", retry_at=1010, now=1001)
    assert store.claim("a", 1, lease_s=30, now=1005) == []
    assert store.next_due_at() == 1010
    assert store.claim("a", 1, lease_s=30, now=1010)[0].attempts == 2


def test_cancel_pending_and_processing_but_not_finished(store: JobStore) -> None:
    pending = store.create("prepare", {}, max_attempts=1)
    job, before = store.cancel(pending.id)
    assert (before, job.status) == (PENDING, CANCELLED)
    running = store.create("prepare", {}, max_attempts=1)
    attempt = store.claim("a", 1, lease_s=30)[0]
    job, before = store.cancel(running.id)
    assert (before, job.status) == (PROCESSING, CANCELLED)
    assert store.renew(running.id, attempt.lease, until=1e12) is False  # the worker must stop
    assert store.complete(running.id, attempt.lease, {}) is False
    job, before = store.cancel(running.id)
    assert (before, job.status) == (CANCELLED, CANCELLED)
    assert store.cancel("nope") is None


def test_reclaim_requeues_lost_attempts_and_fails_exhausted_ones(store: JobStore) -> None:
    again = store.create("prepare", {}, max_attempts=2)
    spent = store.create("prepare", {}, max_attempts=1)
    mine = store.create("prepare", {}, max_attempts=2)
    store.claim("dead", 2, lease_s=30)
    store.claim("alive", 1, lease_s=30)
    reclaimed = store.reclaim(lambda job: job.owner == "dead", "worker lost")
    assert {job.id: job.status for job in reclaimed} == {again.id: PENDING, spent.id: FAILED}
    assert store.get(again.id).attempts == 1  # the lost attempt stays counted
    assert store.get(spent.id).error == "worker lost"
    assert store.get(mine.id).status == PROCESSING


def test_release_gives_the_attempt_back_uncounted(store: JobStore) -> None:
    job = store.create("render", {}, max_attempts=1)
    attempt = store.claim("a", 1, lease_s=30)[0]
    assert store.release(job.id, attempt.lease, "shutdown")
    after = store.get(job.id)
    assert after.status == PENDING and after.attempts == 0


def test_retry_only_from_failed_or_cancelled(store: JobStore) -> None:
    job = store.create("prepare", {}, max_attempts=1)
    with pytest.raises(JobStateError):
        store.retry(job.id, extra_attempts=2)
    attempt = store.claim("a", 1, lease_s=30)[0]
    store.fail_attempt(job.id, attempt.lease, "crash", retry_at=None)
    retried = store.retry(job.id, extra_attempts=2)
    assert retried.status == PENDING and retried.error is None
    assert retried.attempts == 1 and retried.max_attempts == 3
    assert store.retry("nope", extra_attempts=1) is None


def test_queue_position_follows_claim_order(store: JobStore) -> None:
    a = store.create("render", {}, max_attempts=1, now=10)
    b = store.create("render", {}, max_attempts=1, now=11)
    c = store.create("render", {}, max_attempts=1, now=12)
    assert [store.queue_position(store.get(j.id)) for j in (a, b, c)] == [0, 1, 2]
    store.claim("o", 1, lease_s=30, now=20)
    assert store.queue_position(store.get(a.id)) is None
    assert [store.queue_position(store.get(j.id)) for j in (b, c)] == [0, 1]


def test_logs_are_capped_per_job_and_ignore_stale_attempts(store: JobStore) -> None:
    job = store.create("render", {}, max_attempts=2)
    attempt = store.claim("o", 1, lease_s=30)[0]
    for n in range(50):
        assert store.attempt_log(job.id, attempt.lease, f"line {n}")
    lines = store.logs(job.id)
    assert len(lines) == 20 and lines[-1].message == "line 49"
    assert lines == sorted(lines, key=lambda line: line.at)
    assert store.attempt_log(job.id, "stale-lease", "ghost") is False
    assert "ghost" not in [line.message for line in store.logs(job.id)]


def test_counts_by_kind_and_status(store: JobStore) -> None:
    store.create("render", {}, max_attempts=1)
    store.create("prepare", {}, max_attempts=1)
    store.claim("o", 1, lease_s=30)
    counts = store.counts()
    assert counts["render"][PROCESSING] == 1 and counts["prepare"][PENDING] == 1
    assert counts["render"][COMPLETED] == 0


def test_webhook_is_scheduled_with_the_final_status_and_retried(store: JobStore) -> None:
    job = store.create("render", {}, max_attempts=1, webhook_url="http://hook", now=0)
    attempt = store.claim("o", 1, lease_s=30, now=0)[0]
    assert store.due_webhooks(10, now=0) == []
    store.complete(job.id, attempt.lease, {"video": {}}, now=5)
    due = store.due_webhooks(10, now=5)
    assert [j.id for j in due] == [job.id] and due[0].webhook_event_id
    event = due[0].webhook_event_id
    assert store.webhook_attempted(
        job.id, event, delivered=False, error="HTTP 500", retry_at=9, now=6
    )
    assert store.due_webhooks(10, now=8) == []
    assert store.webhook_attempted(job.id, event, delivered=True, error=None, retry_at=None, now=9)
    final = store.get(job.id)
    assert (final.webhook_state, final.webhook_attempts) == ("delivered", 2)
    assert (
        store.webhook_attempted(job.id, event, delivered=True, error=None, retry_at=None) is False
    )
