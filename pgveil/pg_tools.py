"""PostgreSQL's client programs (pg_dump, pg_restore, psql), found and connected."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

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
