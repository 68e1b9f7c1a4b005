"""Where avatar packages and job outputs go: S3 (or an S3-compatible server), the local avatars
directory, and signed URLs for files this service serves itself.

* `upload_package_to_s3` puts a package TAR at `s3://bucket/key` and returns a presigned GET
  URL; every failure is a StorageError whose message is the RunPod contract's
  "Failed to upload avatar to S3: {reason}", the reason short and free of credentials, and
  whose code says whether another try may succeed (`s3_unreachable`) or not
  (`s3_upload_failed`, `s3_unavailable`).
* `install_package` unpacks a package TAR into `avatars_dir/<id>/`, where the avatar catalog
  finds it, checking every member first (no `..`, no absolute names, no links or devices,
  capped in size and count) and swapping the directory in whole. `<id>` is the avatar id in
  lower case (`local_avatar_id`): seed 000's ids are UUIDs, which clients may write in upper
  case, and the catalog's ids are lower case, so "3F2504E0-4F89-..." is installed as, and
  found again by either spelling of, "3f2504e0-4f89-...".
* `sign_path` / `verify_signed`: an expiring HMAC-SHA256 signature in a URL's query, so a
  result or upload URL of this service can be fetched without an API key, like a presigned
  S3 URL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from renderers.errors import CodedError, short_reason
from renderers.preparation import (
    MAX_PACKAGE_BYTES,
    MAX_PACKAGE_MEMBERS,
    PreparationError,
    package_members,
)

log = logging.getLogger("control_api.jobs")

UPLOAD_FAILED = "Failed to upload avatar to S3: "
"""The RunPod contract's message prefix (seed 000), followed by a short reason."""
PACKAGE_CONTENT_TYPE = "application/x-tar"
MAX_S3_KEY_BYTES = 1024
# The avatar catalog's id rule and its own id (avatar_runtime.backgrounds.ID_PATTERN,
# avatar_runtime.avatars.DEFAULT_AVATAR), repeated because importing avatar_runtime loads
# livekit-agents, seconds per job worker; a test keeps them equal.
AVATAR_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""Ids the avatar catalog lists: what `install_package` installs under."""
ANY_CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""Ids `install_package` accepts: the catalog's, in any case (avatar_runtime.avatars'
ANY_CASE_ID, repeated like AVATAR_ID_PATTERN). ASCII only: matched before lower-casing, so no
other character can turn into one of the catalog's (the Kelvin sign lower-cases to "k")."""
CATALOG_DEFAULT_ID = "default"
"""The catalog's name for the agent's configured avatar: never an installed package."""
_REASON_CHARS = 300
_COPY_CHUNK = 1024 * 1024


S3_UPLOAD_FAILED = "s3_upload_failed"
S3_UNREACHABLE = "s3_unreachable"
"""S3 could not be reached or was overloaded: another attempt may succeed."""
# Answers of S3 (or an S3-compatible server) that mean "not now" rather than "never".
_TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "500", "503"}
)


class StorageError(CodedError):
    """A storage step that failed; `message` is for the user, `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=code == S3_UNREACHABLE)


# -- S3 ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None
    """An S3-compatible server (MinIO, R2, moto); None: AWS."""
    region: str | None = None
    """None: boto3's default (AWS_REGION / AWS_DEFAULT_REGION / ~/.aws/config). Presigned
    URLs only work when this is the bucket's region."""
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    """Both None: boto3's default chain (AWS_* variables, profiles, instance roles)."""
    presign_expiry_s: int = 7200
    force_path_style: bool = False
    """`endpoint/bucket/key` URLs instead of `bucket.endpoint/key` (most S3-compatible servers)."""
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3
    """Tries per request, the first included (botocore retries throttling and 5xx)."""


def s3_key(prefix: str | None, avatar_id: str) -> str:
    """`{prefix}/{avatar_id}.tar` with the prefix's slashes normalised ("/a//b/" -> "a/b");
    StorageError `invalid_s3_key` for `.`/`..` segments, control characters or an id that
    is not a package's (renderers.preparation.AVATAR_ID_PATTERN)."""
    from renderers.preparation import AVATAR_ID_PATTERN as PACKAGE_ID_PATTERN  # numpy: here

    if not isinstance(avatar_id, str) or not PACKAGE_ID_PATTERN.fullmatch(avatar_id):
        raise StorageError(
            "invalid_s3_key", "avatar_id must be 1-128 of A-Z a-z 0-9 _ . -, not starting with '.'"
        )
    prefix = prefix or ""
    if not isinstance(prefix, str) or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in prefix):
        raise StorageError("invalid_s3_key", "s3_prefix must be text without control characters")
    segments = [segment for segment in prefix.split("/") if segment]
    if any(segment in {".", ".."} for segment in segments):
        raise StorageError("invalid_s3_key", "s3_prefix must not contain '.' or '..' segments")
    key = "/".join([*segments, f"{avatar_id}.tar"])
    if len(key.encode()) > MAX_S3_KEY_BYTES:
        raise StorageError("invalid_s3_key", f"the S3 key is longer than {MAX_S3_KEY_BYTES} bytes")
    return key


S3_EXTRA_HINT = "pip install 'avatar-agents[s3]'"


def require_boto3() -> None:
    """StorageError `s3_unavailable` naming the extra when boto3 (the `s3` extra) is missing."""
    try:
        import boto3  # noqa: F401  # here: a control API without S3 never pays for importing it
    except ImportError:
        raise StorageError(
            "s3_unavailable",
            f"{UPLOAD_FAILED}S3 uploads need boto3, which is not installed: {S3_EXTRA_HINT}",
        ) from None


def s3_client(config: S3Config):  # -> botocore S3 client (its type is generated at run time)
    require_boto3()
    import boto3
    from botocore.config import Config

    # A session of its own: boto3's default session is not safe to share between threads.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        config=Config(
            signature_version="s3v4",
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if config.force_path_style else "auto"},
        ),
    )


def upload_package_to_s3(package: Path, *, bucket: str, key: str, config: S3Config) -> str:
    """Upload `package` to `s3://bucket/key` and return a presigned GET URL for it
    (valid `config.presign_expiry_s`). StorageError `s3_unreachable` when S3 could not be
    reached, timed out or was overloaded (worth another try), `s3_upload_failed` on any other
    failure, `s3_unavailable` without boto3."""
    require_boto3()
    from boto3.s3.transfer import TransferConfig

    try:
        client = s3_client(config)
        client.upload_file(
            str(package),
            bucket,
            key,
            ExtraArgs={"ContentType": PACKAGE_CONTENT_TYPE},
            Config=TransferConfig(max_concurrency=4),
        )
        return client.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=config.presign_expiry_s,
        )
    except Exception as error:  # every failure becomes the contract's one message
        code, reason = s3_failure(error, config)
        log.warning("S3 upload to %s/%s failed: %s", bucket, key, reason, exc_info=True)
        raise StorageError(code, UPLOAD_FAILED + reason) from None


def s3_failure(error: BaseException, config: S3Config) -> tuple[str, str]:
    """(code, reason) for a failed S3 call: `s3_unreachable` when S3 could not be reached,
    timed out or answered that it is overloaded, else `s3_upload_failed`; the reason is the
    service's error code and message, or what went wrong on the way there. Never a traceback,
    a class name or a credential."""
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions as boto

    if isinstance(error, S3UploadFailedError) and error.__context__ is not None:
        error = error.__context__  # boto3 wraps the service's answer, naming the local path
    if isinstance(error, boto.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code") or "")
        message = str(details.get("Message") or "")
        if code in ("AccessDenied", "403") and not message:
            message = "access denied"
        reason = f"{code}: {message}" if code and message else code or message
        transient = code in _TRANSIENT_S3_CODES
        return (
            S3_UNREACHABLE if transient else S3_UPLOAD_FAILED,
            _short(reason or "the S3 service refused the request"),
        )
    endpoint = _origin(getattr(error, "kwargs", {}).get("endpoint_url") or config.endpoint_url)
    if isinstance(error, boto.ConnectTimeoutError):
        return S3_UNREACHABLE, f"timed out connecting to {endpoint}"
    if isinstance(error, boto.ReadTimeoutError):
        return S3_UNREACHABLE, f"timed out waiting for {endpoint}"
    if isinstance(error, boto.EndpointConnectionError | boto.ConnectionError):
        return S3_UNREACHABLE, f"could not connect to {endpoint}"
    if isinstance(error, boto.NoCredentialsError | boto.PartialCredentialsError):
        reason = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        return S3_UPLOAD_FAILED, reason
    if isinstance(error, boto.ParamValidationError):
        return S3_UPLOAD_FAILED, _short(
            "invalid request: " + str(error).split(":", 1)[-1].strip()
        )
    if isinstance(error, boto.BotoCoreError):
        return S3_UPLOAD_FAILED, _short(str(error))
    if isinstance(error, OSError):
        return S3_UPLOAD_FAILED, f"could not read the package: {short_reason(error).lower()}"
    return S3_UPLOAD_FAILED, "unexpected error (see the service log)"


def _origin(url: str | None) -> str:
    """scheme://host[:port] of an endpoint, without a path, query or user info."""
    if not url:
        return "the default AWS S3 endpoint"
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


# -- the local avatars directory -----------------------------------------------------------------


def install_package(
    package: Path,
    avatars_dir: Path,
    avatar_id: str,
    *,
    max_bytes: int = MAX_PACKAGE_BYTES,
    max_members: int = MAX_PACKAGE_MEMBERS,
) -> Path:
    """Unpack the package TAR into `avatars_dir/<id>/` and return that directory; `<id>` is
    `local_avatar_id(avatar_id)`, the id in lower case.

    Members are unpacked one by one into a hidden staging directory beside the target, each
    checked first: regular files and directories only, relative names without `..`, at most
    `max_members` members and `max_bytes` of content. The staging directory then replaces any
    previous package of the id, so readers see the old package or the new one, never a mix
    (for an instant between two renames, neither).
    StorageError `invalid_avatar_id`, `invalid_package` or `install_failed`.
    """
    local_id = local_avatar_id(avatar_id)
    avatars_dir = Path(avatars_dir)
    try:
        avatars_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=avatars_dir, prefix=f".{local_id}.installing-"))
    except OSError as error:
        raise StorageError(
            "install_failed", f"cannot write the avatars directory: {error.strerror}"
        ) from None
    try:
        _unpack(Path(package), staging, max_bytes=max_bytes, max_members=max_members)
        staging.chmod(0o755)  # mkdtemp made it private; the avatar workers must read it
        target = avatars_dir / local_id
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def local_avatar_id(avatar_id: object) -> str:
    """The id a package of `avatar_id` is installed under in the local store, and that the
    avatar catalog lists: `avatar_id` in lower case (the catalog finds it by either case).
    StorageError `invalid_avatar_id` unless it is one of the catalog's ids in some case, and
    neither its `default` nor a renderer's name (the renderers keep their caches in the avatars
    directory under their own names)."""
    if not isinstance(avatar_id, str) or not ANY_CASE_ID_PATTERN.fullmatch(avatar_id):
        raise StorageError(
            "invalid_avatar_id",
            "avatar_id must be 1-64 characters of letters, digits, _ and -, starting with a "
            "letter or digit",
        )
    local_id = avatar_id.lower()
    assert AVATAR_ID_PATTERN.fullmatch(local_id)
    if local_id == CATALOG_DEFAULT_ID:
        raise StorageError(
            "invalid_avatar_id",
            f"avatar_id '{avatar_id}' names the agent's configured avatar; choose another",
        )
    from renderers import available  # here: it loads numpy, which the signed URLs skip

    if local_id in available():
        raise StorageError(
            "invalid_avatar_id", f"avatar_id '{avatar_id}' is a renderer's name; choose another"
        )
    return local_id


check_local_avatar_id = local_avatar_id
"""The same check under its earlier name (it returns the id the package is installed under)."""


def _unpack(package: Path, staging: Path, *, max_bytes: int, max_members: int) -> None:
    try:
        tar = tarfile.open(package, mode="r:")  # an uncompressed TAR, as the contract says
    except FileNotFoundError:
        raise StorageError("invalid_package", "the avatar package file is missing") from None
    except (tarfile.TarError, OSError):
        raise StorageError("invalid_package", "the avatar package is not a TAR file") from None
    files = 0
    try:
        with tar:
            # Each member is checked (renderers.preparation.package_members) before it is
            # unpacked: files and directories only, inside the package, within the limits.
            for member, relative in package_members(
                tar, max_members=max_members, max_bytes=max_bytes
            ):
                destination = staging.joinpath(*relative.parts)
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # cannot happen for a regular file; refuse, do not guess
                    raise _invalid(f"member '{_shown(member.name)}' cannot be read")
                with source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out, _COPY_CHUNK)
                files += 1
    except PreparationError as error:
        raise _invalid(error.message) from None
    except (tarfile.TarError, EOFError):
        raise _invalid("it is damaged or cut short") from None
    except (IsADirectoryError, NotADirectoryError, FileExistsError):
        raise _invalid("a file and a directory have the same name") from None
    except OSError as error:
        raise StorageError(
            "install_failed", f"could not unpack the avatar package: {error.strerror}"
        ) from None
    if files == 0:
        raise _invalid("it contains no files")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Move `staging` to `target`, replacing what is there. The old package moves aside first
    (a directory cannot be renamed over a non-empty one) and is deleted afterwards."""
    aside: Path | None = None
    if target.exists() or target.is_symlink():
        aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.rename(target, aside / target.name)
    try:
        os.rename(staging, target)
    except OSError as error:
        if aside is not None:  # put the previous package back
            os.rename(aside / target.name, target)
            aside.rmdir()
        raise StorageError(
            "install_failed", f"could not install the avatar: {error.strerror}"
        ) from None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _invalid(why: str) -> StorageError:
    return StorageError("invalid_package", f"avatar package rejected: {why}")


def _shown(name: str) -> str:
    return name[:120].encode("unicode_escape").decode("ascii")


# -- signed URLs for this service's own files ---------------------------------------------------

_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")


def sign_path(path: str, secret: bytes, expires_at: int) -> str:
    """`path?expires=<unix time>&signature=<hex HMAC-SHA256>`, valid until `expires_at`.

    `path` is the URL path exactly as it will be requested (percent-encoded, starting with
    "/", no query); verify with the request's raw path (`request.rel_url.raw_path`).
    """
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ValueError("sign_path wants a URL path starting with '/', without query")
    expires = int(expires_at)
    return f"{path}?expires={expires}&signature={_path_signature(path, secret, expires)}"


def verify_signed(
    path: str, query: Mapping[str, str], secret: bytes, now: float | None = None
) -> bool:
    """True when `query` carries a signature of `path` by `secret` that has not expired."""
    expires = query.get("expires") or ""
    signature = query.get("signature") or ""
    if not _EXPIRES.fullmatch(expires) or not _SIGNATURE.fullmatch(signature):
        return False
    expected = _path_signature(path, secret, int(expires))
    if not hmac.compare_digest(expected, signature):
        return False
    return (time.time() if now is None else now) < int(expires)


def _path_signature(path: str, secret: bytes, expires_at: int) -> str:
    if not secret:
        raise ValueError("the URL signing secret must not be empty")
    # A fixed label keeps these signatures from being valid for anything else signed with
    # the same secret (webhooks sign "t.body").
    message = f"avatar-agents-path/1\n{expires_at}\n{path}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
