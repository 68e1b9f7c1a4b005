"""Files the service hands out by signed, expiring URL: uploads and job outputs.

They live in `<jobs_dir>/files/<folder>/<name>` and are served at `GET /files/<folder>/<name>`
with the signature in the query, so a link works without an API key (an S3-style presigned
URL for the local store). `folder` is an upload's id or `<job_id>-<attempt>`; both parts are
checked against a strict pattern before anything touches the disk.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

FILES_ROUTE = "/files"
FOLDER = re.compile(r"[A-Za-z0-9_-]{1,80}")
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def files_root(jobs_dir: Path) -> Path:
    return Path(jobs_dir) / "files"


def url_path(folder: str, name: str) -> str:
    if not FOLDER.fullmatch(folder) or not NAME.fullmatch(name):
        raise ValueError(f"not a valid file location: {folder!r}/{name!r}")
    return f"{FILES_ROUTE}/{folder}/{name}"


def local_path(jobs_dir: Path, folder: str, name: str) -> Path | None:
    """Where `/files/<folder>/<name>` is stored, or None for a name that cannot be ours."""
    if not FOLDER.fullmatch(folder) or not NAME.fullmatch(name) or name in (".", ".."):
        return None
    return files_root(jobs_dir) / folder / name


def publish(source: Path, jobs_dir: Path, folder: str, name: str) -> str:
    """Move `source` to where `/files/<folder>/<name>` serves it; that URL path."""
    path = url_path(folder, name)
    target = local_path(jobs_dir, folder, name)
    assert target is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)
    return path


def signed_url(base_url: str, path: str, secret: str, ttl_s: float) -> str:
    """`base_url` + `path` + a signature valid for `ttl_s` seconds."""
    from . import storage  # on use: it imports boto3, which a worker may not need

    return base_url.rstrip("/") + storage.sign_path(path, secret.encode(), int(time.time() + ttl_s))


def verify(raw_path: str, query: Mapping[str, str], secret: str) -> bool:
    """Whether `query` signs `raw_path` (the path as requested, still percent-encoded)."""
    from . import storage

    return storage.verify_signed(raw_path, query, secret.encode(), time.time())


def own_file(url: str, secret: str) -> tuple[str, str] | None:
    """(folder, name) of the file a validly signed URL of ours names, else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    segments = parts.path.split("/")
    if len(segments) != 4 or "/" + segments[1] != FILES_ROUTE:
        return None
    if not FOLDER.fullmatch(segments[2]) or not NAME.fullmatch(segments[3]):
        return None
    query = dict(parse_qsl(parts.query))
    if not verify(parts.path, query, secret):
        return None
    return segments[2], segments[3]


def local_upload(url: str, secret: str, jobs_dir: Path) -> Path | None:
    """For fetch's `local_files` hook: the file a signed URL of ours names, else None (an
    unsigned or foreign URL is fetched over HTTP like any other)."""
    found = own_file(url, secret)
    return local_path(jobs_dir, *found) if found else None
