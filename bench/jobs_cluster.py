"""Jobs on a shared store: throughput with one control API against two on the same PostgreSQL
database and S3 bucket (moto's server), and how long a killed control API's job takes to be
taken over. Real processes over loopback (tests/jobs_cluster.py), a throwaway PostgreSQL
(tests/postgres_server.py).

* Throughput: N renders (the `testcard` renderer, 1 s of audio, a 256 px portrait, uploaded
  once) submitted at once, alternating between the instances; jobs per minute from the first
  submit to the last completion. Each instance runs AVATAR_JOBS_CONCURRENCY workers, so two
  instances run twice as many at once: on a machine with few cores they share the same CPUs.
* Failover: one render held mid-download, its instance stopped, the file released; the times
  from the signal until the job's next attempt starts on the other instance and until it
  completes. SIGKILL: the pid is gone, which an instance on the same host sees at its next
  reclaim (every lease/3). SIGSTOP: frozen with its pid alive, as a lost machine looks; the
  lease must run out first.

    python -m bench --only jobs_cluster
    python -m bench.jobs_cluster --jobs 16 --lease 10
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

JOBS = 16
CONCURRENCY = 2
LEASE_S = 10.0


def _inputs(folder: Path) -> tuple[bytes, bytes]:
    from PIL import Image

    from tests.media import astronaut_head, speech_like_audio

    buffer = io.BytesIO()
    Image.fromarray(astronaut_head()).resize((256, 256)).save(buffer, format="PNG")
    speech_like_audio(folder / "speech.wav", 1.0)
    return buffer.getvalue(), (folder / "speech.wav").read_bytes()


def _throughput(pg, s3: str, work: Path, instances: int, jobs: int) -> dict:  # noqa: ANN001
    from tests.jobs_cluster import call, cluster_env, running_instances, upload, wait_all

    database = pg.create_database(f"bench_{instances}_{uuid.uuid4().hex[:6]}")
    env = cluster_env(database, s3, work, AVATAR_JOBS_CONCURRENCY=str(CONCURRENCY))
    portrait, speech = _inputs(work)
    with running_instances(instances, env, work) as apis:
        image_url = upload(apis[0], "me.png", portrait)
        audio_url = upload(apis[0], "speech.wav", speech)
        body = {"image_url": image_url, "audio_url": audio_url, "renderer": "testcard"}
        started = time.monotonic()
        ids = []
        for n in range(jobs):
            status, answer = call(apis[n % instances], "POST", "/api/v1/renders", body)
            assert status == 202, answer
            ids.append(answer["request_id"])
        wait_all(apis[0], ids, timeout=600)
        elapsed = time.monotonic() - started
        failed = [i for i in ids if call(apis[0], "GET", f"/api/v1/renders/{i}")[0] != 200]
        owners = _owners(database, ids)
    return {
        "instances": instances,
        "concurrency_each": CONCURRENCY,
        "jobs": jobs,
        "failed": len(failed),
        "seconds": round(elapsed, 2),
        "jobs_per_minute": round(jobs / elapsed * 60, 1),
        "jobs_by_instance": sorted(owners.values(), reverse=True),
    }


def _owners(database: str, ids: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(database) as db:
        rows = db.execute("SELECT owner FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    counts: dict[str, int] = {}
    for (owner,) in rows:
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def _row(database: str, job_id: str) -> tuple[str, int, str | None]:
    import psycopg

    with psycopg.connect(database) as db:
        row = db.execute(
            "SELECT status, attempts, owner FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _failover(pg, s3: str, work: Path, how: str, lease_s: float) -> dict:  # noqa: ANN001
    from tests.job_fixtures import FileServer
    from tests.jobs_cluster import call, cluster_env, owner_pid, running_instances

    database = pg.create_database(f"fail_{how.lower()}_{uuid.uuid4().hex[:6]}")
    env = cluster_env(database, s3, work, AVATAR_JOBS_LEASE_S=f"{lease_s:g}")
    portrait, speech = _inputs(work)
    with FileServer().running() as files, running_instances(2, env, work) as apis:
        audio_url, gate = files.hold("/speech.wav", speech)
        image_url = files.add("/me.png", portrait)
        body = {"image_url": image_url, "audio_url": audio_url, "renderer": "testcard"}
        status, answer = call(apis[0], "POST", "/api/v1/renders", body)
        assert status == 202, answer
        job_id = answer["request_id"]
        while files.files["/speech.wav"].requests == 0:
            time.sleep(0.02)
        holder = owner_pid(_row(database, job_id)[2])
        assert holder is not None
        os.kill(holder, getattr(signal, how))
        signalled = time.monotonic()
        gate.set()
        reclaimed = None
        while True:
            status_now, attempts, owner = _row(database, job_id)
            if reclaimed is None and attempts >= 2 and owner_pid(owner) != holder:
                reclaimed = time.monotonic() - signalled
            if status_now in ("completed", "failed"):
                break
            if time.monotonic() - signalled > 120:
                raise AssertionError("the job was not taken over within 120 s")
            time.sleep(0.02)
        completed = time.monotonic() - signalled
        if how == "SIGSTOP":
            os.kill(holder, signal.SIGKILL)
    return {
        "signal": how,
        "lease_s": lease_s,
        "status": status_now,
        "attempts": attempts,
        "takeover_s": round(reclaimed or completed, 2),
        "completed_s": round(completed, 2),
    }


def _measure(jobs: int, lease_s: float) -> dict:
    from tests.job_fixtures import moto_s3
    from tests.jobs_cluster import create_bucket
    from tests.postgres_server import running_postgres

    with (
        tempfile.TemporaryDirectory(prefix="bench-jobs-cluster-") as tmp,
        running_postgres() as pg,
        moto_s3() as s3_config,
    ):
        work = Path(tmp)
        s3 = s3_config.endpoint_url
        assert s3 is not None
        create_bucket(s3)
        throughput = [_throughput(pg, s3, work, n, jobs) for n in (1, 2)]
        failover = [_failover(pg, s3, work, how, lease_s) for how in ("SIGKILL", "SIGSTOP")]
    return {
        "renderer": "testcard",
        "audio_s": 1.0,
        "throughput": throughput,
        "failover": failover,
    }


async def run(jobs: int = JOBS, lease_s: float = LEASE_S) -> dict:
    return await asyncio.to_thread(_measure, jobs, lease_s)


def section(results: dict) -> str:
    machine = results.get("machine", {})
    lines = [
        "## Jobs on a shared store: one control API against two, and failover",
        "",
        f"`python -m bench --only jobs_cluster` ({results.get('started', '')}, "
        f"{machine.get('cpu_count', '?')} CPUs). Control API processes with job runners on one "
        "PostgreSQL database and one S3 bucket (moto's server), over loopback. "
        f"{results['throughput'][0]['jobs']} renders (`{results['renderer']}`, "
        f"{results['audio_s']:g} s of audio, a 256 px portrait) submitted at once, alternating "
        f"between the instances; AVATAR_JOBS_CONCURRENCY={CONCURRENCY} on each.",
        "",
        "| control APIs | jobs | failed | seconds | jobs per minute | jobs run by each |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["throughput"]:
        each = " / ".join(str(n) for n in row["jobs_by_instance"])
        lines.append(
            f"| {row['instances']} | {row['jobs']} | {row['failed']} | {row['seconds']} | "
            f"{row['jobs_per_minute']} | {each} |"
        )
    lines += [
        "",
        "Both instances run on the same machine here, so the second one adds workers but no "
        "CPUs (each attempt is a worker process that starts, renders and encodes), so the gain "
        "here is only the extra overlap of four workers against two; on separate machines each "
        "instance brings its own cores. One run each, on a machine shared with other work.",
        "",
        "Failover: one render held mid-download, the instance running it stopped, the file "
        "released. Takeover: from the signal until the other instance starts the job's next "
        "attempt; completed: until that attempt has finished.",
        "",
        "| signal | lease | takeover (s) | completed (s) | attempts |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["failover"]:
        lines.append(
            f"| {row['signal']} | {row['lease_s']:g} s | {row['takeover_s']} | "
            f"{row['completed_s']} | {row['attempts']} |"
        )
    lines += [
        "",
        "SIGKILL: the pid is gone, which an instance on the same host notices at its next "
        "reclaim pass (every lease/3). SIGSTOP: the process is frozen with its pid alive, as an "
        "instance on a lost machine looks from another one, so the lease must run out first "
        "(it is renewed every lease/3, so between 2/3 of a lease and a whole one after the "
        "freeze), then the next reclaim pass takes the job. With the default "
        "AVATAR_JOBS_LEASE_S=30 a lost machine's job is taken over within about 40 s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs_cluster")
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--lease", type=float, default=LEASE_S)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.jobs, args.lease)), indent=2))


if __name__ == "__main__":
    main()
