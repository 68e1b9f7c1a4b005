"""Why a job attempt failed, as a stable code, through the worker-process boundary.

A worker (worker.py) ends a failed attempt with one event, `{"event": "error", "code",
"error": message, "retry"}`; the supervisor (runner.py) decides from the code alone whether
the job gets another attempt (`retryable`), so no message is ever parsed. The message is the
user-facing text (what the job's `error`, its webhook and a RunPod output say): never a class
name or a traceback.

Codes whose failure another attempt may cure (`RETRYABLE_CODES`):

| code | when |
| --- | --- |
| `download_failed` | a download broken off (refused, reset, TLS, cut short), HTTP 5xx/408/425/429 |
| `download_timeout` | a download (or its connect) that took too long |
| `url_host_unresolved` | DNS had no answer for the URL's host |
| `s3_unreachable` | S3 unreachable or timing out, or it answered InternalError, SlowDown, 503 |
| `install_failed` | the local avatar store could not be written (a full disk, permissions) |
| `job_timeout` | the attempt ran past `AVATAR_JOBS_TIMEOUT_S` and was killed |
| `worker_crashed` | the worker process died without a result |
| `internal_error` | anything unforeseen in the worker (its traceback: the attempt's log file) |

Every other code is final: the input can never succeed (`download_refused`, an HTTP 4xx other
than 408/425/429; the url_* refusals; `download_too_large`; the preparation's and the render's
own codes such as `video_too_short`, `no_face`, `unsupported_model`, `corrupt_audio`;
`invalid_input`; `s3_upload_failed`; `avatar_not_found`; `invalid_job_spec`).
"""

from __future__ import annotations

from renderers.errors import CodedError

DOWNLOAD_FAILED = "download_failed"
DOWNLOAD_REFUSED = "download_refused"
S3_UNREACHABLE = "s3_unreachable"
JOB_TIMEOUT = "job_timeout"
WORKER_CRASHED = "worker_crashed"
INTERNAL_ERROR = "internal_error"
INVALID_JOB_SPEC = "invalid_job_spec"

RETRYABLE_CODES = frozenset(
    {
        DOWNLOAD_FAILED,
        "download_timeout",
        "url_host_unresolved",
        S3_UNREACHABLE,
        "install_failed",
        JOB_TIMEOUT,
        WORKER_CRASHED,
        INTERNAL_ERROR,
    }
)
INTERNAL_ERROR_MESSAGE = "Internal error while processing the job"
"""The message of an unforeseen failure; the details go to the attempt's log file only."""


def retryable(code: str) -> bool:
    """Whether a failure with `code` is worth another attempt (see the module doc)."""
    return code in RETRYABLE_CODES


class JobError(CodedError):
    """An attempt that failed: `code` is stable, `message` is what the job's error says, and
    `retryable` follows from the code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=retryable(code))

    @classmethod
    def of(cls, error: CodedError, message: str | None = None) -> JobError:
        """`error` at the job boundary, with its code, and its message unless one is given."""
        return cls(error.code, error.message if message is None else message)
