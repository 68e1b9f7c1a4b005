"""The one error base of the project: a stable `code` for programs, a `message` for people.

Every error that carries a code derives from `CodedError`: the renderers' (RendererError,
PreparationError), the avatar runtime's (OfflineRenderError, AudioFileError) and the control
API's (ApiError, and the job system's StorageError, FetchError, InputError, RunPodError,
JobStateError, JobError). It lives here, in the lowest layer, because renderers may import
nothing of the layers above (tests/test_import_rules.py) and every layer can import renderers.

* `code`: stable snake_case, part of the API; clients branch on it, never on the message.
* `message`: the exact user-facing text. It never names a class, never holds a traceback, a
  local path or a credential: it is what reaches a response, a job's error, a webhook or a
  RunPod output, as written.
* `status`: the HTTP status that goes with the error when it is answered as one (None: the
  layer that answers decides; control_api/errors.py turns a CodedError with a status into the
  service's error response).
* `retryable`: whether trying the same thing again may succeed (a timeout, a 503), as opposed
  to an input that never can. The job system derives it from the code alone
  (control_api/jobs/errors.py).
"""

from __future__ import annotations


class CodedError(Exception):
    """An error with a stable `code` and a user-facing `message` (see the module doc)."""

    status: int | None = None
    retryable: bool = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


def short_reason(error: BaseException | None, default: str = "unexpected error") -> str:
    """A short, human reason for a low-level failure, for a user-facing message: the operating
    system's (or FFmpeg's) own words, first letter lower-cased, without the file name or error
    number that `str(error)` would add; `default` when the error has none. Never a class
    name."""
    strerror = getattr(error, "strerror", None) if error is not None else None
    if isinstance(strerror, str) and strerror.strip():
        text = " ".join(strerror.split())
        return text[0].lower() + text[1:]
    return default
