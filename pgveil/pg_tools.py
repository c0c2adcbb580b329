"""PostgreSQL's client programs (pg_dump, pg_restore, psql), found and connected."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

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
