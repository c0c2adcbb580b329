"""A throwaway PostgreSQL cluster for demos and tests.

The cluster lives in a project-local directory (``.pgveil-sandbox`` under the
current directory, or ``PGVEIL_SANDBOX_DIR``), listens on 127.0.0.1 on a free
port, and requires a password (scram-sha-256), so that authentication
behaves as on a real server. PostgreSQL refuses to run as root: when invoked
as root, the server runs as an unprivileged OS user (``postgres`` by default,
``PGVEIL_SANDBOX_OS_USER`` to choose another).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pgveil.errors import PgveilError

MIN_SERVER_MAJOR = 15
SUPERUSER = "pgveil"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "256MB",
    "max_connections": "200",
    "log_min_messages": "warning",
}
# A disposable cluster needs no durability, only speed; a durable one (for
# benchmarks that must measure commits as production pays for them) keeps
# PostgreSQL's defaults.
NOT_DURABLE_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@dataclass
class SandboxState:
    port: int
    password: str
    data_dir: str
    os_user: str | None  # None: the server runs as the invoking user

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/postgres"


def sandbox_dir() -> Path:
    return Path(os.environ.get("PGVEIL_SANDBOX_DIR", ".pgveil-sandbox")).resolve()


def find_bindir() -> Path:
    """The newest PostgreSQL >= 15 server binaries on this machine."""
    override = os.environ.get("PGVEIL_PG_BINDIR")
    candidates = [Path(override)] if override else []
    debian_root = Path("/usr/lib/postgresql")
    if debian_root.is_dir():
        versions = sorted(
            (p for p in debian_root.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates += [v / "bin" for v in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            major = _server_major(bindir)
            if major >= MIN_SERVER_MAJOR:
                return bindir
    raise PgveilError(
        f"no PostgreSQL >= {MIN_SERVER_MAJOR} server binaries found — install them "
        "(Debian: apt-get install postgresql postgresql-contrib) or set PGVEIL_PG_BINDIR"
    )


def _server_major(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True).stdout
    # "pg_ctl (PostgreSQL) 15.18 (Debian ...)"
    return int(out.split(")")[1].split()[0].split(".")[0])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_os_user() -> str | None:
    if os.geteuid() != 0:
        return None
    name = os.environ.get("PGVEIL_SANDBOX_OS_USER", "postgres")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise PgveilError(
            f"running as root, and the unprivileged OS user {name!r} that should run the "
            "server does not exist — create it (useradd --system postgres) or set "
            "PGVEIL_SANDBOX_OS_USER"
        ) from None
    return name


def _run_as(os_user: str | None, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    if os_user is not None:
        argv = ["runuser", "-u", os_user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


def _chown(path: Path, os_user: str | None) -> None:
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _reachable_by(os_user: str | None, path: Path) -> bool:
    if os_user is None:
        return True
    return _run_as(os_user, ["test", "-x", str(path)]).returncode == 0


def _read_state(root: Path) -> SandboxState | None:
    state_file = root / "state.json"
    if not state_file.exists():
        return None
    return SandboxState(**json.loads(state_file.read_text()))


def _is_running(state: SandboxState, bindir: Path) -> bool:
    done = _run_as(state.os_user, [str(bindir / "pg_ctl"), "status", "-D", state.data_dir])
    return done.returncode == 0


def status(root: Path | None = None) -> SandboxState | None:
    """The running sandbox in ``root`` (default: :func:`sandbox_dir`), or None."""
    state = _read_state(root or sandbox_dir())
    if state is None or not Path(state.data_dir).exists():
        return None
    return state if _is_running(state, find_bindir()) else None


def running_url() -> str:
    """The running sandbox's URL: the entry points' fallback target when no database
    URL is given (``pgveil.config.database_url(..., fallback=running_url)``)."""
    running = status()
    if running is None:
        raise PgveilError(
            "DATABASE_URL is not set and no sandbox is running — set DATABASE_URL=postgresql://… "
            "or start one with `pgveil sandbox start`"
        )
    return running.url


def start(root: Path | None = None, durable: bool = False) -> SandboxState:
    """Start the sandbox (or return the one already running). ``durable`` keeps
    fsync, synchronous_commit and full_page_writes on, as in production."""
    root = root or sandbox_dir()
    running = status(root)
    if running is not None:
        return running
    stop(root)  # clear what a crashed run left behind
    bindir = find_bindir()
    os_user = _server_os_user()
    root.mkdir(parents=True, exist_ok=True)
    if _reachable_by(os_user, root):
        _chown(root, os_user)
        data_dir = root / "data"
    else:
        # The server's OS user cannot reach the checkout (e.g. under /root):
        # keep the cluster in a private temporary directory instead.
        data_dir = Path(tempfile.mkdtemp(prefix="pgveil-sandbox-")) / "data"
        _chown(data_dir.parent, os_user)
    state = SandboxState(
        port=_free_port(),
        password=secrets.token_urlsafe(18),
        data_dir=str(data_dir),
        os_user=os_user,
    )
    with tempfile.NamedTemporaryFile("w", delete=False, prefix="pgveil-pw-") as pwfile:
        pwfile.write(state.password + "\n")
    _chown(Path(pwfile.name), os_user)
    try:
        init = _run_as(
            os_user,
            [
                str(bindir / "initdb"),
                "-D",
                state.data_dir,
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile.name}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        )
    finally:
        os.unlink(pwfile.name)
    if init.returncode != 0:
        raise PgveilError(f"initdb failed: {init.stderr.strip().splitlines()[-1]}")
    settings = SERVER_SETTINGS if durable else {**SERVER_SETTINGS, **NOT_DURABLE_SETTINGS}
    options = " ".join(f"-c {k}={v}" for k, v in settings.items())
    options += f" -p {state.port} -c unix_socket_directories={state.data_dir}"
    log_file = Path(state.data_dir) / "server.log"
    started = _run_as(
        os_user,
        [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", state.data_dir, "-l", str(log_file), "-o", options],
        stdin=subprocess.DEVNULL,
    )
    if started.returncode != 0:
        raise PgveilError(f"the sandbox server did not start; see {log_file}")
    (root / "state.json").write_text(json.dumps(asdict(state)))
    _wait_ready(state)
    return state


def _wait_ready(state: SandboxState, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(state.url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def restart(root: Path | None = None, mode: str = "fast") -> None:
    """Restart the running sandbox server in place (``mode``: fast, or immediate as in a crash)."""
    root = root or sandbox_dir()
    state = status(root)
    if state is None:
        raise PgveilError("no sandbox is running")
    done = _run_as(
        state.os_user,
        [
            str(find_bindir() / "pg_ctl"),
            "restart",
            "-w",
            "-t",
            "60",
            "-m",
            mode,
            "-D",
            state.data_dir,
            "-l",
            str(Path(state.data_dir) / "server.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise PgveilError(f"the sandbox server did not restart: {done.stderr.strip()}")
    _wait_ready(state)


def stop(root: Path | None = None) -> bool:
    """Stop the sandbox and remove its cluster. True when one was running."""
    root = root or sandbox_dir()
    state = _read_state(root)
    if state is None:
        return False
    was_running = False
    data_dir = Path(state.data_dir)
    if data_dir.exists():
        bindir = find_bindir()
        was_running = _is_running(state, bindir)
        if was_running:
            _run_as(state.os_user, [str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", state.data_dir])
        shutil.rmtree(data_dir, ignore_errors=True)
        if data_dir.parent != root and data_dir.parent.name.startswith("pgveil-sandbox-"):
            shutil.rmtree(data_dir.parent, ignore_errors=True)
    (root / "state.json").unlink(missing_ok=True)
    return was_running
