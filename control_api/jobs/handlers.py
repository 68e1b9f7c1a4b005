"""What a worker does for each kind of job. Synchronous: it runs in a worker process (or in
RunPod's serverless worker), never on the control API's event loop.

Failures are `JobError(code, message)` (errors.py): the code says whether another attempt
may succeed, the message is the user-facing text. `prepare` is seed 000's handler: its result
is the seed's output object, an input the job can never succeed with (a bad video, an
unsupported model, a URL that answers 404) included, as `{"status": "error", "error": ...}`;
transient failures (a 503, a dropped connection, S3 being down) raise a retryable JobError so
the supervisor tries again. `render` is seed 003's: any failure raises a JobError, and the job
fails at once unless the code is a retryable one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import inputs, links, storage
from .errors import DOWNLOAD_FAILED, DOWNLOAD_REFUSED, JobError
from .fetch import FetchError, fetch_to_file
from .options import JobOptions

Progress = Callable[[float, str], None]
UNKNOWN_JOB_KIND = "unknown_job_kind"
AVATAR_NOT_FOUND = "avatar_not_found"


class Events(Protocol):
    def progress(self, value: float, message: str = "") -> None: ...

    def log(self, message: str) -> None: ...


@dataclass(frozen=True)
class JobContext:
    job_id: str
    attempt: int
    work_dir: Path
    options: JobOptions
    base_url: str | None
    events: Events

    @property
    def folder(self) -> str:
        """Where this attempt publishes its files (links.py)."""
        return f"{self.job_id}-{self.attempt}"

    def stage(self, start: float, end: float) -> Progress:
        """A progress callback mapping a stage's 0..1 onto [start, end] of the whole job."""

        def report(fraction: float, message: str = "") -> None:
            self.events.progress(start + (end - start) * min(1.0, max(0.0, fraction)), message)

        return report


def run_job(spec: Mapping[str, Any], events: Events) -> dict[str, Any]:
    """Run the job `spec` describes (see runner.py / system.py for who writes it)."""
    context = JobContext(
        job_id=spec["job_id"],
        attempt=int(spec.get("attempt", 1)),
        work_dir=Path(spec["work_dir"]),
        options=JobOptions.from_json(spec["options"]),
        base_url=spec.get("base_url"),
        events=events,
    )
    context.work_dir.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "prepare":
        return prepare(spec["input"], context)
    if spec["kind"] == "render":
        return render(spec["input"], context)
    raise JobError(UNKNOWN_JOB_KIND, f"unknown job kind '{str(spec['kind'])[:64]}'")


# --- downloads ---------------------------------------------------------------------------------


_TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})


def fetch_error_code(error: FetchError) -> str:
    """The job's code for a failed download. FetchError's own code, except that a server's
    answer that will not change (an HTTP 4xx other than 408, 425 and 429) is
    `download_refused`, while `download_failed` keeps what another attempt may cure: a dropped
    connection, TLS, a cut-off body, 5xx, 408, 425, 429 (errors.RETRYABLE_CODES)."""
    status = error.upstream_status
    if error.code == DOWNLOAD_FAILED and status is not None:
        if status < 500 and status not in _TRANSIENT_HTTP_STATUSES:
            return DOWNLOAD_REFUSED
    return error.code


def download(url: str, dest: Path, context: JobContext, what: str) -> Path:
    """Fetch `url` (or our own upload it names) to `dest`; a FetchError becomes a JobError
    (`fetch_error_code`)."""
    options = context.options
    resolve = None
    shared = options.shared_files
    if options.url_secret and shared is not None:

        def resolve(candidate: str) -> Path | None:
            # Our own upload, in the shared bucket: read from there, whichever instance
            # took it in (a missing object is fetched by URL and answers 404 like any other).
            found = links.own_file(candidate, options.url_secret)
            if found is None:
                return None
            copy = dest.with_name(dest.name + ".shared")
            try:
                present = shared.get(shared.file_key(*found), copy)
            except storage.StorageError as error:
                raise JobError.of(error) from None
            return copy if present else None

    elif options.url_secret:

        def resolve(candidate: str) -> Path | None:
            return links.local_upload(candidate, options.url_secret, options.jobs_path)

    started = time.monotonic()
    try:
        fetched = fetch_to_file(url, dest, options.fetch_policy, local_files=resolve)
    except FetchError as error:
        raise JobError(
            fetch_error_code(error), f"could not fetch the {what}: {error.message}"
        ) from None
    context.events.log(
        f"fetched the {what}: {fetched.bytes} bytes in {time.monotonic() - started:.1f} s"
    )
    return fetched.path


# --- seed 000: avatar preparation --------------------------------------------------------------


def prepare(raw_input: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    """Seed 000's output: {status: success, avatar_id, model, num_frames, upload_url}, or
    {status: error, error} for an input that cannot succeed."""
    try:
        return _prepare(raw_input, context)
    except (JobError, inputs.InputError) as error:
        if error.retryable:
            raise  # for the supervisor to try again
        context.events.log(f"error: {error.message}")
        return {"status": "error", "error": error.message}


def _prepare(raw_input: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    from renderers.preparation import (
        SUPPORTED_MODELS,
        PreparationError,
        PreparationLimits,
        prepare_avatar_package,
    )

    job = inputs.prepare_input(raw_input)
    options = context.options
    avatar_id, model = job["avatar_id"], job["model"]
    bucket = inputs.prepare_destination(
        job, default_bucket=options.s3_default_bucket, local_store=options.local_store
    )
    if model not in SUPPORTED_MODELS:
        # Let the preparation word the error (it checks the request before it opens the
        # video), without downloading anything first.
        try:
            prepare_avatar_package(
                context.work_dir / "no-video", avatar_id=avatar_id, model=model,
                out_dir=context.work_dir,
            )  # fmt: skip
        except PreparationError as error:
            raise JobError.of(error) from None
        raise JobError("unsupported_model", f"Unsupported model: {model}")

    video = download(job["video_url"], context.work_dir / "video", context, "video")
    context.events.progress(0.1, "video downloaded")
    limits = PreparationLimits(
        min_duration_s=options.min_video_s, max_duration_s=options.max_video_s
    )
    try:
        prepared = prepare_avatar_package(
            video,
            avatar_id=avatar_id,
            model=model,
            out_dir=context.work_dir / "package",
            limits=limits,
            progress=context.stage(0.1, 0.9),
        )
    except PreparationError as error:
        raise JobError.of(error) from None
    context.events.log(f"prepared {prepared.num_frames} frames for {model}")

    if bucket is not None:
        prefix = job.get("s3_prefix", "")
        upload_url = _upload(prepared.package, bucket, prefix, avatar_id, context)
    else:
        try:
            installed = storage.install_package(
                prepared.package, Path(options.avatars_dir), avatar_id
            )
        except storage.StorageError as error:
            raise JobError.of(error) from None
        context.events.log(f"installed avatar '{installed.name}' in the local avatar store")
        shared = options.shared_files
        if shared is not None:  # where renders on other instances find it
            _shared_put(shared, prepared.package, shared.package_key(installed.name))
        path = publish(prepared.package, context, f"{avatar_id}.tar")
        upload_url = links.signed_url(
            context.base_url or "", path, options.url_secret, options.url_ttl_s
        )
    context.events.progress(1.0, "done")
    return {
        "status": "success",
        "avatar_id": avatar_id,
        "model": prepared.model,
        "num_frames": prepared.num_frames,
        "upload_url": upload_url,
    }


def _upload(package: Path, bucket: str, prefix: str, avatar_id: str, context: JobContext) -> str:
    options = context.options
    try:
        key = storage.s3_key(prefix, avatar_id)
    except storage.StorageError as error:
        raise JobError.of(error) from None
    config = storage.S3Config(
        endpoint_url=options.s3_endpoint_url,
        region=options.s3_region,
        presign_expiry_s=int(options.s3_url_ttl_s),
        # S3-compatible servers (MinIO, moto, Ceph) generally want endpoint/bucket/key URLs.
        force_path_style=options.s3_endpoint_url is not None,
    )
    context.events.progress(0.9, f"uploading to s3://{bucket}/{key}")
    try:
        url = storage.upload_package_to_s3(package, bucket=bucket, key=key, config=config)
    except storage.StorageError as error:
        # s3_unreachable (S3 down or slow; botocore has already retried 5xx and throttling)
        # is retried; an answer such as NoSuchBucket or AccessDenied is not.
        raise JobError.of(error) from None
    context.events.log(f"uploaded s3://{bucket}/{key}")
    return url


# --- seed 003: offline renders -----------------------------------------------------------------


def render(raw_input: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    """{video: {file, content_type}, duration}; the API turns `file` into a signed URL."""
    from avatar_runtime import AvatarCatalog
    from avatar_runtime.offline import (
        OfflineRenderError,
        OfflineRenderLimits,
        render_talking_video,
    )

    try:
        job = inputs.render_input(raw_input)
    except inputs.InputError as error:
        raise JobError.of(error) from None
    options = context.options
    if "prompt" in job:
        context.events.log("the prompt is recorded but not used by the renderer")
    audio = download(job["audio_url"], context.work_dir / "audio", context, "audio")
    source: Path | None = None
    if "image_url" in job:
        source = download(job["image_url"], context.work_dir / "image", context, "image")
    else:
        try:
            source = AvatarCatalog(Path(options.avatars_dir)).resolve(job["avatar_id"])
        except KeyError:
            source = _shared_avatar(job["avatar_id"], context)
            if source is None:
                raise JobError(AVATAR_NOT_FOUND, f"no avatar named '{job['avatar_id']}'") from None
    context.events.progress(0.05, "inputs downloaded")
    out = context.work_dir / "video.mp4"
    try:
        rendered = render_talking_video(
            audio=audio,
            out=out,
            renderer=job["renderer"],
            source=source,
            emotion=job["emotion"],
            intensity=job["intensity"],
            limits=OfflineRenderLimits(max_audio_s=options.max_audio_s),
            progress=context.stage(0.05, 1.0),
        )
    except OfflineRenderError as error:
        raise JobError.of(error) from None
    context.events.log(
        f"rendered {rendered.frames} frames ({rendered.duration_s:.2f} s) with {job['renderer']}"
    )
    path = publish(rendered.path, context, "video.mp4")
    return {"video": {"file": path, "content_type": "video/mp4"}, "duration": rendered.duration_s}


# --- files: local, or shared in S3 (shared_files.py) -------------------------------------------


def publish(source: Path, context: JobContext, name: str) -> str:
    """Make `source` the attempt's file `name`; its URL path (`/files/<folder>/<name>`), which
    any instance serves when the files are shared."""
    options = context.options
    shared = options.shared_files
    if shared is None:
        return links.publish(source, options.jobs_path, context.folder, name)
    path = links.url_path(context.folder, name)
    content_type = {".mp4": "video/mp4", ".tar": storage.PACKAGE_CONTENT_TYPE}.get(
        Path(name).suffix, "application/octet-stream"
    )
    _shared_put(shared, source, shared.file_key(context.folder, name), content_type)
    return path


def _shared_put(
    shared: Any, source: Path, key: str, content_type: str = storage.PACKAGE_CONTENT_TYPE
) -> None:
    try:
        shared.put(source, key, content_type)
    except storage.StorageError as error:
        raise JobError.of(error) from None


def _shared_avatar(avatar_id: str, context: JobContext) -> Path | None:
    """An avatar another instance prepared: its package from the shared bucket, installed in
    this machine's avatar store; None when there is none (or no shared bucket)."""
    shared = context.options.shared_files
    if shared is None:
        return None
    try:
        local_id = storage.local_avatar_id(avatar_id)
    except storage.StorageError:
        return None
    package = context.work_dir / f"{local_id}.tar"
    try:
        if not shared.get(shared.package_key(local_id), package):
            return None
        installed = storage.install_package(package, Path(context.options.avatars_dir), avatar_id)
    except storage.StorageError as error:
        raise JobError.of(error) from None
    context.events.log(f"installed avatar '{local_id}' from the shared store")
    from avatar_runtime import AvatarCatalog

    try:
        return AvatarCatalog(Path(context.options.avatars_dir)).resolve(installed.name)
    except KeyError:
        return None
