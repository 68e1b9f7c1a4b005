"""Uploads, job results and avatar packages in an S3 bucket (AVATAR_JOBS_S3_BUCKET), so that
any control API instance serves any of them and any instance's workers read any upload.

Without a bucket these files live in `jobs_dir/files/` (links.py) on the machine that made
them. With one, the same signed links (`/files/<folder>/<name>?expires=&signature=`) name the
object `<prefix>/files/<folder>/<name>`: an instance checks the signature as before and then
redirects (302) to a short-lived presigned GET URL of the object, so S3 serves the bytes and
its Range support (players seek). A prepare job also puts its package at
`<prefix>/avatars/<id>.tar`, where a render on another instance finds an `avatar_id` it has
not installed yet.

The S3 client is storage.s3_client (endpoint, region and credentials as for package uploads:
AVATAR_S3_ENDPOINT_URL, AVATAR_S3_REGION, boto3's credential chain). Failures are
StorageError: `s3_unreachable` (retryable) or `s3_upload_failed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import storage

log = logging.getLogger("control_api.jobs")

_FAILED = "shared file storage failed: "


@dataclass(frozen=True)
class SharedFiles:
    bucket: str
    prefix: str
    config: storage.S3Config

    @classmethod
    def of(
        cls, bucket: str | None, prefix: str, endpoint_url: str | None, region: str | None
    ) -> SharedFiles | None:
        if not bucket:
            return None
        config = storage.S3Config(
            endpoint_url=endpoint_url,
            region=region,
            force_path_style=endpoint_url is not None,
        )
        return cls(bucket, prefix.strip("/"), config)

    def key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def file_key(self, folder: str, name: str) -> str:
        return self.key("files", folder, name)

    def package_key(self, local_id: str) -> str:
        return self.key("avatars", f"{local_id}.tar")

    def _client(self) -> Any:
        return storage.s3_client(self.config)

    def _error(self, error: Exception, what: str) -> storage.StorageError:
        code, reason = storage.s3_failure(error, self.config)
        log.warning("S3 %s in bucket %s failed: %s", what, self.bucket, reason)
        return storage.StorageError(code, _FAILED + reason)

    def put(self, source: Path, key: str, content_type: str) -> None:
        try:
            self._client().upload_file(
                str(source), self.bucket, key, ExtraArgs={"ContentType": content_type}
            )
        except Exception as error:
            raise self._error(error, f"upload of {key}") from None

    def get(self, key: str, dest: Path) -> bool:
        """Download `key` to `dest`; False when there is no such object."""
        from botocore.exceptions import ClientError

        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        try:
            self._client().download_file(self.bucket, key, str(partial))
        except ClientError as error:
            partial.unlink(missing_ok=True)
            if str(error.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            raise self._error(error, f"download of {key}") from None
        except Exception as error:
            partial.unlink(missing_ok=True)
            raise self._error(error, f"download of {key}") from None
        partial.replace(dest)
        return True

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            raise self._error(error, f"lookup of {key}") from None
        except Exception as error:
            raise self._error(error, f"lookup of {key}") from None
        return True

    def presigned(self, key: str, expires_s: int, content_type: str) -> str:
        try:
            return str(
                self._client().generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": content_type},
                    ExpiresIn=max(1, int(expires_s)),
                )
            )
        except Exception as error:
            raise self._error(error, f"signing of {key}") from None
