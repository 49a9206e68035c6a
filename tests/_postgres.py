"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a temporary data
folder, a free loopback port, run as the ``postgres`` user when the tests run as root."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HOW_TO_ENABLE = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: run `make postgres` as root "
    "(installs Debian's postgresql package), or `apt-get install postgresql`, or set "
    "CALLIOPE_PG_BINDIR to the folder holding them"
)


def bindir() -> Path | None:
    given = os.environ.get("CALLIOPE_PG_BINDIR")
    candidates = [Path(given)] if given else []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(
        (Path(p) for p in debian), key=lambda p: int(p.parent.name or 0), reverse=True
    )
    return next(
        (c for c in candidates if (c / "pg_ctl").is_file() and (c / "initdb").is_file()), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def cluster(*, max_connections: int = 60) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT`` of a cluster that lives for the block (the
    test skips, saying how to enable it, where there is no server to start)."""
    binaries = bindir()
    if binaries is None:
        pytest.skip(HOW_TO_ENABLE)
    base = Path(tempfile.mkdtemp(prefix="calliope-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as its own user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip(f"running as root and there is no 'postgres' user; {HOW_TO_ENABLE}")
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*as_user, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
         "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        f"-c synchronous_commit=off -c max_connections={max_connections}"
    )
    pg_ctl = [*as_user, str(binaries / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-l", str(base / "server.log"), "-w", "-t", "60", "-o", options, "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
