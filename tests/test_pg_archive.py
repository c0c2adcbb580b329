"""pg_dump's directory table of contents: read and written byte for byte, anything
else refused with one clear error."""

from __future__ import annotations

import subprocess

import pytest

from pgveil import pg_archive
from pgveil.errors import PgveilError


@pytest.fixture
def pg_dump_toc(bare, tmp_path) -> bytes:
    bare.execute("CREATE TABLE t (id serial PRIMARY KEY, name text); INSERT INTO t (name) VALUES ('a'), ('b')")
    out = tmp_path / "d"
    subprocess.run(["pg_dump", f"--dbname={bare.url}", "--format=directory", f"--file={out}"], check=True)
    return (out / pg_archive.TOC_FILE).read_bytes()


def test_pg_dumps_own_table_of_contents_reads_back_byte_for_byte(pg_dump_toc):
    toc = pg_archive.parse(pg_dump_toc)
    assert pg_archive.serialize(toc) == pg_dump_toc
    data = next(e for e in toc.entries if e.desc == "TABLE DATA")
    table = next(e for e in toc.entries if e.desc == "TABLE" and e.tag == "t")
    # The entry pgveil writes for a table is the one pg_dump writes, but for its id.
    ours = pg_archive.table_data_entry(table, data.dump_id, data.copy_stmt or "")
    assert ours == data


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"NOTPG" + b[5:], "not a pg_dump archive's table of contents"),
        (
            lambda b: b[:5] + bytes((1, 99, 0)) + b[8:],
            "archive of version 1.99: pgveil reads versions 1.14, 1.15, 1.16",
        ),
        (lambda b: b[:10] + bytes((1,)) + b[11:], "not a directory-format archive"),
        (lambda b: b[: len(b) // 2], "is truncated"),
        (lambda b: b + b"\0", "has bytes after its last entry"),
    ],
)
def test_anything_else_is_refused(pg_dump_toc, damage, message):
    with pytest.raises(PgveilError, match=message):
        pg_archive.parse(damage(pg_dump_toc))


def test_a_directory_without_a_table_of_contents_is_refused(tmp_path):
    with pytest.raises(PgveilError, match="is not a directory-format archive: it has no toc.dat"):
        pg_archive.read(tmp_path)
