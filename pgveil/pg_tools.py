"""PostgreSQL's client programs (pg_dump, pg_restore, psql), found and connected."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgveil.errors import PgveilError


def program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PgveilError(f"{name} is not installed (PostgreSQL's client programs are needed for dumps)")
    return found


def major_version(name: str) -> int:
    out = subprocess.run([program(name), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"\)\s+(\d+)", out)
    if match is None:
        raise PgveilError(f"cannot tell the version of {name} ({out.strip()!r})")
    return int(match.group(1))


def supports(name: str, option: str) -> bool:
    return option in subprocess.run([program(name), "--help"], capture_output=True, text=True).stdout


def connection(url: str) -> tuple[str, dict[str, str]]:
    """A connection string without the password, and an environment with it: a
    command line is visible to every user of the machine."""
    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


_COPY_CONTEXT = re.compile(r"^CONTEXT:\s+COPY (\S+?)(,| line)")
_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def error_lines(lines: Sequence[str], tool: str) -> str:
    """A client program's error, its own lines only and never a row: DETAIL, CONTEXT, LINE and
    "Command was" lines are left out, and a failed COPY is named by its table with
    its error's quoted parts (which can be values) elided."""
    prefixes = (f"{tool}: ", "psql:")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if not line.startswith(prefixes):
            continue
        copy_table = None
        m = re.search(r'COPY failed for table "((?:[^"]|"")*)"', line)
        if m:
            copy_table = m.group(1).replace('""', '"')
        elif i + 1 < len(lines) and (c := _COPY_CONTEXT.match(lines[i + 1])):
            copy_table = c.group(1)
        if copy_table is not None:
            error = line.split("ERROR:", 1)[1].strip() if "ERROR:" in line else "error"
            kept.append(f"loading the rows of table {copy_table} failed: ERROR: {_QUOTED.sub('“…”', error)}")
        else:
            kept.append(line.strip())
    return "; ".join(kept) or "no message"


@contextmanager
def stderr_collected(proc: subprocess.Popen[bytes]) -> Iterator[list[bytes]]:
    """The child's stderr, read on a thread while the block feeds and reads the
    child (a full stderr pipe would stall it), kept in memory (never on disk) and
    whole once the block ends. When the block raises (Ctrl-C too), the child is
    stopped: terminated, killed if it does not end within 10 s."""
    errors: list[bytes] = []
    collector = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""))
    collector.start()
    try:
        yield errors
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        collector.join()


def run(argv: Sequence[str], env: dict[str, str], stdin: Iterable[bytes] | None = None) -> tuple[int, list[str]]:
    """Run a client program, fed ``stdin``'s chunks (none: no input); its exit
    status and its stderr's lines."""
    with (
        subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ) as proc,
        stderr_collected(proc) as errors,
    ):
        if stdin is not None:
            assert proc.stdin is not None
            with suppress(BrokenPipeError):  # it stopped reading: its stderr says why
                for chunk in stdin:
                    proc.stdin.write(chunk)
                proc.stdin.close()
        proc.wait()
    return proc.returncode, b"".join(errors).decode("utf-8", "replace").splitlines()
