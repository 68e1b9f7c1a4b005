"""A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `postgres` on a
free loopback port (its unix socket in that directory too), removed afterwards.

PostgreSQL refuses to run as root (initdb and postgres both stop with "cannot be run as
root"). Run as root (containers, CI), the server runs as an unprivileged system account
instead: Debian's `postgres`, which the postgresql package creates, else `avatar-postgres`,
created here once (`useradd --system`, no home, no login shell). Python's subprocess changes
the user (`user=`/`group=`), so no su/sudo/runuser is needed. As any other user it runs as that
user.

The binaries: AVATAR_PG_BIN (a folder with initdb and postgres), else `initdb` on PATH, else the
newest /usr/lib/postgresql/*/bin (Debian's layout). None found: skip, or fail under CI.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.livekit_server import free_port, log_tail, pdeathsig_preexec, require_or_skip

SERVICE_USER_FALLBACK = "avatar-postgres"
SUPERUSER = "postgres"
"""The database superuser initdb makes (a PostgreSQL role, not the system account)."""


def find_pg_bin() -> Path | None:
    explicit = os.environ.get("AVATAR_PG_BIN", "").strip()
    if explicit:
        return Path(explicit)  # an explicit choice that does not work is an error later
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def service_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's own) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER_FALLBACK):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    # Idempotent: a concurrent run that created it first makes useradd exit 9, which is fine.
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER_FALLBACK,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 9):
        raise RuntimeError(f"could not create the {SERVICE_USER_FALLBACK} account: {result.stderr}")
    return pwd.getpwnam(SERVICE_USER_FALLBACK)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _run_as(account: pwd.struct_passwd | None) -> dict:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres(ready_timeout: float = 30.0) -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None or not (bin_dir / "postgres").exists():
        require_or_skip(
            "PostgreSQL is not installed (apt-get install postgresql, or AVATAR_PG_BIN)"
        )
    try:
        import psycopg
    except ImportError:
        require_or_skip("psycopg is not installed (make setup installs it)")
    account = service_account()
    work = Path(tempfile.mkdtemp(prefix="avatar-pg-"))
    data, sockets, log_path = work / "data", work / "run", work / "postgres.log"
    sockets.mkdir()
    if account is not None:
        for path in (work, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    proc: subprocess.Popen[bytes] | None = None
    try:
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            check=False,
            **_run_as(account),
        )
        if initdb.returncode != 0:
            raise RuntimeError("initdb failed:\n" + initdb.stderr.decode(errors="replace"))
        port = free_port()
        with log_path.open("wb") as log:
            if account is not None:
                os.chown(log_path, account.pw_uid, account.pw_gid)
            proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-k",
                    str(sockets),
                    # A test database: durability off, for speed.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=60",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pdeathsig_preexec(),
                **_run_as(account),
            )
        server = PostgresServer("127.0.0.1", port, sockets)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                psycopg.connect(server.url(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not start (exit {proc.poll()}):\n" + log_tail(log_path, 30)
                    ) from None
                time.sleep(0.1)
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, stop
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)
