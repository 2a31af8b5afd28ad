"""A throwaway PostgreSQL server for tests: installed from Debian's ``postgresql`` package when
missing (as root, ``apt-get update`` first), started as an unprivileged user in a temp dir on
loopback, stopped at the end. Skips with the reason only where it cannot be installed."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    cands = []
    if exe := shutil.which("pg_ctl"):
        cands.append(Path(exe).resolve().parent)
    cands += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in cands:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def ensure_installed() -> Path:
    """The directory of initdb/pg_ctl, installing the Debian package if needed (else skip)."""
    if (d := _bindir()) is not None:
        return d
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "PostgreSQL is not installed and cannot be: installing it needs root and apt-get"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"PostgreSQL could not be installed ({' '.join(cmd)}): {r.stderr[-500:]}")
    if (d := _bindir()) is None:
        pytest.skip("apt-get installed postgresql but no initdb/pg_ctl was found")
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user() -> str | None:
    """PostgreSQL refuses to run as root: use the package's ``postgres`` user, else nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.skip("running as root with no unprivileged user for PostgreSQL")


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A server on 127.0.0.1 (trust auth, loopback only); yields its connection URL."""
    bindir = ensure_installed()
    user = _user()
    tmp = Path(tempfile.mkdtemp(prefix="recforge-pg-"))
    data = tmp / "data"
    if user is not None:
        shutil.chown(tmp, user)
    run = {"user": user, "capture_output": True, "text": True, "timeout": 120}
    port = _free_port()
    try:
        r = subprocess.run(
            [bindir / "initdb", "-D", data, "-A", "trust", "-U", "recforge", "--no-sync"], **run
        )
        if r.returncode != 0:
            pytest.fail(f"initdb failed: {r.stderr[-800:]}")
        opts = f"-h 127.0.0.1 -p {port} -k {tmp} -c listen_addresses=127.0.0.1"
        r = subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-l", tmp / "log", "-o", opts, "-w", "start"], **run
        )
        if r.returncode != 0:
            log = (tmp / "log").read_text() if (tmp / "log").exists() else ""
            pytest.fail(f"pg_ctl start failed: {r.stderr[-500:]} {log[-800:]}")
        url = f"postgresql://recforge@127.0.0.1:{port}/postgres"
        _wait_ready(url)
        yield url
    finally:
        subprocess.run([bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], **run)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(url: str, timeout: float = 20.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
