"""A dump of this server restores into a newer major version: PostgreSQL 16, from
PyPI's pgserver wheel (Debian's registry here carries PostgreSQL 15 only), restored
with its own pg_restore and psql, and with `pgveil restore`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgveil import sandbox
from pgveil.services import dump, restore
from tests.helpers import seed

PLANTED = "Zzplantedzz"


@pytest.fixture(scope="module")
def newer() -> Iterator[tuple[Path, str]]:
    """PostgreSQL 16's client programs and a running server of it: (bindir, URL of
    its maintenance database)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.origin is not None, "the dev dependency pgserver is missing"
    # A copy the server's OS user can reach (the virtualenv may sit under /root),
    # laid out as in site-packages: the programs find their libraries at
    # $ORIGIN/../../../pgserver.libs.
    package = Path(spec.origin).parent
    install = Path(tempfile.mkdtemp(prefix="pgveil-pg16-"))
    install.chmod(0o755)
    shutil.copytree(package / "pginstall", install / "pgserver" / "pginstall")
    shutil.copytree(package.parent / "pgserver.libs", install / "pgserver.libs")
    bindir = install / "pgserver" / "pginstall" / "bin"
    root = Path(tempfile.mkdtemp(prefix="pgveil-pg16-cluster-"))
    before = os.environ.get("PGVEIL_PG_BINDIR")
    os.environ["PGVEIL_PG_BINDIR"] = str(bindir)
    try:
        state = sandbox.start(root)
        yield bindir, state.url
    finally:
        sandbox.stop(root)
        if before is None:
            del os.environ["PGVEIL_PG_BINDIR"]
        else:
            os.environ["PGVEIL_PG_BINDIR"] = before
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(install, ignore_errors=True)


def database(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + "/" + name


def test_a_dump_restores_into_postgresql_16(demo, tmp_path, newer):
    bindir, url16 = newer
    seed(demo)
    demo.execute("UPDATE customer SET last_name = %s WHERE customer_id = 1", (PLANTED,))
    archive = tmp_path / "archive"
    dump.dump(demo.url, dump.DumpOptions(policy="mask", output=archive, uncovered="keep"))
    with psycopg.connect(url16) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("16")

    # PostgreSQL 16's own pg_restore, in parallel.
    target = database(url16, "stock")
    done = subprocess.run(
        [str(bindir / "pg_restore"), f"--dbname={target}", "--jobs=2", "--exit-on-error", "--no-owner",
         "--no-privileges", str(archive)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM customer").fetchone() == (200,)
        assert conn.execute("SELECT count(*) FROM customer WHERE last_name = %s", (PLANTED,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0] >= 2

    # `pgveil restore`, with this machine's pg_restore 15 into the newer server.
    result = restore.restore(
        archive,
        url16.rsplit("/", 1)[0] + "/wrapped",
        restore.RestoreOptions(create=True, jobs=2, no_owner=True, no_privileges=True),
    )
    assert result.ok and {t.table: t.restored for t in result.tables}["customer"] == 200

    # A plain script, through this machine's psql (pgserver's 16.2 predates the
    # \restrict line that pg_dump's 2025 releases write into scripts).
    script = tmp_path / "dump.sql"
    dump.dump(
        demo.url,
        dump.DumpOptions(
            policy="mask", output=script, archive_format="plain", uncovered="keep", no_owner=True, no_privileges=True
        ),
    )
    assert "GRANT " not in script.read_text() and "OWNER TO" not in script.read_text()
    target = database(url16, "plain")
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", f"--dbname={target}",
         "-f", str(script)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM payment").fetchone() == (400,)
