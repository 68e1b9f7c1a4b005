"""The avatar-preparation handler (seed 000) as a RunPod serverless worker.

Deploy this file unchanged as the worker's entry point (`python control_api/runpod_worker.py` in
a checkout; installed, `python -m control_api.runpod_worker`, or this file's path in
site-packages); try it locally with the SDK's test mode:

    python control_api/runpod_worker.py --test_input '{"input": {"video_url": "...",
        "avatar_id": "abc123", "s3_bucket": "my-bucket", "s3_prefix": "avatars/42"}}'

It runs the same `prepare` as the control API's jobs (control_api/jobs/handlers.py) and answers
the seed's output: `{status: "success", avatar_id, model, num_frames, upload_url}` or, for an
input that cannot succeed, `{status: "error", error}` with the job COMPLETED. A RunPod worker has
no local avatar store, so the TAR always goes to S3: the job's `s3_bucket`, else
`AVATAR_S3_BUCKET`; credentials come from the usual AWS variables. Transient failures (a 503
from the video's server, S3 unreachable) are retried here with backoff
(`AVATAR_JOBS_MAX_RETRIES`, `AVATAR_JOBS_BACKOFF_S`); if they persist the job FAILS with the
error, as RunPod reports a crashed worker.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script, RunPod's convention. Python put this file's own folder first on the
    # path, where control_api's modules (config, metrics, ...) would pass for top-level ones:
    # take it off, and make the folder that holds the package importable. Installed, that is
    # site-packages, already on the path; from a checkout it is the checkout.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    if all(Path(p or ".").resolve() != _here.parent for p in sys.path):
        sys.path.insert(0, str(_here.parent))

from control_api.config import Settings  # noqa: E402
from control_api.jobs.errors import (  # noqa: E402
    INTERNAL_ERROR,
    INTERNAL_ERROR_MESSAGE,
    JobError,
)
from control_api.jobs.handlers import JobContext, prepare  # noqa: E402
from control_api.jobs.options import options_from_env  # noqa: E402
from control_api.jobs.runner import backoff_delay  # noqa: E402

_PROGRESS_EVERY_S = 2.0


class SeedOutput(dict):
    """The seed's error output, `{status: "error", error}`, kept whole.

    The SDK moves an `error` key out of a handler's output and marks the job FAILED; the seed
    wants such a job COMPLETED with the error inside its output (FAILED is for workers that
    crash). Keeping the key through the SDK's `pop("error")` keeps that contract; the output is
    still serialised as a plain JSON object.
    """

    def pop(self, key: Any, *default: Any) -> Any:
        if key == "error":
            return default[0] if default else None
        return super().pop(key, *default)


class _RunPodEvents:
    """Progress to RunPod's job progress (when running on RunPod) and to the worker's log."""

    def __init__(self, job: dict[str, Any]) -> None:
        self._job = job
        self._last = 0.0
        self._on_runpod = bool(os.environ.get("RUNPOD_POD_ID"))

    def progress(self, value: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < _PROGRESS_EVERY_S and value < 1.0:
            return
        self._last = now
        print(f"progress {value:.0%} {message}".rstrip(), flush=True)
        if self._on_runpod:
            import runpod

            runpod.serverless.progress_update(self._job, {"progress": round(value, 3)})

    def log(self, message: str) -> None:
        print(message, flush=True)


def handler(job: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    options = options_from_env()
    events = _RunPodEvents(job)
    attempts = settings.jobs_max_retries + 1
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory(prefix="avatar-prepare-") as work:
            context = JobContext(
                job_id=str(job.get("id", "local")),
                attempt=attempt,
                work_dir=Path(work),
                options=options,
                base_url=None,
                events=events,
            )
            try:
                output = prepare(job.get("input") or {}, context)
            except Exception as unforeseen:
                error = _as_job_error(unforeseen)
                if not error.retryable:
                    return SeedOutput({"status": "error", "error": error.message})
                if attempt == attempts:
                    return {"error": error.message}  # the SDK reports the job FAILED
                delay = backoff_delay(attempt, settings.jobs_backoff_s, settings.jobs_backoff_max_s)
                events.log(f"attempt {attempt} failed ({error.message}); retrying in {delay:g} s")
                time.sleep(delay)
                continue
        return SeedOutput(output) if output.get("status") == "error" else output
    raise AssertionError("unreachable")


def _as_job_error(error: Exception) -> JobError:
    """`prepare` raises only retryable JobErrors; anything else is a bug, whose traceback goes
    to the worker's log while the job says only `internal_error`'s message (the SDK would
    otherwise put the exception's class, message and traceback in the job's output)."""
    if isinstance(error, JobError):
        return error
    traceback.print_exception(error)
    return JobError(INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)


def main() -> None:
    import runpod

    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
