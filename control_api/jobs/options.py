"""What a job's worker needs to know besides the job itself, as plain JSON-able data.

The control API builds it from its Settings and hands it to each worker in the job's spec; the
RunPod worker builds it from the environment. Keeping it in the spec (not re-read from the
environment by each worker) means a worker always runs with its supervisor's exact settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fetch import FetchPolicy
from .shared_files import SharedFiles

if TYPE_CHECKING:
    from control_api.config import Settings


@dataclass(frozen=True)
class JobOptions:
    jobs_dir: str
    avatars_dir: str
    url_secret: str = field(repr=False)
    url_ttl_s: float = 86400.0
    fetch_allow_private: bool = False
    fetch_allowed_cidrs: tuple[str, ...] = ()
    fetch_max_bytes: int = 1 << 30
    fetch_timeout_s: float = 300.0
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_url_ttl_s: float = 7 * 86400.0
    s3_default_bucket: str | None = None
    """Used when a prepare job names no s3_bucket (the RunPod worker has no local store)."""
    local_store: bool = True
    """Without an S3 bucket, install the package locally and hand out a signed URL."""
    files_bucket: str | None = None
    """Uploads, results and packages in this S3 bucket instead of `jobs_dir` (shared_files.py)."""
    files_prefix: str = ""
    min_video_s: float = 3.0
    max_video_s: float = 300.0
    max_audio_s: float = 300.0

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["fetch_allowed_cidrs"] = list(self.fetch_allowed_cidrs)
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> JobOptions:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        kwargs["fetch_allowed_cidrs"] = tuple(kwargs.get("fetch_allowed_cidrs", ()))
        return cls(**kwargs)

    @property
    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            allow_private=self.fetch_allow_private,
            allowed_networks=self.fetch_allowed_cidrs,
            max_bytes=self.fetch_max_bytes,
            timeout_s=self.fetch_timeout_s,
        )

    @property
    def jobs_path(self) -> Path:
        return Path(self.jobs_dir)

    @property
    def shared_files(self) -> SharedFiles | None:
        return SharedFiles.of(
            self.files_bucket, self.files_prefix, self.s3_endpoint_url, self.s3_region
        )


def options_from_settings(
    settings: Settings,
    *,
    url_secret: str = "",
    avatars_dir: Path | None = None,
    **overrides: Any,
) -> JobOptions:
    """The options `settings` give (the control API's and the RunPod worker's alike);
    `avatars_dir` None: `settings.avatars_dir`, else `<cache_dir>/avatars`. `overrides` set
    the fields Settings do not have (`s3_default_bucket`, `local_store`)."""
    cache = settings.cache_dir
    return JobOptions(
        jobs_dir=str(settings.jobs_dir or cache / "jobs"),
        avatars_dir=str(avatars_dir or settings.avatars_dir or cache / "avatars"),
        url_secret=url_secret,
        url_ttl_s=settings.jobs_url_ttl_s,
        fetch_allow_private=settings.fetch_allow_private,
        fetch_allowed_cidrs=settings.fetch_allowed_cidrs,
        fetch_max_bytes=settings.fetch_max_bytes,
        fetch_timeout_s=settings.fetch_timeout_s,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_url_ttl_s=settings.s3_url_ttl_s,
        files_bucket=settings.jobs_files_bucket,
        files_prefix=settings.jobs_files_prefix,
        min_video_s=settings.prepare_min_video_s,
        max_video_s=settings.prepare_max_video_s,
        max_audio_s=settings.render_max_audio_s,
        **overrides,
    )


def options_from_env(env: Mapping[str, str] | None = None) -> JobOptions:
    """For the RunPod worker: the same variables as the control API where they apply, plus
    AVATAR_S3_BUCKET, the bucket used when a job names none."""
    from control_api.config import Settings

    settings = Settings.from_env(env)  # None: os.environ after the repository's .env
    env = os.environ if env is None else env
    return options_from_settings(
        settings, s3_default_bucket=env.get("AVATAR_S3_BUCKET") or None, local_store=False
    )
